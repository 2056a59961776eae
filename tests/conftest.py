"""Shared fixtures: the real CT cases in ../shared and builders that arrange them into dataset layouts.

Tests that need ../shared skip with a reason when it is absent; with
``SUPREM_REQUIRE_SHARED=1`` (set by .ci/run) they fail instead.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SUPREM_SHARED", REPO.parent / "shared"))
REAL_CT = SHARED / "data" / "real_ct"
REAL_CASES = ["ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm", "ts_upper_abdomen_ce_dicom"]
BTCV13 = ["spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus", "liver", "stomach", "aorta",
          "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right",
          "adrenal_gland_left"]


def _require_shared() -> Path:
    if not REAL_CT.is_dir():
        reason = f"real CT data not found at {REAL_CT} (the ../shared folder beside the repository)"
        if os.environ.get("SUPREM_REQUIRE_SHARED") == "1":
            pytest.fail(reason + "; SUPREM_REQUIRE_SHARED=1 makes it mandatory")
        pytest.skip(reason)
    return REAL_CT


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """Folder holding the real CT cases (see its README.md)."""
    return _require_shared()


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path, monkeypatch):
    """Every test gets its own raw/preprocessed/results roots, never the user's home."""
    for env, sub in (("SUPREM_RAW", "raw"), ("SUPREM_PREPROCESSED", "preprocessed"), ("SUPREM_RESULTS", "results")):
        monkeypatch.setenv(env, str(tmp_path / "roots" / sub))


def make_nnunet_dataset(root: Path, name: str = "Dataset101_RealCT", cases=None, label_file="seg_btcv13.nii.gz",
                        test_cases=()) -> Path:
    """Arrange real CT cases as an nnU-Net v2 raw dataset under ``root`` and return its folder."""
    src = _require_shared()
    cases = list(cases or REAL_CASES)
    folder = Path(root) / name
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    for c in cases:
        shutil.copyfile(src / c / "ct.nii.gz", folder / "imagesTr" / f"{c}_0000.nii.gz")
        shutil.copyfile(src / c / label_file, folder / "labelsTr" / f"{c}.nii.gz")
    if test_cases:
        (folder / "imagesTs").mkdir(exist_ok=True)
        for c in test_cases:
            shutil.copyfile(src / c / "ct.nii.gz", folder / "imagesTs" / f"{c}_0000.nii.gz")
    labels = {"background": 0, **{n: i + 1 for i, n in enumerate(BTCV13)}}
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return folder


def make_abdomenatlas_dataset(root: Path, name: str = "AbdomenAtlas", cases=None, organs=None,
                              add_overlap: bool = True) -> Path:
    """Arrange real CT cases as AbdomenAtlas (CASE/ct.nii.gz + CASE/segmentations/<organ>.nii.gz).

    Masks come from the btcv13 label maps. With ``add_overlap`` an extra ``liver_vessels``-style overlap is made
    real: ``hepatic_vessel`` is a small blob inside the liver, so the masks overlap like AbdomenAtlas' do.
    """
    import nibabel as nib

    src = _require_shared()
    cases = list(cases or REAL_CASES)
    organs = list(organs or ["spleen", "kidney_right", "kidney_left", "liver", "stomach", "aorta", "pancreas"])
    folder = Path(root) / name
    for i, c in enumerate(cases):
        case_dir = folder / f"BDMAP_{i + 1:08d}"
        (case_dir / "segmentations").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / c / "ct.nii.gz", case_dir / "ct.nii.gz")
        seg = nib.load(str(src / c / "seg_btcv13.nii.gz"))
        lab = np.asarray(seg.dataobj)
        for organ in organs:
            mask = (lab == BTCV13.index(organ) + 1).astype(np.uint8)
            nib.save(nib.Nifti1Image(mask, seg.affine, seg.header), str(case_dir / "segmentations" / f"{organ}.nii.gz"))
        if add_overlap:
            liver = lab == BTCV13.index("liver") + 1
            vessel = np.zeros_like(liver)
            idx = np.argwhere(liver)
            if len(idx):
                centre = idx[len(idx) // 2]
                sl = tuple(slice(max(0, v - 2), v + 3) for v in centre)
                vessel[sl] = liver[sl]
            nib.save(nib.Nifti1Image(vessel.astype(np.uint8), seg.affine, seg.header),
                     str(case_dir / "segmentations" / "hepatic_vessel.nii.gz"))
    return folder


# A SegResNet small enough for 2-core CI: 8 base filters, one block per level.
TINY_SEGRESNET_KWARGS = {"init_filters": 8, "blocks_down": [1, 1, 1, 1], "blocks_up": [1, 1, 1]}


def add_tiny_scratch_plan(dataset_folder: Path, source: str = "suprem_segresnet", name: str = "tiny_segresnet") -> Path:
    """Copy the preprocessed plan folder ``source`` to ``name`` with the tiny from-scratch SegResNet: the same
    cache, a network small enough for training tests. Returns the new plan folder."""
    dst = dataset_folder / name
    shutil.copytree(dataset_folder / source, dst)
    plan = json.loads((dst / "plans.json").read_text())
    plan.update(plan_name=name, pretrained=None, network_kwargs=TINY_SEGRESNET_KWARGS, checkpoint={})
    (dst / "plans.json").write_text(json.dumps(plan))
    return dst
