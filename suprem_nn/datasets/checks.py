"""File and array checks shared by :func:`read_case` and :func:`verify_dataset`.

What a NIfTI file's own bytes say is wrong with it (ITK reads a truncated file as zeros, a voxel size of 0 as
1 mm) is :func:`suprem_nn.io.nifti_file.nifti_file_problems`, re-exported here for the dataset checks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DatasetError
from ..io.geometry import Geometry
from ..io.nifti_file import nifti_file_problems  # noqa: F401 - re-exported

# Two grids are the same when shapes are equal and the rest agrees within these tolerances.
SPACING_RTOL = 1e-4            # relative; 500 voxels drift by at most 0.05 voxel
ORIGIN_TOL_VOXELS = 1e-2       # origin difference, in units of the smallest voxel size
DIRECTION_ATOL = 1e-3          # on the direction cosines (as read_image's orthonormality check)


def grid_difference(reference: Geometry, other: Geometry) -> Optional[str]:
    """How ``other``'s voxel grid differs from ``reference``'s.

    Parameters
    ----------
    reference, other : Geometry
        Two grids (shape, spacing in mm, origin in mm, direction).

    Returns
    -------
    str or None
        What differs, in words with both values; None when shapes are equal and spacing (relative
        ``SPACING_RTOL``), origin (``ORIGIN_TOL_VOXELS`` of the smallest voxel) and direction
        (``DIRECTION_ATOL``) agree.
    """
    if tuple(other.shape) != tuple(reference.shape):
        return f"shape {tuple(other.shape)} differs from {tuple(reference.shape)}"
    out = []
    if not np.allclose(other.spacing, reference.spacing, rtol=SPACING_RTOL, atol=0):
        out.append(f"spacing {_fmt(other.spacing)} differs from {_fmt(reference.spacing)} mm")
    tol = ORIGIN_TOL_VOXELS * min(reference.spacing)
    if not np.allclose(other.origin, reference.origin, rtol=0, atol=tol):
        out.append(f"origin {_fmt(other.origin)} differs from {_fmt(reference.origin)} mm")
    if not np.allclose(other.direction, reference.direction, rtol=0, atol=DIRECTION_ATOL):
        out.append(f"direction {_fmt(other.direction)} differs from {_fmt(reference.direction)}")
    return "; ".join(out) or None


def require_same_grid(reference: Geometry, other: Geometry, path: Path, what: str) -> None:
    """Raise when ``other`` is not on the voxel grid of ``reference``.

    Parameters
    ----------
    reference, other : Geometry
        The two grids (shape, spacing in mm, origin in mm, direction; array axes ``i, j, k``).
    path : Path
        The file ``other`` was read from, named in the error.
    what : str
        What is wrong, in the user's words (``"case X: label is not on the image grid"``).

    Raises
    ------
    DatasetError
        ``"<what>: <how the grids differ>"`` naming ``path``.
    """
    diff = grid_difference(reference, other)
    if diff:
        raise DatasetError(f"{what}: {diff}", path)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def unique_values(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an array (a histogram for small non-negative integer ranges: much faster).

    Parameters
    ----------
    arr : numpy.ndarray
        Any shape.

    Returns
    -------
    numpy.ndarray
        1-D, sorted, ``arr``'s dtype.
    """
    if arr.dtype.kind in "ui" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi < 1 << 16:
            return np.flatnonzero(np.bincount(arr.ravel(), minlength=hi + 1)).astype(arr.dtype)
    return np.unique(arr)


def non_integer_values(arr: np.ndarray) -> np.ndarray:
    """Distinct values of a float array that are not whole numbers.

    Parameters
    ----------
    arr : numpy.ndarray
        Any shape and dtype.

    Returns
    -------
    numpy.ndarray
        1-D, sorted; empty for integer and bool dtypes.
    """
    if arr.dtype.kind not in "fc":
        return np.empty(0, dtype=arr.dtype)
    bad = arr[arr != np.round(arr)]
    return np.unique(bad)


def integer_label_values(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values of a label array, and those that are not whole numbers.

    Parameters
    ----------
    arr : numpy.ndarray
        A label map, any shape.

    Returns
    -------
    values : numpy.ndarray
        Distinct values, sorted.
    bad : numpy.ndarray
        Distinct non-integer values (empty for a valid label map).
    """
    bad = non_integer_values(arr)
    if bad.size:
        return np.unique(arr), bad
    return unique_values(arr), bad


def is_binary(arr: np.ndarray) -> bool:
    """Whether a mask holds only 0 and 1.

    Parameters
    ----------
    arr : numpy.ndarray
        Any shape and dtype (bool is always binary).

    Returns
    -------
    bool
    """
    if arr.dtype.kind == "b":
        return True
    if arr.dtype.kind in "ui":
        return set(unique_values(arr).tolist()) <= {0, 1}
    return bool(((arr == 0) | (arr == 1)).all())


def to_integer_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    """A label array as integers.

    Parameters
    ----------
    arr : numpy.ndarray
        A label map ``(i, j, k)`` as read.
    path : Path
        Its file, named in errors.

    Returns
    -------
    numpy.ndarray
        Integer dtypes unchanged, bool as uint8, floats holding whole numbers cast to the smallest integer type
        that holds them.

    Raises
    ------
    DatasetError
        Non-integer values, or a range no integer type holds.
    """
    if arr.dtype.kind in "ui":
        return arr
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    bad = non_integer_values(arr)
    if bad.size:
        raise DatasetError(f"label holds non-integer values ({describe_values(bad)}); label maps must hold "
                           "integer class values", path)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    for t in (np.uint8, np.int16, np.int32, np.int64):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return arr.astype(t)
    raise DatasetError(f"label values range {lo:g}..{hi:g} does not fit an integer type", path)


def describe_values(values, limit: int = 8) -> str:
    """Short text listing label values for messages: ``"0, 1, 2, ... (13 distinct)"``.

    Parameters
    ----------
    values : iterable of int or float
        The values (numpy scalars allowed), in the order to show.
    limit : int
        How many values to show before ``...``.

    Returns
    -------
    str
    """
    vals = [v.item() if hasattr(v, "item") else v for v in values]
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals[:limit])
    return shown + (f", ... ({len(vals)} distinct)" if len(vals) > limit else "")
