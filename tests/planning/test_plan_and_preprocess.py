"""suprem_plan_and_preprocess end to end on real CT, in both dataset layouts, run as users run it."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_abdomenatlas_dataset, make_nnunet_dataset
from suprem_nn.io import read_image
from suprem_nn.planning import Plan
from suprem_nn.preprocessing import PreprocessedCache, restore_to_original

SMALL = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]


def run_cli(*args, env=None, check=True, np_workers=1):
    proc = subprocess.run([sys.executable, "-m", "suprem_nn.cli.plan_and_preprocess", *args, "-np", str(np_workers)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def prep_root() -> Path:
    return Path(os.environ["SUPREM_PREPROCESSED"])


def test_nnunet_layout_end_to_end(real_ct):
    make_nnunet_dataset(Path(os.environ["SUPREM_RAW"]), cases=SMALL)
    out = run_cli("-d", "101", np_workers=2)  # numeric id, as in nnU-Net; two worker processes
    assert "plan 'suprem_unet' for Dataset101_RealCT" in out.stdout
    assert "exclusive (softmax)" in out.stdout
    folder = prep_root() / "Dataset101_RealCT"
    plan = Plan.load(folder / "suprem_unet" / "plans.json")
    assert plan.target_spacing == [1.5, 1.5, 1.5] and plan.orientation == "RAS"
    assert plan.normalization[0].scheme == "ct_window" and (plan.normalization[0].lower, plan.normalization[0].upper) \
        == (-175.0, 250.0)
    assert all(p % 8 == 0 and p <= 96 for p in plan.patch_size) and plan.batch_size >= 2
    assert plan.multilabel is False and plan.label_values == list(range(1, 14))
    fp = json.loads((folder / "dataset_fingerprint.json").read_text())
    assert fp["num_cases"] == 2 and fp["overlap"]["detected"] is False
    ct_stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert 0 < ct_stats["mean"] < 200 and ct_stats["percentile_00_5"] < ct_stats["percentile_99_5"]
    assert fp["cases"]["ts_upper_abdomen_ce_dicom"]["file_orientation"] == "LAS"

    cache = PreprocessedCache(folder / "suprem_unet" / "data")
    assert cache.case_ids(plan.cache_hash()) == sorted(SMALL)
    for case in SMALL:
        data, seg, props = cache.load(case)
        assert data.dtype == np.float32 and data.min() >= 0.0 and data.max() <= 1.0
        assert seg.dtype == np.int16 and seg.shape[1:] == data.shape[1:] and set(np.unique(seg)) <= set(range(14))
        # The cache remembers the input grid exactly and can map results back onto it.
        raw_label, raw_geom = read_image(real_ct / case / "seg_btcv13.nii.gz")
        assert props.original_geometry == raw_geom
        back = restore_to_original(np.asarray(seg), props, plan, order=0)[0]
        assert back.shape == raw_label.shape
        liver = 6  # btcv13 value; class index 6 as well (values 1..13 map to indices 1..13)
        dice = 2 * ((back == liver) & (raw_label == liver)).sum() / ((back == liver).sum() + (raw_label == liver).sum())
        assert dice > 0.97, dice
        locs = cache.class_locations(case)
        assert len(locs) == 13
        assert all(seg[0][tuple(locs[5].T)] == 6)


def test_abdomenatlas_layout_is_multilabel_with_overlap(real_ct):
    make_abdomenatlas_dataset(Path(os.environ["SUPREM_RAW"]), cases=SMALL)
    out = run_cli("-d", "AbdomenAtlas", "--pretrained", "swinunetr")
    assert "multi-label (sigmoid per class)" in out.stdout
    folder = prep_root() / "AbdomenAtlas"
    plan = Plan.load(folder / "suprem_swinunetr" / "plans.json")
    # AbdomenAtlas 1.1 order where names match, others after it.
    assert plan.class_names == ["aorta", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach",
                                "hepatic_vessel"]
    assert plan.multilabel and all(p % 32 == 0 for p in plan.patch_size)
    fp = json.loads((folder / "dataset_fingerprint.json").read_text())
    assert fp["overlap"]["detected"] and ["liver", "hepatic_vessel"] in [p[:2] for p in fp["overlap"]["pairs"]]
    cache = PreprocessedCache(folder / "suprem_swinunetr" / "data")
    data, seg, _ = cache.load("BDMAP_00000001")
    assert seg.shape[0] == 8 and seg.dtype == np.uint8
    assert ((seg[3] > 0) & (seg[7] > 0)).any()  # the vessel stays inside the liver: masks overlap in the cache

    # Asking for exclusive training on overlapping masks is refused before anything is lost.
    before = digest(folder / "suprem_swinunetr" / "data")
    bad = run_cli("-d", "AbdomenAtlas", "--pretrained", "swinunetr", "--exclusive", check=False)
    assert bad.returncode == 1 and "overlap" in bad.stderr and "Traceback" not in bad.stderr
    assert digest(folder / "suprem_swinunetr" / "data") == before


def test_rerun_skips_done_cases_and_plan_change_invalidates(real_ct):
    make_nnunet_dataset(Path(os.environ["SUPREM_RAW"]), cases=SMALL)
    run_cli("-d", "Dataset101_RealCT")
    again = run_cli("-d", "RealCT")
    assert "0 cases processed, 2 already done" in again.stdout
    changed = run_cli("-d", "101", "--spacing", "3", "3", "3")
    assert "2 cases processed" in changed.stdout
    plan = Plan.load(prep_root() / "Dataset101_RealCT" / "suprem_unet" / "plans.json")
    cache = PreprocessedCache(prep_root() / "Dataset101_RealCT" / "suprem_unet" / "data")
    assert plan.target_spacing == [3.0, 3.0, 3.0] and cache.case_ids(plan.cache_hash()) == sorted(SMALL)


def test_kill_minus_nine_then_rerun_gives_identical_cache(real_ct, tmp_path):
    raw = Path(os.environ["SUPREM_RAW"])
    make_nnunet_dataset(raw, cases=["ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm", "ts_upper_abdomen_ce_dicom"])
    reference = tmp_path / "reference"
    run_cli("-d", "101", env={"SUPREM_PREPROCESSED": str(reference)})
    ref_digest = digest(reference / "Dataset101_RealCT" / "suprem_unet" / "data")

    data = prep_root() / "Dataset101_RealCT" / "suprem_unet" / "data"
    # Kill at several points: during start-up, after the first written file, after the first complete case.
    for wait_for in ("start", "any-file", "one-case"):
        proc = subprocess.Popen([sys.executable, "-m", "suprem_nn.cli.plan_and_preprocess", "-d", "101", "-np", "1",
                                 "--no-verify"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            files = list(data.glob("*")) if data.is_dir() else []
            if wait_for == "start" or (wait_for == "any-file" and files) or \
                    (wait_for == "one-case" and any(f.suffix == ".json" for f in files)):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_cli("-d", "101")
    assert digest(data) == ref_digest
    assert not list(data.glob(".tmp-*"))


def test_shards_compose_to_the_same_cache(real_ct, tmp_path):
    make_nnunet_dataset(Path(os.environ["SUPREM_RAW"]), cases=SMALL)
    first = run_cli("-d", "101", "--shard", "0/2")
    assert "1 cases processed" in first.stdout and "plans:" not in first.stdout
    second = run_cli("-d", "101", "--shard", "1/2")
    assert "plans:" in second.stdout
    reference = tmp_path / "reference"
    run_cli("-d", "101", env={"SUPREM_PREPROCESSED": str(reference)})
    assert digest(prep_root() / "Dataset101_RealCT" / "suprem_unet" / "data") == \
        digest(reference / "Dataset101_RealCT" / "suprem_unet" / "data")


def test_from_scratch_plan_follows_nnunet_rules(real_ct):
    make_nnunet_dataset(Path(os.environ["SUPREM_RAW"]), cases=SMALL)
    out = run_cli("-d", "101", "--from-scratch", "segresnet")
    plan = Plan.load(prep_root() / "Dataset101_RealCT" / "scratch_segresnet" / "plans.json")
    assert "scratch_segresnet" in out.stdout and plan.pretrained is None
    n = plan.normalization[0]
    fp = json.loads((prep_root() / "Dataset101_RealCT" / "dataset_fingerprint.json").read_text())
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert n.scheme == "ct_clip_zscore" and n.mean == stats["mean"] and n.lower == stats["percentile_00_5"]
    # Median of (3, 3, 3) and (0.977, 0.977, 2) after reorientation to RAS.
    assert plan.target_spacing == pytest.approx([1.98828125, 1.98828125, 2.5])
    assert plan.image_order == 3 and plan.crop_threshold is None
    data, _, _ = PreprocessedCache(prep_root() / "Dataset101_RealCT" / "scratch_segresnet" / "data").load(
        "ts_abdomen_sm_3mm")
    assert -10 < float(np.mean(data)) < 10


def test_bad_dataset_is_reported_all_at_once_and_cache_survives(real_ct):
    raw = Path(os.environ["SUPREM_RAW"])
    folder = make_nnunet_dataset(raw, cases=SMALL)
    run_cli("-d", "101")
    data = prep_root() / "Dataset101_RealCT" / "suprem_unet" / "data"
    before = digest(data)
    good = (folder / "imagesTr" / "ts_abdomen_sm_3mm_0000.nii.gz").read_bytes()
    (folder / "imagesTr" / "ts_abdomen_sm_3mm_0000.nii.gz").write_bytes(good[: len(good) // 2])
    (folder / "labelsTr" / "ts_upper_abdomen_ce_dicom.nii.gz").write_bytes(b"not an image at all")
    bad = run_cli("-d", "101", check=False)
    assert bad.returncode == 1
    assert "ts_abdomen_sm_3mm" in bad.stderr and "truncated" in bad.stderr
    assert "ts_upper_abdomen_ce_dicom" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert digest(data) == before


def test_dataset_name_with_parent_reference_is_refused(real_ct):
    bad = run_cli("-d", "../etc", check=False)
    assert bad.returncode == 1 and "../etc" in bad.stderr and "Traceback" not in bad.stderr
