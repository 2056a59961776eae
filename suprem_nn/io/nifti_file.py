"""What a NIfTI file's own bytes say is wrong with it, before any reader decodes the voxels.

ITK's NIfTI reader is lenient in ways that hide broken files, so these are checked on the file itself:

* it reads the voxels a short file lacks as 0: a cut ``.nii``, a ``.nii.gz`` whose gzip stream breaks off, or a
  whole gzip stream of a cut file;
* it reads a voxel size of 0 or NaN as 1 mm, and a negative one in a file without qform/sform as its absolute
  value, which mirrors the image;
* it reads an axis of size 0 as size 1.

:func:`hidden_nifti_problem` gives the first of these (``read_image`` refuses the file with it);
:func:`nifti_file_problems` lists them together with what any reader would also refuse (not gzip, not NIfTI, a
corrupt header), for a dataset check that names every problem of every file. NaN voxels, which ITK also turns
into 0, are found by ``read_image`` on the stored values.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["hidden_nifti_problem", "is_gzip_file", "nifti_file_problems"]

_CHUNK = 1 << 22


def nifti_file_problems(path: Path) -> list[str]:
    """Every problem of a NIfTI file that can be told from its bytes (format, header, length).

    Parameters
    ----------
    path : Path
        Any image file.

    Returns
    -------
    list of str
        One message per problem; empty for other formats and for good files.
    """
    found, hidden = _inspect(Path(path))
    return found + hidden


def hidden_nifti_problem(path: Path) -> Optional[str]:
    """The first problem of a NIfTI file that ITK would read past without a word (module docstring); None if none.

    A file any reader refuses (not gzip-compressed as named and not plain NIfTI either, a corrupt header) gives
    None here: the reader says what it is in its own words.
    """
    return next(iter(_inspect(Path(path))[1]), None)


def is_gzip_file(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes; ITK decides by content, so a plain NIfTI named .nii.gz
    is read as well."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _inspect(path: Path) -> tuple[list[str], list[str]]:
    """``(problems any reader reports, problems ITK hides)``."""
    name = path.name.lower()
    ending = ".nii.gz" if name.endswith(".nii.gz") else ".nii" if name.endswith(".nii") else None
    if ending is None or not path.is_file():
        return [], []
    compressed = is_gzip_file(path)
    found = []
    if ending == ".nii.gz" and not compressed:
        with open(path, "rb") as f:
            magic = f.read(2)
        found.append(f"not a gzip file (starts with bytes {magic!r}, a .nii.gz starts with b'\\x1f\\x8b'); the "
                     "file is corrupt or has the wrong ending")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            head = f.read(540)
    except (EOFError, OSError, zlib.error) as exc:
        return found + [f"gzip stream is truncated or corrupt ({exc})"], []
    header = _parse_header(head)
    if isinstance(header, str):  # a misnamed file that is not plain NIfTI either: "not gzip" says enough
        return found or [header], []
    shape, pixdim, offset, dtype, has_transform = header
    if any(s <= 0 for s in shape):
        return found, [f"image has an empty axis (size {tuple(shape)})"]
    hidden = [f"impossible voxel spacing in the header: pixdim[{axis + 1}] is {v:g} mm (readers silently read "
              f"{'1 mm' if not math.isfinite(v) or v == 0 else 'its absolute value'}); it must be > 0"
              for axis, v in enumerate(pixdim[: min(3, len(shape))])
              if not math.isfinite(v) or v == 0 or (v < 0 and not has_transform)]
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        held = _uncompressed_size(path, offset + n_bytes) if compressed else path.stat().st_size
    except (EOFError, OSError, zlib.error) as exc:
        return found, hidden + [f"file is truncated or corrupt: its gzip stream is broken ({exc})"]
    if held < offset + n_bytes:
        hidden.append(f"file is truncated: the header declares {tuple(shape)} voxels of {dtype} ({n_bytes:,} "
                      f"bytes) but only {max(0, held - offset):,} bytes of voxel data are present")
    return found, hidden


def _parse_header(head: bytes):
    """(shape, pixdim, data offset, dtype, has qform/sform) of a NIfTI-1/2 header, or why it is not one."""
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
        has_transform = int(hdr["qform_code"]) != 0 or int(hdr["sform_code"]) != 0
        return shape, pixdim, int(hdr.get_data_offset()), hdr.get_data_dtype(), has_transform
    except Exception as exc:  # nibabel raises many types on garbage headers
        return f"corrupt NIfTI header ({exc})"


def _uncompressed_size(path: Path, needed: int) -> int:
    """Bytes a gzip file decompresses to; ``needed`` when its trailer already says so (no decompression).

    The trailer stores the size mod 2^32; only when it differs is the whole stream decompressed, which also tells
    a cut stream (raises EOFError / zlib.error) from a whole stream of a short or a padded file.
    """
    with open(path, "rb") as f:
        f.seek(-4, 2)
        if int.from_bytes(f.read(4), "little") == needed % 2**32:
            return needed
    held = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            held += len(chunk)
    return held
