"""verify_dataset reports every problem of a dataset at once, each naming the case, the file and the problem."""
from __future__ import annotations

import gzip
import json
import shutil
import struct

import nibabel as nib
import numpy as np
import pytest

from suprem_nn.datasets import load_dataset, verify_dataset
from suprem_nn.errors import DatasetError
from tests.conftest import make_abdomenatlas_dataset, make_nnunet_dataset

SM = "ts_abdomen_sm_3mm"
OTHER = "copy_of_sm"


# ---------------------------------------------------------------- helpers

@pytest.fixture()
def folder(tmp_path):
    """nnU-Net dataset with two small real cases: SM and a copy of it named OTHER."""
    f = make_nnunet_dataset(tmp_path / "raw", cases=[SM])
    shutil.copyfile(f / "imagesTr" / f"{SM}_0000.nii.gz", f / "imagesTr" / f"{OTHER}_0000.nii.gz")
    shutil.copyfile(f / "labelsTr" / f"{SM}.nii.gz", f / "labelsTr" / f"{OTHER}.nii.gz")
    _set_json(f, numTraining=2)
    return f


def _set_json(folder, **changes):
    meta = json.loads((folder / "dataset.json").read_text())
    meta.update(changes)
    (folder / "dataset.json").write_text(json.dumps(meta))


def _verify(folder, **kw):
    kw.setdefault("progress", False)
    return verify_dataset(load_dataset(folder), **kw)


def _ct(folder):
    img = nib.load(str(folder / "imagesTr" / f"{SM}_0000.nii.gz"))
    return np.asarray(img.dataobj), img.affine


def _label(folder):
    img = nib.load(str(folder / "labelsTr" / f"{SM}.nii.gz"))
    return np.asarray(img.dataobj), img.affine


def _image(folder, case=SM, channel=0):
    return folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz"


def _label_path(folder, case=SM):
    return folder / "labelsTr" / f"{case}.nii.gz"


def assert_reported(report, case_id, filename, *words):
    """Some problem of ``case_id`` about ``filename`` has a report line holding every word."""
    lines = [line for p, line in zip(report.problems, report.problem_lines())
             if p.case_id == case_id and p.path is not None and p.path.name == filename]
    assert lines, f"no problem reported for case {case_id} / {filename}; report:\n{report}"
    hits = [ln for ln in lines if all(w in ln for w in words)]
    assert hits, f"expected {words} in one of {lines}"
    assert hits[0].startswith(f"case {case_id}: ") and filename in hits[0]
    return hits[0]


def assert_only_case(report, case_id):
    """The good case of the fixture is not blamed for the bad one."""
    assert {p.case_id for p in report.problems} == {case_id}, str(report)


# ---------------------------------------------------------------- good datasets

def test_clean_datasets_pass_without_warnings(folder, tmp_path):
    report = _verify(folder)
    assert report.ok and report.problems == [] and report.warnings == [], str(report)
    report.raise_if_failed()  # does not raise
    aa = make_abdomenatlas_dataset(tmp_path / "aa", cases=[SM])
    report = _verify(aa)
    assert report.ok and report.warnings == [], str(report)


# ---------------------------------------------------------------- broken files

@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_file(folder, ending, tmp_path):
    if ending == ".nii":  # the same dataset, uncompressed
        (arr, aff), (lab, laff) = _ct(folder), _label(folder)
        for case in (SM, OTHER):
            _image(folder, case).unlink()
            _label_path(folder, case).unlink()
            nib.save(nib.Nifti1Image(arr, aff), str(folder / "imagesTr" / f"{case}_0000.nii"))
            nib.save(nib.Nifti1Image(lab, laff), str(folder / "labelsTr" / f"{case}.nii"))
        _set_json(folder, file_ending=".nii")
    path = folder / "imagesTr" / f"{SM}_0000{ending}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = _verify(folder)
    assert_reported(report, SM, path.name, "truncated")
    assert_only_case(report, SM)


def test_garbage_bytes_and_wrong_magic(folder):
    _image(folder).write_bytes(b"this is not an image at all" * 40)
    _label_path(folder, OTHER).write_bytes(gzip.compress(b"\x00\x01garbage" * 100))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "not a gzip file", "b'th'")
    assert_reported(report, OTHER, f"{OTHER}.nii.gz", "not a NIfTI file", "wrong magic bytes")


def test_nan_voxels(folder):
    arr, aff = _ct(folder)
    arr = arr.astype(np.float32)
    arr[10, 20, 5] = np.nan
    arr[11, 20, 5] = np.inf
    nib.save(nib.Nifti1Image(arr, aff), str(_image(folder)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "2 NaN or infinite voxels")
    assert_only_case(report, SM)


def test_2d_and_4d_images(folder):
    arr, aff = _ct(folder)
    nib.save(nib.Nifti1Image(arr[:, :, 0], aff), str(_image(folder)))
    nib.save(nib.Nifti1Image(np.stack([arr, arr], -1), aff), str(_image(folder, OTHER)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "expected a 3D image, got 2D")
    assert_reported(report, OTHER, f"{OTHER}_0000.nii.gz", "expected a 3D image, got 4D")


def test_zero_size_axis(folder):
    arr, aff = _ct(folder)
    nib.save(nib.Nifti1Image(arr[:, :, :0], aff), str(_image(folder)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "empty axis", "(122, 101, 0)")


def test_zero_spacing_in_header(folder):
    """nibabel and ITK both turn a header voxel size of 0 into 1 mm without a word; we don't."""
    arr, aff = _ct(folder)
    raw = bytearray(nib.Nifti1Image(arr, aff).to_bytes())
    raw[76 + 3 * 4: 76 + 4 * 4] = struct.pack("<f", 0.0)  # pixdim[3]
    _image(folder).write_bytes(gzip.compress(bytes(raw)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "impossible voxel spacing", "pixdim[3] is 0 mm")


def test_absurd_spacing(folder):
    arr, aff = _ct(folder)
    aff = aff.copy()
    aff[2, 2] = 1e6
    nib.save(nib.Nifti1Image(arr, aff), str(_image(folder)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "impossible voxel spacing", "1000000")


def test_sheared_direction(folder):
    arr, aff = _ct(folder)
    aff = aff.copy()
    aff[0, 1] = 1.5  # shear: axis j leans towards x
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(None, code=0)
    nib.save(img, str(_image(folder)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "orthonormal")


# ---------------------------------------------------------------- labels

def test_undeclared_label_values(folder):
    lab, aff = _label(folder)
    lab = lab.copy()
    lab[0, 0, 0] = 14
    lab[1, 0, 0] = 20
    nib.save(nib.Nifti1Image(lab, aff), str(_label_path(folder)))
    report = _verify(folder)
    line = assert_reported(report, SM, f"{SM}.nii.gz", "label values 14, 20 are not declared in dataset.json")
    assert "declared: 0, 1, 2" in line
    assert_only_case(report, SM)


def test_non_integer_label_values(folder):
    lab, aff = _label(folder)
    lab = lab.astype(np.float32)
    lab[lab == 6] = 0.5
    nib.save(nib.Nifti1Image(lab, aff), str(_label_path(folder)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}.nii.gz", "non-integer values (0.5)")


def test_label_on_another_grid(folder):
    lab, aff = _label(folder)
    moved = aff.copy()
    moved[:3, 3] += (0.0, 0.0, 6.0)
    nib.save(nib.Nifti1Image(lab, moved), str(_label_path(folder)))
    nib.save(nib.Nifti1Image(lab[:, :, 1:], aff), str(_label_path(folder, OTHER)))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}.nii.gz", "label is not on the image grid", "origin")
    assert_reported(report, OTHER, f"{OTHER}.nii.gz", "label is not on the image grid",
                    "shape (122, 101, 29) differs from (122, 101, 30)")


def test_tiny_float_rounding_of_the_grid_is_tolerated(folder):
    lab, aff = _label(folder)
    nudged = aff.copy()
    nudged[:3, 3] += 1e-4  # float32 rounding of an origin, far below a voxel
    nib.save(nib.Nifti1Image(lab, nudged), str(_label_path(folder)))
    assert _verify(folder).ok


def test_missing_label(folder):
    _label_path(folder, OTHER).unlink()
    report = _verify(folder)
    assert_reported(report, OTHER, f"{OTHER}.nii.gz", "missing label file")
    assert_only_case(report, OTHER)


def test_label_without_image_and_label_named_like_a_channel(folder):
    shutil.copyfile(_label_path(folder), folder / "labelsTr" / "stray.nii.gz")
    _label_path(folder, OTHER).rename(folder / "labelsTr" / f"{OTHER}_0000.nii.gz")
    report = _verify(folder)
    assert_reported(report, "stray", "stray.nii.gz", "label file has no image in imagesTr/")
    assert_reported(report, f"{OTHER}_0000", f"{OTHER}_0000.nii.gz", "without the _XXXX channel suffix")
    assert_reported(report, OTHER, f"{OTHER}.nii.gz", "missing label file")


def test_empty_labels_warn_unless_all_are_empty(folder):
    lab, aff = _label(folder)
    nib.save(nib.Nifti1Image(np.zeros_like(lab), aff), str(_label_path(folder, OTHER)))
    report = _verify(folder)
    assert report.ok, str(report)
    assert [(w.case_id, w.path.name) for w in report.warnings] == [(OTHER, f"{OTHER}.nii.gz")]
    assert "no foreground" in report.warnings[0].message
    nib.save(nib.Nifti1Image(np.zeros_like(lab), aff), str(_label_path(folder, SM)))
    report = _verify(folder)
    assert not report.ok
    assert [p.case_id for p in report.problems] == [None]
    assert "every training label is empty" in report.problem_lines()[0]
    assert "2 readable training cases" in report.problem_lines()[0]


# ---------------------------------------------------------------- case listing

def test_missing_channel_file(folder):
    arr, aff = _ct(folder)
    nib.save(nib.Nifti1Image(arr, aff), str(_image(folder, SM, 1)))
    _set_json(folder, channel_names={"0": "CT", "1": "PET"})
    report = _verify(folder)
    assert_reported(report, OTHER, f"{OTHER}_0001.nii.gz", "missing image file for channel 1 (PET)")
    assert_only_case(report, OTHER)


def test_channel_not_declared_and_file_without_channel_suffix(folder):
    shutil.copyfile(_image(folder), _image(folder, SM, 1))
    shutil.copyfile(_image(folder), folder / "imagesTr" / "nosuffix.nii.gz")
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0001.nii.gz", "channel 0001 does not exist", "declares 1 channel(s) (CT)")
    assert_reported(report, "nosuffix", "nosuffix.nii.gz", "lacks the _XXXX channel suffix")


def test_duplicate_case_ids(folder):
    arr, aff = _ct(folder)
    nib.save(nib.Nifti1Image(arr, aff), str(folder / "imagesTr" / f"{SM}_0000.nii"))
    lab, laff = _label(folder)
    nib.save(nib.Nifti1Image(lab, laff), str(folder / "labelsTr" / f"{OTHER}.nii"))
    report = _verify(folder)
    assert_reported(report, SM, f"{SM}_0000.nii.gz", "duplicate case id",
                    f"{SM}_0000.nii.gz, {SM}_0000.nii")
    assert_reported(report, OTHER, f"{OTHER}.nii.gz", "duplicate case id", "2 label files")
    ds = load_dataset(folder)
    assert [c.case_id for c in ds.cases] == [OTHER, SM]  # listed once, with the file_ending file
    assert ds.case(SM).images[0].name == f"{SM}_0000.nii.gz"


def test_empty_dataset(tmp_path):
    folder = make_nnunet_dataset(tmp_path / "raw", cases=[SM])
    for p in (folder / "imagesTr").iterdir():
        p.unlink()
    (folder / "labelsTr" / f"{SM}.nii.gz").unlink()
    report = _verify(folder)
    assert not report.ok
    assert report.problem_lines() == [f"dataset: {folder.resolve()}: dataset has no training cases (imagesTr/ "
                                      "holds no CASE_0000 image)"]
    assert any("numTraining is 1 but imagesTr/ holds 0 cases" in w.message for w in report.warnings)
    with pytest.raises(DatasetError, match="has no training cases"):
        report.raise_if_failed()


def test_num_training_mismatch_is_a_warning(folder):
    _set_json(folder, numTraining=5)
    report = _verify(folder)
    assert report.ok
    assert [w.path.name for w in report.warnings] == ["dataset.json"]
    assert "numTraining is 5 but imagesTr/ holds 2 cases" in report.warnings[0].message


def test_test_images_are_verified_too(folder):
    (folder / "imagesTs").mkdir()
    (folder / "imagesTs" / "unseen_0000.nii.gz").write_bytes(b"junk")
    report = _verify(folder)
    assert_reported(report, "unseen (imagesTs)", "unseen_0000.nii.gz", "not a gzip file")


# ---------------------------------------------------------------- AbdomenAtlas

def test_abdomenatlas_problems(tmp_path):
    folder = make_abdomenatlas_dataset(tmp_path / "aa", cases=[SM, SM, SM])
    c1, c2, c3 = (folder / f"BDMAP_0000000{i}" for i in (1, 2, 3))
    liver = nib.load(str(c1 / "segmentations" / "liver.nii.gz"))
    mask, aff = np.asarray(liver.dataobj), liver.affine
    nib.save(nib.Nifti1Image((mask * 2).astype(np.uint8), aff), str(c1 / "segmentations" / "liver.nii.gz"))
    nib.save(nib.Nifti1Image(mask[:-1], aff), str(c1 / "segmentations" / "spleen.nii.gz"))
    (c2 / "ct.nii.gz").unlink()
    data = (c3 / "segmentations" / "aorta.nii.gz").read_bytes()
    (c3 / "segmentations" / "aorta.nii.gz").write_bytes(data[: len(data) // 2])
    (folder / "BDMAP_00000004" / "segmentations").mkdir(parents=True)
    shutil.copyfile(c1 / "ct.nii.gz", folder / "BDMAP_00000004" / "ct.nii.gz")
    report = _verify(folder)
    assert_reported(report, "BDMAP_00000001", "liver.nii.gz", "mask 'liver' is not binary", "values 0, 2")
    assert_reported(report, "BDMAP_00000001", "spleen.nii.gz", "mask 'spleen' is not on the CT grid",
                    "(121, 101, 30)")
    assert_reported(report, "BDMAP_00000002", "ct.nii.gz", "missing image file for channel 0 (CT)")
    assert_reported(report, "BDMAP_00000003", "aorta.nii.gz", "truncated")
    assert [(w.case_id, w.message) for w in report.warnings] == [
        ("BDMAP_00000004", "case has no masks: no class is annotated")]


# ---------------------------------------------------------------- the whole report

def test_every_problem_of_a_dataset_appears_in_one_report(tmp_path):
    cases = [SM, "ts_abdomen_pelvis_3mm"]
    folder = make_nnunet_dataset(tmp_path / "raw", cases=cases)
    for i in range(3):
        shutil.copyfile(_image(folder), _image(folder, f"extra{i}"))
        shutil.copyfile(_label_path(folder), _label_path(folder, f"extra{i}"))
    _set_json(folder, numTraining=4)  # 5 cases: a warning, not a problem
    arr, aff = _ct(folder)
    lab, laff = _label(folder)
    bad = {}
    # 1. truncated image
    data = _image(folder).read_bytes()
    _image(folder).write_bytes(data[: len(data) // 3])
    bad[(SM, f"{SM}_0000.nii.gz")] = "truncated"
    # 2. two problems in one label: undeclared value and wrong grid
    lab2 = lab.copy()
    lab2[0, 0, 0] = 99
    nib.save(nib.Nifti1Image(lab2[:, :, :10], laff), str(_label_path(folder, "extra0")))
    bad[("extra0", "extra0.nii.gz")] = "not on the image grid"
    bad[("extra0", "extra0.nii.gz", 2)] = "label values 99 are not declared"
    # 3. missing label
    _label_path(folder, "extra1").unlink()
    bad[("extra1", "extra1.nii.gz")] = "missing label file"
    # 4. 2D image
    nib.save(nib.Nifti1Image(arr[:, :, 0], aff), str(_image(folder, "extra2")))
    bad[("extra2", "extra2_0000.nii.gz")] = "got 2D"
    # 5. duplicate
    nib.save(nib.Nifti1Image(arr, aff), str(folder / "imagesTr" / "extra2_0000.nii"))
    bad[("extra2", "extra2_0000.nii.gz", 2)] = "duplicate case id"

    ds = load_dataset(folder)
    report = verify_dataset(ds, num_processes=1, progress=False)
    assert len(report.problems) == len(bad), str(report)
    with pytest.raises(DatasetError) as err:
        report.raise_if_failed()
    msg = str(err.value)
    assert msg.startswith(f"{folder.resolve()}: 6 problem(s) in 4 case(s) of dataset Dataset101_RealCT:\n")
    lines = msg.splitlines()[1:]
    assert lines == report.problem_lines()
    for key, words in bad.items():
        case_id, filename = key[0], key[1]
        assert any(ln.startswith(f"case {case_id}: ") and filename in ln and words in ln for ln in lines), \
            (key, words, msg)
    # the good case is not mentioned; cases appear in id order
    assert not any("ts_abdomen_pelvis_3mm" in ln for ln in lines)
    order = [ln.split(":")[0] for ln in lines]
    assert order == sorted(order, key=lambda s: [c.case_id for c in ds.cases].index(s[len("case "):]))
    # the readable report groups problems by case
    text = str(report)
    assert "6 problem(s)" in text and "1 warning(s)" in text
    assert text.count("  case extra0:\n") == 1 and text.count("  case extra2:\n") == 1
    assert "    labelsTr/extra0.nii.gz: label values 99" in text


def test_parallel_verification_matches_serial_and_shows_progress(folder, capsys):
    _label_path(folder, OTHER).write_bytes(b"junk")
    arr, aff = _ct(folder)
    nib.save(nib.Nifti1Image(arr[:, :, 0], aff), str(_image(folder)))
    serial = _verify(folder, num_processes=1)
    capsys.readouterr()
    parallel = _verify(folder, num_processes=2, progress=True)
    assert parallel.problem_lines() == serial.problem_lines() and len(serial.problems) == 2
    assert "verifying Dataset101_RealCT" in capsys.readouterr().err
