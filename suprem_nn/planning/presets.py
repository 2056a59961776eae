"""Backbone presets: what each SuPreM checkpoint expects (``plans/<name>.json`` in the repository)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import PlanError

PRESET_DIR = Path(__file__).resolve().parents[2] / "plans"
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
