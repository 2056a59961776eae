"""The trained-model folder: its file names, its checkpoint keys, and the one way to write and read it.

Layout (unchanged since the first release; training writes it, prediction and export read it)::

    <results>/<dataset>/<plan>/           a model folder
        plans.json                        copy of the plan the folds were trained with
        fold_<k>/                         k = 0..4 or "all"
            checkpoint_final.pth          written once, when training finished
            checkpoint_latest.pth         after every epoch (what --continue resumes)
            checkpoint_best.pth           the epoch with the best EMA pseudo-Dice
            config.json                   the training settings and the fold's case ids
            validation/summary.json       written last by the final validation (+ <case>.nii.gz/.npz/.json)

A checkpoint is a plain dict of tensors, numbers, strings and lists (keys below), so it loads with
``torch.load(..., weights_only=True)``; it is written to a temporary file and renamed, so a crash during a save
leaves the previous file intact. The only fact a checkpoint adds to the plan for prediction is the set of axes
the fold was trained mirrored over (:data:`MIRROR_AXES_KEY`): test-time mirroring uses the axes every loaded fold
allows (older checkpoints without the key: the plan's ``mirror_axes``).

This module imports only planning, networks and utils; training and inference both go through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import PlanError, SupremError
from .planning.plans import Plan
from .utils.atomic import atomic_path, atomic_write_bytes

PLAN_FILE = "plans.json"
FINAL_CHECKPOINT = "checkpoint_final.pth"
LATEST_CHECKPOINT = "checkpoint_latest.pth"
BEST_CHECKPOINT = "checkpoint_best.pth"
FOLD_CONFIG = "config.json"
VALIDATION_FOLDER = "validation"
VALIDATION_SUMMARY = "summary.json"
_FOLD_PREFIX = "fold_"

# Checkpoint keys prediction and export read (training also stores its optimiser, schedule, RNG and log state).
WEIGHTS_KEY = "network_weights"
NETWORK_KEY = "network"
MIRROR_AXES_KEY = "inference_allowed_mirroring_axes"


class ModelError(SupremError):
    """A model folder, fold or checkpoint is missing or unusable."""


@dataclass
class TrainedModel:
    """The folds of a model folder loaded for prediction.

    ``networks`` are eval-mode CPU modules, one per fold of ``folds``; ``mirror_axes`` are the axes (of the
    plan's network space ``x, y, z``) every one of them was trained mirrored over. ``plan`` is the folder's
    ``plans.json`` as written; nothing from the checkpoints is stored in it.
    """

    folder: Path
    plan: Plan
    networks: list
    folds: list[str]
    mirror_axes: list[int]


# ------------------------------------------------------------------------------------------------ names
def plan_path(model_folder: str | Path) -> Path:
    """``<model_folder>/plans.json``."""
    return Path(model_folder) / PLAN_FILE


def fold_folder(model_folder: str | Path, fold: str | int) -> Path:
    """``<model_folder>/fold_<fold>``."""
    return Path(model_folder) / f"{_FOLD_PREFIX}{fold}"


def checkpoint_path(model_folder: str | Path, fold: str | int, checkpoint_name: str = FINAL_CHECKPOINT) -> Path:
    """``<model_folder>/fold_<fold>/<checkpoint_name>``."""
    return fold_folder(model_folder, fold) / checkpoint_name


def validation_folder(fold: str | Path) -> Path:
    """``<fold folder>/validation``: the final validation's predictions and summary."""
    return Path(fold) / VALIDATION_FOLDER


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``plans.json`` (a model folder, trained or being trained)."""
    return plan_path(folder).is_file()


def folds_with(model_folder: str | Path, checkpoint_name: str = FINAL_CHECKPOINT) -> list[str]:
    """The folds of ``model_folder`` that hold ``checkpoint_name``: numbers in order, then ``"all"``."""
    folds = [p.name[len(_FOLD_PREFIX):] for p in Path(model_folder).glob(f"{_FOLD_PREFIX}*")
             if (p / checkpoint_name).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


# ------------------------------------------------------------------------------------------------ writing
def write_plan_copy(model_folder: str | Path, plan_json: bytes) -> None:
    """Atomically write the plan's ``plans.json`` bytes into the model folder (folds trained at once share it)."""
    atomic_write_bytes(plan_path(model_folder), plan_json)


def checkpoint_record(weights: dict, plan: Plan, dataset: str, fold: str | int, epoch: int, final: bool,
                      mirror_axes: Sequence[int], training_state: dict[str, Any]) -> dict:
    """The checkpoint dict: what prediction reads, plus ``training_state`` (what ``--continue`` restores).

    ``weights`` is the bare network's ``state_dict()``; ``mirror_axes`` the network-space axes the fold was
    trained mirrored over (empty without mirror augmentation).

    Parameters
    ----------
    weights : dict
        The bare network's ``state_dict()``.
    plan : Plan
        Gives the network name, input and output channel counts and plan name.
    dataset : str
        Dataset name stored with the weights.
    fold : str or int
        The fold (stored as a string).
    epoch : int
        Completed epochs.
    final : bool
        Whether training finished.
    mirror_axes : sequence of int
        Network-space axes (0, 1, 2 = x, y, z) the fold was trained mirrored over.
    training_state : dict
        Optimiser, schedule, RNG and log state; merged in after the fixed keys (a clashing name would replace
        them), before the mirror axes.

    Returns
    -------
    dict
        Tensors, numbers, strings and lists only (``weights_only``-loadable).
    """
    return {WEIGHTS_KEY: weights, NETWORK_KEY: plan.network, "num_inputs": plan.num_inputs,
            "num_outputs": plan.num_outputs, "epoch": epoch, "plan_name": plan.plan_name, "dataset": dataset,
            "fold": str(fold), "final": final, **training_state, MIRROR_AXES_KEY: list(mirror_axes)}


def write_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Atomically write ``checkpoint`` (which must be weights_only-loadable) to ``path``.

    Parameters
    ----------
    path : str or Path
        The ``.pth`` file; written to a temporary file in the same folder, then renamed.
    checkpoint : dict
        Usually :func:`checkpoint_record`'s dict.
    """
    import torch

    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(checkpoint, tmp)


# ------------------------------------------------------------------------------------------------ reading
def read_checkpoint(path: str | Path, error: type = ModelError) -> dict:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True`` on the CPU.

    Parameters
    ----------
    path : str or Path
        The ``.pth`` file.
    error : type
        The :class:`~suprem_nn.errors.SupremError` subclass raised on failure.

    Raises
    ------
    error
        Naming the file when it is missing, refused (pickled code) or broken.
    """
    from .utils.safe_load import load_weights_only

    path = Path(path)
    if not path.is_file():
        raise error("checkpoint not found", path)
    return load_weights_only(path, error)


def load_fold(model_folder: str | Path, plan: Plan, fold: str | int,
              checkpoint_name: str = FINAL_CHECKPOINT) -> tuple[dict, Any]:
    """The checkpoint dict of ``fold_<fold>/<checkpoint_name>`` and its eval-mode CPU network built from ``plan``.

    Parameters
    ----------
    model_folder : str or Path
        ``<results>/<dataset>/<plan>``.
    plan : Plan
        The folder's plan; builds the network (name, channels, network kwargs).
    fold : str or int
        Fold number or ``"all"``.
    checkpoint_name : str
        File name inside the fold folder.

    Returns
    -------
    checkpoint : dict
        As stored.
    network : torch.nn.Module
        On the CPU, in eval mode, with the checkpoint's weights.

    Raises
    ------
    ModelError
        Naming the file, for every problem a user can cause: missing fold, foreign or broken file, a checkpoint of
        another network, or weights that do not fit the planned network.
    """
    folder = Path(model_folder)
    path = checkpoint_path(folder, fold, checkpoint_name)
    if not path.is_file():
        have = sorted(p.name for p in folder.glob(f"{_FOLD_PREFIX}*"))
        raise ModelError(f"checkpoint missing (folds present: {', '.join(have) or 'none'})", path)
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or WEIGHTS_KEY not in ckpt:
        raise ModelError(f"not a suprem_nn checkpoint (no '{WEIGHTS_KEY}')", path)
    if ckpt.get(NETWORK_KEY, plan.network) != plan.network:
        raise ModelError(f"checkpoint holds a '{ckpt.get(NETWORK_KEY)}' network but {PLAN_FILE} says "
                         f"'{plan.network}'", path)
    net = build_planned_network(plan, folder / PLAN_FILE)
    try:
        net.load_state_dict(ckpt[WEIGHTS_KEY])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"weights do not fit the planned network ({str(exc).splitlines()[0][:200]})",
                         path) from None
    return ckpt, net.eval()


def build_planned_network(plan: Plan, plan_file: Path):
    """The plan's network with fresh weights (train mode, CPU): ``plan.network`` built with ``network_kwargs``.

    Raises
    ------
    PlanError
        Naming ``plan_file``, when the network's class refuses the plan's ``network_kwargs`` (an unknown
        argument, a wrong type, a size it cannot build).
    """
    from .networks import build_network

    try:
        return build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs)
    except Exception as exc:  # noqa: BLE001 - the classes check their arguments in many ways (MONAI's included)
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise PlanError(f"cannot build the planned '{plan.network}' network from network_kwargs "
                        f"{plan.network_kwargs} ({type(exc).__name__}: {text})", plan_file) from None


def trained_mirror_axes(plan: Plan, checkpoint: dict) -> list[int]:
    """The axes test-time mirroring may use for one fold: those it was trained over (older files: the plan's).

    Parameters
    ----------
    plan : Plan
        Its ``mirror_axes`` bound the result.
    checkpoint : dict
        The fold's checkpoint; :data:`MIRROR_AXES_KEY` lists the network-space axes it was trained mirrored over.

    Returns
    -------
    list of int
        Sorted network-space axes (0, 1, 2 = x, y, z) in both.
    """
    return sorted(set(plan.mirror_axes) & set(checkpoint.get(MIRROR_AXES_KEY, plan.mirror_axes)))


def read_plan(model_folder: str | Path) -> Plan:
    """The model folder's ``plans.json``.

    Raises
    ------
    ModelError
        If the folder does not exist.
    PlanError
        Naming the file when ``plans.json`` is missing or invalid.
    """
    folder = Path(model_folder)
    if not folder.is_dir():
        raise ModelError("model folder not found", folder)
    return Plan.load(plan_path(folder))


def load_trained_model(model_folder: str | Path, folds: Optional[Sequence[str | int]] = (0,),
                       checkpoint_name: str = FINAL_CHECKPOINT) -> TrainedModel:
    """The plan and one network per fold of a trained model folder.

    ``folds`` empty or None: every fold that holds ``checkpoint_name``. Mirroring axes are those all loaded
    folds allow (see the module docstring).

    Parameters
    ----------
    model_folder : str or Path
        ``<results>/<dataset>/<plan>``.
    folds : sequence of str or int, optional
        Folds to load (default fold 0).
    checkpoint_name : str
        Checkpoint file name inside each fold folder.

    Returns
    -------
    TrainedModel
        Eval-mode CPU networks in the order of ``folds``, and the network-space mirror axes every fold allows.

    Raises
    ------
    ModelError
        If no fold holds ``checkpoint_name`` (with ``folds`` empty) or a fold cannot be loaded (:func:`load_fold`).
    PlanError
        If ``plans.json`` is missing or invalid.
    """
    folder = Path(model_folder)
    plan = read_plan(folder)
    if not folds:
        folds = folds_with(folder, checkpoint_name)
        if not folds:
            raise ModelError(f"no {_FOLD_PREFIX}*/{checkpoint_name} in the model folder", folder)
    networks, axes = [], set(plan.mirror_axes)
    for fold in folds:
        ckpt, net = load_fold(folder, plan, fold, checkpoint_name)
        networks.append(net)
        axes &= set(trained_mirror_axes(plan, ckpt))
    return TrainedModel(folder, plan, networks, [str(f) for f in folds], sorted(axes))
