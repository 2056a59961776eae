"""Crop a case to the box that holds the body, and paste results back into the full grid.

Boxes are ``[[lo, hi], [lo, hi], [lo, hi]]`` (half-open) in array indices of the
last three axes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def foreground_box(images: np.ndarray, threshold: Optional[float] = None) -> list[list[int]]:
    """Bounding box of the foreground of ``images`` (C, i, j, k).

    ``threshold=None``: voxels where any channel is non-zero (nnU-Net's rule).
    Otherwise: voxels where channel 0 is above ``threshold`` (SuPreM crops away
    everything at or below -175 HU). An image without foreground keeps its full extent.
    """
    mask = np.any(images != 0, axis=0) if threshold is None else images[0] > threshold
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        if len(present) == 0:
            return [[0, s] for s in mask.shape]
        box.append([int(present[0]), int(present[-1]) + 1])
    return box


def crop(array: np.ndarray, box: Sequence[Sequence[int]]) -> np.ndarray:
    """View of ``array`` (..., i, j, k) inside ``box``."""
    return array[(Ellipsis,) + tuple(slice(lo, hi) for lo, hi in box)]


def uncrop(array: np.ndarray, box: Sequence[Sequence[int]], full_shape: Sequence[int], fill=0) -> np.ndarray:
    """Paste ``array`` (C, i, j, k) into a new (C, *full_shape) array filled with ``fill``.

    ``fill`` is a scalar or one value per channel (e.g. probability 1 for the background channel).
    """
    out = np.empty((array.shape[0],) + tuple(full_shape), dtype=array.dtype)
    fills = np.broadcast_to(np.asarray(fill, dtype=array.dtype), (array.shape[0],))
    for c in range(array.shape[0]):
        out[c].fill(fills[c])
    out[(slice(None),) + tuple(slice(lo, hi) for lo, hi in box)] = array
    return out
