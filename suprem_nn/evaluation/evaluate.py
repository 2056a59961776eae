"""Evaluate a folder of predicted segmentations against a folder of reference segmentations.

Accepted layouts (on either side, mixed freely; cases are matched by case id):

* ``FOLDER/<case>.nii.gz`` (any ending of :data:`suprem_nn.io.image_io.IMAGE_ENDINGS`): one integer label map
  per case (nnU-Net ``labelsTr`` / prediction folders). The case id is the file name without its ending.
* ``FOLDER/<case>/segmentations/<class name>.nii.gz``: AbdomenAtlas / SuPreM layout, one binary mask per class
  (masks may overlap). The case id is the folder name; classes are matched by name.
* ``FOLDER/<case>/combined_labels.nii.gz``: an AbdomenAtlas label map, used when ``segmentations/`` is absent.

Files that are not images (``summary.json``, ``*.npz``, ``plans.json``...) and hidden or ``.tmp-*`` files are
ignored. Metrics and the empty-mask convention are those of :mod:`suprem_nn.evaluation.metrics`.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from .. import __version__
from ..errors import SupremError
from ..io.geometry import Geometry
from ..io.image_io import image_ending, read_image, strip_ending
from ..utils.atomic import atomic_write_json, atomic_write_text
from . import metrics
from .report import CSV_COLUMNS, csv_text, format_table, json_safe  # noqa: F401 (re-exported for callers)
from .labels import labels_from_json, parse_label_spec, validate_labels  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
CSV_FILE = "metrics.csv"
SUMMARY_FORMAT_VERSION = 1
EMPTY_CONVENTION = ("reference and prediction both empty -> NaN (null in summary.json, empty in the CSV), "
                    "excluded from means and counted in n_excluded_both_empty; exactly one of them empty -> 0")

LabelSpec = Union[str, os.PathLike, Mapping[str, Union[int, list]], None]


@dataclass(frozen=True)
class CaseSource:
    """Where one case's segmentation lives: a label map file, or one mask file per class name."""

    case_id: str
    label_map: Optional[Path] = None
    masks: dict = field(default_factory=dict)   # class name -> Path (AbdomenAtlas segmentations/)
    folder: Optional[Path] = None               # the case folder for the AbdomenAtlas layouts

    @property
    def display(self) -> str:
        return str(self.label_map) if self.label_map is not None else str(self.folder / "segmentations")


# ----------------------------------------------------------------------------------------------- public API

def evaluate(reference_dir: Union[str, os.PathLike], prediction_dir: Union[str, os.PathLike],
             labels: LabelSpec = None, nsd_tolerance_mm: float = 1.0, output_dir: Union[str, os.PathLike, None] = None,
             num_processes: int = 1) -> dict:
    """What ``suprem_evaluate`` runs: resolve ``labels`` (a spec string, a JSON path or a dict), then
    :func:`evaluate_folder`. Returns the summary dict that was written to ``summary.json``.

    ``labels`` as a string: ``"liver=1,spleen=2"`` (``"1,2"`` names classes by their value), or the path of
    a ``dataset.json`` (``labels`` name -> value, nnU-Net v2; value -> name also accepted) or a ``plans.json``
    (``class_names`` with ``label_values``).
    """
    if labels is None or isinstance(labels, Mapping):
        classes, source = labels, "argument"
    else:
        classes, source = parse_label_spec(labels)
    return evaluate_folder(reference_dir, prediction_dir, classes, nsd_tolerance_mm=nsd_tolerance_mm,
                           num_processes=num_processes, output_dir=output_dir, _label_source=source)


def evaluate_folder(reference_dir: Union[str, os.PathLike], prediction_dir: Union[str, os.PathLike],
                    labels: Optional[Mapping[str, Union[int, list]]] = None, nsd_tolerance_mm: float = 1.0,
                    num_processes: int = 1, output_dir: Union[str, os.PathLike, None] = None,
                    _label_source: str = "argument") -> dict:
    """Evaluate every case present in both folders; write ``summary.json`` and ``metrics.csv``.

    ``labels`` maps class name -> label value (or a list of values: a region). Without it, the labels of a
    ``dataset.json`` in or next to ``reference_dir`` are used, else the mask names of AbdomenAtlas folders,
    else every non-zero value found in the label maps (named by the value). Cases found on one side only are
    listed in the summary (``missing_predictions`` / ``missing_references``) and skipped; no common case is
    an error. A case whose files are bad (unreadable, other grid, non-integer labels) is listed under
    ``failed_cases`` (case -> message) and the others are still evaluated; when every case fails, the (first)
    failure is raised. Outputs go to ``output_dir`` (default: ``prediction_dir``). Returns the summary dict.
    """
    t0 = time.perf_counter()
    reference_dir, prediction_dir = Path(reference_dir), Path(prediction_dir)
    tol = _check_tolerance(nsd_tolerance_mm)
    if int(num_processes) < 1:
        raise SupremError(f"number of processes must be >= 1, got {num_processes}")
    refs = discover_cases(reference_dir, "reference")
    preds = discover_cases(prediction_dir, "prediction")
    common = sorted(set(refs) & set(preds))
    missing_pred = sorted(set(refs) - set(preds))
    missing_ref = sorted(set(preds) - set(refs))
    if not common:
        raise SupremError(f"no case in common with the reference folder {reference_dir} "
                          f"(reference cases: {_preview(sorted(refs))}; prediction cases: {_preview(sorted(preds))})",
                          prediction_dir)
    if missing_pred:
        log.warning("%d reference case(s) have no prediction and are skipped: %s", len(missing_pred),
                    _preview(missing_pred))
    if missing_ref:
        log.warning("%d prediction(s) have no reference case and are skipped: %s", len(missing_ref),
                    _preview(missing_ref))

    if labels is not None:
        classes, label_source = validate_labels(labels, _label_source), _label_source
    else:
        classes, label_source = _default_labels(reference_dir, [refs[c] for c in common], [preds[c] for c in common])
    uses_masks = any(refs[c].label_map is None or preds[c].label_map is None for c in common)
    if uses_masks and classes is None:
        raise SupremError("AbdomenAtlas mask folders are compared with label maps, so class names must be mapped "
                          "to label values: pass -l name=value,... or a dataset.json", reference_dir)

    jobs = [(refs[c], preds[c], classes, tol) for c in common]
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
    for message in failed.values():
        log.error("failed: %s", message)
    summary = _summarise(results, classes, label_source, reference_dir, prediction_dir, tol, missing_pred,
                         missing_ref, time.perf_counter() - t0)
    summary["failed_cases"] = failed
    out = Path(output_dir) if output_dir is not None else prediction_dir
    atomic_write_json(out / SUMMARY_FILE, json_safe(summary))
    atomic_write_text(out / CSV_FILE, csv_text(summary))
    summary["files"] = {"summary": str(out / SUMMARY_FILE), "csv": str(out / CSV_FILE)}
    return summary


def evaluate_case(reference: CaseSource, prediction: CaseSource, classes: Optional[Mapping[str, object]],
                  nsd_tolerance_mm: float = 1.0) -> dict:
    """Metrics of one case: ``{"case", "reference", "prediction", "spacing", "classes": {name: {...}}}``.

    Raises :class:`SupremError` naming both files when their grids differ, and naming the file for
    unreadable or non-integer segmentations.
    """
    tol = _check_tolerance(nsd_tolerance_mm)
    missing: dict = {}
    if reference.label_map is not None and prediction.label_map is not None:
        ref, ref_geo = _read_label_map(reference.label_map)
        pred, pred_geo = _read_label_map(prediction.label_map)
        _check_same_grid(ref_geo, reference.label_map, pred_geo, prediction.label_map)
        if classes is None:
            classes = {str(v): v for v in metrics.present_labels(ref, pred)}
        per_class = metrics.evaluate_label_maps(ref, pred, classes, ref_geo.spacing[::-1], tol)
    else:
        if classes is None:
            raise SupremError("class names are needed to compare AbdomenAtlas mask folders; pass -l", reference.folder)
        per_class, ref_geo, missing = _evaluate_with_masks(reference, prediction, classes, tol)
        if missing:
            for role, names in missing.items():
                log.warning("case %s: no %s mask file for %s; counted as empty", reference.case_id, role,
                            _preview(names))
    voxel_ml = float(np.prod(ref_geo.spacing)) / 1000.0
    for name, r in per_class.items():
        r["label"] = classes[name] if classes is not None else int(name)
        r["reference_ml"] = r["n_ref"] * voxel_ml
        r["prediction_ml"] = r["n_pred"] * voxel_ml
    result = {"case": reference.case_id, "reference": reference.display, "prediction": prediction.display,
              "spacing": list(ref_geo.spacing), "shape": list(ref_geo.shape), "classes": per_class}
    if missing:
        result["missing_mask_files"] = missing
    return result


def discover_cases(folder: Union[str, os.PathLike], role: str = "reference") -> dict[str, CaseSource]:
    """Case id -> :class:`CaseSource` for every segmentation in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    if not folder.exists():
        raise SupremError(f"{role} folder not found", folder)
    if not folder.is_dir():
        raise SupremError(f"{role} path is not a folder", folder)
    found: dict[str, CaseSource] = {}

    def add(src: CaseSource, where: Path) -> None:
        if src.case_id in found:
            raise SupremError(f"case '{src.case_id}' appears twice in the {role} folder "
                              f"({found[src.case_id].display} and {where}); keep one", folder)
        found[src.case_id] = src

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and image_ending(entry):
            add(CaseSource(strip_ending(entry), label_map=entry), entry)
        elif entry.is_dir():
            seg_dir = entry / "segmentations"
            masks = {}
            if seg_dir.is_dir():
                for m in sorted(seg_dir.iterdir()):
                    if m.is_file() and image_ending(m) and not m.name.startswith("."):
                        name = strip_ending(m)
                        if name in masks:
                            raise SupremError(f"two mask files for class '{name}' ({masks[name].name} and {m.name})",
                                              seg_dir)
                        masks[name] = m
            if masks:
                add(CaseSource(entry.name, masks=masks, folder=entry), seg_dir)
                continue
            combined = [p for p in sorted(entry.iterdir()) if p.is_file() and strip_ending(p) == "combined_labels"
                        and image_ending(p)]
            if combined:
                add(CaseSource(entry.name, label_map=combined[0], folder=entry), combined[0])
    if not found:
        raise SupremError(f"no {role} segmentations found (expected <case>.nii.gz files, <case>/segmentations/"
                          "<class>.nii.gz or <case>/combined_labels.nii.gz)", folder)
    return found


# ----------------------------------------------------------------------------------------------- internals

def _evaluate_case_job(job) -> dict:
    try:
        return evaluate_case(*job)
    except SupremError as exc:  # a user-caused problem of this case only; bugs still propagate
        return {"case": job[0].case_id, "error": str(exc)}


class _Side:
    """One side of a case on the per-class path: a label map (read once) or a folder of mask files."""

    def __init__(self, src: CaseSource, role: str):
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


def _evaluate_with_masks(reference: CaseSource, prediction: CaseSource, classes, tol) -> tuple[dict, Geometry, dict]:
    """Per-class path (at least one side is an AbdomenAtlas mask folder): each class is cut out of its box."""
    ref, pred = _Side(reference, "reference"), _Side(prediction, "prediction")
    per_class = {}
    for name, value in classes.items():
        (ref_fn, ref_box), (pred_fn, pred_box) = ref.mask(name, value), pred.mask(name, value)
        if ref.geo is not None and pred.geo is not None:
            _check_same_grid(ref.geo, ref.geo_path, pred.geo, pred.geo_path)
        geo = ref.geo or pred.geo
        box = None if geo is None else metrics.union_box(ref_box, pred_box, geo.shape[::-1], pad=1)
        if box is None:
            per_class[name] = metrics.class_result(metrics.ClassCounts(0, 0, 0), math.nan)
            continue
        shape = tuple(s.stop - s.start for s in box)
        r = ref_fn(box) if ref_fn is not None else np.zeros(shape, dtype=bool)
        p = pred_fn(box) if pred_fn is not None else np.zeros(shape, dtype=bool)
        counts = metrics.ClassCounts(int(np.count_nonzero(r & p)), int(np.count_nonzero(r)), int(np.count_nonzero(p)))
        per_class[name] = metrics.class_result(counts, metrics.surface_dice_in_box(r, p, geo.spacing[::-1], tol))
    for side in (ref, pred):
        if side.map is None and len(side.missing) == len(classes):
            raise SupremError(f"no mask file for any class to evaluate ({_preview(list(classes))}); found "
                              f"{_preview(sorted(side.src.masks))}", side.src.folder / "segmentations")
    missing = {side.role: side.missing for side in (ref, pred) if side.missing}
    return per_class, ref.geo or pred.geo, missing


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


def _default_labels(reference_dir: Path, refs: list[CaseSource], preds: list[CaseSource]):
    for candidate in (reference_dir / "dataset.json", reference_dir.parent / "dataset.json"):
        if candidate.is_file():
            return labels_from_json(candidate), str(candidate)
    mask_names: list[str] = []
    for src in refs + preds:
        for name in src.masks:
            if name not in mask_names:
                mask_names.append(name)
    if mask_names and all(s.label_map is None for s in refs + preds):
        # both sides are mask folders: every class name of the reference side (then any extra of the predictions)
        ref_names = [n for n in mask_names if any(n in s.masks for s in refs)]
        return {n: i + 1 for i, n in enumerate(sorted(ref_names))}, "mask file names of the reference folders"
    return None, "label values found in the data"


def _summarise(results, classes, label_source, reference_dir, prediction_dir, tol, missing_pred, missing_ref,
               seconds) -> dict:
    if classes is None:
        values = sorted({int(v) for r in results for v in (c["label"] for c in r["classes"].values())})
        names = [str(v) for v in values]
        label_values = {str(v): v for v in values}
        for r in results:   # classes absent from a case on both sides: both empty -> NaN
            for n in names:
                if n not in r["classes"]:
                    res = metrics.class_result(metrics.ClassCounts(0, 0, 0), math.nan)
                    res.update(label=int(n), reference_ml=0.0, prediction_ml=0.0)
                    r["classes"][n] = res
            r["classes"] = {n: r["classes"][n] for n in names}
    else:
        names, label_values = list(classes), dict(classes)
    mean = {}
    for n in names:
        entry = {"label": label_values[n]}
        for metric in ("dice", "iou", "nsd"):
            m, used, skipped = metrics.nanmean_with_count(r["classes"][n][metric] for r in results)
            entry[metric] = m
        entry["n_cases"] = used
        entry["n_excluded_both_empty"] = skipped
        mean[n] = entry
    fg = {}
    for metric in ("dice", "iou", "nsd"):
        fg[metric] = metrics.nanmean_with_count(mean[n][metric] for n in names)[0]
    fg["n_classes"] = sum(1 for n in names if not math.isnan(mean[n]["dice"]))
    return {
        "tool": "suprem_nn", "version": __version__, "format_version": SUMMARY_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"reference_dir": str(reference_dir), "prediction_dir": str(prediction_dir),
                     "nsd_tolerance_mm": tol, "labels": label_values, "label_source": label_source,
                     "empty_mask_convention": EMPTY_CONVENTION,
                     "surface": "boundary voxels (mask minus its 6-connected erosion), Euclidean distances in mm"},
        "num_cases": len(results),
        "missing_predictions": missing_pred,
        "missing_references": missing_ref,
        "foreground_mean": fg,
        "mean": mean,
        "cases": {r["case"]: r for r in results},
        "seconds": round(seconds, 3),
    }


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
