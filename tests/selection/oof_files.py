"""Constructed out-of-fold results: a results layout whose probability files sit on the original grid as given
(identity reorientation, no crop, plan spacing = image spacing), so every voxel's probability is the test's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from suprem_nn.io import write_image
from suprem_nn.io.geometry import Geometry, Reorientation
from suprem_nn.inference.probabilities import write_probabilities
from suprem_nn.preprocessing.pipeline import CaseProperties
from tests.inference.helpers import tiny_plan

GEOMETRY = Geometry((40, 36, 20), (2.0, 2.0, 3.0), (-40.0, -36.0, 10.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def write_reference(folder: Path, case: str, label_map: np.ndarray) -> Path:
    path = Path(folder) / f"{case}.nii.gz"
    write_image(label_map.astype(np.uint8), GEOMETRY, path)
    return path


def write_oof_plan(results: Path, dataset: str, plan_name: str, probabilities: dict, references: dict,
                   classes=("liver", "kidneys"), multilabel: bool = False, folds=(0, 1, 2, 3, 4)) -> Path:
    """``<results>/<dataset>/<plan_name>/`` with plans.json and, per fold, a checkpoint placeholder and
    validation/<case>.npz + .json + summary.json; case ``i`` (sorted) is validated by fold ``i % len(folds)``.

    ``probabilities``: case -> float array on GEOMETRY's grid, ``(K + 1, i, j, k)`` softmax or ``(K, ...)``
    sigmoid; ``references``: case -> label map file (softmax) or {class: mask file} (sigmoid)."""
    plan = tiny_plan(multilabel=multilabel, classes=classes, spacing=GEOMETRY.spacing, orientation=None)
    plan.plan_name, plan.dataset_name = plan_name, dataset
    folder = Path(results) / dataset / plan_name
    folder.mkdir(parents=True, exist_ok=True)
    plan.save(folder / "plans.json")
    by_fold = {k: [] for k in folds}
    for i, case in enumerate(sorted(probabilities)):
        by_fold[folds[i % len(folds)]].append(case)
    shape = list(GEOMETRY.shape)
    for k, cases in by_fold.items():
        val = folder / f"fold_{k}" / "validation"
        val.mkdir(parents=True, exist_ok=True)
        (folder / f"fold_{k}" / "checkpoint_final.pth").write_bytes(b"placeholder: selection reads no weights")
        for case in cases:
            ref = references[case]
            props = CaseProperties(case, GEOMETRY, Reorientation((0, 1, 2), (False, False, False)),
                                   [[0, s] for s in shape], shape, shape, "h",
                                   source_label=None if multilabel else str(ref),
                                   source_masks={n: str(p) for n, p in ref.items()} if multilabel else {})
            write_probabilities(val / case, probabilities[case], plan.class_names, plan.label_values, props, plan)
        (val / "summary.json").write_text(json.dumps({"fold": str(k), "cases": [{"case": c} for c in cases]}))
    return folder


def softmax_from_labels(label_map: np.ndarray, n_classes: int, confidence: float = 0.9) -> np.ndarray:
    """Probabilities (K + 1, ...) whose argmax is ``label_map`` (values 0..K): ``confidence`` on the label."""
    probs = np.full((n_classes + 1,) + label_map.shape, (1 - confidence) / n_classes, dtype=np.float32)
    for c in range(n_classes + 1):
        probs[c][label_map == c] = confidence
    return probs
