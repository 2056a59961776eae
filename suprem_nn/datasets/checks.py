"""File and array checks shared by :func:`read_case` and :func:`verify_dataset`.

ITK's NIfTI reader is lenient in ways that hide broken files: it zero-fills a truncated file (``.nii`` or
``.nii.gz``) and turns a voxel size of 0 in the header into 1 mm. :func:`nifti_file_problems` looks at the
file itself to catch these before the image is read (NaN voxels, which ITK also hides, are read_image's job).
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DatasetError
from ..io.geometry import Geometry
from ..io.image_io import image_ending

# Two grids are the same when shapes are equal and the rest agrees within these tolerances.
SPACING_RTOL = 1e-4            # relative; 500 voxels drift by at most 0.05 voxel
ORIGIN_TOL_VOXELS = 1e-2       # origin difference, in units of the smallest voxel size
DIRECTION_ATOL = 1e-3          # on the direction cosines (as read_image's orthonormality check)

_CHUNK = 1 << 22


def nifti_file_problems(path: Path) -> list[str]:
    """Problems of a NIfTI file that ITK would read without complaint (truncated data, a zero voxel size).

    Parameters
    ----------
    path : Path
        Any image file.

    Returns
    -------
    list of str
        One message per problem; empty for other formats and for good files.
    """
    path = Path(path)
    ending = image_ending(path.name)
    if ending not in (".nii", ".nii.gz") or not path.is_file():
        return []
    compressed = ending == ".nii.gz"
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            head = f.read(540)
    except gzip.BadGzipFile:
        with open(path, "rb") as f:
            magic = f.read(2)
        return [f"not a gzip file (starts with bytes {magic!r}, a .nii.gz starts with b'\\x1f\\x8b'); the "
                "file is corrupt or has the wrong ending"]
    except (EOFError, OSError, zlib.error) as exc:
        return [f"gzip stream is truncated or corrupt ({exc})"]
    header = _parse_header(head)
    if isinstance(header, str):
        return [header]
    shape, pixdim, offset, dtype = header
    if any(s <= 0 for s in shape):
        return [f"image has an empty axis (size {tuple(shape)})"]
    problems = []
    for axis, v in enumerate(pixdim[: min(3, len(shape))]):
        if not math.isfinite(v) or v == 0:  # readers silently use 1 mm instead
            problems.append(f"impossible voxel spacing in the header: pixdim[{axis + 1}] is {v:g} mm (readers "
                            "silently replace it by 1 mm); it must be > 0")
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    expected = offset + n_bytes
    if compressed:
        try:
            actual = expected if _gzip_trailer_size(path) == expected % 2**32 else _gzip_length(path)
        except (EOFError, OSError, zlib.error) as exc:
            return problems + [f"file is truncated or corrupt: its gzip stream is broken ({exc})"]
    else:
        actual = path.stat().st_size
    if actual < expected:
        return problems + [f"file is truncated: the header declares {tuple(shape)} voxels of {dtype} "
                           f"({n_bytes} bytes) but only {max(0, actual - offset)} bytes of voxel data are present"]
    return problems


def _parse_header(head: bytes):
    """(shape, pixdim, data offset, dtype) of a NIfTI-1/2 header, or a message saying why it is not one."""
    import nibabel as nib

    if len(head) < 348:
        return f"file is truncated: {len(head)} bytes, shorter than a NIfTI header (348 bytes)"
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size in (348, 540):
            break
    else:
        return (f"not a NIfTI file: wrong magic bytes (the header starts with {head[:8]!r}; the first field "
                "must be 348 or 540)")
    klass = nib.Nifti1Header if size == 348 else nib.Nifti2Header
    if len(head) < size:
        return f"file is truncated: {len(head)} bytes, shorter than a NIfTI header ({size} bytes)"
    try:
        hdr = klass(head[:size], endianness=endian, check=False)
        dim = [int(v) for v in hdr["dim"]]
        ndim = dim[0]
        if not 1 <= ndim <= 7:
            return f"corrupt NIfTI header: dim[0] (number of axes) is {ndim}"
        shape = dim[1:1 + ndim]
        pixdim = [float(v) for v in hdr["pixdim"][1:1 + ndim]]
        return shape, pixdim, int(hdr.get_data_offset()), hdr.get_data_dtype()
    except Exception as exc:  # nibabel raises many types on garbage headers
        return f"corrupt NIfTI header ({exc})"


def _gzip_trailer_size(path: Path) -> int:
    """Uncompressed size (mod 2**32) stored in the last 4 bytes of a gzip file."""
    with open(path, "rb") as f:
        f.seek(-4, 2)
        return int.from_bytes(f.read(4), "little")


def _gzip_length(path: Path) -> int:
    """Uncompressed size, decompressing the whole stream (raises on truncated or corrupt streams)."""
    n = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            n += len(chunk)
    return n


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
