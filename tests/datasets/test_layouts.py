"""Both layouts load by name, id and path; read_case returns the arrays the rest of the pipeline relies on."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import suprem_nn
from suprem_nn.datasets import (ABDOMENATLAS_ORDER, load_dataset, order_class_names, read_case,
                                verify_dataset)
from suprem_nn.errors import DatasetError
from tests.conftest import BTCV13, make_abdomenatlas_dataset, make_nnunet_dataset

SM = "ts_abdomen_sm_3mm"
PELVIS = "ts_abdomen_pelvis_3mm"
DICOM = "ts_upper_abdomen_ce_dicom"


def _nib(path):
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture()
def raw(tmp_path):
    return tmp_path / "raw"


# ---------------------------------------------------------------- nnU-Net layout

@pytest.mark.parametrize("query", ["Dataset101_RealCT", "101", "RealCT", "path"])
def test_nnunet_dataset_loads_by_name_id_and_path(raw, query):
    folder = make_nnunet_dataset(raw, cases=[SM, PELVIS], test_cases=[SM])
    ds = load_dataset(str(folder) if query == "path" else query, raw)
    assert ds.layout == "nnunet" and ds.name == "Dataset101_RealCT" and ds.path == folder.resolve()
    assert ds.channel_names == ["CT"]
    assert ds.class_names == BTCV13 and ds.label_values == list(range(1, 14))
    assert ds.file_ending == ".nii.gz"
    assert [c.case_id for c in ds.cases] == sorted([SM, PELVIS])
    c = ds.case(SM)
    assert c.images == [folder.resolve() / "imagesTr" / f"{SM}_0000.nii.gz"]
    assert c.label == folder.resolve() / "labelsTr" / f"{SM}.nii.gz"
    assert [(t.case_id, t.label) for t in ds.test_cases] == [(SM, None)]
    assert ds.layout_problems == [] and ds.layout_warnings == []
    with pytest.raises(DatasetError, match=r"no training case 'nope' in dataset Dataset101_RealCT \(2 cases\)"):
        ds.case("nope")


def test_nnunet_read_case_gives_stored_dtypes_and_raw_label_values(raw, real_ct):
    folder = make_nnunet_dataset(raw, cases=[SM, PELVIS])
    ds = load_dataset(folder)
    images, geom, label = read_case(ds.case(PELVIS), ds)
    assert len(images) == 1 and images[0].dtype == np.int32 and images[0].shape == (122, 101, 112)
    np.testing.assert_array_equal(images[0], _nib(real_ct / PELVIS / "ct.nii.gz"))  # [i, j, k] = file order
    assert geom.shape == (122, 101, 112) and geom.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert label.dtype == np.uint8 and label.shape == (122, 101, 112)
    np.testing.assert_array_equal(label, _nib(real_ct / PELVIS / "seg_btcv13.nii.gz"))
    assert set(np.unique(label).tolist()) == {0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13}
    images, _, none = read_case(ds.case(SM), ds, with_label=False)
    assert images[0].dtype == np.int16 and none is None


def test_v1_dataset_json_with_modality_and_inverted_labels(raw):
    folder = make_nnunet_dataset(raw, name="Dataset007_Old", cases=[SM])
    (folder / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen", "6": "liver"}, "numTraining": 1}))
    ds = load_dataset("7", raw)
    assert ds.channel_names == ["CT"] and ds.class_names == ["spleen", "liver"] and ds.label_values == [1, 6]
    assert ds.file_ending == ".nii.gz"


def test_multichannel_case_reads_channels_in_order(raw):
    folder = make_nnunet_dataset(raw, cases=[SM])
    img = nib.load(str(folder / "imagesTr" / f"{SM}_0000.nii.gz"))
    second = (np.asarray(img.dataobj) // 2).astype(np.int16)
    nib.save(nib.Nifti1Image(second, img.affine, img.header), str(folder / "imagesTr" / f"{SM}_0001.nii.gz"))
    meta = json.loads((folder / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "half"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(folder)
    assert ds.channel_names == ["CT", "half"]
    images, _, _ = read_case(ds.cases[0], ds)
    np.testing.assert_array_equal(images[1], second)
    np.testing.assert_array_equal(images[0] // 2, images[1])


def test_read_case_rejects_a_channel_on_another_grid(raw):
    folder = make_nnunet_dataset(raw, cases=[SM])
    img = nib.load(str(folder / "imagesTr" / f"{SM}_0000.nii.gz"))
    moved = img.affine.copy()
    moved[:3, 3] += 9.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), str(folder / "imagesTr" / f"{SM}_0001.nii.gz"))
    meta = json.loads((folder / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "CT2"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(folder)
    with pytest.raises(DatasetError) as err:
        read_case(ds.cases[0], ds)
    msg = str(err.value)
    assert f"{SM}_0001.nii.gz" in msg and f"case {SM}" in msg and "channel 1" in msg and "origin" in msg


def test_read_case_rejects_a_label_on_another_grid(raw):
    folder = make_nnunet_dataset(raw, cases=[SM])
    lab_path = folder / "labelsTr" / f"{SM}.nii.gz"
    lab = nib.load(str(lab_path))
    aff = lab.affine.copy()
    aff[2, 2] = 2.5
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), aff), str(lab_path))
    ds = load_dataset(folder)
    with pytest.raises(DatasetError) as err:
        read_case(ds.cases[0], ds)
    assert str(lab_path) in str(err.value) and "not on the image grid" in str(err.value)
    assert "spacing" in str(err.value)


def test_float_label_with_whole_values_becomes_integer(raw):
    folder = make_nnunet_dataset(raw, cases=[SM])
    lab_path = folder / "labelsTr" / f"{SM}.nii.gz"
    lab = nib.load(str(lab_path))
    values = np.asarray(lab.dataobj)
    nib.save(nib.Nifti1Image(values.astype(np.float32), lab.affine), str(lab_path))
    ds = load_dataset(folder)
    _, _, label = read_case(ds.cases[0], ds)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, values)
    assert verify_dataset(ds, progress=False).ok


def test_dicom_series_folder_is_an_image(raw, real_ct):
    folder = make_nnunet_dataset(raw, cases=[SM])
    (folder / "imagesTs").mkdir()
    shutil.copytree(real_ct / DICOM / "dicom", folder / "imagesTs" / "ce_0000")
    ds = load_dataset(folder)
    assert [c.case_id for c in ds.test_cases] == ["ce"]
    images, geom, label = read_case(ds.test_cases[0], ds)
    assert images[0].shape == (512, 512, 20) and geom.spacing[2] == pytest.approx(2.0) and label is None
    assert verify_dataset(ds, progress=False).ok


# ---------------------------------------------------------------- AbdomenAtlas layout

ORGANS = ["spleen", "kidney_right", "kidney_left", "liver", "stomach", "aorta", "pancreas"]


@pytest.mark.parametrize("query", ["AbdomenAtlas", "path"])
def test_abdomenatlas_loads_with_class_order_of_abdomenatlas_1_1(raw, query):
    folder = make_abdomenatlas_dataset(raw, cases=[SM, PELVIS])
    extra = folder / "BDMAP_00000002" / "segmentations"
    shutil.copyfile(extra / "liver.nii.gz", extra / "zz_lesion.nii.gz")
    shutil.copyfile(extra / "liver.nii.gz", extra / "appendix.nii.gz")
    ds = load_dataset(str(folder) if query == "path" else query, raw)
    assert ds.layout == "abdomenatlas" and ds.name == "AbdomenAtlas"
    # AbdomenAtlas 1.1 positions first (aorta=1 ... stomach=9, hepatic_vessel=19), then the rest alphabetically.
    assert ds.class_names == ["aorta", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach",
                              "hepatic_vessel", "appendix", "zz_lesion"]
    assert ds.label_values == list(range(1, 11))
    assert ds.channel_names == ["CT"] and ds.test_cases == [] and ds.file_ending == ".nii.gz"
    assert [c.case_id for c in ds.cases] == ["BDMAP_00000001", "BDMAP_00000002"]
    c1, c2 = ds.cases
    assert c1.images == [folder.resolve() / "BDMAP_00000001" / "ct.nii.gz"] and c1.label is None
    assert list(c1.masks) == ds.class_names[:8]  # no appendix / zz_lesion file: not annotated
    assert list(c2.masks) == ds.class_names


def test_abdomenatlas_order_matches_the_network_class_map():
    # Load the file alone: importing suprem_nn.networks would import torch (seconds) for a tuple of names.
    source = Path(suprem_nn.__file__).parent / "networks" / "class_maps.py"
    if not source.is_file():
        pytest.skip(f"{source} not present")
    spec = importlib.util.spec_from_file_location("_class_maps_alone", source)
    class_maps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(class_maps)
    assert tuple(ABDOMENATLAS_ORDER) == tuple(class_maps.ABDOMENATLAS_1_1)
    assert order_class_names(["rectum", "aorta", "b", "a"]) == ["aorta", "rectum", "a", "b"]


def test_abdomenatlas_read_case_stacks_masks_in_class_order(raw, real_ct):
    folder = make_abdomenatlas_dataset(raw, cases=[SM])
    (folder / "BDMAP_00000001" / "segmentations" / "stomach.nii.gz").unlink()  # stomach not annotated
    ds = load_dataset(folder)
    case = ds.cases[0]
    assert "stomach" not in case.masks
    images, geom, label = read_case(case, ds)
    assert images[0].dtype == np.int16 and images[0].shape == (122, 101, 30)
    assert label.dtype == np.uint8 and label.shape == (len(ds.class_names), 122, 101, 30)
    btcv = _nib(real_ct / SM / "seg_btcv13.nii.gz")
    for k, name in enumerate(ds.class_names):
        if name == "hepatic_vessel":
            np.testing.assert_array_equal(label[k], _nib(case.masks[name]))
            assert label[k].any() and not (label[k] & (btcv != BTCV13.index("liver") + 1)).any()
        else:
            np.testing.assert_array_equal(label[k], btcv == BTCV13.index(name) + 1)
    # overlapping masks stay overlapping: a voxel can be liver and hepatic vessel at once
    liver, vessel = ds.class_names.index("liver"), ds.class_names.index("hepatic_vessel")
    assert (label[liver] & label[vessel]).any()


def test_abdomenatlas_absent_mask_is_zeros_and_recorded(raw):
    folder = make_abdomenatlas_dataset(raw, cases=[SM, SM])
    (folder / "BDMAP_00000002" / "segmentations" / "spleen.nii.gz").unlink()
    ds = load_dataset(folder)
    assert "spleen" in ds.class_names
    assert "spleen" in ds.cases[0].masks and "spleen" not in ds.cases[1].masks
    k = ds.class_names.index("spleen")
    _, _, label0 = read_case(ds.cases[0], ds)
    _, _, label1 = read_case(ds.cases[1], ds)
    assert label0[k].any() and not label1[k].any()
    np.testing.assert_array_equal(np.delete(label0, k, 0), np.delete(label1, k, 0))


def test_abdomenatlas_read_case_rejects_non_binary_and_misaligned_masks(raw):
    folder = make_abdomenatlas_dataset(raw, cases=[SM])
    seg = folder / "BDMAP_00000001" / "segmentations"
    liver = nib.load(str(seg / "liver.nii.gz"))
    mask = np.asarray(liver.dataobj)
    nib.save(nib.Nifti1Image((mask * 255).astype(np.uint8), liver.affine),
             str(seg / "liver.nii.gz"))
    ds = load_dataset(folder)
    with pytest.raises(DatasetError) as err:
        read_case(ds.cases[0], ds)
    assert str(seg / "liver.nii.gz") in str(err.value) and "not binary" in str(err.value) and "255" in str(err.value)
    nib.save(nib.Nifti1Image(mask[:, :, :20], liver.affine), str(seg / "liver.nii.gz"))
    with pytest.raises(DatasetError) as err:
        read_case(ds.cases[0], ds)
    assert str(seg / "liver.nii.gz") in str(err.value) and "not on the CT grid" in str(err.value)
    assert "(122, 101, 20)" in str(err.value)


# ---------------------------------------------------------------- neither layout

def test_empty_folder_is_explained(raw):
    (raw / "Dataset005_Empty").mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        load_dataset("5", raw)
    msg = str(err.value)
    assert "Dataset005_Empty" in msg and "empty" in msg
    assert "dataset.json" in msg and "imagesTr" in msg and "segmentations" in msg


def test_folder_of_neither_layout_explains_both(raw):
    folder = raw / "Stuff"
    (folder / "scans").mkdir(parents=True)
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as err:
        load_dataset("Stuff", raw)
    msg = str(err.value)
    assert str(folder) in msg and "neither an nnU-Net raw dataset nor an AbdomenAtlas dataset" in msg
    assert "labelsTr/CASE.nii.gz" in msg and "CASE/ct.nii.gz" in msg


def test_images_tr_without_dataset_json(raw):
    (raw / "Dataset009_NoJson" / "imagesTr").mkdir(parents=True)
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        load_dataset("9", raw)
