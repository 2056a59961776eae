"""Write a case's prediction: label map, per-class masks, probabilities, statistics, preview. All writes atomic."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..io.image_io import write_image
from ..utils.atomic import atomic_write_bytes, atomic_write_json
from .cases import Case
from .predictor import PredictionResult
from .probabilities import write_probabilities


def write_case(result: PredictionResult, case: Case, per_class: bool, save_probabilities: bool,
               preview_image: np.ndarray | None = None) -> None:
    """Write everything for ``case``; the label map goes last, so its presence means the case is complete."""
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
    """Volume (ml) and mean intensity (HU for CT) of every output class on the original grid."""
    voxel_ml = float(np.prod(result.geometry.spacing)) / 1000.0
    stats = {}
    for c, name in enumerate(result.class_names):
        mask = result.masks[c] > 0 if result.masks is not None else result.label_map == result.class_values[c]
        n = int(mask.sum())
        stats[name] = {"volume_ml": round(n * voxel_ml, 4), "voxels": n,
                       "mean_intensity": round(float(image[mask].mean()), 3) if n else None}
    return stats


def write_preview(result: PredictionResult, image: np.ndarray, path: Path) -> None:
    """Axial and coronal slices through the predicted foreground with the labels overlaid (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.geometry import apply_reorientation, plan_reorientation

    reo = plan_reorientation(result.geometry, "RAS")  # display in radiological convention regardless of file
    image = apply_reorientation(np.asarray(image, dtype=np.float32), reo)
    labels = apply_reorientation(result.label_map, reo)
    fg = np.argwhere(labels > 0)
    centre = fg.mean(0).astype(int) if len(fg) else np.array(labels.shape) // 2
    sp = np.asarray(result.geometry.spacing)[list(reo.permutation)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    views = [("axial", image[:, :, centre[2]].T, labels[:, :, centre[2]].T, sp[1] / sp[0]),
             ("coronal", image[:, centre[1], :].T, labels[:, centre[1], :].T, sp[2] / sp[0])]
    for ax, (title, img, lab, aspect) in zip(axes, views):
        ax.imshow(np.clip(img, -175, 250), cmap="gray", origin="lower", aspect=aspect)
        ax.imshow(np.ma.masked_equal(lab, 0), cmap="tab20", alpha=0.5, origin="lower", aspect=aspect,
                  interpolation="nearest", vmin=0, vmax=max(1, int(labels.max())))
        ax.set_title(f"{result.case_id} {title}")
        ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_json(path: Path, obj) -> None:
    atomic_write_json(path, json.loads(json.dumps(obj, default=str)))
