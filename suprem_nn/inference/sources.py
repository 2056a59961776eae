"""Predict files with one model source: a trained model folder, a released SuPreM file, or an nnU-Net model.

Each function loads its model once, sets it up for the device (:mod:`.runtime`), builds its predictor from the
:class:`~suprem_nn.inference.settings.PredictionSettings` and runs the files loop (:mod:`.run`). The run
report's ``model_load_seconds``, ``engine`` and ``source`` entries come from here.
"""
from __future__ import annotations

import dataclasses

import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import SupremError
from ..model_folder import FINAL_CHECKPOINT
from .predictor import Predictor
from .run import RunSummary, run_prediction
from .runtime import prepare_runtime
from .settings import PredictionSettings

__all__ = ["predict_with_model_folder", "predict_with_released", "predict_with_nnunet"]

NNUNET_DEFAULT_FOLDS = (0, 1, 2, 3, 4)


def predict_with_model_folder(input, output, folder: str | Path, settings: PredictionSettings,
                              folds: Optional[Sequence] = (0,), checkpoint_name: str = FINAL_CHECKPOINT,
                              source: Optional[str] = None) -> RunSummary:
    """Predict ``input`` into ``output`` with the folds of a trained model folder (None: fold 0).

    ``source``: how the run report names the model (default ``model folder <folder>``).
    """
    t_load = time.perf_counter()
    predictor = Predictor.from_model_folder(folder, (0,) if folds is None else folds, checkpoint_name, settings)
    return run_prediction(predictor, input, output, settings, release_networks=True, extra_report={
        "model_load_seconds": round(time.perf_counter() - t_load, 3), "engine": predictor.engine_report,
        "fast": settings.fast, "source": source or f"model folder {folder}"})


def predict_with_released(input, output, suprem: Optional[str], checkpoint: Optional[str | Path],
                          settings: PredictionSettings) -> RunSummary:
    """Predict with a released SuPreM file and SuPreM's direct-inference recipe (see :func:`~.api.predict`).

    ``checkpoint`` None: the released file of ``suprem``, downloaded on first use.
    """
    t_load = time.perf_counter()
    predictor = Predictor.from_suprem(suprem, checkpoint, settings)
    return run_prediction(predictor, input, output, settings, release_networks=True, extra_report={
        "model_load_seconds": round(time.perf_counter() - t_load, 3), "engine": predictor.engine_report,
        "fast": settings.fast, "source": f"suprem {predictor.plan.pretrained} {predictor.checkpoint}"})


def predict_with_nnunet(input, output, folder: str | Path, settings: PredictionSettings,
                        folds: Optional[Sequence] = None, checkpoint_name: str = FINAL_CHECKPOINT) -> RunSummary:
    """Predict with a trained nnU-Net v2 model folder (``folds`` None: nnU-Net's default 0-4), reproducing
    nnU-Net's preprocessing and export (see :mod:`suprem_nn.inference.nnunet`)."""
    from .nnunet_model import NnunetPredictor, load_nnunet_model

    if settings.classes or settings.fast:
        raise SupremError("--classes and --fast are not available with --nnunet-model (nnU-Net's own settings "
                          "are reproduced)")
    t_load = time.perf_counter()
    model = load_nnunet_model(folder, NNUNET_DEFAULT_FOLDS if folds is None else folds, checkpoint_name)
    patch = [int(p) for p in model.configuration["patch_size"]]
    # On the CPU nnU-Net runs float32; bf16 there is opt-in (see prepare_runtime). An nnU-Net model promises labels
    # identical to nnUNetv2_predict, which only torch's kernels keep: OpenVINO f32 moved 1-48 near-tie voxels of a
    # trained model (benchmarks/predict_bench.py). So torch is its default engine unless bf16 was asked for.
    if settings.engine is None and settings.precision != "bf16":
        settings = dataclasses.replace(settings, engine="torch")
    runtime = prepare_runtime(model.networks, None, [1, model.num_inputs, *patch], settings, cpu_float32=True)
    model.networks = runtime.networks
    predictor = NnunetPredictor(model, device=settings.device, step_size=_step(settings, 0.5),
                                use_mirroring=settings.mirroring, windows_per_batch=runtime.windows_per_batch,
                                autocast_dtype=runtime.autocast_dtype, channels_last=runtime.channels_last,
                                postprocess=settings.postprocess, keep_probabilities=settings.save_probabilities,
                                progress=settings.progress)
    engine_report = runtime.engine_report
    del runtime  # the predictor owns the networks now, so release_networks can free them
    return run_prediction(predictor, input, output, settings, release_networks=True, extra_report={
        "model_load_seconds": round(time.perf_counter() - t_load, 3), "engine": engine_report,
        "source": f"nnU-Net model folder {folder} folds {','.join(model.folds)}"})


def _step(settings: PredictionSettings, default: float) -> float:
    return default if settings.step_size is None else settings.step_size
