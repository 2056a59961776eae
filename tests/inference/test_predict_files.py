"""suprem_predict end to end: real subprocesses, input layouts, resuming, bad inputs, SuPreM direct inference."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from suprem_nn.inference import predict
from suprem_nn.io.image_io import read_image

from .helpers import make_model_folder, tiny_plan

REPO = Path(__file__).resolve().parents[2]


def _run(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "suprem_nn.cli.predict", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _header(path):
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    return r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection()


@pytest.fixture()
def model(tmp_path):
    # 12 mm spacing and no mirroring keep each case to one 32^3 window of a tiny SegResNet.
    return make_model_folder(tmp_path / "results", tiny_plan(spacing=(12.0, 12.0, 12.0), mirror_axes=()), folds=(0, 1))


def test_cli_folder_of_nnunet_images_with_all_outputs(real_ct, tmp_path, model):
    inp = tmp_path / "imagesTs"
    inp.mkdir()
    for c in ("ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"):
        shutil.copyfile(real_ct / c / "ct.nii.gz", inp / f"{c}_0000.nii.gz")
    out = tmp_path / "pred"
    r = _run("-i", inp, "-o", out, "-m", model, "-f", "0", "1", "--per-class", "--statistics", "--preview",
             "--save-probabilities", "--quiet")
    assert r.returncode == 0, r.stderr
    for c in ("ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"):
        assert _header(out / f"{c}.nii.gz") == _header(inp / f"{c}_0000.nii.gz")
        for organ in ("liver", "spleen"):
            assert _header(out / c / "segmentations" / f"{organ}.nii.gz") == _header(inp / f"{c}_0000.nii.gz")
        with np.load(out / f"{c}.npz") as z:
            assert z["probabilities"].dtype == np.float16 and z["probabilities"].shape[0] == 2
        props = json.loads((out / f"{c}.json").read_text())
        assert props["original_geometry"]["shape"] == list(_header(inp / f"{c}_0000.nii.gz")[0])
        assert (out / f"{c}_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads((out / "statistics.json").read_text())
    liver, _ = read_image(out / "ts_abdomen_sm_3mm" / "segmentations" / "liver.nii.gz")  # masks may overlap
    ct, _ = read_image(inp / "ts_abdomen_sm_3mm_0000.nii.gz")
    entry = stats["ts_abdomen_sm_3mm"]["liver"]
    assert entry["volume_ml"] == pytest.approx(liver.sum() * 27 / 1000, abs=1e-3)  # 3 mm voxels = 0.027 ml
    assert entry["mean_intensity"] == pytest.approx(ct[liver > 0].mean(), abs=1e-2)
    report = json.loads((out / "run_report.json").read_text())
    assert report["settings"]["folds"] == 2 and report["peak_rss_mb"] > 0
    assert set(report["seconds_per_case"]["ts_abdomen_sm_3mm"]) >= {"read", "preprocess", "network", "export"}


def test_bad_case_is_reported_and_the_rest_complete(real_ct, tmp_path, model):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copyfile(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz", inp / "good.nii.gz")
    data = (real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz").read_bytes()
    (inp / "broken.nii.gz").write_bytes(data[: len(data) // 3])
    r = _run("-i", inp, "-o", tmp_path / "out", "-m", model, "--quiet")
    assert r.returncode == 1
    assert (tmp_path / "out" / "good_seg.nii.gz").is_file() and not (tmp_path / "out" / "broken_seg.nii.gz").exists()
    failed = [ln for ln in r.stderr.splitlines() if "failed:" in ln]
    assert len(failed) == 1 and "broken.nii.gz" in failed[0] and "Traceback" not in r.stderr
    # --debug adds the failed case's traceback; the other case is still predicted
    r = _run("-i", inp, "-o", tmp_path / "out_debug", "-m", model, "--quiet", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr and "broken: traceback" in r.stderr
    assert (tmp_path / "out_debug" / "good_seg.nii.gz").is_file()


def test_single_truncated_file_gives_one_line_error(real_ct, tmp_path, model):
    data = (real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz").read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(data[:1000])
    r = _run("-i", tmp_path / "t.nii.gz", "-o", tmp_path / "o.nii.gz", "-m", model, "--quiet")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "t.nii.gz" in r.stderr
    assert not (tmp_path / "o.nii.gz").exists()
    r = _run("-i", tmp_path / "missing.nii.gz", "-o", tmp_path / "o.nii.gz", "-m", model)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "input not found" in r.stderr


def test_plan_the_network_cannot_be_built_from_is_one_line_naming_it(real_ct, tmp_path, model):
    """network_kwargs go to the network's class; what it refuses (here SegResNet: init_filters -1) was a
    traceback from inside the class; now it is one line naming plans.json and saying why."""
    plan = json.loads((model / "plans.json").read_text())
    plan["network_kwargs"] = {"init_filters": -1}
    (model / "plans.json").write_text(json.dumps(plan))
    r = _run("-i", real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz", "-o", tmp_path / "o.nii.gz", "-m", model, "--quiet")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"suprem_predict: error: {model / 'plans.json'}: cannot build the planned 'segresnet' "
                               "network from network_kwargs {'init_filters': -1} (ValueError: SegResNet init_filters must be a "
                               "positive multiple of 8"), r.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_bad_numbers_for_options_are_refused_before_any_work(real_ct, tmp_path, model):
    """A step size of 0 or 1.5 used to load the model, read each case and fail it in the sliding window."""
    from suprem_nn.errors import SupremError
    from suprem_nn.inference.settings import PredictionSettings

    step = "step size must be a fraction of the patch in (0, 1], got"
    for flag, value, message in [("--step-size", "0", f"{step} 0.0"), ("--step-size", "1.5", f"{step} 1.5"),
                                 ("--step-size", "nan", f"{step} nan"),
                                 ("-np", "-1", "num workers must be an integer >= 0, got -1")]:
        r = _run("-i", real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz", "-o", tmp_path / "o.nii.gz", "-m", model,
                 flag, value, "--quiet")
        assert r.returncode == 1 and r.stderr == f"suprem_predict: error: {message}\n", r.stderr
        assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "run_report.json").exists()
    for bad in ({"step_size": True}, {"windows_per_batch": 0}, {"num_workers": 1.5}):
        with pytest.raises(SupremError):
            PredictionSettings(**bad)
    assert PredictionSettings(step_size=np.float32(0.5), windows_per_batch=np.int64(2)).step_size == 0.5


def test_killed_run_resumes_without_redoing_finished_cases(real_ct, tmp_path, model):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(4):
        shutil.copyfile(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz", inp / f"case{i}.nii.gz")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o", str(out), "-m",
                             str(model), "-np", "0", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("case*.nii.gz")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("case*.nii.gz"))
    assert 1 <= len(done) < 4, "the kill must land mid-folder"
    for f in done:  # whatever exists is a complete, readable file
        assert read_image(f)[0].shape == (122, 101, 30)
    mtimes = {f.name: f.stat().st_mtime_ns for f in done}
    r = _run("-i", inp, "-o", out, "-m", model, "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("case*.nii.gz")) == [f"case{i}_seg.nii.gz" for i in range(4)]
    assert all((out / n).stat().st_mtime_ns == t for n, t in mtimes.items())
    assert not list(out.glob(".tmp-*"))
    report = json.loads((out / "run_report.json").read_text())
    assert sorted(report["cases_skipped"]) == sorted(n[: -len("_seg.nii.gz")] for n in mtimes)


def test_suprem_direct_inference_on_abdomenatlas_layout(real_ct, tmp_path, monkeypatch):
    from suprem_nn.inference import models
    from tests.fabricated_weights import make_fake_released_checkpoint

    ckpt = make_fake_released_checkpoint("segresnet", tmp_path / "supervised_suprem_segresnet_2100.pth")
    real_plan = models.suprem_direct_plan("segresnet")
    assert real_plan.patch_size == [96, 96, 96] and real_plan.target_spacing == [1.5, 1.5, 1.5]
    assert real_plan.orientation == "RAS" and real_plan.normalization[0].lower == -175.0
    assert len(real_plan.class_names) == 32 and real_plan.multilabel

    original = models.suprem_direct_plan

    def small(backbone):  # the real recipe at 12 mm / 32^3 windows so the test runs in seconds
        plan = original(backbone)
        plan.target_spacing, plan.patch_size = [12.0] * 3, [32] * 3
        return plan

    monkeypatch.setattr(models, "suprem_direct_plan", small)
    atlas = tmp_path / "atlas"
    for c in ("ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"):
        (atlas / f"BDMAP_{c}").mkdir(parents=True)
        shutil.copyfile(real_ct / c / "ct.nii.gz", atlas / f"BDMAP_{c}" / "ct.nii.gz")
    summary = predict(atlas, tmp_path / "out", suprem="segresnet", checkpoint=ckpt, progress=False)
    assert summary.ok and len(summary.cases) == 2
    targets = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava",
               "pancreas"]
    for c in ("ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"):
        case_out = tmp_path / "out" / f"BDMAP_{c}"
        src = atlas / f"BDMAP_{c}" / "ct.nii.gz"
        assert _header(case_out / "combined_labels.nii.gz") == _header(src)
        assert sorted(p.name for p in (case_out / "segmentations").iterdir()) == sorted(f"{t}.nii.gz" for t in targets)
        combined, _ = read_image(case_out / "combined_labels.nii.gz")
        assert set(np.unique(combined)) <= {0, 1, 2, 3, 4, 6, 7, 8, 9, 11}  # 32-class numbering
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert report["settings"]["step_size"] == 0.25 and report["settings"]["postprocess"] == "largest-component"
