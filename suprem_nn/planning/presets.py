"""Backbone presets: what each SuPreM checkpoint expects (``plans/<name>.json`` in the repository)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import PlanError

# The repository's plans/ folder (source tree and editable installs); a regular install copies it to
# <prefix>/share/suprem_nn/plans (setup.py data_files).
_CANDIDATES = (Path(__file__).resolve().parents[2] / "plans", Path(sys.prefix) / "share" / "suprem_nn" / "plans")
PRESET_DIR = next((d for d in _CANDIDATES if (d / "unet.json").is_file()), _CANDIDATES[0])
PRESET_NAMES = ("unet", "segresnet", "swinunetr")
_REQUIRED = ("name", "network", "divisibility", "checkpoint", "input_convention", "pretraining_patch", "class_map",
             "fine_tuning_recipe")


def load_preset(name: str) -> dict:
    """The preset for backbone ``name`` ("unet", "segresnet" or "swinunetr") as a dict."""
    if name not in PRESET_NAMES:
        raise PlanError(f"unknown pretrained backbone '{name}'; choose one of {', '.join(PRESET_NAMES)}")
    path = PRESET_DIR / f"{name}.json"
    try:
        preset = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError("preset file missing from the installation", path) from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"preset is not valid JSON ({exc})", path) from None
    missing = [k for k in _REQUIRED if k not in preset]
    if missing:
        raise PlanError(f"preset lacks fields {missing}", path)
    return preset
