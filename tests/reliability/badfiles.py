"""Builders for broken image files, each made from the small real CT (122x101x30 at 3 mm) so only one thing is wrong.

Every builder takes the real CT file (or its label map) and the output path and writes the broken version there.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np


def _load(src: Path):
    img = nib.load(str(src))
    return np.asarray(img.dataobj), img.affine.copy()


def _save(arr, aff, dst: Path, qform: bool = True) -> None:
    img = nib.Nifti1Image(arr, aff)
    if not qform:
        img.set_qform(None, code=0)
    nib.save(img, str(dst))


def truncated(src, dst):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: len(data) // 3])


def wrong_magic(src, dst):
    # a valid gzip stream whose content is not a NIfTI header
    Path(dst).write_bytes(gzip.compress(b"\x00\x01garbage" * 100))


def not_gzip(src, dst):
    Path(dst).write_bytes(b"this is not an image at all" * 40)


def nan_voxels(src, dst):
    arr, aff = _load(src)
    arr = arr.astype(np.float32)
    arr[10, 20, 5] = np.nan
    _save(arr, aff, dst)


def inf_voxels(src, dst):
    arr, aff = _load(src)
    arr = arr.astype(np.float32)
    arr[10, 20, 5] = np.inf
    _save(arr, aff, dst)


def two_d(src, dst):
    arr, aff = _load(src)
    _save(arr[:, :, 0], aff, dst)


def four_d(src, dst):
    arr, aff = _load(src)
    _save(np.stack([arr, arr], -1), aff, dst)


def zero_size_axis(src, dst):
    arr, aff = _load(src)
    _save(arr[:, :, :0], aff, dst)


def _pixdim(src, dst, value: float):
    arr, aff = _load(src)
    raw = bytearray(nib.Nifti1Image(arr, aff).to_bytes())
    raw[76 + 3 * 4: 76 + 4 * 4] = struct.pack("<f", value)  # pixdim[3]
    # no sform/qform: the header voxel size is all a reader has
    raw[252:254] = struct.pack("<h", 0)  # qform_code
    raw[254:256] = struct.pack("<h", 0)  # sform_code
    Path(dst).write_bytes(gzip.compress(bytes(raw)))


def zero_spacing(src, dst):
    _pixdim(src, dst, 0.0)


def negative_spacing(src, dst):
    _pixdim(src, dst, -3.0)


def huge_spacing(src, dst):
    arr, aff = _load(src)
    aff[2, 2] = 1e6
    _save(arr, aff, dst)


def sheared_direction(src, dst):
    arr, aff = _load(src)
    aff[0, 1] = 1.5  # axis j leans towards x: not an orthogonal grid
    _save(arr, aff, dst, qform=False)


IMAGE_FAULTS = {
    # name: (builder, words the message must contain)
    "truncated": (truncated, "truncated"),
    "wrong_magic": (wrong_magic, "magic"),
    "not_gzip": (not_gzip, "not a gzip file"),
    "nan": (nan_voxels, "NaN"),
    "inf": (inf_voxels, "infinite"),
    "2d": (two_d, "3D"),
    "4d": (four_d, "3D"),
    "zero_axis": (zero_size_axis, "empty axis"),
    "spacing_0": (zero_spacing, "spacing"),
    "spacing_negative": (negative_spacing, "spacing"),
    "spacing_1e6": (huge_spacing, "spacing"),
    "sheared": (sheared_direction, "orthonormal"),
}


def float_label(src, dst):
    lab, aff = _load(src)
    lab = lab.astype(np.float32)
    lab[lab == 6] = 0.5
    _save(lab, aff, dst)


def undeclared_label(src, dst):
    lab, aff = _load(src)
    lab = lab.copy()
    lab[0, 0, 0] = 20
    _save(lab, aff, dst)


def shifted_grid(src, dst):
    arr, aff = _load(src)
    aff[:3, 3] += (0.0, 0.0, 6.0)
    _save(arr, aff, dst)
