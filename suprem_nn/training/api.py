"""``train(dataset, fold, **options)``: what ``suprem_train`` runs."""
from __future__ import annotations

import os
from typing import Optional

from . import distributed as ddp
from .config import TrainingConfig, read_config_file, resolve_config
from .splits import parse_fold


def train(dataset: str, fold="0", config_file: Optional[str] = None, continue_training: bool = False,
          echo: bool = True, **options) -> Optional[dict]:
    """Train one fold of a planned, preprocessed dataset (what ``suprem_train DATASET FOLD`` runs).

    Writes the model folder ``$SUPREM_RESULTS/<dataset>/<plan>/`` (``plans.json``, ``fold_<k>/`` with checkpoints,
    ``training_log.txt``, ``progress.png`` and, unless disabled, the final validation; layout:
    :mod:`suprem_nn.model_folder`). Every cross-validation fold in one call (``suprem_train DATASET cv``):
    :func:`suprem_nn.training.cross_validation.cross_validate`.

    Parameters
    ----------
    dataset : str
        Dataset name (``Dataset101_X``), numeric id (``101``) or raw folder path; planned by
        :func:`suprem_nn.plan_and_preprocess` first.
    fold : int or str
        ``0``-``4`` (the folds of ``splits_final.json``) or ``"all"`` (train on every case).
    config_file : str, optional
        JSON object of training settings.
    continue_training : bool
        Resume the fold from its last complete epoch (``--continue``).
    echo : bool
        Print progress and the per-epoch lines (they always go to ``training_log.txt``).
    **options
        :class:`~suprem_nn.training.config.TrainingConfig` fields (e.g. ``pretrained="unet"``, ``epochs=50``,
        ``num_gpus=2``, ``device="cpu"``); they override ``config_file``, which overrides the plan's recipe.

    Returns
    -------
    dict or None
        The last epoch's record (losses, pseudo-Dice, ``final_validation_mean_dice``) on rank 0; None on the
        other ranks. Under torchrun (``RANK``/``WORLD_SIZE`` set) this process is one rank; with ``num_gpus > 1``
        and no torchrun environment, ``num_gpus`` processes are spawned on this node.
    """
    fold = parse_fold(str(fold))
    cfg = resolve_training_config(dataset, config_file, options)
    env = ddp.from_environment()
    if env is None and cfg.num_gpus > 1:
        ddp.spawn(_run_rank, cfg.num_gpus, (dataset, fold, cfg, continue_training, echo))
        return None
    return _run_rank(dataset, fold, cfg, continue_training, echo, env)


def resolve_training_config(dataset: str, config_file: Optional[str], options: dict) -> TrainingConfig:
    """The run's settings: ``options`` over the ``config_file`` JSON over the recipe of the plan they select.

    Parameters
    ----------
    dataset : str
        Dataset name or id; its plan (chosen by the settings) gives the recipe defaults.
    config_file : str, optional
        A ``--config`` JSON file (:func:`~suprem_nn.training.config.read_config_file`).
    options : dict
        Explicit settings (keyword arguments or command-line flags); None values are not set.

    Raises
    ------
    SupremError
        For an unreadable config file, a dataset or plan that cannot be found, or an invalid setting
        (:func:`~suprem_nn.training.config.resolve_config`).
    """
    file_settings = read_config_file(config_file) if config_file else {}
    return _resolve(dataset, file_settings, options)


def _resolve(dataset: str, file_settings: dict, options: dict) -> TrainingConfig:
    from ..planning import find_plan
    plan_name = options.get("plan_name") or file_settings.get("plan_name")
    pretrained = options.get("pretrained") or file_settings.get("pretrained")
    if not plan_name and pretrained:
        plan_name = f"suprem_{pretrained}"
    _, plan = find_plan(dataset, plan_name)
    return resolve_config(plan.training, file_settings, options)


def _run_rank(dataset, fold, cfg: TrainingConfig, continue_training: bool, echo: bool,
              env: Optional[ddp.DistInfo] = None):
    from .trainer import Trainer
    info = env or ddp.from_environment() or ddp.DistInfo()
    if info.enabled and cfg.device in ("auto", "cpu") and not os.environ.get("OMP_NUM_THREADS"):
        # N CPU processes each using every core only fight over them; the cores are those of this node
        import torch
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.local_world_size))
    trainer = Trainer(dataset, fold, cfg, continue_training=continue_training, dist=info, echo=echo)
    finished = False
    try:
        trainer.setup()
        record = trainer.run()
        finished = True
        return record if info.is_main else None
    finally:
        ddp.shutdown(finished)
