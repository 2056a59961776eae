"""Shared fixtures: the real CT cases in ../shared and builders that arrange them into dataset layouts.

Tests that need ../shared skip with a reason when it is absent; with
``SUPREM_REQUIRE_SHARED=1`` (set by .ci/run) they fail instead. Tests that need an optional part (the optional
package dynamic-network-architectures, the nnU-Net peer venv, an inference engine) call :func:`require_optional` /
:func:`optional_part_missing`: skipped with the reason, failed under ``SUPREM_REQUIRE_OPTIONAL=1`` (set by .ci/run).
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
# No test (nor a command it runs, even from a session fixture) downloads the SuPreM weights from the internet into
# the home folder; the download tests serve fabricated files from 127.0.0.1 and lift this with monkeypatch.
os.environ["SUPREM_OFFLINE"] = "1"
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


def optional_part_missing(reason: str) -> None:
    """Skip the test because an optional part is missing (``reason`` says which); fail instead in CI
    (``SUPREM_REQUIRE_OPTIONAL=1``), where every optional part is installed and must be tested."""
    if os.environ.get("SUPREM_REQUIRE_OPTIONAL") == "1":
        pytest.fail(reason + "; SUPREM_REQUIRE_OPTIONAL=1 makes it mandatory")
    pytest.skip(reason)


def require_optional(module: str, purpose: str):
    """Import and return the optional package ``module`` that ``purpose`` needs, or skip/fail with the reason."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        optional_part_missing(f"{purpose} needs the optional package {module} ({exc})")


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """Folder holding the real CT cases (see its README.md)."""
    return _require_shared()


@pytest.fixture(autouse=True)
def _isolated_roots(tmp_path, tmp_path_factory, monkeypatch):
    """Every test gets its own raw/preprocessed/results roots, never the user's home."""
    for env, sub in (("SUPREM_RAW", "raw"), ("SUPREM_PREPROCESSED", "preprocessed"), ("SUPREM_RESULTS", "results")):
        monkeypatch.setenv(env, str(tmp_path / "roots" / sub))
    # Compiled OpenVINO models: one cache for the session (tests that build the same network convert it once).
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engine_cache"))


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


# kidneys and adrenals swap names when a case is mirrored left-right (btcv13 values)
_BTCV13_LR_SWAP = {2: 3, 3: 2, 12: 13, 13: 12}


def make_cv_dataset(root: Path, name: str = "Dataset102_RealCV", n_cases: int = 6) -> Path:
    """An nnU-Net v2 raw dataset of ``n_cases`` real-CT-derived cases, enough for 5-fold cross-validation.

    Case ``i`` is real case ``i % 3`` as is (variant 0), mirrored left-right (1: voxel axis x flipped, the
    affine kept, so the anatomy is mirrored in world space; left/right kidney and adrenal labels are swapped to
    stay anatomically named), cropped to the middle 3/4 of its slices (2: the affine moves with the crop) or
    both (3). CT and label get the same transform; headers (dtype, affine) stay those of the source files.
    """
    import nibabel as nib

    src = _require_shared()
    if not 1 <= n_cases <= 4 * len(REAL_CASES):
        raise ValueError(f"n_cases must be 1-{4 * len(REAL_CASES)}, got {n_cases}")
    folder = Path(root) / name
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    swap = np.arange(256, dtype=np.uint8)
    for a, b in _BTCV13_LR_SWAP.items():
        swap[a] = b
    for i in range(n_cases):
        base, variant = REAL_CASES[i % len(REAL_CASES)], i // len(REAL_CASES)
        case = f"{base}_v{variant}"
        ct, seg = nib.load(str(src / base / "ct.nii.gz")), nib.load(str(src / base / "seg_btcv13.nii.gz"))
        if variant in (2, 3):
            nz = ct.shape[2]
            keep = slice(nz // 8, nz - nz // 8)
            ct, seg = ct.slicer[:, :, keep], seg.slicer[:, :, keep]
        ct_arr, seg_arr = np.asarray(ct.dataobj), np.asarray(seg.dataobj)
        if variant in (1, 3):
            ct_arr, seg_arr = ct_arr[::-1].copy(), swap[seg_arr[::-1]]
        nib.save(nib.Nifti1Image(ct_arr, ct.affine, ct.header), str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(seg_arr.astype(np.uint8), seg.affine, seg.header),
                 str(folder / "labelsTr" / f"{case}.nii.gz"))
    labels = {"background": 0, **{n: i + 1 for i, n in enumerate(BTCV13)}}
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": n_cases, "file_ending": ".nii.gz"}))
    return folder


def plan_tiny(dataset: str, tiny_plan: str = "tiny_segresnet") -> Path:
    """Plan and preprocess raw ``dataset`` (under $SUPREM_RAW) at 4.5 mm with 32^3 patches and batch 2, then add
    ``tiny_plan`` (the tiny from-scratch SegResNet on the same cache). Returns the preprocessed dataset folder.

    A few seconds per case on one core; used by the training and cross-validation tests."""
    from suprem_nn.paths import preprocessed_root
    from suprem_nn.preprocessing.api import plan_and_preprocess

    plan_and_preprocess(dataset, pretrained="segresnet", target_spacing=[4.5, 4.5, 4.5], patch_size=[32, 32, 32],
                        batch_size=2, num_processes=1, progress=False)
    folder = preprocessed_root() / dataset
    add_tiny_scratch_plan(folder, name=tiny_plan)
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
