"""``evaluate(reference, prediction, ...)``: what ``suprem_evaluate`` runs (:mod:`.evaluate` does the work)."""
from __future__ import annotations

from typing import Optional

from .evaluate import LabelSpec, PathLike, evaluate_folder

__all__ = ["evaluate"]


def evaluate(reference: PathLike, prediction: PathLike, labels: LabelSpec = None, nsd_tolerance_mm: float = 1.0,
             output_dir: Optional[PathLike] = None, num_processes: int = 1, ref_labels: LabelSpec = None,
             pred_labels: LabelSpec = None) -> dict:
    """Score predicted segmentations against references: Dice, IoU and normalised surface Dice per case and class.

    Writes ``summary.json`` and ``metrics.csv`` (one row per case and class); see
    :func:`~suprem_nn.evaluation.evaluate.evaluate_folder` for how cases are paired and failures reported.

    Parameters
    ----------
    reference, prediction : str or Path
        A folder of ``<case>.nii.gz`` label maps, AbdomenAtlas ``<case>/segmentations/<class>.nii.gz`` or
        ``<case>/combined_labels.nii.gz``, one case folder, or one file. Cases are matched by name (two single
        files are paired whatever their names).
    labels : str, Path or dict, optional
        Classes of both sides: ``"liver=1,spleen=2"`` (``"1,2"`` names classes by their value; ``name=1+2`` a
        region), the path of a ``dataset.json`` (nnU-Net v2 ``labels``), ``plans.json`` or ``run_report.json``,
        or a dict. Default: each side's own label file, classes matched by name.
    nsd_tolerance_mm : float
        Surface distance tolerance of the normalised surface Dice, in mm (NSD at one voxel of the coarsest axis,
        ``nsd_1voxel``, is reported as well).
    output_dir : str or Path, optional
        Where the two files go (default: the prediction folder; for a single prediction file or case folder,
        ``<name>_summary.json`` and ``<name>_metrics.csv`` beside it).
    num_processes : int
        Cases evaluated in parallel.
    ref_labels, pred_labels : str, Path or dict, optional
        One side's classes (same forms as ``labels``) when the two sides number them differently.

    Returns
    -------
    dict
        The summary written to ``summary.json``: per-case and mean metrics per class, ``failed_cases``,
        ``warnings`` and ``files`` (where it was written).
    """
    return evaluate_folder(reference, prediction, labels, nsd_tolerance_mm=nsd_tolerance_mm,
                           num_processes=num_processes, output_dir=output_dir, ref_labels=ref_labels,
                           pred_labels=pred_labels)
