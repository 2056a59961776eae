"""Every knob of a training run, in one JSON-serialisable record (``<fold folder>/config.json``).

Precedence, lowest first: built-in defaults < the plan's recipe (``plan.training``)
< a ``--config FILE`` (JSON object of these field names) < command-line flags.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import SupremError
from ..utils.json_file import read_json
from .augmentation import DEFAULT_AUGMENTATION, merged_params
from .schedule import RECIPES


@dataclass
class TrainingConfig:
    plan_name: Optional[str] = None          # None: "suprem_<pretrained>" or the dataset's only plan
    pretrained: Optional[str] = None         # "unet" | "segresnet" | "swinunetr": initialise from SuPreM
    pretrained_checkpoint: Optional[str] = None   # explicit weights file (else $SUPREM_WEIGHTS / ~/suprem_nn_data/weights)
    from_scratch: bool = False
    allow_unsafe_checkpoint: bool = False    # let the loader unpickle a legacy (non weights_only) file
    epochs: int = 200
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    batch_size: Optional[int] = None         # per rank; None: plan.batch_size
    recipe: str = "adamw_cosine"             # "adamw_cosine" | "sgd_poly"
    lr: Optional[float] = None               # None: 1e-4 (adamw_cosine) / 1e-2 (sgd_poly), or the plan's
    weight_decay: Optional[float] = None     # None: 1e-5 (adamw_cosine) / 3e-5 (sgd_poly), or the plan's
    warmup_epochs: int = 20                  # linear warm-up length of adamw_cosine, in epochs
    schedule_step: str = "epoch"             # "epoch" | "iteration": when the learning rate changes
    grad_clip: float = 12.0                  # max gradient norm
    freeze_encoder_epochs: int = 0           # keep the pretrained encoder frozen for the first N epochs
    oversample_foreground: float = 0.33
    augmentation: dict = field(default_factory=lambda: dict(DEFAULT_AUGMENTATION))
    ema_dice_decay: float = 0.9              # best checkpoint: EMA of the validation pseudo-Dice (nnU-Net)
    device: str = "auto"                     # "auto" | "cpu" | "cuda" | "cuda:1"
    num_gpus: int = 1
    mixed_precision: str = "auto"            # "auto" | "bf16" | "fp16" | "off": see training/precision.py
    compile: bool = False
    num_workers: int = 2
    seed: int = 12345
    final_validation: bool = True
    validation_step_size: float = 0.5        # sliding-window overlap of the final validation

    def to_json(self) -> dict:
        """Every field as a JSON-ready dict (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)


RECIPE_DEFAULTS = {"adamw_cosine": {"lr": 1e-4, "weight_decay": 1e-5},
                   "sgd_poly": {"lr": 1e-2, "weight_decay": 3e-5}}
_FIELDS = {f.name for f in dataclasses.fields(TrainingConfig)}
_PLAN_KEYS = {"epochs": "epochs", "lr": "lr", "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs",
              "iterations_per_epoch": "iterations_per_epoch", "batch_size": "batch_size",
              "freeze_encoder_epochs": "freeze_encoder_epochs"}


def read_config_file(path: str | Path) -> dict:
    """Read a ``--config`` JSON file of training settings.

    Parameters
    ----------
    path : str or Path
        A JSON object whose keys are :class:`TrainingConfig` field names.

    Returns
    -------
    dict
        The object as read; values are not checked or converted here.

    Raises
    ------
    SupremError
        If the file is missing or not valid JSON, is not a JSON object, or names a setting that is not a
        :class:`TrainingConfig` field.
    """
    path = Path(path)
    data = read_json(path, missing="config file not found")
    if not isinstance(data, dict):
        raise SupremError("expected a JSON object of training settings", path)
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise SupremError(f"unknown settings {unknown}; known: {sorted(_FIELDS)}", path)
    return data


def plan_recipe(training: dict) -> dict:
    """Translate a plan's ``training`` dict (optimizer/schedule/lr/...) into config fields."""
    out: dict[str, Any] = {}
    opt, sched = training.get("optimizer"), training.get("schedule")
    for name, r in RECIPES.items():
        if r["optimizer"] == opt and (sched is None or r["schedule"] == sched):
            out["recipe"] = name
    for k, f in _PLAN_KEYS.items():
        if k in training:
            out[f] = training[k]
    return out


def resolve_config(plan_training: dict, file_settings: dict, flags: dict) -> TrainingConfig:
    """Merge the layers, fill recipe-dependent defaults and check values.

    Later layers win: the plan's training recipe, then the ``--config`` file, then command-line flags that are
    not None. ``lr`` and ``weight_decay`` come from the recipe's defaults when unset, or when the plan's value
    belongs to another recipe than the one chosen and neither file nor flag sets them.

    Parameters
    ----------
    plan_training : dict
        The plan's ``training`` entries.
    file_settings : dict
        Settings read by :func:`read_config_file`.
    flags : dict
        Command-line values; None means not given.

    Returns
    -------
    TrainingConfig

    Raises
    ------
    SupremError
        For an unknown setting or recipe, ``pretrained``/``pretrained_checkpoint`` with ``from_scratch``,
        ``epochs``/``iterations_per_epoch``/``num_gpus`` below 1, negative ``val_iterations``/``num_workers``/
        ``freeze_encoder_epochs``, or an unknown ``schedule_step`` or ``mixed_precision``.
    """
    merged: dict[str, Any] = {}
    merged.update(plan_recipe(plan_training or {}))
    merged.update(file_settings or {})
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    unknown = sorted(set(merged) - _FIELDS)
    if unknown:
        raise SupremError(f"unknown training settings {unknown}")
    cfg = TrainingConfig(**merged)
    if cfg.recipe not in RECIPES:
        raise SupremError(f"unknown recipe {cfg.recipe!r}; choose one of {sorted(RECIPES)}")
    # a plan's lr belongs to the plan's recipe; switching recipe on the command line resets it
    plan_recipe_name = plan_recipe(plan_training or {}).get("recipe")
    for key in ("lr", "weight_decay"):
        explicit = key in (file_settings or {}) or (flags or {}).get(key) is not None
        if getattr(cfg, key) is None or (not explicit and plan_recipe_name not in (None, cfg.recipe)):
            setattr(cfg, key, RECIPE_DEFAULTS[cfg.recipe][key])
    cfg.augmentation = merged_params(cfg.augmentation)
    if cfg.pretrained and cfg.from_scratch:
        raise SupremError("--pretrained and --from-scratch exclude each other")
    if cfg.pretrained_checkpoint and cfg.from_scratch:
        raise SupremError("--pretrained-checkpoint and --from-scratch exclude each other")
    for name in ("epochs", "iterations_per_epoch", "num_gpus"):
        if getattr(cfg, name) < 1:
            raise SupremError(f"{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.val_iterations < 0 or cfg.num_workers < 0 or cfg.freeze_encoder_epochs < 0:
        raise SupremError("val-iterations, num-workers and freeze-encoder-epochs must not be negative")
    if cfg.schedule_step not in ("epoch", "iteration"):
        raise SupremError(f"schedule_step must be 'epoch' or 'iteration', got {cfg.schedule_step!r}")
    if cfg.mixed_precision not in ("auto", "bf16", "fp16", "off"):
        raise SupremError(f"mixed_precision must be auto, bf16, fp16 or off, got {cfg.mixed_precision!r}")
    return cfg
