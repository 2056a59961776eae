"""Segmentation metrics on arrays: Dice, IoU and normalised surface Dice (NSD). No file I/O here.

Arrays follow the axis convention of :mod:`suprem_nn.io.geometry`; ``spacing`` is the voxel size in mm along
each array axis, so anisotropic grids (e.g. 0.8 x 0.8 x 5 mm) are measured in millimetres, not voxels.

Definitions
-----------
For a reference mask ``R`` and a predicted mask ``P`` of one class:

* Dice ``= 2 |R ∩ P| / (|R| + |P|)``, IoU ``= |R ∩ P| / |R ∪ P|`` (voxel counts).
* NSD at tolerance ``tau`` mm (Nikolov et al. 2021, voxel-count variant as in MONAI's
  ``compute_surface_dice``): the surface ``S(M)`` of a mask is its boundary voxels, i.e. the mask minus its
  6-connected erosion (voxels on the array border count as boundary). With ``d(x, S)`` the Euclidean
  distance in mm from voxel ``x`` to the nearest voxel of ``S``::

      NSD = (#{x in S(R): d(x, S(P)) <= tau} + #{y in S(P): d(y, S(R)) <= tau}) / (|S(R)| + |S(P)|)

Empty-mask convention (the same for all three metrics)
------------------------------------------------------
* reference empty and prediction empty -> ``NaN`` ("not applicable"). Means over cases skip NaN and
  report how many cases were skipped (nnU-Net's convention; nothing is rewarded for predicting nothing
  where nothing is).
* reference empty, prediction not empty -> ``0.0`` (a pure false positive).
* reference not empty, prediction empty -> ``0.0`` (a pure miss).

Speed
-----
:func:`label_map_counts` gets the true-positive / reference / prediction voxel counts of every label value
from one ``np.bincount`` over the joint code ``ref * K + pred`` (in slabs, so memory stays bounded).
Surface distances are computed only inside the bounding box of ``R ∪ P`` padded by one voxel: every
surface voxel of either mask lies in that box, so distances inside it are exact (padding by the tolerance
too would change no count), and a small organ in a large CT costs only its box. Per-label boxes come from
one ``scipy.ndimage.find_objects`` pass over each label map. Whether a surface voxel lies within the
tolerance is answered exactly either by looking it up at each voxel offset of the (anisotropic) tolerance
ball, which is a handful of offsets for the usual 1-2 mm, or by ``distance_transform_edt(sampling=spacing)``
when the ball is large; :func:`count_within_tolerance` picks the cheaper one and both give identical counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice, slice]
LabelValue = Union[int, Sequence[int]]

_SLAB_VOXELS = 1 << 24  # voxels per bincount slab (~16M: 128 MiB of int64 codes at most)


@dataclass(frozen=True)
class ClassCounts:
    """Voxel counts of one class in one case."""

    tp: int
    n_ref: int
    n_pred: int

    @property
    def dice(self) -> float:
        """Dice of this class in this case (:func:`dice_from_counts`)."""
        return dice_from_counts(self.tp, self.n_ref, self.n_pred)

    @property
    def iou(self) -> float:
        """IoU of this class in this case (:func:`iou_from_counts`)."""
        return iou_from_counts(self.tp, self.n_ref, self.n_pred)


def dice_from_counts(tp: int, n_ref: int, n_pred: int) -> float:
    """Dice ``2 TP / (|ref| + |pred|)`` of one class from voxel counts.

    Parameters
    ----------
    tp : int
        Voxels in both masks.
    n_ref, n_pred : int
        Voxels in the reference and in the prediction mask.

    Returns
    -------
    float
        NaN when both masks are empty, 0 when only one is (see the module docstring).

    See Also
    --------
    suprem_nn.training.losses.pseudo_dice_per_class : per-class Dice of training patches from a (3, K) tensor.
    """
    denom = n_ref + n_pred
    return math.nan if denom == 0 else 2.0 * tp / denom


def iou_from_counts(tp: int, n_ref: int, n_pred: int) -> float:
    """IoU ``TP / (|ref| + |pred| - TP)`` of one class from voxel counts.

    Parameters
    ----------
    tp : int
        Voxels in both masks.
    n_ref, n_pred : int
        Voxels in the reference and in the prediction mask.

    Returns
    -------
    float
        NaN when both masks are empty, 0 when only one is (see the module docstring).
    """
    union = n_ref + n_pred - tp
    return math.nan if union == 0 else tp / union


def dice(ref: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two binary masks.

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Binary masks of the same shape (any number of axes, any dtype; non-zero is inside).

    Returns
    -------
    float
        NaN when both are empty, 0 when one is.
    """
    ref, pred = _check_pair(ref, pred)
    tp = int(np.count_nonzero(ref & pred))
    return dice_from_counts(tp, int(np.count_nonzero(ref)), int(np.count_nonzero(pred)))


def iou(ref: np.ndarray, pred: np.ndarray) -> float:
    """Intersection over union of two binary masks.

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Binary masks of the same shape (non-zero is inside).

    Returns
    -------
    float
        NaN when both are empty, 0 when one is.
    """
    ref, pred = _check_pair(ref, pred)
    tp = int(np.count_nonzero(ref & pred))
    return iou_from_counts(tp, int(np.count_nonzero(ref)), int(np.count_nonzero(pred)))


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a binary mask: the mask minus its 6-connected erosion (array border = outside).

    Parameters
    ----------
    mask : numpy.ndarray
        Binary, any number of axes.

    Returns
    -------
    numpy.ndarray
        bool, same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    face_neighbours = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=face_neighbours, border_value=0)


def surface_dice(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0) -> float:
    """Normalised surface Dice of two binary masks at ``tolerance_mm`` (see the module docstring).

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Binary masks of the same shape ``(i, j, k)``.
    spacing : sequence of float
        Voxel size in mm along each array axis, in the arrays' axis order.
    tolerance_mm : float
        How far (Euclidean, mm) a surface voxel may lie from the other surface and still count.

    Returns
    -------
    float
        In [0, 1]; NaN when both masks are empty, 0 when one is.
    """
    ref, pred = _check_pair(ref, pred)
    box = union_box(bounding_box(ref), bounding_box(pred), ref.shape, pad=1)
    if box is None:
        return math.nan
    return surface_dice_in_box(ref[box], pred[box], spacing, tolerance_mm)


def surface_dice_in_box(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """NSD of two masks already cropped to (a padded box around) their union; no further cropping.

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Binary masks of the same shape ``(i, j, k)``.
    spacing : sequence of float
        Voxel size in mm along each array axis.
    tolerance_mm : float
        The tolerance in mm.

    Returns
    -------
    float
        As :func:`surface_dice`.
    """
    return surface_dices_in_box(ref, pred, spacing, [tolerance_mm])[0]


def surface_dices_in_box(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                         tolerances_mm: Sequence[float]) -> list[float]:
    """NSD at each of several tolerances of two masks already cropped to a padded box around their union.

    The surfaces are computed once and shared by every tolerance (NSD at 1 mm and at one voxel cost little
    more than one of them).

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Binary masks of the same shape ``(i, j, k)``.
    spacing : sequence of float
        Voxel size in mm along each array axis.
    tolerances_mm : sequence of float
        The tolerances in mm.

    Returns
    -------
    list of float
        One NSD per tolerance (NaN when both masks are empty, 0 when one is).
    """
    for t in tolerances_mm:
        _check_tolerance(t)
    spacing = _check_spacing(spacing, ref.ndim)
    has_ref, has_pred = bool(ref.any()), bool(pred.any())
    if not has_ref and not has_pred:
        return [math.nan] * len(tolerances_mm)
    if not has_ref or not has_pred:
        return [0.0] * len(tolerances_mm)
    if np.array_equal(ref, pred):
        return [1.0] * len(tolerances_mm)
    s_ref, s_pred = surface(ref), surface(pred)
    n_surface = np.count_nonzero(s_ref) + np.count_nonzero(s_pred)
    out = []
    for t in tolerances_mm:
        good = count_within_tolerance(s_ref, s_pred, spacing, t) + count_within_tolerance(s_pred, s_ref, spacing, t)
        out.append(float(good / n_surface))
    return out


def one_voxel_tolerance_mm(spacing: Sequence[float]) -> float:
    """The NSD tolerance of "one voxel": the voxel size of the coarsest axis, in mm (max of ``spacing``).

    On 1.5 x 1.5 x 2.5 mm voxels a boundary one slice off is 2.5 mm away, so NSD at 1 mm counts it wrong while
    Dice barely moves; at this tolerance a one-voxel disagreement along any axis is within tolerance.

    Parameters
    ----------
    spacing : sequence of float
        Voxel size in mm along each array axis.

    Returns
    -------
    float
        ``max(spacing)`` in mm.
    """
    return float(max(_check_spacing(spacing, len(tuple(spacing)))))


def count_within_tolerance(src: np.ndarray, dst: np.ndarray, spacing: Sequence[float], tolerance_mm: float,
                           method: str = "auto") -> int:
    """How many ``True`` voxels of ``src`` lie within ``tolerance_mm`` (Euclidean, in mm) of a ``True`` voxel of
    ``dst``.

    Two exact methods give the same count: ``"offsets"`` looks every ``src`` voxel up at each voxel offset
    of the tolerance ball (fast when the ball is a few voxels, the usual case: 1 mm at ~1 mm spacing is
    5-7 offsets); ``"edt"`` uses ``scipy.ndimage.distance_transform_edt(~dst, sampling=spacing)`` (cost
    independent of the tolerance). ``"auto"`` picks the cheaper one. Voxels outside the arrays count as
    not in ``dst``; a 1e-6 mm slack keeps a neighbour exactly at the tolerance inside it.

    Parameters
    ----------
    src, dst : numpy.ndarray
        Boolean arrays of the same shape (surfaces, :func:`surface`).
    spacing : sequence of float
        Voxel size in mm along each array axis, in the arrays' axis order.
    tolerance_mm : float
        The distance in mm.
    method : str
        ``"auto"``, ``"offsets"`` or ``"edt"``.

    Returns
    -------
    int
    """
    spacing = _check_spacing(spacing, src.ndim)
    tol = float(tolerance_mm) + 1e-6
    n_src = int(np.count_nonzero(src))
    if n_src == 0 or not dst.any():
        return 0
    offsets = _ball_offsets(spacing, tol)
    if method == "auto":
        # measured (2 cores): one offset lookup ~3 ns even without early exit, one EDT voxel ~90 ns
        method = "offsets" if len(offsets) * n_src <= 16 * src.size else "edt"
    if method == "edt":
        dist = ndimage.distance_transform_edt(~dst, sampling=spacing)
        return int(np.count_nonzero(dist[src] <= tol))
    if method != "offsets":
        raise ValueError(f"unknown method {method!r}")
    reach = np.abs(offsets).max(axis=0)
    padded = np.pad(dst, [(int(r), int(r)) for r in reach])
    strides = np.array(padded.strides) // padded.itemsize
    flat = padded.reshape(-1)
    base = (np.stack(np.nonzero(src), axis=1) + reach) @ strides
    covered = flat[base]
    for off in offsets[1:]:
        pending = ~covered
        if not pending.any():
            break
        idx = np.flatnonzero(pending)
        covered[idx] = flat[base[idx] + int(off @ strides)]
    return int(np.count_nonzero(covered))


def _ball_offsets(spacing: tuple[float, ...], tol: float) -> np.ndarray:
    """Integer voxel offsets whose length in mm is <= ``tol``, nearest first (the zero offset first)."""
    reach = [int(np.floor(tol / s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    offs = np.stack([g.reshape(-1) for g in grids], axis=1)
    length = np.sqrt(((offs * np.asarray(spacing)) ** 2).sum(axis=1))
    keep = length <= tol
    order = np.argsort(length[keep], kind="stable")
    return offs[keep][order]


def bounding_box(mask: np.ndarray) -> Optional[Box]:
    """Tight box around the non-zero voxels of a mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Any number of axes.

    Returns
    -------
    tuple of slice or None
        One slice per axis; None when the mask is empty.
    """
    boxes = ndimage.find_objects(np.asarray(mask, dtype=bool).view(np.uint8), max_label=1)
    return boxes[0] if boxes and boxes[0] is not None else None


def union_box(a: Optional[Box], b: Optional[Box], shape: Sequence[int], pad: int = 1) -> Optional[Box]:
    """Smallest box holding both boxes, grown by ``pad`` voxels and clipped to ``shape``.

    Parameters
    ----------
    a, b : tuple of slice or None
        Boxes (:func:`bounding_box`); None stands for an empty mask.
    shape : sequence of int
        The array shape to clip to.
    pad : int
        Voxels added on every side (1 keeps a surface at the array border visible to the erosion).

    Returns
    -------
    tuple of slice or None
        None when both are None.
    """
    boxes = [x for x in (a, b) if x is not None]
    if not boxes:
        return None
    return tuple(slice(max(0, min(x[d].start for x in boxes) - pad), min(int(shape[d]), max(x[d].stop for x in boxes) + pad))
                 for d in range(len(shape)))


def label_boxes(label_map: np.ndarray) -> dict[int, Box]:
    """Bounding box of every label value > 0 present in an integer label map, in one pass.

    Parameters
    ----------
    label_map : numpy.ndarray
        Integer values, any number of axes.

    Returns
    -------
    dict
        Label value -> tuple of slices; values absent from the map are left out.
    """
    if label_map.size == 0:
        return {}
    top = int(label_map.max())
    if top <= 0:
        return {}
    arr = label_map if label_map.dtype.kind in "iu" else label_map.astype(np.int64)
    return {v + 1: box for v, box in enumerate(ndimage.find_objects(arr, max_label=top)) if box is not None}


def label_map_counts(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Joint histogram ``C[a, b]`` = number of voxels with reference value ``a`` and predicted value ``b``.

    One ``np.bincount`` over ``ref * K + pred`` per slab of ~16M voxels, so memory stays bounded for any volume
    size.

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Label maps of the same shape holding non-negative integers.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(K, K)`` with K = the largest value in either map + 1.

    Raises
    ------
    ValueError
        Different shapes, non-integer dtypes or negative values.
    """
    ref, pred = np.asarray(ref), np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} differs from prediction shape {pred.shape}")
    for a in (ref, pred):
        if a.dtype.kind not in "iu":
            raise ValueError(f"label maps must hold integers, got {a.dtype}")
    k = max(int(ref.max(initial=0)), int(pred.max(initial=0))) + 1
    if min(int(ref.min(initial=0)), int(pred.min(initial=0))) < 0:
        raise ValueError("label maps must not hold negative values")
    flat_r, flat_p = ref.reshape(-1), pred.reshape(-1)
    code_type = np.int32 if k * k < 2 ** 31 else np.int64
    hist = np.zeros(k * k, dtype=np.int64)
    for start in range(0, flat_r.size, _SLAB_VOXELS):
        r = flat_r[start:start + _SLAB_VOXELS].astype(code_type)
        r *= k
        r += flat_p[start:start + _SLAB_VOXELS]
        hist += np.bincount(r, minlength=k * k)
    return hist.reshape(k, k)


def present_labels(ref: np.ndarray, pred: np.ndarray) -> list[int]:
    """Sorted label values > 0 found in either integer label map.

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Integer label maps.

    Returns
    -------
    list of int
    """
    found = set()
    for a in (ref, pred):
        if a.size:
            found.update(int(v) for v in np.flatnonzero(np.bincount(np.asarray(a).reshape(-1))))
    return sorted(v for v in found if v > 0)


def counts_for(confusion: np.ndarray, value: LabelValue, pred_value: Optional[LabelValue] = None) -> ClassCounts:
    """Counts of one class from a joint histogram.

    Parameters
    ----------
    confusion : numpy.ndarray
        ``(K, K)`` from :func:`label_map_counts`.
    value : int or list of int
        The class's value in the reference, or a region (list of values).
    pred_value : int or list of int, optional
        The class's value in the prediction when the two maps number classes differently (e.g. liver is 6 in a
        BTCV reference and 5 in a TotalSegmentator prediction); default: ``value``.

    Returns
    -------
    ClassCounts
        TP, reference and prediction voxel counts (values beyond the histogram count as absent).
    """
    k = confusion.shape[0]
    ref_idx = [v for v in _values(value) if 0 <= v < k]
    pred_idx = [v for v in _values(value if pred_value is None else pred_value) if 0 <= v < k]
    tp = int(confusion[np.ix_(ref_idx, pred_idx)].sum()) if ref_idx and pred_idx else 0
    n_ref = int(confusion[ref_idx, :].sum()) if ref_idx else 0
    n_pred = int(confusion[:, pred_idx].sum()) if pred_idx else 0
    return ClassCounts(tp, n_ref, n_pred)


def evaluate_label_maps(ref: np.ndarray, pred: np.ndarray, classes: Mapping[str, LabelValue],
                        spacing: Sequence[float], tolerance_mm: float = 1.0,
                        pred_classes: Optional[Mapping[str, LabelValue]] = None,
                        extra_tolerances_mm: Optional[Mapping[str, float]] = None,
                        confusion: Optional[np.ndarray] = None) -> dict[str, dict]:
    """Dice, IoU and NSD of every class of two integer label maps on the same grid.

    ``classes`` maps a class name to its label value in ``ref``, or to a list of values for a region (the class
    is the union of those values, as in nnU-Net's region-based dataset.json). ``pred_classes`` gives the same
    names' values in ``pred`` when the prediction numbers its classes differently (default: ``classes``).
    ``extra_tolerances_mm`` ({result key: mm}) adds NSD at further tolerances, e.g. ``{"nsd_1voxel": 2.5}``.
    ``confusion``: :func:`label_map_counts` of the pair when the caller already has it. Returns
    ``{name: {"dice", "iou", "nsd", <extra keys>, "tp", "n_ref", "n_pred"}}`` with the empty-mask convention of
    this module.
    """
    ref, pred = np.asarray(ref), np.asarray(pred)
    extra = dict(extra_tolerances_mm or {})
    tolerances = [tolerance_mm, *extra.values()]
    for t in tolerances:
        _check_tolerance(t)
    spacing = _check_spacing(spacing, ref.ndim)
    if not ref.flags.c_contiguous and ref.T.flags.c_contiguous and pred.T.flags.c_contiguous:
        # read_image returns transposed (Fortran-ordered) views; every metric is unchanged when the axes and the
        # spacing are reversed together, and memory-order passes are several times faster.
        ref, pred, spacing = ref.T, pred.T, spacing[::-1]
    if confusion is None:
        confusion = label_map_counts(ref, pred)
    ref_boxes, pred_boxes = label_boxes(ref), label_boxes(pred)
    out = {}
    for name, value in classes.items():
        ref_values = _values(value)
        pred_values = _values(pred_classes[name]) if pred_classes is not None else ref_values
        c = counts_for(confusion, ref_values, pred_values)
        if c.n_ref == 0 or c.n_pred == 0:
            nsds = [math.nan if c.n_ref == c.n_pred == 0 else 0.0] * len(tolerances)
        else:
            box = None
            for v in ref_values:
                box = union_box(box, ref_boxes.get(v), ref.shape, pad=0)
            for v in pred_values:
                box = union_box(box, pred_boxes.get(v), ref.shape, pad=0)
            box = union_box(box, None, ref.shape, pad=1)
            r, p = _class_mask(ref[box], ref_values), _class_mask(pred[box], pred_values)
            nsds = surface_dices_in_box(r, p, spacing, tolerances)
        out[name] = class_result(c, nsds[0], dict(zip(extra, nsds[1:])))
    return out


def evaluate_masks(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0,
                   ref_box: Optional[Box] = None, pred_box: Optional[Box] = None) -> dict:
    """Dice, IoU and NSD of one pair of binary masks.

    Parameters
    ----------
    ref, pred : numpy.ndarray
        Binary masks of the same shape ``(i, j, k)``.
    spacing : sequence of float
        Voxel size in mm along each array axis.
    tolerance_mm : float
        The NSD tolerance in mm.
    ref_box, pred_box : tuple of slice, optional
        Boxes holding every non-zero voxel of their mask (:func:`bounding_box`), when known: they save a pass
        over each mask.

    Returns
    -------
    dict
        :func:`class_result`: ``dice``, ``iou``, ``nsd``, ``tp``, ``n_ref``, ``n_pred``.
    """
    ref, pred = _check_pair(ref, pred)
    if ref_box is None:
        ref_box = bounding_box(ref)
    if pred_box is None:
        pred_box = bounding_box(pred)
    box = union_box(ref_box, pred_box, ref.shape, pad=1)
    if box is None:
        return class_result(ClassCounts(0, 0, 0), math.nan)
    r, p = ref[box], pred[box]
    c = ClassCounts(int(np.count_nonzero(r & p)), int(np.count_nonzero(r)), int(np.count_nonzero(p)))
    return class_result(c, surface_dice_in_box(r, p, spacing, tolerance_mm))


def class_result(c: ClassCounts, nsd: float, extra_nsd: Optional[Mapping[str, float]] = None) -> dict:
    """One class's result dict.

    Parameters
    ----------
    c : ClassCounts
        The class's voxel counts.
    nsd : float
        NSD at the main tolerance.
    extra_nsd : Mapping, optional
        Result key -> NSD at further tolerances (``{"nsd_1voxel": 0.93}``).

    Returns
    -------
    dict
        ``dice``, ``iou``, ``nsd``, the extra keys, ``tp``, ``n_ref``, ``n_pred``.
    """
    out = {"dice": c.dice, "iou": c.iou, "nsd": float(nsd)}
    out.update({k: float(v) for k, v in (extra_nsd or {}).items()})
    out.update(tp=c.tp, n_ref=c.n_ref, n_pred=c.n_pred)
    return out


def nanmean_with_count(values: Iterable[float]) -> tuple[float, int, int]:
    """Mean that skips NaN, with the counts a summary reports.

    Parameters
    ----------
    values : iterable of float

    Returns
    -------
    mean : float
        Of the non-NaN values; NaN when there is none.
    used : int
        Values averaged.
    skipped : int
        NaN values left out.
    """
    vals = [float(v) for v in values]
    used = [v for v in vals if not math.isnan(v)]
    return (sum(used) / len(used) if used else math.nan), len(used), len(vals) - len(used)


def _class_mask(arr: np.ndarray, values: list[int]) -> np.ndarray:
    return arr == values[0] if len(values) == 1 else np.isin(arr, values)


def _values(value: LabelValue) -> list[int]:
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = [int(v) for v in value]
    else:
        vals = [int(value)]
    if not vals:
        raise ValueError("a region needs at least one label value")
    return vals


def _check_pair(ref: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, pred = np.asarray(ref).astype(bool, copy=False), np.asarray(pred).astype(bool, copy=False)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} differs from prediction shape {pred.shape}")
    return ref, pred


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {tuple(spacing)}")
    return sp


def _check_tolerance(tolerance_mm: float) -> None:
    if not (math.isfinite(float(tolerance_mm)) and float(tolerance_mm) >= 0):
        raise ValueError(f"NSD tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
