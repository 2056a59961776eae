"""Backbone presets: the input conventions of each backbone and, for released SuPreM weights, what the file
expects (``plans/<preset>`` in the repository; which file belongs to which backbone is in
:data:`suprem_nn.networks.backbones.BACKBONES`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import PlanError
from ..networks.backbones import BACKBONES, released_backbones

# The repository's plans/ folder (source tree and editable installs); a regular install copies it to
# <prefix>/share/suprem_nn/plans (setup.py data_files).
_CANDIDATES = (Path(__file__).resolve().parents[2] / "plans", Path(sys.prefix) / "share" / "suprem_nn" / "plans")
PRESET_DIR = next((d for d in _CANDIDATES if (d / "unet.json").is_file()), _CANDIDATES[0])
PRESET_NAMES = tuple(BACKBONES)
_REQUIRED = ("name", "network", "input_convention", "pretraining_patch")
# what a preset of released weights must also say: the file, its classes and how to fine-tune from it
_REQUIRED_WITH_WEIGHTS = ("checkpoint", "class_map", "fine_tuning_recipe")


def load_preset(name: str, need_weights: bool = False) -> dict:
    """The preset of backbone ``name`` (a key of ``BACKBONES``) as a dict.

    ``divisibility`` (voxels) is added from the backbone's entry, the one place it is written.
    ``need_weights``: raise :class:`PlanError` unless released SuPreM weights exist for ``name``.
    """
    spec = BACKBONES.get(name)
    if spec is None:
        raise PlanError(f"unknown backbone '{name}'; choose one of {', '.join(PRESET_NAMES)}")
    if need_weights and not spec.suprem_weights:
        raise PlanError(f"no SuPreM weights are released for '{name}' (pretrained backbones: "
                        f"{', '.join(released_backbones())}); plan it from scratch (--from-scratch {name})")
    path = PRESET_DIR / spec.preset
    try:
        preset = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError("preset file missing from the installation", path) from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"preset is not valid JSON ({exc})", path) from None
    required = _REQUIRED + (_REQUIRED_WITH_WEIGHTS if spec.suprem_weights else ())
    missing = [k for k in required if k not in preset]
    if missing:
        raise PlanError(f"preset lacks fields {missing}", path)
    return {**preset, "divisibility": spec.divisibility}
