"""Dataset fingerprint: what the planner needs to know about the data, measured once and saved as JSON.

Per case: spacing and shape (per array axis after reorientation to ``orientation``),
shape after crop-to-nonzero and after crop-to-body (> -175 HU), per-class voxel
counts and voxels where masks overlap. Per channel: foreground intensity
statistics (mean, median, std, min, max, percentiles 0.5/99.5) from a fixed-size,
seeded sample of labelled voxels of every case (drawn with replacement, so small
cases count as much as large ones, as in nnU-Net).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..io.cropping import foreground_box
from ..io.geometry import apply_reorientation, plan_reorientation, reoriented_geometry
from ..utils.atomic import atomic_write_json, atomic_write_with

BODY_THRESHOLD_HU = -175.0
INTENSITY_SAMPLES_TOTAL = 10_000_000
SAMPLE_SEED = 1234


def case_fingerprint(images: list[np.ndarray], geometry, label: Optional[np.ndarray], multilabel_masks: bool,
                     num_classes: int, label_values: list[int], samples: int, orientation: str = "RAS") -> dict:
    """Measure one case (see the module docstring for what is measured).

    Parameters
    ----------
    images : list of numpy.ndarray
        One array ``(i, j, k)`` per channel in the file's axis order and raw units (HU for CT).
    geometry : Geometry
        Their grid (spacing in mm).
    label : numpy.ndarray, optional
        An exclusive label map ``(i, j, k)``, or with ``multilabel_masks`` binary masks ``(K, i, j, k)``.
    multilabel_masks : bool
        ``label`` holds one mask per class (they may overlap).
    num_classes : int
        K, the foreground classes.
    label_values : list of int
        The label map value of each class (exclusive maps).
    samples : int
        Foreground intensity samples to draw per channel (:func:`samples_per_case`).
    orientation : str
        The orientation the shapes and spacings are measured in (array axes after reorientation).

    Returns
    -------
    dict
        ``spacing`` (mm) and ``shape`` per reoriented axis, ``file_orientation``, shapes after crop-to-nonzero
        and crop-to-body, ``class_voxels``, ``overlap_voxels``, ``overlap_pairs`` and ``intensity_samples`` (one
        float32 array per channel; absent without ``label``).
    """
    reo = plan_reorientation(geometry, orientation)
    geom = reoriented_geometry(geometry, reo)
    stacked = apply_reorientation(np.stack(images), reo)
    nonzero = foreground_box(stacked, None)
    body = foreground_box(stacked, BODY_THRESHOLD_HU)
    result = {
        "spacing": [float(s) for s in geom.spacing],
        "shape": [int(s) for s in geom.shape],
        "file_orientation": geometry.orientation_code(),
        "shape_after_crop_nonzero": [hi - lo for lo, hi in nonzero],
        "shape_after_crop_body": [hi - lo for lo, hi in body],
        "class_voxels": [0] * num_classes,
        "overlap_voxels": 0,
        "overlap_pairs": [],
    }
    if label is None:
        return result
    if multilabel_masks:
        masks = label > 0
        result["class_voxels"] = [int(m.sum()) for m in masks]
        depth = masks.sum(axis=0, dtype=np.uint8)
        result["overlap_voxels"] = int((depth > 1).sum())
        if result["overlap_voxels"]:
            result["overlap_pairs"] = [[a, b, int((masks[a] & masks[b]).sum())]
                                       for a in range(num_classes) for b in range(a + 1, num_classes)
                                       if result["class_voxels"][a] and result["class_voxels"][b]
                                       and (masks[a] & masks[b]).any()]
        foreground = depth > 0
    else:
        counts = np.bincount(label.ravel().astype(np.int64, copy=False), minlength=max(label_values) + 1) \
            if label.min() >= 0 else np.zeros(max(label_values) + 1, dtype=np.int64)
        result["class_voxels"] = [int(counts[v]) for v in label_values]
        foreground = label > 0
    rng = np.random.RandomState(SAMPLE_SEED)
    fg_index = np.flatnonzero(foreground.ravel())
    result["intensity_samples"] = []
    for im in images:
        if len(fg_index):
            pick = fg_index[rng.randint(0, len(fg_index), samples)]
            result["intensity_samples"].append(np.asarray(im).ravel()[pick].astype(np.float32))
        else:
            result["intensity_samples"].append(np.zeros(0, dtype=np.float32))
    return result


def summarise(dataset, per_case: dict[str, dict]) -> dict:
    """Combine case fingerprints into the dataset fingerprint (``dataset_fingerprint.json``).

    Parameters
    ----------
    dataset : RawDataset
        The dataset (names, channels, classes, layout).
    per_case : dict
        Case id -> :func:`case_fingerprint` result.

    Returns
    -------
    dict
        JSON-ready: medians and 10th percentiles of spacing (mm) and shape per axis, foreground intensity
        statistics per channel, class voxels, mask overlaps, and the per-case entries without their raw samples.
    """
    ids = sorted(per_case)
    spacings = np.array([per_case[i]["spacing"] for i in ids])
    shapes = np.array([per_case[i]["shape"] for i in ids])
    intensity = {}
    for c, name in enumerate(dataset.channel_names):
        samples = np.concatenate([per_case[i]["intensity_samples"][c] for i in ids]) if ids else np.zeros(0)
        if len(samples) == 0:
            intensity[str(c)] = None
            continue
        samples = samples.astype(np.float64)
        intensity[str(c)] = {"mean": float(samples.mean()), "median": float(np.median(samples)),
                             "std": float(samples.std()), "min": float(samples.min()), "max": float(samples.max()),
                             "percentile_00_5": float(np.percentile(samples, 0.5)),
                             "percentile_99_5": float(np.percentile(samples, 99.5))}
    overlap_voxels = int(sum(per_case[i]["overlap_voxels"] for i in ids))
    pairs: dict[tuple, int] = {}
    for i in ids:
        for a, b, n in per_case[i]["overlap_pairs"]:
            pairs[(a, b)] = pairs.get((a, b), 0) + n
    class_voxels = np.array([per_case[i]["class_voxels"] for i in ids]).sum(axis=0) if ids else []
    cases = {i: {k: v for k, v in per_case[i].items() if k != "intensity_samples"} for i in ids}
    return {
        "dataset_name": dataset.name,
        "layout": dataset.layout,
        "num_cases": len(ids),
        "channel_names": list(dataset.channel_names),
        "class_names": list(dataset.class_names),
        "label_values": list(dataset.label_values),
        "orientation": "RAS",
        "median_spacing": np.median(spacings, axis=0).tolist() if ids else None,
        "median_shape": np.median(shapes, axis=0).tolist() if ids else None,
        "spacing_percentile_10": np.percentile(spacings, 10, axis=0).tolist() if ids else None,
        "median_shape_after_crop_nonzero": np.median([per_case[i]["shape_after_crop_nonzero"] for i in ids],
                                                     axis=0).tolist() if ids else None,
        "median_shape_after_crop_body": np.median([per_case[i]["shape_after_crop_body"] for i in ids],
                                                  axis=0).tolist() if ids else None,
        "class_voxels": {n: int(v) for n, v in zip(dataset.class_names, class_voxels)},
        "overlap": {"detected": overlap_voxels > 0, "voxels": overlap_voxels,
                    "pairs": [[dataset.class_names[a], dataset.class_names[b], n] for (a, b), n in sorted(pairs.items())]},
        "foreground_intensity_properties_per_channel": intensity,
        "cases": cases,
    }


def samples_per_case(num_cases: int) -> int:
    """Intensity samples drawn per case, so that the whole dataset gives about a tenth of
    :data:`INTENSITY_SAMPLES_TOTAL` (as nnU-Net).

    Parameters
    ----------
    num_cases : int
        Training cases in the dataset.

    Returns
    -------
    int
        At least 1.
    """
    return max(1, INTENSITY_SAMPLES_TOTAL // max(1, num_cases) // 10)


# Per-case fingerprints are kept as <case>.json + <case>_samples.npy in the dataset's fingerprints/ folder, so an
# interrupted run (even kill -9) resumes and --shard runs on several machines compose.

def source_signature(case) -> str:
    """Identity of a case's source files: paths, sizes and modification times (ns), hashed.

    Parameters
    ----------
    case : RawCase
        A case of a raw dataset.

    Returns
    -------
    str
        16 hex digits; a changed or replaced file changes it, so its stored fingerprint is measured again.
    """
    files = list(case.images) + ([case.label] if case.label else []) + [case.masks[k] for k in sorted(case.masks)]
    parts = []
    for f in files:
        st = os.stat(f)
        parts.append(f"{os.fspath(f)}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def save_fingerprint(case, fingerprint: dict, folder: Path) -> None:
    """Store one case's fingerprint (:func:`case_fingerprint`) atomically, with its source signature.

    Parameters
    ----------
    case : RawCase
        The case measured.
    fingerprint : dict
        Its fingerprint; the ``intensity_samples`` (one float32 array per channel) are removed from it and
        saved as ``<case>_samples.npy`` (channels, samples).
    folder : Path
        The dataset's fingerprints folder.
    """
    samples = np.stack(fingerprint.pop("intensity_samples"))
    fingerprint["source_signature"] = source_signature(case)
    folder = Path(folder)
    atomic_write_with(folder / f"{case.case_id}_samples.npy", lambda p: np.save(p, samples, allow_pickle=False),
                      suffix=".npy")
    atomic_write_json(folder / f"{case.case_id}.json", fingerprint)


def load_fingerprints(dataset, folder: Path) -> dict[str, dict]:
    """The stored fingerprints of ``dataset``'s cases whose source files are unchanged.

    Parameters
    ----------
    dataset : RawDataset
        The dataset.
    folder : Path
        The dataset's fingerprints folder.

    Returns
    -------
    dict
        Case id -> fingerprint, with ``intensity_samples`` back as one float32 array per channel; cases without
        a readable, current fingerprint are left out.
    """
    out = {}
    for c in dataset.cases:
        f = Path(folder) / f"{c.case_id}.json"
        if not f.is_file():
            continue
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if d.get("source_signature") != source_signature(c):
            continue
        d["intensity_samples"] = [np.asarray(s, dtype=np.float32)
                                  for s in np.load(Path(folder) / f"{c.case_id}_samples.npy", allow_pickle=False)]
        out[c.case_id] = d
    return out
