"""Evaluate predicted segmentations against reference segmentations: folders, case folders or single files.

What each side may be: :mod:`suprem_nn.evaluation.cases` (``<case>.nii.gz`` label maps, AbdomenAtlas
``<case>/segmentations/<class>.nii.gz`` or ``<case>/combined_labels.nii.gz``, one case folder, one file).
Which classes are compared, matched by NAME between the two sides' label files:
:mod:`suprem_nn.evaluation.label_names`. Metrics and the empty-mask convention:
:mod:`suprem_nn.evaluation.metrics`; the summary: :mod:`suprem_nn.evaluation.summary`.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from ..errors import SupremError
from ..io.geometry import Geometry
from ..io.image_io import read_image, strip_ending
from ..utils.atomic import atomic_write_json, atomic_write_text
from . import metrics
from .cases import CaseSegmentation, discover_cases, find_side, pair_sides  # noqa: F401 (re-exported for callers)
from .label_names import data_checks, match_classes
from .report import CSV_COLUMNS, csv_text, format_table, json_safe  # noqa: F401 (re-exported for callers)
from .labels import labels_from_json, parse_label_spec, validate_labels  # noqa: F401 (re-exported)
from .summary import EMPTY_CONVENTION, SUMMARY_FORMAT_VERSION, build_summary  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
CSV_FILE = "metrics.csv"

LabelSpec = Union[str, os.PathLike, Mapping[str, Union[int, list]], None]
PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------- public API

def evaluate_folder(reference_dir: PathLike, prediction_dir: PathLike, labels: LabelSpec = None,
                    nsd_tolerance_mm: float = 1.0, num_processes: int = 1, output_dir: Optional[PathLike] = None,
                    ref_labels: LabelSpec = None, pred_labels: LabelSpec = None) -> dict:
    """Evaluate every case present on both sides; write ``summary.json`` and ``metrics.csv``.

    ``reference_dir`` / ``prediction_dir``: folders of cases, single case folders or single files
    (:mod:`~suprem_nn.evaluation.cases`). ``labels`` (both sides), ``ref_labels``, ``pred_labels``: label specs
    (see :func:`suprem_nn.evaluation.api.evaluate`); without them each side's label names are read from the label files near it and
    classes are matched by name (:mod:`~suprem_nn.evaluation.label_names`); with none anywhere, every non-zero
    value found is evaluated under its number. NSD is reported at ``nsd_tolerance_mm`` (mm) and at one voxel of
    each case's coarsest axis (``nsd_1voxel``). Cases found on one side only are listed in the summary
    (``missing_predictions`` / ``missing_references``) and skipped; no common case is an error. A case whose
    files are bad (unreadable, other grid, non-integer labels) is listed under ``failed_cases`` (case ->
    message) and the others are still evaluated; when every case fails, the (first) failure is raised.

    Outputs go to ``output_dir``; by default to the prediction folder, or for a single prediction (file or case
    folder) beside it as ``<name>_summary.json`` / ``<name>_metrics.csv`` so a folder's summary is never
    overwritten. Returns the summary dict (with ``files``: where it was written).
    """
    t0 = time.perf_counter()
    tol = _check_tolerance(nsd_tolerance_mm)
    if int(num_processes) < 1:
        raise SupremError(f"number of processes must be >= 1, got {num_processes}")
    ref_side, pred_side = find_side(reference_dir, "reference"), find_side(prediction_dir, "prediction")
    refs, preds = pair_sides(ref_side, pred_side)
    common = sorted(set(refs) & set(preds))
    missing_pred = sorted(set(refs) - set(preds))
    missing_ref = sorted(set(preds) - set(refs))
    if not common:
        raise SupremError(f"no case in common with the reference folder {ref_side.path} "
                          f"(reference cases: {_preview(sorted(refs))}; prediction cases: {_preview(sorted(preds))})",
                          pred_side.path)
    if missing_pred:
        log.warning("%d reference case(s) have no prediction and are skipped: %s", len(missing_pred),
                    _preview(missing_pred))
    if missing_ref:
        log.warning("%d prediction(s) have no reference case and are skipped: %s", len(missing_ref),
                    _preview(missing_ref))
    match = match_classes(ref_side, pred_side, labels, ref_labels, pred_labels,
                          _mask_names([refs[c] for c in common]), _mask_names([preds[c] for c in common]))

    jobs = [(refs[c], preds[c], match.classes, tol, match.pred_classes) for c in common]
    if int(num_processes) > 1 and len(jobs) > 1:
        # spawn: safe even when the caller (e.g. a trainer) has torch threads running.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(int(num_processes), len(jobs)), mp_context=ctx) as pool:
            results = list(pool.map(_evaluate_case_job, jobs))
    else:
        results = [_evaluate_case_job(j) for j in jobs]

    # One bad file must not cost the metrics of every other case: failed cases are listed, not fatal,
    # unless nothing could be evaluated (then the first failure is the error, as for a single case).
    failed = {r["case"]: r["error"] for r in results if "error" in r}
    results = [r for r in results if "error" not in r]
    if not results:
        first = next(iter(failed.values()))
        raise SupremError(first if len(failed) == 1 else f"all {len(failed)} cases failed; the first: {first}")
    for message in failed.values():  # said once, by suprem_evaluate at the end; the summary lists them too
        log.debug("failed: %s", message)
    summary = build_summary(results, match, ref_side.path, pred_side.path, tol, missing_pred, missing_ref,
                            time.perf_counter() - t0)
    checks = data_checks(summary, match)
    for name in summary["mean"]:
        summary["mean"][name]["absent_everywhere"] = name in checks["absent_classes"]
    summary.update(absent_classes=checks["absent_classes"], undeclared_values=checks["undeclared_values"],
                   warnings=match.warnings + checks["warnings"], failed_cases=failed)
    summary_path, csv_path = _output_files(output_dir, pred_side)
    atomic_write_json(summary_path, json_safe(summary))
    atomic_write_text(csv_path, csv_text(summary))
    summary["files"] = {"summary": str(summary_path), "csv": str(csv_path)}
    return summary


def evaluate_case(reference: CaseSegmentation, prediction: CaseSegmentation, classes: Optional[Mapping[str, object]],
                  nsd_tolerance_mm: float = 1.0, pred_classes: Optional[Mapping[str, object]] = None) -> dict:
    """Metrics of one case: ``{"case", "reference", "prediction", "spacing", "shape", "nsd_1voxel_tolerance_mm",
    "values_found", "classes": {name: {...}}}``.

    ``classes``: name -> label value in the reference (None: every value found, named by its number);
    ``pred_classes``: the same names' values in the prediction when it numbers classes differently (default:
    ``classes``); a side of AbdomenAtlas masks ignores values. ``spacing`` and ``shape`` are in the file's
    (x, y, z) axis order, spacing in mm. ``values_found``: label values present in each label-map side.
    Raises :class:`SupremError` naming both files when their grids differ, and naming the file for unreadable
    or non-integer segmentations.
    """
    tol = _check_tolerance(nsd_tolerance_mm)
    missing: dict = {}
    if reference.label_map is not None and prediction.label_map is not None:
        ref, ref_geo = _read_label_map(reference.label_map)
        pred, pred_geo = _read_label_map(prediction.label_map)
        _check_same_grid(ref_geo, reference.label_map, pred_geo, prediction.label_map)
        confusion = metrics.label_map_counts(ref, pred)
        found = {"reference": [int(v) for v in np.flatnonzero(confusion.sum(axis=1)) if v > 0],
                 "prediction": [int(v) for v in np.flatnonzero(confusion.sum(axis=0)) if v > 0]}
        if classes is None:
            classes = pred_classes = {str(v): v for v in sorted(set(found["reference"]) | set(found["prediction"]))}
        voxel_tol = metrics.one_voxel_tolerance_mm(ref_geo.spacing)
        per_class = metrics.evaluate_label_maps(ref, pred, classes, ref_geo.spacing[::-1], tol, pred_classes,
                                                {"nsd_1voxel": voxel_tol}, confusion=confusion)
    else:
        if classes is None:
            raise SupremError("class names are needed to compare AbdomenAtlas mask folders; pass -l", reference.folder)
        per_class, ref_geo, missing, found = _evaluate_with_masks(reference, prediction, classes,
                                                                  pred_classes or classes, tol)
        voxel_tol = metrics.one_voxel_tolerance_mm(ref_geo.spacing)
        if missing:
            for role, names in missing.items():
                log.warning("case %s: no %s mask file for %s; counted as empty", reference.case_id, role,
                            _preview(names))
    voxel_ml = float(np.prod(ref_geo.spacing)) / 1000.0
    for name, r in per_class.items():
        r["label"] = classes[name]
        r["prediction_label"] = (pred_classes or classes)[name]
        r["reference_ml"] = r["n_ref"] * voxel_ml
        r["prediction_ml"] = r["n_pred"] * voxel_ml
    result = {"case": reference.case_id, "reference": reference.display, "prediction": prediction.display,
              "spacing": list(ref_geo.spacing), "shape": list(ref_geo.shape), "nsd_1voxel_tolerance_mm": voxel_tol,
              "values_found": found, "classes": per_class}
    if missing:
        result["missing_mask_files"] = missing
    return result


# ----------------------------------------------------------------------------------------------- internals

def _evaluate_case_job(job) -> dict:
    try:
        return evaluate_case(*job)
    except SupremError as exc:  # a user-caused problem of this case only; bugs still propagate
        return {"case": job[0].case_id, "error": str(exc)}


class _Side:
    """One side of a case on the per-class path: a label map (read once) or a folder of mask files."""

    def __init__(self, src: CaseSegmentation, role: str):
        self.src, self.role = src, role
        self.geo: Optional[Geometry] = None
        self.geo_path: Optional[Path] = None
        self.map = self.boxes = None
        self.missing: list[str] = []
        if src.label_map is not None:
            self.map, self.geo = _read_label_map(src.label_map)
            self.geo_path = src.label_map
            self.boxes = metrics.label_boxes(self.map)

    def mask(self, name: str, value) -> tuple[Optional[object], Optional[metrics.Box]]:
        """``(crop -> bool mask of that crop, tight box)``; ``(None, None)`` for an empty or missing mask."""
        if self.map is not None:
            values = value if isinstance(value, list) else [value]
            box = None
            for v in values:
                box = metrics.union_box(box, self.boxes.get(v), self.map.shape, pad=0)
            if box is None:
                return None, None
            return (lambda crop: np.isin(self.map[crop], values)), box
        path = self.src.masks.get(name)
        if path is None:
            self.missing.append(name)   # no file for this class: an empty mask (listed in the case result)
            return None, None
        arr, geo = _read_mask(path)
        if self.geo is None:
            self.geo, self.geo_path = geo, path
        else:
            _check_same_grid(self.geo, self.geo_path, geo, path)
        box = metrics.bounding_box(arr)
        return ((lambda crop: arr[crop]) if box is not None else None), box


def _evaluate_with_masks(reference: CaseSegmentation, prediction: CaseSegmentation, classes, pred_classes,
                         tol) -> tuple[dict, Geometry, dict, dict]:
    """Per-class path (at least one side is an AbdomenAtlas mask folder): each class is cut out of its box.

    Returns ``(per-class results, geometry, missing mask files per side, label values found per label-map side)``.
    """
    ref, pred = _Side(reference, "reference"), _Side(prediction, "prediction")
    per_class = {}
    for name, value in classes.items():
        (ref_fn, ref_box), (pred_fn, pred_box) = ref.mask(name, value), pred.mask(name, pred_classes[name])
        if ref.geo is not None and pred.geo is not None:
            _check_same_grid(ref.geo, ref.geo_path, pred.geo, pred.geo_path)
        geo = ref.geo or pred.geo
        box = None if geo is None else metrics.union_box(ref_box, pred_box, geo.shape[::-1], pad=1)
        if box is None:
            per_class[name] = metrics.class_result(metrics.ClassCounts(0, 0, 0), math.nan, {"nsd_1voxel": math.nan})
            continue
        shape = tuple(s.stop - s.start for s in box)
        r = ref_fn(box) if ref_fn is not None else np.zeros(shape, dtype=bool)
        p = pred_fn(box) if pred_fn is not None else np.zeros(shape, dtype=bool)
        counts = metrics.ClassCounts(int(np.count_nonzero(r & p)), int(np.count_nonzero(r)), int(np.count_nonzero(p)))
        nsd, nsd_voxel = metrics.surface_dices_in_box(r, p, geo.spacing[::-1],
                                                      [tol, metrics.one_voxel_tolerance_mm(geo.spacing)])
        per_class[name] = metrics.class_result(counts, nsd, {"nsd_1voxel": nsd_voxel})
    for side in (ref, pred):
        if side.map is None and len(side.missing) == len(classes):
            raise SupremError(f"no mask file for any class to evaluate ({_preview(list(classes))}); found "
                              f"{_preview(sorted(side.src.masks))}", side.src.folder / "segmentations")
    missing = {side.role: side.missing for side in (ref, pred) if side.missing}
    found = {side.role: sorted(int(v) for v in side.boxes) for side in (ref, pred) if side.boxes is not None}
    return per_class, ref.geo or pred.geo, missing, found


# Arrays read here are returned with their axes REVERSED ([k, j, i]; the geometry stays as read): read_image
# gives a transposed view of ITK's C-ordered buffer, whose .T is C-contiguous for free, and bincount /
# find_objects / erosion run several times faster in memory order. Metrics are invariant when axes and spacing
# are reversed together, so metric calls below pass ``geo.spacing[::-1]`` and ``geo.shape[::-1]``.

def _read_label_map(path: Path) -> tuple[np.ndarray, Geometry]:
    arr, geo = read_image(path)
    return np.ascontiguousarray(_as_labels(arr, path).T), geo


def _read_mask(path: Path) -> tuple[np.ndarray, Geometry]:
    arr, geo = read_image(path)
    return np.ascontiguousarray((_as_labels(arr, path) > 0).T), geo


def _as_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer label values (>= 0) of a segmentation file; SupremError naming the file otherwise."""
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise SupremError("segmentation holds non-integer values (a probability map?); expected integer "
                              "labels", path)
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise SupremError(f"segmentation has voxel type {arr.dtype}; expected integer labels", path)
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise SupremError(f"segmentation holds negative label {int(arr.min())}", path)
    if arr.size and int(arr.max()) > 65535:
        raise SupremError(f"segmentation holds label value {int(arr.max())}; values above 65535 are not labels",
                          path)
    return arr.astype(np.uint16 if int(arr.max(initial=0)) > 255 else np.uint8, copy=False)


def _check_same_grid(ref_geo: Geometry, ref_path, pred_geo: Geometry, pred_path) -> None:
    if ref_geo.same_grid(pred_geo):
        return
    diffs = []
    if tuple(ref_geo.shape) != tuple(pred_geo.shape):
        diffs.append(f"shape {tuple(pred_geo.shape)} vs {tuple(ref_geo.shape)}")
    for key in ("spacing", "origin", "direction"):
        a, b = np.asarray(getattr(pred_geo, key)), np.asarray(getattr(ref_geo, key))
        if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
            diffs.append(f"{key} {_round(a)} vs {_round(b)}")
    raise SupremError(f"not on the grid of its reference {ref_path} ({'; '.join(diffs)}); resample the prediction "
                      "to the reference image grid", pred_path)


def _mask_names(sources: list[CaseSegmentation]) -> tuple:
    """Class names of a side's AbdomenAtlas mask files (first seen first); () unless every case is a mask folder."""
    if not sources or any(not s.masks for s in sources):
        return ()
    return tuple(dict.fromkeys(n for s in sources for n in s.masks))


def _output_files(output_dir: Optional[PathLike], pred_side) -> tuple[Path, Path]:
    """Where summary.json and metrics.csv go (see :func:`evaluate_folder`)."""
    if output_dir is not None:
        return Path(output_dir) / SUMMARY_FILE, Path(output_dir) / CSV_FILE
    if not pred_side.single:
        return pred_side.path / SUMMARY_FILE, pred_side.path / CSV_FILE
    stem = strip_ending(pred_side.path) if pred_side.path.is_file() else pred_side.path.name
    return (pred_side.path.parent / f"{stem}_{SUMMARY_FILE}", pred_side.path.parent / f"{stem}_{CSV_FILE}")


def _check_tolerance(tol) -> float:
    try:
        t = float(tol)
    except (TypeError, ValueError):
        raise SupremError(f"NSD tolerance must be a number of mm, got {tol!r}") from None
    if not math.isfinite(t) or t < 0:
        raise SupremError(f"NSD tolerance must be a finite number of mm >= 0, got {tol}")
    return t


def _round(a: np.ndarray) -> list:
    return [round(float(x), 4) for x in np.asarray(a).reshape(-1)]


def _preview(items: list, n: int = 5) -> str:
    if not items:
        return "none"
    head = ", ".join(items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")
