"""Geometry survives every supported format bit-exactly; bad images get one clear message."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from suprem_nn.errors import ImageReadError
from suprem_nn.io import (Geometry, apply_reorientation, plan_reorientation, read_geometry, read_image,
                          reoriented_geometry, undo_reorientation, write_image)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("case", ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"])
def test_round_trip_is_bit_exact(real_ct, tmp_path, ending, case):
    array, geom = read_image(real_ct / case / "ct.nii.gz")
    out = tmp_path / f"copy{ending}"
    write_image(array, geom, out)
    again, geom2 = read_image(out)
    assert geom2 == geom  # spacing, origin, direction and shape identical to the last bit
    assert again.dtype == array.dtype
    np.testing.assert_array_equal(again, array)
    assert read_geometry(out) == geom


def test_axis_convention_matches_nibabel(real_ct):
    import nibabel as nib
    path = real_ct / "ts_upper_abdomen_ce_dicom" / "ct.nii.gz"
    array, geom = read_image(path)
    nib_array = np.asarray(nib.load(str(path)).dataobj)
    assert array.shape == nib_array.shape == (512, 280, 20)
    np.testing.assert_array_equal(array, nib_array)
    assert geom.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert geom.orientation_code() == "LAS"


def test_dicom_series_folder_matches_reference_grid(real_ct):
    array, geom = read_image(real_ct / "ts_upper_abdomen_ce_dicom" / "dicom")
    ref_geom = read_geometry(real_ct / "ts_upper_abdomen_ce_dicom" / "seg_total117_fullgrid.nii.gz")
    assert array.shape == (512, 512, 20)
    assert array.min() >= -1024 and array.max() == 1839
    # Same voxels in the world: the DICOM grid is the reference grid up to axis flips.
    r = plan_reorientation(geom, ref_geom.orientation_code())
    g2 = reoriented_geometry(geom, r)
    assert g2.shape == ref_geom.shape
    np.testing.assert_allclose(g2.origin, ref_geom.origin, atol=1e-3)
    np.testing.assert_allclose(g2.direction, ref_geom.direction, atol=1e-6)
    # And the cropped CT in the data folder holds exactly these HU values.
    ct, ct_geom = read_image(real_ct / "ts_upper_abdomen_ce_dicom" / "ct.nii.gz")
    full = apply_reorientation(array, r)
    np.testing.assert_array_equal(full[:, 82:362, :], ct)


def test_reorientation_round_trip_and_world_positions():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, size=(5, 6, 7)).astype(np.int16)
    d = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)  # an odd permuted, flipped orientation
    g = Geometry((5, 6, 7), (0.7, 1.1, 2.5), (10.0, -20.0, 30.0), tuple(d.reshape(-1)))
    r = plan_reorientation(g, "RAS")
    b = apply_reorientation(a, r)
    g2 = reoriented_geometry(g, r)
    assert g2.orientation_code() == "RAS"
    np.testing.assert_array_equal(undo_reorientation(b, r), a)

    def world(geom, v):
        return np.asarray(geom.origin) + geom.direction_matrix @ (np.asarray(geom.spacing) * np.asarray(v))

    # Every voxel keeps its world position: check the corners.
    for v in [(0, 0, 0), (4, 0, 6), (4, 5, 6), (1, 2, 3)]:
        ijk = np.array(v)
        value = a[tuple(ijk)]
        hits = np.argwhere(b == value)
        assert any(np.allclose(world(g2, h), world(g, ijk)) for h in hits)


def _write(path, array, spacing=(1.0, 1.0, 1.0), direction=None):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


def test_short_nifti_is_refused_not_zero_filled(tmp_path, real_ct):
    """ITK reads the voxels a short NIfTI lacks as 0; a cut download or copy must be refused, naming the bytes."""
    ct = real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz"
    expected, _ = read_image(ct)
    raw = gzip.decompress(ct.read_bytes())
    short = {"short.nii": raw[: len(raw) // 2],
             "short.nii.gz": gzip.compress(raw[: len(raw) // 2]),  # a whole gzip stream of a cut file
             "short_plain.nii.gz": raw[:-1]}  # not compressed, named .nii.gz, one byte short
    for name, content in short.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageReadError) as err:
            read_image(tmp_path / name)
        held = (len(content) if name != "short.nii.gz" else len(raw) // 2) - 352  # after the 352-byte header
        assert str(err.value) == f"{tmp_path / name}: file is truncated: the header declares {expected.shape} " \
                                 f"voxels of {expected.dtype} ({len(raw) - 352:,} bytes) but only {held:,} bytes of voxel " \
                                 "data are present"
    # Whole files read as before: padded, or plain under a .gz name (ITK goes by content).
    for name, content in {"padded.nii": raw + bytes(64), "plain.nii.gz": raw,
                          "padded.nii.gz": gzip.compress(raw + bytes(64))}.items():
        (tmp_path / name).write_bytes(content)
        array, _ = read_image(tmp_path / name)
        np.testing.assert_array_equal(array, expected)


def test_nan_check_reads_a_plain_nifti_named_gz(tmp_path):
    import nibabel as nib

    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "nan.nii"))
    (tmp_path / "nan.nii").rename(tmp_path / "nan.nii.gz")
    with pytest.raises(ImageReadError, match="holds 1 NaN or infinite voxels"):
        read_image(tmp_path / "nan.nii.gz")


def test_bad_images_are_named_with_the_problem(tmp_path, real_ct):
    good = (real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz").read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 3])
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a nifti file" * 10)
    nan = tmp_path / "nan.nii.gz"
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 1, 1] = np.nan
    import nibabel as nib
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(nan))
    flat = tmp_path / "flat.nii.gz"
    _write(flat, np.zeros((4, 4), np.int16))
    four = tmp_path / "four.nii.gz"
    import nibabel as nib
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), str(four))
    sheared = tmp_path / "sheared.mha"
    _write(sheared, np.zeros((4, 4, 4), np.int16), direction=(1, 0.5, 0, 0, 1, 0, 0, 0, 1))
    huge = tmp_path / "huge.nrrd"
    _write(huge, np.zeros((4, 4, 4), np.int16), spacing=(1e6, 1.0, 1.0))
    expectations = {truncated: "truncated", garbage: "cannot read", nan: "NaN", flat: "3D", four: "3D",
                    sheared: "orthonormal", huge: "spacing"}
    for path, words in expectations.items():
        with pytest.raises(ImageReadError) as err:
            read_image(path)
        assert str(path) in str(err.value) and words in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
