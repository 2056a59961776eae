"""Probability files: written by ``suprem_predict --save-probabilities`` and by each fold's final validation,
read by ensembling and configuration selection.

A prediction's probabilities are stored in network space, where they are small (the crop box at the plan's
spacing), and mapped back onto the original grid only when read:

* ``<case>.npz``: ``probabilities`` float16 ``(C, x, y, z)`` in network space (after reorientation, crop and
  resampling; axis order of the reoriented volume) and ``class_names`` (the C' predicted classes).
  Exclusive (softmax) plans store background first, so C = C' + 1; multi-label (sigmoid) plans store C = C'.
* ``<case>.json``: the case's :class:`~suprem_nn.preprocessing.pipeline.CaseProperties` fields at the top level
  (original geometry, reorientation, crop box, shapes) plus ``"plan"`` (the plan that made the prediction, which
  fixes the resampling back) and ``"activation"`` (``"softmax"`` or ``"sigmoid"``) and ``"label_values"``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SupremError
from ..io.geometry import Geometry
from ..planning.plans import Plan
from ..preprocessing.pipeline import CaseProperties
from ..utils.atomic import atomic_write_bytes, atomic_write_json
from ..utils.json_file import read_json


@dataclass
class CaseProbabilities:
    """One case's saved probabilities and what is needed to put them on the original grid."""

    case_id: str
    probabilities: np.ndarray          # float16 (C, x, y, z), network space
    class_names: list[str]             # predicted classes (without background)
    label_values: list[int]            # label value of each class in ``class_names``
    activation: str                    # "softmax" (background first) or "sigmoid"
    props: CaseProperties
    plan: Plan

    @property
    def geometry(self) -> Geometry:
        """The original image's geometry (shape in voxels, spacing in mm, LPS origin and direction)."""
        return self.props.original_geometry

    def on_original_grid(self) -> np.ndarray:
        """float32 ``(C, *original shape)`` in the file's axis order; outside the crop box a softmax case is
        background (probability 1 for channel 0) and a sigmoid case is 0 for every class."""
        import torch

        from ..preprocessing import restore_block

        out = np.zeros((len(self.probabilities),) + tuple(self.geometry.shape), dtype=np.float32)
        if self.activation == "softmax":
            out[0] = 1.0
        # The same resampling as the predictor's export (restore_block), so labels decided from these
        # probabilities equal the labels suprem_predict writes, up to the float16 rounding of the file.
        for c in range(len(self.probabilities)):
            block, box = restore_block(torch.from_numpy(self.probabilities[c:c + 1].astype(np.float32)), self.props,
                                       self.plan)
            out[(c,) + box] = block[0].numpy()
        return out


def write_probabilities(stem: str | Path, probabilities: np.ndarray, class_names: Sequence[str],
                        label_values: Sequence[int], props: CaseProperties, plan: Plan) -> tuple[Path, Path]:
    """Write ``<stem>.npz`` and ``<stem>.json`` atomically (the .json last); returns both paths.

    Parameters
    ----------
    stem : str or Path
        Path without suffix, e.g. ``<output>/<case>``.
    probabilities : np.ndarray
        ``(C, x, y, z)`` in network space; stored as float16 under ``probabilities`` with ``class_names``.
    class_names, label_values : sequence
        Classes of the channels (without background) and their label values.
    props : CaseProperties
        How network space maps back to the original grid (stored in the .json).
    plan : Plan
        Stored in the .json; its ``multilabel`` sets ``activation`` (``"sigmoid"`` or ``"softmax"``).

    Returns
    -------
    tuple of Path
        ``(<stem>.npz, <stem>.json)``.
    """
    stem = Path(stem)
    buf = io.BytesIO()
    np.savez_compressed(buf, probabilities=np.asarray(probabilities, dtype=np.float16),
                        class_names=np.array(list(class_names)))
    npz, meta = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
    atomic_write_bytes(npz, buf.getvalue())
    info = props.to_json()
    info.update({"plan": plan.to_json(), "activation": "sigmoid" if plan.multilabel else "softmax",
                 "class_names": list(class_names), "label_values": [int(v) for v in label_values]})
    atomic_write_json(meta, info)
    return npz, meta


def read_probabilities(npz_path: str | Path) -> CaseProbabilities:
    """Read ``<case>.npz`` and the ``<case>.json`` beside it; a missing or inconsistent pair is one clear error.

    Parameters
    ----------
    npz_path : str or Path
        A ``<case>.npz`` written by :func:`write_probabilities`.

    Returns
    -------
    CaseProbabilities
        float16 ``(C, x, y, z)`` network-space probabilities (softmax: background first), classes, label values,
        activation, and the plan and properties to go back to the original grid.

    Raises
    ------
    SupremError
        If the .json is missing, unreadable or has no ``plan`` (an older suprem_nn), the .npz cannot be read, or
        its shape does not match the channel count and network-space shape the .json records.
    """
    npz_path = Path(npz_path)
    meta_path = npz_path.with_suffix(".json")
    info = read_json(meta_path, SupremError, "probabilities file has no .json beside it (written with it)")
    if not isinstance(info, dict):
        raise SupremError(f"expected a JSON object, found {type(info).__name__}", meta_path)
    if "plan" not in info:
        raise SupremError("this .json has no 'plan': it was written by an older suprem_nn; predict again with "
                          "--save-probabilities", meta_path)
    try:
        with np.load(npz_path) as z:
            probs = z["probabilities"]
            names = [str(n) for n in z["class_names"]]
    except Exception as exc:  # noqa: BLE001 - np.load without pickles runs no code; a cut or foreign file raises
        # BadZipFile, ValueError, KeyError, OSError...
        raise SupremError(f"not a readable probabilities file ({type(exc).__name__}: {exc})", npz_path) from None
    plan = Plan.from_json(info["plan"], meta_path)
    props = CaseProperties.from_json(info, meta_path)
    activation = info.get("activation", "sigmoid" if plan.multilabel else "softmax")
    expected = len(names) + (1 if activation == "softmax" else 0)
    if probs.ndim != 4 or probs.shape[0] != expected or list(probs.shape[1:]) != list(props.shape_after_resampling):
        raise SupremError(f"probabilities of shape {tuple(probs.shape)} do not match the .json (expected "
                          f"{expected} channels on {tuple(props.shape_after_resampling)})", npz_path)
    try:
        values = [int(v) for v in info.get("label_values", [])] or \
            [plan.label_values[plan.class_names.index(n)] for n in names]
    except (TypeError, ValueError) as exc:
        raise SupremError(f"'label_values' must be integers, one per class ({exc})", meta_path) from None
    if len(values) != len(names):
        raise SupremError(f"'label_values' must be integers, one per class ({len(names)}), got {values}", meta_path)
    return CaseProbabilities(props.case_id, probs, names, values, activation, props, plan)
