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
    """Shape after resampling ``shape`` (voxels) from ``spacing`` to ``target`` (mm per axis)."""
    return [max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target)]


def separate_axis(spacing_from: Sequence[float], spacing_to: Sequence[float], threshold: float) -> Optional[int]:
    """Axis to resample separately (order 0), or None when the data is not anisotropic or two axes tie."""
    for spacing in (spacing_from, spacing_to):
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.max() / sp.min() > threshold:
            coarse = np.flatnonzero(sp == sp.max())
            return int(coarse[0]) if len(coarse) == 1 else None
    return None


def resample_image(data: np.ndarray, new_shape: Sequence[int], order: int,
                   sep_axis: Optional[int] = None) -> np.ndarray:
    """Resample intensities (C, i, j, k) to ``new_shape`` with spline ``order`` (0, 1 or 3); float32 out."""
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
    """Resample a label map (1, i, j, k) or binary masks (K, i, j, k) to ``new_shape``.

    Each class is interpolated as its own mask (linear for ``order`` >= 1, nearest
    for 0) and re-binarised, so thin structures survive better than with nearest
    neighbour. Exclusive maps take the argmax over background + classes (the
    background score is 1 - the classes' scores, because interpolated one-hot masks
    still sum to one); multi-label masks threshold at 0.5. Work is confined to each
    class's bounding box, so small organs in a large image cost little.
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
    """Linear (``order`` 1) or nearest (0) resampling of a (C, i, j, k) float tensor, on the tensor's own device.

    The same rule as :func:`resample_image` for these orders (cell-centred, ``align_corners=False``); with
    ``sep_axis``, in-plane interpolation per slice and nearest slice selection along that axis. Used by
    prediction export so probabilities can go back to the original grid on the GPU.
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
