"""suprem_evaluate as a real subprocess: exit codes, files, table, one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from suprem_nn.io.image_io import read_image, write_image

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "suprem_nn.cli.evaluate", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def _setup(real_ct, tmp_path):
    ref, pred = tmp_path / "labelsTr", tmp_path / "predictions"
    ref.mkdir()
    pred.mkdir()
    lab, geo = read_image(real_ct / "ts_abdomen_sm_3mm" / "seg_btcv13.nii.gz")
    write_image(lab, geo, ref / "sm.nii.gz")
    p = lab.copy()
    spleen = lab == 1
    p[spleen & ~ndimage.binary_erosion(spleen)] = 0
    write_image(p, geo, pred / "sm.nii.gz")
    return ref, pred


def test_cli_writes_summary_and_prints_table(real_ct, tmp_path):
    ref, pred = _setup(real_ct, tmp_path)
    out = tmp_path / "eval"
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", str(real_ct / "labels_btcv13.json"),
                "--nsd-tolerance-mm", "3", "-o", str(out), "-np", "1")
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "summary.json").read_text())
    assert (out / "metrics.csv").is_file() and not (pred / "summary.json").exists()
    spleen = data["mean"]["spleen"]
    assert 0 < spleen["dice"] < 0.9 and data["mean"]["liver"]["dice"] == 1.0
    assert data["settings"]["nsd_tolerance_mm"] == 3.0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["class", "cases", "Dice", "NSD@3mm", "NSD@1vox(3mm)", "IoU", "both", "empty"]
    spleen_line = next(ln for ln in lines if ln.startswith("spleen "))
    assert spleen_line.split()[2] == f"{spleen['dice']:.4f}" and spleen_line.split()[3] == f"{spleen['nsd']:.4f}"
    assert next(ln for ln in lines if ln.startswith("esophagus")).split()[1:4] == ["0", "n/a", "n/a"]
    assert any(ln.startswith("foreground mean") for ln in lines)
    assert "1 case(s) evaluated" in r.stdout


def test_cli_truncated_prediction_is_one_line_error_naming_the_file(real_ct, tmp_path):
    ref, pred = _setup(real_ct, tmp_path)
    bad = pred / "sm.nii.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "spleen=1")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert err[0].startswith("suprem_evaluate: error: ") and str(bad) in err[0]
    assert "Traceback" not in r.stderr
    assert not (pred / "summary.json").exists()


def test_cli_bad_inputs_exit_nonzero_with_one_line(real_ct, tmp_path):
    ref, pred = _setup(real_ct, tmp_path)
    r = run_cli("-ref", str(tmp_path / "nowhere"), "-pred", str(pred))
    assert r.returncode == 1 and r.stderr.strip() == f"suprem_evaluate: error: {tmp_path / 'nowhere'}: reference folder not found"
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "spleen=one")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "bad label item 'spleen=one'" in r.stderr
    r = run_cli("-ref", str(ref), "-pred", str(pred), "--nsd-tolerance-mm", "-1")
    assert r.returncode == 1 and "NSD tolerance must be" in r.stderr
    # a prediction on another grid: both files named, and --debug shows the traceback instead
    lab, geo = read_image(pred / "sm.nii.gz")
    write_image(np.ascontiguousarray(lab[:-1]), type(geo)((geo.shape[0] - 1,) + geo.shape[1:], geo.spacing, geo.origin,
                                                          geo.direction), pred / "sm.nii.gz")
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "spleen=1")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert str(pred / "sm.nii.gz") in r.stderr and str(ref / "sm.nii.gz") in r.stderr and "shape" in r.stderr
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "spleen=1", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_cli_reports_missing_cases(real_ct, tmp_path):
    ref, pred = _setup(real_ct, tmp_path)
    shutil.copyfile(ref / "sm.nii.gz", ref / "extra.nii.gz")
    r = run_cli("-ref", str(ref), "-pred", str(pred), "-l", "spleen=1")
    assert r.returncode == 0, r.stderr
    assert "1 reference case(s) have no prediction and are skipped: extra" in r.stderr
    assert json.loads((pred / "summary.json").read_text())["missing_predictions"] == ["extra"]
