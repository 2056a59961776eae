"""One case from file arrays to network space and back.

Forward (:func:`preprocess_case`): reorient -> crop -> normalise -> resample.
Normalising before resampling keeps the crop mask and the intensities consistent
(nnU-Net's order). Backward (:func:`restore_to_original`): resample -> uncrop ->
undo the reorientation, which lands exactly on the input file's voxel grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..errors import SupremError
from ..io.cropping import crop, foreground_box, uncrop
from ..io.geometry import (Geometry, Reorientation, apply_reorientation, plan_reorientation, reoriented_geometry,
                           undo_reorientation)
from ..planning.plans import Plan
from .normalization import normalize
from .resampling import new_shape_for_spacing, resample_image, resample_labels, separate_axis

MAX_LOCATIONS_PER_CLASS = 10_000
LOCATION_SEED = 1234


@dataclass
class CaseProperties:
    """Everything needed to map network-space arrays back onto the case's original grid."""

    case_id: str
    original_geometry: Geometry
    reorientation: Reorientation
    bbox: list[list[int]]
    shape_after_crop: list[int]
    shape_after_resampling: list[int]
    cache_hash: str
    source_images: list[str] = field(default_factory=list)
    source_label: Optional[str] = None
    source_masks: dict[str, str] = field(default_factory=dict)

    @property
    def spacing_after_reorientation(self) -> tuple[float, float, float]:
        """Voxel size in mm per network axis ``(x, y, z)`` after reorientation, before resampling."""
        return reoriented_geometry(self.original_geometry, self.reorientation).spacing

    @property
    def shape_after_reorientation(self) -> tuple[int, int, int]:
        """Voxels per network axis ``(x, y, z)`` after reorientation, before cropping."""
        return reoriented_geometry(self.original_geometry, self.reorientation).shape

    def to_json(self) -> dict:
        """The properties as the JSON object stored beside the cached arrays (``<case>.json``)."""
        return {"case_id": self.case_id, "original_geometry": self.original_geometry.to_json(),
                "reorientation": self.reorientation.to_json(), "bbox": self.bbox,
                "shape_after_crop": self.shape_after_crop, "shape_after_resampling": self.shape_after_resampling,
                "cache_hash": self.cache_hash, "source_images": self.source_images,
                "source_label": self.source_label, "source_masks": self.source_masks}

    @classmethod
    def from_json(cls, d: dict, source=None) -> "CaseProperties":
        """Properties from the JSON object of :meth:`to_json` (files without source paths load too).

        Raises:
            SupremError: naming ``source`` (the file ``d`` came from), when an entry is missing or malformed.
        """
        try:
            props = cls(d["case_id"], Geometry.from_json(d["original_geometry"]),
                        Reorientation.from_json(d["reorientation"]), [[int(v) for v in b] for b in d["bbox"]],
                        [int(v) for v in d["shape_after_crop"]], [int(v) for v in d["shape_after_resampling"]],
                        d["cache_hash"], list(d.get("source_images", [])), d.get("source_label"),
                        dict(d.get("source_masks", {})))
            if not (len(props.bbox) == len(props.shape_after_crop) == len(props.shape_after_resampling) == 3
                    and all(len(b) == 2 for b in props.bbox)):
                raise ValueError("bbox and shapes must have 3 axes")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise SupremError(f"malformed case properties ({type(exc).__name__}: {exc})", source) from None
        return props


def preprocess_images(images: Sequence[np.ndarray], geometry: Geometry, plan: Plan,
                      case_id: str = "") -> tuple[np.ndarray, CaseProperties]:
    """Bring images (no label) into network space: what prediction does before the network.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        One array ``(i, j, k)`` per channel, in the file's axis order and raw units (HU for CT).
    geometry : Geometry
        Their grid (spacing and origin in mm).
    plan : Plan
        Orientation, crop, normalisation and target spacing.
    case_id : str
        Stored in the properties.

    Returns
    -------
    data : numpy.ndarray
        float32, shape ``(C, x, y, z)`` in network axis order (``plan.orientation``) at ``plan.target_spacing``.
    props : CaseProperties
        What maps network-space arrays back onto the input grid.
    """
    data, _, props = preprocess_case(images, geometry, plan, None, case_id)
    return data, props


def preprocess_case(images: Sequence[np.ndarray], geometry: Geometry, plan: Plan, label: Optional[np.ndarray] = None,
                    case_id: str = "") -> tuple[np.ndarray, Optional[np.ndarray], CaseProperties]:
    """Run the forward pipeline on one case: reorient -> crop -> normalise -> resample.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        One array ``(i, j, k)`` per channel, in the file's axis order and raw units (HU for CT).
    geometry : Geometry
        Their grid (spacing and origin in mm).
    plan : Plan
        Orientation, crop threshold, normalisation, target spacing (mm) and interpolation orders.
    label : numpy.ndarray, optional
        Exclusive plans: a map ``(i, j, k)`` holding ``plan.label_values``; multi-label plans: binary masks
        ``(K, i, j, k)`` in ``plan.class_names`` order.
    case_id : str
        Stored in the properties.

    Returns
    -------
    data : numpy.ndarray
        float32, shape ``(C, x, y, z)`` in network axis order at ``plan.target_spacing``.
    seg : numpy.ndarray or None
        ``(1, x, y, z)`` int16 with class indices 0..K (exclusive) or ``(K, x, y, z)`` uint8 (multi-label);
        None without ``label``.
    props : CaseProperties
        What maps network-space arrays back onto the input grid.
    """
    reo = plan_reorientation(geometry, plan.orientation) if plan.orientation else Reorientation((0, 1, 2),
                                                                                                (False,) * 3)
    stacked = apply_reorientation(np.stack([np.asarray(im) for im in images]), reo)
    box = foreground_box(stacked, plan.crop_threshold)
    cropped = crop(stacked, box)
    data = np.stack([normalize(cropped[c], plan.normalization[c]) for c in range(cropped.shape[0])])
    spacing = reoriented_geometry(geometry, reo).spacing
    new_shape = new_shape_for_spacing(data.shape[1:], spacing, plan.target_spacing)
    sep = separate_axis(spacing, plan.target_spacing, plan.anisotropy_threshold)
    data = resample_image(data, new_shape, plan.image_order, sep)
    seg = None
    if label is not None:
        seg = _label_to_classes(np.asarray(label), plan)
        seg = crop(apply_reorientation(seg, reo), box)
        seg = resample_labels(seg, new_shape, plan.multilabel, len(plan.class_names), plan.label_order, sep)
    props = CaseProperties(case_id, geometry, reo, box, list(cropped.shape[1:]), list(new_shape), plan.cache_hash())
    return np.ascontiguousarray(data), None if seg is None else np.ascontiguousarray(seg), props


def restore_to_original(array: np.ndarray, props: CaseProperties, plan: Plan, order: int, fill=0) -> np.ndarray:
    """Map network-space values onto the case's original grid (the inverse of :func:`preprocess_case`).

    Parameters
    ----------
    array : numpy.ndarray
        Shape ``(C, x, y, z)`` in network axis order at the plan's spacing.
    props : CaseProperties
        The case's properties from preprocessing.
    plan : Plan
        The plan that preprocessed it.
    order : int
        1 (linear, for probabilities) or 0 (nearest, for label maps).
    fill : scalar or sequence
        The value outside the crop box: one value or one per channel.

    Returns
    -------
    numpy.ndarray
        Shape ``(C, *original shape)`` in the file's axis order ``(i, j, k)``, ``array``'s dtype.
    """
    spacing = props.spacing_after_reorientation
    sep = separate_axis(plan.target_spacing, spacing, plan.anisotropy_threshold)
    resampled = resample_image(array, props.shape_after_crop, order, sep) if order > 0 else \
        _resample_nearest(array, props.shape_after_crop, sep)
    # Undo the reorientation on the (small) cropped block and paste it straight into the output, so only one
    # full-size array is ever allocated (this bounds prediction memory on large CTs).
    block = undo_reorientation(resampled.astype(array.dtype, copy=False), props.reorientation)
    return uncrop(block, _box_in_file_axes(props), props.original_geometry.shape, fill)


def restore_block(values, props: CaseProperties, plan: Plan):
    """Linear-resample network-space values onto the crop box of the original grid.

    Everything outside the box is what preprocessing cropped away (air below the crop threshold), so
    prediction can decide labels on the block alone and never allocate full-size float arrays.

    Parameters
    ----------
    values : torch.Tensor
        Float, shape ``(C, x, y, z)`` in network axis order, on any device.
    props : CaseProperties
        The case's properties from preprocessing.
    plan : Plan
        The plan that preprocessed it.

    Returns
    -------
    block : torch.Tensor
        Shape ``(C, *box shape)`` in the file's axis order ``(i, j, k)``, on ``values``' device.
    box : tuple of slice
        Where ``block`` lies on the original grid.
    """
    from .resampling import resample_tensor

    sep = separate_axis(plan.target_spacing, props.spacing_after_reorientation, plan.anisotropy_threshold)
    block = undo_reorientation(resample_tensor(values, props.shape_after_crop, 1, sep), props.reorientation)
    return block, tuple(slice(lo, hi) for lo, hi in _box_in_file_axes(props))


def _box_in_file_axes(props: CaseProperties) -> list[list[int]]:
    """The crop box (given in reoriented axes) in the file's own axis order and direction."""
    r, shape = props.reorientation, props.shape_after_reorientation
    box: list[list[int]] = [[0, 0]] * 3
    for t, (lo, hi) in enumerate(props.bbox):
        box[r.permutation[t]] = [shape[t] - hi, shape[t] - lo] if r.flips[t] else [lo, hi]
    return box


def sample_class_locations(seg: np.ndarray, multilabel: bool, num_classes: int) -> dict[int, np.ndarray]:
    """Voxel coordinates of every class, for foreground oversampling during training.

    Deterministic (fixed seed), so re-running preprocessing writes identical files.

    Parameters
    ----------
    seg : numpy.ndarray
        The preprocessed segmentation: ``(1, x, y, z)`` class indices or ``(K, x, y, z)`` masks.
    multilabel : bool
        ``seg`` holds one mask per class.
    num_classes : int
        K, the foreground classes.

    Returns
    -------
    dict
        Class index 0..K-1 -> int32 array ``(N, 3)`` of ``(x, y, z)`` indices: up to 10,000 (at least 1 % of
        the class's voxels), empty ``(0, 3)`` for a class absent from the case.
    """
    rng = np.random.RandomState(LOCATION_SEED)
    out = {}
    boxes = None if multilabel else ndimage.find_objects(seg[0].astype(np.int32, copy=False), max_label=num_classes)
    for k in range(num_classes):
        # Search each class inside its bounding box only; argwhere order (and so the sample) is unchanged.
        box = ndimage.find_objects((seg[k] > 0).astype(np.uint8))[0:1] if multilabel else boxes[k:k + 1]
        if not box or box[0] is None:
            out[k] = np.zeros((0, 3), dtype=np.int32)
            continue
        block = seg[k][box[0]] > 0 if multilabel else seg[0][box[0]] == k + 1
        coords = (np.argwhere(block) + np.array([s.start for s in box[0]])).astype(np.int32)
        n = len(coords)
        if n == 0:
            out[k] = np.zeros((0, 3), dtype=np.int32)
            continue
        take = min(n, max(MAX_LOCATIONS_PER_CLASS, int(np.ceil(0.01 * n))))
        out[k] = coords[np.sort(rng.choice(n, take, replace=False))] if take < n else coords
    return out


def _label_to_classes(label: np.ndarray, plan: Plan) -> np.ndarray:
    if plan.multilabel:
        if label.ndim != 4 or label.shape[0] != len(plan.class_names):
            raise ValueError(f"multi-label plans need (K, i, j, k) masks with K={len(plan.class_names)}, "
                             f"got {label.shape}")
        return (label > 0).astype(np.uint8)
    lut_size = max([int(label.max()) + 1] + [v + 1 for v in plan.label_values])
    lut = np.zeros(lut_size, dtype=np.int16)
    for k, v in enumerate(plan.label_values):
        lut[v] = k + 1
    index = label if np.issubdtype(label.dtype, np.integer) else label.astype(np.int32)
    return lut[index][None]


def _resample_nearest(array: np.ndarray, shape, sep) -> np.ndarray:
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    return resample_image(array.astype(np.float32), shape, 0, None).astype(array.dtype)
