"""Crop a case to the box that holds the body, and paste results back into the full grid.

Boxes are ``[[lo, hi], [lo, hi], [lo, hi]]`` (half-open) in array indices of the
last three axes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def foreground_box(images: np.ndarray, threshold: Optional[float] = None) -> list[list[int]]:
    """Bounding box of the foreground of ``images``.

    Parameters
    ----------
    images : numpy.ndarray
        Shape ``(C, i, j, k)``: channels first, then the three array axes.
    threshold : float, optional
        None: the foreground is where any channel is non-zero (nnU-Net's rule). Otherwise: where channel 0 is
        above ``threshold`` (in the image's units, HU for CT; SuPreM crops away everything at or below -175 HU).

    Returns
    -------
    list of [lo, hi]
        One half-open index range per array axis ``(i, j, k)``; an image without foreground keeps its full
        extent.
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
    """The part of ``array`` inside ``box``, as a view.

    Parameters
    ----------
    array : numpy.ndarray
        Shape ``(..., i, j, k)``; leading axes (channels) are kept whole.
    box : sequence of [lo, hi]
        Half-open index ranges of the last three axes (:func:`foreground_box`).

    Returns
    -------
    numpy.ndarray
        A view, shape ``(..., hi_i - lo_i, hi_j - lo_j, hi_k - lo_k)``.
    """
    return array[(Ellipsis,) + tuple(slice(lo, hi) for lo, hi in box)]


def uncrop(array: np.ndarray, box: Sequence[Sequence[int]], full_shape: Sequence[int], fill=0) -> np.ndarray:
    """Paste a cropped array back into the full grid (the inverse of :func:`crop`).

    Parameters
    ----------
    array : numpy.ndarray
        Shape ``(C, i, j, k)``, the extent of ``box``.
    box : sequence of [lo, hi]
        Where ``array`` lies in the full grid: half-open ranges per array axis ``(i, j, k)``.
    full_shape : sequence of 3 int
        The full grid's shape ``(i, j, k)``.
    fill : scalar or sequence
        The value outside ``box``: one value, or one per channel (e.g. probability 1 for the background
        channel).

    Returns
    -------
    numpy.ndarray
        A new array ``(C, *full_shape)`` of ``array``'s dtype.
    """
    out = np.empty((array.shape[0],) + tuple(full_shape), dtype=array.dtype)
    fills = np.broadcast_to(np.asarray(fill, dtype=array.dtype), (array.shape[0],))
    for c in range(array.shape[0]):
        out[c].fill(fills[c])
    out[(slice(None),) + tuple(slice(lo, hi) for lo, hi in box)] = array
    return out
