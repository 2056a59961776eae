"""The summary of an evaluation (``summary.json``): settings, per-class means over cases, per-case results."""
from __future__ import annotations

import math
import time
from pathlib import Path

from .. import __version__
from . import metrics

SUMMARY_FORMAT_VERSION = 2   # 2: prediction_label, nsd_1voxel, classes matched by name, absent/undeclared flags
EMPTY_CONVENTION = ("reference and prediction both empty -> NaN (null in summary.json, empty in the CSV), "
                    "excluded from means and counted in n_excluded_both_empty; exactly one of them empty -> 0")
NSD_METRICS = ("dice", "iou", "nsd", "nsd_1voxel")
NSD_1VOXEL = ("one voxel of the coarsest axis of each case: tolerance = max(spacing) in mm, so a boundary one "
              "voxel off along any axis counts as correct")


def build_summary(results: list, match, reference: Path, prediction: Path, tol: float, missing_pred: list,
                  missing_ref: list, seconds: float) -> dict:
    """The ``summary.json`` dict of the scored cases.

    Parameters
    ----------
    results : list of dict
        One per case, from ``evaluate_case``.
    match : LabelMatch
        The :class:`~suprem_nn.evaluation.label_names.LabelMatch` the cases were scored with; with no class names
        (``match.classes`` None) every value found in any case is a class named by its number.
    reference, prediction : Path
        The two sides as given.
    tol : float
        The NSD tolerance in mm.
    missing_pred, missing_ref : list of str
        Case ids found on one side only.
    seconds : float
        Wall time of the evaluation.

    Returns
    -------
    dict
        Settings, per-case results, per-class means (NaN-skipping, with counts) and data checks; NaN kept (the
        writer makes it JSON-safe).
    """
    if match.classes is None:
        values = sorted({int(c["label"]) for r in results for c in r["classes"].values()})
        names = [str(v) for v in values]
        label_values = {str(v): v for v in values}
        for r in results:   # classes absent from a case on both sides: both empty -> NaN
            for n in names:
                if n not in r["classes"]:
                    res = metrics.class_result(metrics.ClassCounts(0, 0, 0), math.nan, {"nsd_1voxel": math.nan})
                    res.update(label=int(n), prediction_label=int(n), reference_ml=0.0, prediction_ml=0.0)
                    r["classes"][n] = res
            r["classes"] = {n: r["classes"][n] for n in names}
        pred_values = dict(label_values)
    else:
        names, label_values, pred_values = list(match.classes), dict(match.classes), dict(match.pred_classes)
    mean = {}
    for n in names:
        entry = {"label": label_values[n], "prediction_label": pred_values[n]}
        for metric in NSD_METRICS:
            m, used, skipped = metrics.nanmean_with_count(r["classes"][n][metric] for r in results)
            entry[metric] = m
        entry["n_cases"] = used
        entry["n_excluded_both_empty"] = skipped
        mean[n] = entry
    fg = {}
    for metric in NSD_METRICS:
        fg[metric] = metrics.nanmean_with_count(mean[n][metric] for n in names)[0]
    fg["n_classes"] = sum(1 for n in names if not math.isnan(mean[n]["dice"]))
    voxel_tols = sorted({r["nsd_1voxel_tolerance_mm"] for r in results})
    settings = {"reference_dir": str(reference), "prediction_dir": str(prediction), "nsd_tolerance_mm": tol,
                "nsd_1voxel_tolerance": NSD_1VOXEL, "nsd_1voxel_tolerance_mm": voxel_tols,
                "nsd_note": nsd_note(tol, voxel_tols), **match.settings(),
                "empty_mask_convention": EMPTY_CONVENTION,
                "surface": "boundary voxels (mask minus its 6-connected erosion), Euclidean distances in mm"}
    settings["labels"], settings["prediction_labels"] = label_values, pred_values
    return {
        "tool": "suprem_nn", "version": __version__, "format_version": SUMMARY_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "num_cases": len(results),
        "missing_predictions": missing_pred,
        "missing_references": missing_ref,
        "foreground_mean": fg,
        "mean": mean,
        "cases": {r["case"]: r for r in results},
        "seconds": round(seconds, 3),
    }


def nsd_note(tol: float, voxel_tols: list) -> str:
    """Why NSD at ``tol`` mm can sit far below Dice: one sentence for the summary and the console.

    Parameters
    ----------
    tol : float
        The NSD tolerance in mm.
    voxel_tols : list of float
        Each case's one-voxel tolerance in mm (its coarsest voxel size).

    Returns
    -------
    str
    """
    coarsest = max(voxel_tols) if voxel_tols else 0.0
    if tol + 1e-6 >= coarsest:
        return (f"NSD@{tol:g}mm allows at least one voxel on every axis (coarsest voxel {coarsest:g} mm); "
                "nsd_1voxel is at most as strict")
    return (f"NSD@{tol:g}mm is stricter than one voxel here (coarsest axis {coarsest:g} mm): a boundary one voxel "
            f"off along it counts as wrong, so NSD@{tol:g}mm can sit far below Dice; nsd_1voxel (NSD@1vox) forgives "
            "one-voxel disagreements")
