"""``predict(input, output, ...)``: the files API behind ``suprem_predict``.

The keyword arguments become one :class:`~suprem_nn.inference.settings.PredictionSettings`; the model source
picks the function of :mod:`suprem_nn.inference.sources` that loads it and runs the files loop
(:mod:`suprem_nn.inference.run`: reading, overlapped stages, atomic writes, resuming, ``run_report.json``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import SupremError
from ..model_folder import FINAL_CHECKPOINT
from .run import RunSummary, run_prediction
from .settings import PredictionSettings

__all__ = ["predict", "run_prediction", "RunSummary", "PredictionSettings"]


def predict(input, output, model_folder=None, *, dataset: Optional[str] = None, plan: Optional[str] = None,
            folds: Sequence = (0,), checkpoint_name: str = FINAL_CHECKPOINT, suprem: Optional[str] = None,
            checkpoint=None, device: str = "cpu", step_size: Optional[float] = None, disable_tta: bool = False,
            save_probabilities: bool = False, per_class: bool = False, classes: Optional[Sequence[str]] = None,
            fast: bool = False, postprocess: Optional[str] = None, num_workers: int = 1, overwrite: bool = False,
            bf16: bool = False, fp32: bool = False, channels_last: Optional[bool] = None,
            windows_per_batch: Optional[int] = None, statistics: bool = False, preview: bool = False,
            progress: bool = True, nnunet_model=None, part=None, engine: Optional[str] = None) -> RunSummary:
    """Segment every case of ``input`` into ``output`` (what ``suprem_predict`` runs).

    Outputs land on each input's exact grid (shape, spacing, origin, direction). A case whose output exists is
    skipped unless ``overwrite``; files are written atomically, so a re-run continues an interrupted one. A case
    that fails is recorded and the others still run.

    Parameters
    ----------
    input : str or Path
        An image file, a folder of images (``CASE_0000.nii.gz`` or plain names), a DICOM series folder, or an
        AbdomenAtlas folder (``CASE/ct.nii.gz``).
    output : str or Path
        Output folder, or a ``.nii.gz`` file for a single input.
    model_folder, dataset, plan, suprem, checkpoint, nnunet_model
        The model, exactly one source: ``model_folder`` (``plans.json`` + ``fold_<k>/``); ``dataset`` (+ ``plan``
        when it has several; resolved under ``$SUPREM_RESULTS``; without ``plan`` the configuration
        cross-validation chose, when there is one); ``suprem`` (``"unet"``, ``"segresnet"``, ``"swinunetr"``)
        and/or ``checkpoint`` (a released SuPreM file; without ``checkpoint`` the released one, downloaded on
        first use; without ``suprem`` the family is read from the file), run with SuPreM's direct-inference
        recipe: step 0.25, largest component per organ, the 9 AbdomenAtlas-1.0 organs unless ``classes``; or
        ``nnunet_model`` (a trained nnU-Net v2 folder ``Trainer__Plans__configuration``, run with nnU-Net's own
        preprocessing and export; documentation/nnunet_models.md).
    folds : sequence, optional
        Folds to ensemble (default 0; None with ``nnunet_model``: nnU-Net's 0-4); ``"all"`` allowed.
    checkpoint_name : str
        Checkpoint file inside ``fold_<k>/`` (default ``checkpoint_final.pth``).
    device, step_size, channels_last, engine, windows_per_batch, classes, postprocess, fast, save_probabilities,
    per_class, statistics, preview, num_workers, overwrite, progress
        Fields of :class:`~suprem_nn.inference.settings.PredictionSettings` (documented there).
    disable_tta : bool
        No mirroring test-time augmentation (``PredictionSettings.mirroring=False``).
    bf16, fp32 : bool
        Force bfloat16 autocast or float32 (default: bfloat16 on CUDA and on CPUs with native bfloat16, float32
        elsewhere; nnU-Net models float32 on every CPU).
    part : str or (int, int), optional
        ``"K/N"`` or ``(K, N)``: predict only the K-th of N shares of the cases (:mod:`suprem_nn.inference.parts`).

    Returns
    -------
    RunSummary
        Cases predicted, skipped and failed, and the path of ``run_report.json``.
    """
    from . import sources

    # A SuPreM file alone (--checkpoint without --suprem) is a model source: its family is read from the file.
    released = suprem if suprem is not None else checkpoint
    if sum(x is not None for x in (model_folder, dataset, released, nnunet_model)) != 1:
        raise SupremError("give exactly one model source: -m MODEL_FOLDER, -d DATASET, --suprem BACKBONE, "
                          "--checkpoint SUPREM_FILE or --nnunet-model RESULTS_FOLDER")
    settings = PredictionSettings.from_options(
        device=device, step_size=step_size, disable_tta=disable_tta, bf16=bf16, fp32=fp32,
        channels_last=channels_last, engine=engine, windows_per_batch=windows_per_batch, classes=classes,
        postprocess=postprocess, fast=fast, save_probabilities=save_probabilities, per_class=per_class,
        statistics=statistics, preview=preview, num_workers=num_workers, overwrite=overwrite, part=part,
        progress=progress)
    if nnunet_model is not None:
        return sources.predict_with_nnunet(input, output, nnunet_model, settings, folds, checkpoint_name)
    if released is not None:
        return sources.predict_with_released(input, output, suprem, checkpoint, settings)
    if dataset is not None and plan is None:  # -d without -p: the configuration cross-validation chose, if any
        from .chosen import predict_with_instructions
        from .instructions import find_instructions

        instructions = find_instructions(dataset)
        if instructions is not None:
            return predict_with_instructions(input, output, instructions, settings, folds=folds,
                                             checkpoint_name=checkpoint_name)
    if model_folder is None:
        from .models import resolve_dataset_model

        folder, source = resolve_dataset_model(dataset, plan), f"dataset {dataset} plan {plan or '(only one)'}"
    else:
        folder, source = Path(model_folder), f"model folder {model_folder}"
    return sources.predict_with_model_folder(input, output, folder, settings, folds, checkpoint_name, source)
