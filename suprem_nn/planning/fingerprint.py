"""Dataset fingerprint: what the planner needs to know about the data, measured once and saved as JSON.

Per case: spacing and shape (per array axis after reorientation to ``orientation``),
shape after crop-to-nonzero and after crop-to-body (> -175 HU), per-class voxel
counts and voxels where masks overlap. Per channel: foreground intensity
statistics (mean, median, std, min, max, percentiles 0.5/99.5) from a fixed-size,
seeded sample of labelled voxels of every case (drawn with replacement, so small
cases count as much as large ones, as in nnU-Net).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..io.geometry import apply_reorientation, plan_reorientation, reoriented_geometry
from ..preprocessing.cropping import foreground_box

BODY_THRESHOLD_HU = -175.0
INTENSITY_SAMPLES_TOTAL = 10_000_000
SAMPLE_SEED = 1234


def case_fingerprint(images: list[np.ndarray], geometry, label: Optional[np.ndarray], multilabel_masks: bool,
                     num_classes: int, label_values: list[int], samples: int, orientation: str = "RAS") -> dict:
    """Measure one case. ``label`` is an exclusive map (i, j, k) or, with ``multilabel_masks``, (K, i, j, k)."""
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
    """Combine case fingerprints into the dataset fingerprint (JSON-ready; the raw samples are dropped)."""
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
    return max(1, INTENSITY_SAMPLES_TOTAL // max(1, num_cases) // 10)
