"""``export_backbone``: a trained model folder -> a SuPreM-style backbone file (what ``suprem_export_backbone`` runs).

The file holds the trained backbone in the released key layout of its family
(:mod:`suprem_nn.networks.release_layout`), so ``suprem_train OTHER 0 --pretrained-checkpoint FILE.pth``
starts from it exactly as from a released SuPreM file.  ``FILE.json`` beside it records what the backbone
learnt from: classes, input conventions (spacing in mm, intensity normalisation), the training data
(dataset, plan, fold, case ids, epochs), the full plan and the code version.
"""
from __future__ import annotations

import dataclasses
import datetime
import subprocess
from pathlib import Path
from typing import Optional

from .. import model_folder as mf
from ..model_folder import ModelError
from ..planning.plans import Plan
from ..utils.json_file import read_json
from .models import resolve_dataset_model

__all__ = ["export_backbone", "find_model_folder", "code_version"]

# Training settings copied from fold_<k>/config.json into the record (how the backbone was trained).
_SETTINGS = ("epochs", "iterations_per_epoch", "batch_size", "recipe", "lr", "weight_decay", "warmup_epochs",
             "pretrained", "pretrained_checkpoint", "from_scratch", "seed", "num_gpus", "world_size")


def find_model_folder(model: str, plan_name: Optional[str] = None) -> Path:
    """``model`` as a folder holding ``plans.json``, else a dataset name or id under ``$SUPREM_RESULTS``.

    Parameters
    ----------
    model : str
        ``<results>/<dataset>/<plan>`` path (``~`` expanded), or a dataset name or id.
    plan_name : str, optional
        The plan, for a dataset name with several trained plans.

    Raises
    ------
    ModelError
        If ``model`` is an existing folder without ``plans.json``, a path that does not exist, or a dataset that
        :func:`~suprem_nn.inference.models.resolve_dataset_model` cannot resolve.
    """
    folder = Path(model).expanduser()
    if mf.is_model_folder(folder):
        return folder
    if folder.is_dir():
        raise ModelError(f"not a trained model folder (no {mf.PLAN_FILE}); pass <results>/<dataset>/<plan>", folder)
    if len(folder.parts) > 1:  # a path, not a dataset name: say so rather than search SUPREM_RESULTS for it
        raise ModelError("model folder not found", folder)
    return resolve_dataset_model(model, plan_name)


def _pick_fold(folder: Path, fold: Optional[str], checkpoint_name: str) -> str:
    """The requested fold, or the only fold that has ``checkpoint_name``."""
    if fold is not None:
        return str(fold)
    folds = mf.folds_with(folder, checkpoint_name)
    if len(folds) != 1:
        raise ModelError(f"{len(folds)} folds have {checkpoint_name} ({', '.join(folds) or 'none'}); choose one "
                         f"with -f", folder)
    return folds[0]


def code_version() -> dict:
    """suprem_nn, torch and MONAI versions, plus ``git describe`` when the package runs from a git checkout."""
    import importlib.metadata

    import torch

    from .. import __version__

    out = {"suprem_nn": __version__, "torch": torch.__version__}
    try:
        out["monai"] = importlib.metadata.version("monai")
    except importlib.metadata.PackageNotFoundError:
        out["monai"] = None
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists() and (root / "suprem_nn").is_dir():  # an editable install inside its repository
        try:
            done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                                  capture_output=True, text=True, timeout=10)
            if done.returncode == 0:
                out["git"] = done.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass  # the version number above still identifies the code
    return out


def _record(plan: Plan, fold: str, checkpoint_name: str, ckpt: dict, fold_config: dict, source: Path) -> dict:
    train_cases = fold_config.get("train_cases")
    return {
        "classes": list(plan.class_names),
        "multilabel": plan.multilabel,
        "output_activation": "sigmoid per class" if plan.multilabel else "softmax over background + classes",
        "channel_names": list(plan.channel_names),
        "input_conventions": {
            "orientation": plan.orientation, "spacing_mm": list(plan.target_spacing),
            "normalization": [dataclasses.asdict(n) for n in plan.normalization],
            "crop_threshold": plan.crop_threshold, "patch_size": list(plan.patch_size),
        },
        "training": {
            "dataset": plan.dataset_name, "plan": plan.plan_name, "fold": fold, "checkpoint": checkpoint_name,
            "num_train_cases": len(train_cases) if isinstance(train_cases, list) else None,
            "train_cases": train_cases, "val_cases": fold_config.get("val_cases"),
            "epochs_completed": ckpt.get("epoch"), "finished": bool(ckpt.get("final", False)),
            "settings": {k: fold_config[k] for k in _SETTINGS if k in fold_config},
            "note": None if isinstance(train_cases, list) else
            "case ids not recorded: the fold was trained by a suprem_nn version that did not write them",
        },
        "plan": plan.to_json(),
        "code": code_version(),
        "source_checkpoint": str(source.resolve()),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def export_backbone(model: str | Path, output: str | Path, fold: Optional[str] = None,
                    checkpoint_name: str = mf.FINAL_CHECKPOINT, plan_name: Optional[str] = None):
    """Write the backbone of a trained fold to ``output`` (released layout) and its record to ``output.json``.

    ``model``: a model folder (``<results>/<dataset>/<plan>``) or a dataset name/id with ``plan_name``.
    ``fold``: ``"0"``..``"4"`` or ``"all"``; None takes the only fold that has ``checkpoint_name``.
    Returns ``(load_report, record)``: the report of loading the written file into a fresh network of its
    family (the same report ``suprem_train --pretrained-checkpoint`` prints) and the JSON record.
    Raises :class:`ModelError` naming the file for every problem a user can cause.
    """
    from ..networks import CheckpointError
    from ..networks.release_layout import write_backbone_export

    folder = find_model_folder(str(model), plan_name)
    plan = mf.read_plan(folder)
    fold = _pick_fold(folder, fold, checkpoint_name)
    ckpt, net = mf.load_fold(folder, plan, fold, checkpoint_name)
    source = mf.checkpoint_path(folder, fold, checkpoint_name)
    config_path = mf.fold_folder(folder, fold) / mf.FOLD_CONFIG
    fold_config = read_json(config_path, ModelError) if config_path.is_file() else {}
    if not isinstance(fold_config, dict):
        raise ModelError("expected a JSON object of training settings", config_path)
    record = _record(plan, fold, checkpoint_name, ckpt, fold_config, source)
    try:
        return write_backbone_export(output, plan.network, net.state_dict(), record, source=str(source))
    except CheckpointError as exc:
        raise ModelError(str(exc)) from None
