"""Resample images, label maps and probabilities between voxel grids.

All functions take channel-first arrays ``(C, i, j, k)``. Grids are aligned at
voxel *edges* (``align_corners=False`` / ``grid_mode=True``), like nnU-Net's
skimage-based resampling, so resampling there and back keeps the field of view.

Anisotropic data (one axis more than ``anisotropy_threshold`` times coarser than
the finest) is resampled in-plane first and then along the coarse axis with
nearest-neighbour, as nnU-Net does, so thick slices are not smeared into each other.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def new_shape_for_spacing(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    """Shape after resampling from one voxel size to another.

    Parameters
    ----------
    shape : sequence of 3 int
        Voxels per array axis.
    spacing, target : sequence of 3 float
        Current and target voxel size in mm, per array axis (same order as ``shape``).

    Returns
    -------
    list of 3 int
        ``round(shape * spacing / target)`` per axis, at least 1.
    """
    return [max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target)]


def separate_axis(spacing_from: Sequence[float], spacing_to: Sequence[float], threshold: float) -> Optional[int]:
    """The axis to resample separately (nearest along it), as nnU-Net does for anisotropic data.

    Parameters
    ----------
    spacing_from, spacing_to : sequence of 3 float
        Voxel size in mm before and after resampling, per array axis.
    threshold : float
        Ratio of largest to smallest spacing above which data counts as anisotropic (the plan's
        ``anisotropy_threshold``, 3 as in nnU-Net); ``spacing_from`` is tested first.

    Returns
    -------
    int or None
        The index of the single coarsest axis; None when neither spacing is anisotropic or two axes tie.
    """
    for spacing in (spacing_from, spacing_to):
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.max() / sp.min() > threshold:
            coarse = np.flatnonzero(sp == sp.max())
            return int(coarse[0]) if len(coarse) == 1 else None
    return None


def resample_image(data: np.ndarray, new_shape: Sequence[int], order: int,
                   sep_axis: Optional[int] = None) -> np.ndarray:
    """Resample intensities to ``new_shape``.

    Parameters
    ----------
    data : numpy.ndarray
        Shape ``(C, i, j, k)``, any real dtype.
    new_shape : sequence of 3 int
        Target voxels per axis ``(i, j, k)``.
    order : int
        Spline order: 0 (nearest), 1 (linear, through torch) or 3 (cubic, scipy).
    sep_axis : int, optional
        An axis resampled with nearest-neighbour on its own (:func:`separate_axis`).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(C, *new_shape)`` (a copy even when the shape is unchanged).
    """
    new_shape = tuple(int(s) for s in new_shape)
    data = np.asarray(data, dtype=np.float32)
    if tuple(data.shape[1:]) == new_shape:
        return data.copy()
    if sep_axis is None:
        if order <= 1:
            return resample_tensor(torch.from_numpy(np.ascontiguousarray(data)), new_shape, order).numpy()
        zoom = [n / o for n, o in zip(new_shape, data.shape[1:])]
        return np.stack([ndimage.zoom(c, zoom, order=order, mode="nearest", grid_mode=True) for c in data])
    return _resample_separate(data, new_shape, order, sep_axis)


def resample_labels(seg: np.ndarray, new_shape: Sequence[int], multilabel: bool, num_classes: int,
                    order: int = 1, sep_axis: Optional[int] = None) -> np.ndarray:
    """Resample a label map or binary masks to ``new_shape``.

    Each class is interpolated as its own mask (linear for ``order`` >= 1, nearest
    for 0) and re-binarised, so thin structures survive better than with nearest
    neighbour. Exclusive maps take the argmax over background + classes (the
    background score is 1 - the classes' scores, because interpolated one-hot masks
    still sum to one); multi-label masks threshold at 0.5. Work is confined to each
    class's bounding box, so small organs in a large image cost little.

    Parameters
    ----------
    seg : numpy.ndarray
        A label map ``(1, i, j, k)`` with values 0..K, or binary masks ``(K, i, j, k)`` when ``multilabel``.
    new_shape : sequence of 3 int
        Target voxels per axis ``(i, j, k)``.
    multilabel : bool
        ``seg`` holds one mask per class.
    num_classes : int
        K, the foreground classes.
    order : int
        1 (linear per class mask) or 0 (nearest).
    sep_axis : int, optional
        An axis resampled with nearest-neighbour on its own.

    Returns
    -------
    numpy.ndarray
        Same dtype and channel count as ``seg``, shape ``(C, *new_shape)``.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(seg.shape[1:]) == new_shape:
        return seg.copy()
    modes = ["nearest" if (order == 0 or a == sep_axis) else "linear" for a in range(3)]
    if multilabel:
        out = np.zeros((seg.shape[0],) + new_shape, dtype=np.uint8)
        for c in range(seg.shape[0]):
            box = ndimage.find_objects((seg[c] > 0).astype(np.uint8))
            if box:
                for out_box, score in _class_scores(seg[c][box[0]] > 0, box[0], seg.shape[1:], new_shape, modes):
                    out[c][out_box] = score >= 0.5
        return out
    label_map = seg[0]
    best = np.zeros(new_shape, dtype=np.float32)
    total = np.zeros(new_shape, dtype=np.float32)
    winner = np.zeros(new_shape, dtype=seg.dtype)
    boxes = ndimage.find_objects(np.clip(label_map, 0, None).astype(np.int32, copy=False), max_label=num_classes)
    for c in range(1, num_classes + 1):
        if boxes[c - 1] is None:
            continue
        src_box = boxes[c - 1]
        for box, score in _class_scores(label_map[src_box] == c, src_box, label_map.shape, new_shape, modes):
            total[box] += score
            better = score > best[box]
            best[box] = np.where(better, score, best[box])
            winner[box] = np.where(better, c, winner[box])
    winner[best <= 1.0 - total] = 0
    return winner[None]


def _class_scores(block_mask: np.ndarray, src_box: tuple, src_shape: tuple, new_shape: tuple, modes: list[str]):
    """Yield (output box, interpolated values) for one binary mask given inside its bounding box ``src_box``."""
    block = block_mask.astype(np.float32)
    out_box = []
    for axis in range(3):
        lo, hi = int(src_box[axis].start), int(src_box[axis].stop)
        i0, i1, w = _source_indices(src_shape[axis], new_shape[axis], modes[axis])
        touched = np.flatnonzero(((i0 >= lo) & (i0 < hi)) | ((i1 >= lo) & (i1 < hi)))
        o_lo, o_hi = int(touched[0]), int(touched[-1]) + 1
        out_box.append(slice(o_lo, o_hi))
        pad = [(0, 0)] * 3
        pad[axis] = (1, 1)
        padded = np.pad(block, pad)  # zero slots stand for source voxels outside the box
        n = block.shape[axis]
        j0 = np.clip(i0[o_lo:o_hi] - lo + 1, 0, n + 1)
        j1 = np.clip(i1[o_lo:o_hi] - lo + 1, 0, n + 1)
        shape = [1, 1, 1]
        shape[axis] = -1
        wv = w[o_lo:o_hi].reshape(shape)
        block = np.take(padded, j0, axis=axis) * (1 - wv) + np.take(padded, j1, axis=axis) * wv
    yield tuple(out_box), block


def _source_indices(n_in: int, n_out: int, mode: str):
    """Source neighbours and weights of every output voxel, matching torch's align_corners=False sampling."""
    scale = n_in / n_out
    o = np.arange(n_out, dtype=np.float64)
    if mode == "nearest":
        i0 = np.minimum(np.floor((o + 0.5) * scale).astype(np.int64), n_in - 1)
        return i0, i0, np.zeros(n_out, dtype=np.float32)
    src = np.maximum((o + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resample_tensor(data: torch.Tensor, new_shape: Sequence[int], order: int = 1,
                    sep_axis: Optional[int] = None) -> torch.Tensor:
    """Linear or nearest resampling of a float tensor, on the tensor's own device.

    The same rule as :func:`resample_image` for these orders (cell-centred, ``align_corners=False``); with
    ``sep_axis``, in-plane interpolation per slice and nearest slice selection along that axis. Used by
    prediction to bring probabilities back to the input grid on the GPU.

    Parameters
    ----------
    data : torch.Tensor
        Float, shape ``(C, i, j, k)``.
    new_shape : sequence of 3 int
        Target voxels per axis ``(i, j, k)``.
    order : int
        1 (linear) or 0 (nearest).
    sep_axis : int, optional
        An axis resampled with nearest slice selection on its own.

    Returns
    -------
    torch.Tensor
        Shape ``(C, *new_shape)``, same dtype and device (``data`` itself when the shape is unchanged).
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    if sep_axis is None:
        mode = "trilinear" if order == 1 else "nearest-exact"
        kwargs = {"align_corners": False} if order == 1 else {}
        return F.interpolate(data[None], size=new_shape, mode=mode, **kwargs)[0]
    moved = data.movedim(sep_axis + 1, 1)  # (C, n_slices, a, b)
    plane_shape = tuple(s for a, s in enumerate(new_shape) if a != sep_axis)
    c, n = moved.shape[:2]
    slices = moved.reshape((c * n, 1) + tuple(moved.shape[2:]))
    if tuple(moved.shape[2:]) != plane_shape:
        mode = "bilinear" if order == 1 else "nearest-exact"
        kwargs = {"align_corners": False} if order == 1 else {}
        slices = F.interpolate(slices, size=plane_shape, mode=mode, **kwargs)
    slices = slices.reshape((c, n) + plane_shape)
    n_new = new_shape[sep_axis]
    if n_new != n:
        src = np.minimum(((np.arange(n_new) + 0.5) * n / n_new).astype(np.int64), n - 1)
        slices = slices.index_select(1, torch.from_numpy(src).to(slices.device))
    return slices.movedim(1, sep_axis + 1).contiguous()


def _resample_separate(data: np.ndarray, new_shape: tuple, order: int, axis: int) -> np.ndarray:
    """In-plane with ``order`` (spline for 3), then nearest along ``axis``."""
    if order <= 1:
        return resample_tensor(torch.from_numpy(np.ascontiguousarray(data)), new_shape, order, axis).numpy()
    moved = np.moveaxis(data, axis + 1, 1)  # (C, n_slices, a, b)
    plane_shape = tuple(s for a, s in enumerate(new_shape) if a != axis)
    c, n = moved.shape[:2]
    slices = np.ascontiguousarray(moved.reshape((c * n,) + moved.shape[2:]))
    if moved.shape[2:] != plane_shape:
        zoom = [p / o for p, o in zip(plane_shape, slices.shape[1:])]
        slices = np.stack([ndimage.zoom(s, zoom, order=order, mode="nearest", grid_mode=True) for s in slices])
    slices = slices.reshape((c, n) + plane_shape)
    n_new = new_shape[axis]
    if n_new != n:
        src = np.minimum(((np.arange(n_new) + 0.5) * n / n_new).astype(np.int64), n - 1)
        slices = slices[:, src]
    return np.ascontiguousarray(np.moveaxis(slices, 1, axis + 1))
