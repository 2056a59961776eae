"""One layout object per dataset layout serves training data, prediction inputs and evaluation references.

An AbdomenAtlas case's CT is found by one rule for all three stages; here the CT is stored as NRRD with a
detached header (.nhdr), as MetaImage with a detached header (.mhd) and as a DICOM series folder ``ct/``, all
written from the real CTs of ../shared. Before the rule existed once, prediction looked only for
ct.nii.gz/.nii/.nrrd/.mha and refused these folders.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from suprem_nn.datasets import LAYOUTS, load_dataset, read_case
from suprem_nn.datasets import layouts as layouts_module
from suprem_nn.datasets.layout import CaseSegmentation, DatasetLayout, PredictionCase
from suprem_nn.errors import SupremError
from suprem_nn.evaluation.cases import discover_cases
from suprem_nn.inference.cases import find_cases
from suprem_nn.io.image_io import read_image

SM = "ts_abdomen_sm_3mm"
DICOM = "ts_upper_abdomen_ce_dicom"
CASE = "BDMAP_00000001"


def _atlas_case(root: Path, real_ct: Path, kind: str) -> tuple[Path, Path, int]:
    """An AbdomenAtlas dataset of one case whose CT is stored as ``kind``; returns (dataset, CT path, liver voxels)."""
    case = root / "Atlas" / CASE
    (case / "segmentations").mkdir(parents=True)
    if kind == "dicom":
        ct = case / "ct"
        shutil.copytree(real_ct / DICOM / "dicom", ct)
        _, geometry = read_image(ct)   # the series' grid as suprem_nn reads it
        grid = sitk.Image([int(v) for v in geometry.shape], sitk.sitkUInt8)
        grid.SetSpacing(geometry.spacing)
        grid.SetOrigin(geometry.origin)
        grid.SetDirection(geometry.direction)
        # the label map of the full DICOM grid, put on the series' own grid (same voxel centres, only the
        # axis directions differ), so nearest-neighbour resampling moves no voxel
        full = sitk.ReadImage(str(real_ct / DICOM / "seg_total117_fullgrid.nii.gz"))
        seg = sitk.Resample(full, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        liver = sitk.Cast(sitk.BinaryThreshold(seg, 5, 5, 1, 0), sitk.sitkUInt8)   # total117 id 5 = liver
        assert int(sitk.GetArrayViewFromImage(liver).sum()) == int((sitk.GetArrayViewFromImage(full) == 5).sum())
    else:
        ct = case / f"ct.{kind}"
        sitk.WriteImage(sitk.ReadImage(str(real_ct / SM / "ct.nii.gz")), str(ct))
        seg = sitk.ReadImage(str(real_ct / SM / "seg_btcv13.nii.gz"))
        liver = sitk.Cast(sitk.BinaryThreshold(seg, 6, 6, 1, 0), sitk.sitkUInt8)    # btcv13 id 6 = liver
    sitk.WriteImage(liver, str(case / "segmentations" / "liver.nii.gz"))
    voxels = int(sitk.GetArrayViewFromImage(liver).sum())
    assert voxels > 1000
    return root / "Atlas", ct, voxels


@pytest.mark.parametrize("kind", ["nhdr", "mhd", "dicom"])
def test_an_abdomenatlas_ct_is_found_by_one_rule_for_training_prediction_and_evaluation(tmp_path, real_ct, kind):
    atlas, ct, liver_voxels = _atlas_case(tmp_path, real_ct, kind)
    if kind != "dicom":   # the detached header really has its data beside it (.raw / .raw.gz)
        assert len([p for p in ct.parent.iterdir() if p.is_file()]) == 2

    # training data
    ds = load_dataset(atlas)
    assert ds.layout == "abdomenatlas" and ds.layout_problems == []
    assert [c.images for c in ds.cases] == [[ct.resolve()]]
    images, geometry, label = read_case(ds.cases[0], ds)
    expected, _ = read_image(ct)
    np.testing.assert_array_equal(images[0], expected)
    assert images[0].shape == ((512, 512, 20) if kind == "dicom" else (122, 101, 30))
    assert label.shape == (1, *geometry.shape) and int(label.sum()) == liver_voxels

    # prediction input: the same CT, outputs mirroring the layout
    out = tmp_path / "out"
    (case,) = find_cases(atlas, out)
    assert isinstance(case, PredictionCase) and case.atlas
    assert case.case_id == CASE and [p.resolve() for p in case.images] == [ct.resolve()]
    assert case.output == out / CASE / "combined_labels.nii.gz"
    assert case.segmentation_folder() == out / CASE / "segmentations"

    # evaluation reference: the same case folder, its masks by class name
    refs = discover_cases(atlas)
    assert refs == {CASE: CaseSegmentation(CASE, masks={"liver": atlas / CASE / "segmentations" / "liver.nii.gz"},
                                           folder=atlas / CASE)}


def test_ct_nii_gz_wins_over_other_ct_files_in_every_stage(tmp_path, real_ct):
    atlas, ct, _ = _atlas_case(tmp_path, real_ct, "mhd")
    shutil.copyfile(real_ct / SM / "ct.nii.gz", ct.parent / "ct.nii.gz")
    ds = load_dataset(atlas)
    assert ds.cases[0].images == [(ct.parent / "ct.nii.gz").resolve()]
    assert "duplicate CT" in ds.layout_problems[0].message   # training reports the duplicate
    (case,) = find_cases(atlas, tmp_path / "out")
    assert case.images == [ct.parent / "ct.nii.gz"]           # prediction takes the same file


class _FlatPairs(DatasetLayout):
    """A third layout, written here as its own module would be: ``CASE.img.nii.gz`` beside ``CASE.seg.nii.gz``."""

    name = "flat_pairs"
    multilabel_masks = False

    def _cases(self, folder):
        return sorted(p.name[: -len(".img.nii.gz")] for p in folder.glob("*.img.nii.gz"))

    def is_dataset(self, folder):
        return bool(self._cases(folder))

    def load(self, folder, name):
        from suprem_nn.datasets import RawCase, RawDataset
        cases = [RawCase(c, [folder / f"{c}.img.nii.gz"], folder / f"{c}.seg.nii.gz") for c in self._cases(folder)]
        return RawDataset(name=name, path=folder, layout=self.name, channel_names=["CT"], class_names=["liver"],
                          label_values=[6], cases=cases, test_cases=[], file_ending=".nii.gz")

    def read_annotation(self, case, dataset, geometry):
        return read_image(case.label)[0]

    def prediction_cases(self, folder, output):
        return [PredictionCase(c, [folder / f"{c}.img.nii.gz"], output / f"{c}.seg.nii.gz", output)
                for c in self._cases(folder)] or None

    def segmentation_of(self, entry):
        if entry.name.endswith(".seg.nii.gz"):
            return CaseSegmentation(entry.name[: -len(".seg.nii.gz")], label_map=entry)
        return None


def test_a_third_layout_is_one_class_in_the_list_of_layouts(tmp_path, real_ct, monkeypatch):
    folder = tmp_path / "Flat"
    folder.mkdir()
    shutil.copyfile(real_ct / SM / "ct.nii.gz", folder / "c1.img.nii.gz")
    shutil.copyfile(real_ct / SM / "seg_btcv13.nii.gz", folder / "c1.seg.nii.gz")
    with pytest.raises(SupremError):      # unknown before it is listed
        load_dataset(folder)
    # first in the list: nnU-Net's rule "an image file is a label map" would otherwise claim the .seg files
    monkeypatch.setattr(layouts_module, "LAYOUTS", (_FlatPairs(),) + LAYOUTS)
    ds = load_dataset(folder)
    assert ds.layout == "flat_pairs"
    _, _, label = read_case(ds.cases[0], ds)
    assert int((label == 6).sum()) == 38634                        # the liver voxels of the real case
    assert [c.output.name for c in find_cases(folder, tmp_path / "out")] == ["c1.seg.nii.gz"]
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    shutil.copyfile(folder / "c1.seg.nii.gz", predictions / "c1.seg.nii.gz")
    assert discover_cases(predictions) == {"c1": CaseSegmentation("c1", label_map=predictions / "c1.seg.nii.gz")}
