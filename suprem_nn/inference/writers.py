"""Write a case's prediction: label map, per-class masks, probabilities, statistics, preview. All writes atomic."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..io.image_io import write_image
from ..utils.atomic import atomic_write_bytes, atomic_write_json
from .cases import PredictionCase
from .predictor import PredictionResult
from .preview import write_preview_png
from .probabilities import write_probabilities


def write_case(result: PredictionResult, case: PredictionCase, per_class: bool, save_probabilities: bool,
               preview_image: np.ndarray | None = None) -> None:
    """Write everything for ``case``; the label map goes last, so its presence means the case is complete.

    Parameters
    ----------
    result : PredictionResult
        The prediction on the input's grid.
    case : PredictionCase
        Output paths; AbdomenAtlas cases always get per-class masks.
    per_class : bool
        Also write ``<segmentation folder>/<class>.nii.gz`` uint8 masks.
    save_probabilities : bool
        Also write ``<case>.npz`` + ``<case>.json`` beside the output (network-space probabilities).
    preview_image : np.ndarray, optional
        ``[i, j, k]`` image for ``<case>_preview.png``; none written without it.
    """
    geometry = result.geometry
    if per_class or case.atlas:
        seg_dir = case.segmentation_folder()
        for c, name in enumerate(result.class_names):
            if result.masks is not None:
                mask = result.masks[c]
            else:
                mask = (result.label_map == result.class_values[c]).astype(np.uint8)
            write_image(mask.astype(np.uint8, copy=False), geometry, seg_dir / f"{name}.nii.gz")
    if save_probabilities:
        stem = case.output.name[: -len(".nii.gz")] if case.output.name.endswith(".nii.gz") else case.output.stem
        plan = result.plan
        if plan is not None:  # suprem_nn models: the format ensembling reads (suprem_nn.inference.probabilities)
            # softmax keeps every channel (background first) even when only some classes are written
            names, values = (result.class_names, result.class_values) if plan.multilabel else \
                (plan.class_names, plan.label_values)
            write_probabilities(case.output.parent / stem, result.probabilities, names, values, result.props, plan)
        else:
            buf = io.BytesIO()
            np.savez_compressed(buf, probabilities=result.probabilities, class_names=np.array(result.class_names))
            atomic_write_bytes(case.output.parent / f"{stem}.npz", buf.getvalue())
            atomic_write_json(case.output.parent / f"{stem}.json", result.props.to_json())
    if preview_image is not None:
        write_preview(result, preview_image, case.output.parent / f"{case.case_id}_preview.png")
    write_image(result.label_map, geometry, case.output)


def case_statistics(result: PredictionResult, image: np.ndarray) -> dict:
    """Volume (ml) and mean intensity (HU for CT) of every output class on the original grid.

    Parameters
    ----------
    result : PredictionResult
        Its masks (multi-label) or label map, and the spacing in mm.
    image : np.ndarray
        ``[i, j, k]`` image on the same grid.

    Returns
    -------
    dict
        ``{class: {"volume_ml", "voxels", "mean_intensity"}}``; ``mean_intensity`` is None for an empty class.
    """
    voxel_ml = float(np.prod(result.geometry.spacing)) / 1000.0
    stats = {}
    for c, name in enumerate(result.class_names):
        mask = result.masks[c] > 0 if result.masks is not None else result.label_map == result.class_values[c]
        n = int(mask.sum())
        stats[name] = {"volume_ml": round(n * voxel_ml, 4), "voxels": n,
                       "mean_intensity": round(float(image[mask].mean()), 3) if n else None}
    return stats


def write_preview(result: PredictionResult, image: np.ndarray, path: Path) -> None:
    """``<case>_preview.png``: the radiological-convention preview of :mod:`suprem_nn.inference.preview`
    (orientation letters, legend of the classes shown, slices chosen by the prediction), written atomically.

    Parameters
    ----------
    result : PredictionResult
        Label map or masks, class names and values, geometry.
    image : np.ndarray
        ``[i, j, k]`` image on ``result.geometry`` (CT in HU).
    path : Path
        The PNG file.
    """
    write_preview_png(path, image, result.geometry, label_map=result.label_map, class_names=result.class_names,
                      class_values=result.class_values, masks=result.masks, title=result.case_id)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically; values JSON cannot hold (paths, numpy scalars) become ``str``."""
    atomic_write_json(path, json.loads(json.dumps(obj, default=str)))
