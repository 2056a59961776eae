"""suprem_predict --part K/N: a deterministic split, one report per part merged by the last part, and N real
processes filling one output folder at once with exactly what one run writes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from suprem_nn.errors import SupremError
from suprem_nn.inference.parts import merge_reports, parse_part, select_part
from suprem_nn.io.image_io import read_image

from .helpers import make_model_folder, tiny_plan

REPO = Path(__file__).resolve().parents[2]
REAL = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]


def test_part_text_and_the_split():
    assert parse_part("3/8") == (3, 8) and parse_part(" 1 / 1 ") == (1, 1) and parse_part(None) is None
    for bad in ("0/8", "9/8", "3", "a/b", "3/0"):
        with pytest.raises(SupremError, match="--part"):
            parse_part(bad)
    ids = [f"case{i:02d}" for i in range(10)]
    shuffled = ids[::3] + ids[1::3] + ids[2::3]
    parts = [select_part(shuffled, (k, 4), key=str) for k in range(1, 5)]
    assert sorted(c for p in parts for c in p) == ids, "every case in exactly one part"
    assert parts[0] == ["case00", "case04", "case08"] and [len(p) for p in parts] == [3, 3, 2, 2]
    assert select_part(shuffled, None, key=str) == shuffled


def test_merged_report_sums_stages_and_keeps_every_part():
    a = {"plan": "p", "cases_predicted": ["b"], "cases_skipped": [], "failures": [], "seconds_wall": 3.0,
         "seconds_per_case": {"b": {"network": 1.0}}, "seconds_total_by_stage": {"network": 1.0},
         "peak_rss_mb": 100.0, "peak_gpu_mb": None, "command": "x --part 1/2", "part": "1/2"}
    b = {**a, "cases_predicted": ["a"], "failures": [{"case": "c", "file": "c.nii.gz", "problem": "bad"}],
         "seconds_wall": 5.0, "seconds_per_case": {"a": {"network": 2.0}}, "seconds_total_by_stage": {"network": 2.5},
         "peak_rss_mb": 90.0, "command": "x --part 2/2", "part": "2/2"}
    m = merge_reports([a, b], ["r1.json", "r2.json"])
    assert m["cases_predicted"] == ["a", "b"] and m["failures"] == b["failures"] and m["plan"] == "p"
    assert m["seconds_total_by_stage"] == {"network": 3.5} and m["seconds_wall"] == 5.0
    assert m["peak_rss_mb"] == 100.0 and m["peak_gpu_mb"] is None and "part" not in m
    assert m["parts"]["r2.json"]["failures"] == 1 and m["parts"]["r1.json"]["command"] == "x --part 1/2"


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "suprem_nn.cli.predict", *map(str, args)]


def test_three_parts_at_once_equal_one_run(real_ct, tmp_path):
    model = make_model_folder(tmp_path / "results", tiny_plan(spacing=(12.0, 12.0, 12.0), mirror_axes=()))
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(5):  # 5 cases over 3 parts: sizes 2, 2, 1
        shutil.copyfile(real_ct / REAL[i % 2] / "ct.nii.gz", inp / f"case{i}.nii.gz")
    # the one run is the same command without --part, under the same thread count (float sums can differ)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    one = tmp_path / "one_run"
    r = subprocess.run(_cmd("-i", inp, "-o", one, "-m", model, "-np", "0", "--statistics", "--quiet"), env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr

    out = tmp_path / "parts"
    procs = [subprocess.Popen(_cmd("-i", inp, "-o", out, "-m", model, "-np", "0", "--statistics", "--quiet",
                                   "--part", f"{k}/3"), env=env, stderr=subprocess.PIPE, text=True)
             for k in (1, 2, 3)]
    errors = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in errors), errors

    reports = {k: json.loads((out / f"run_report_part{k}of3.json").read_text()) for k in (1, 2, 3)}
    assert [reports[k]["cases_predicted"] for k in (1, 2, 3)] == [["case0", "case3"], ["case1", "case4"], ["case2"]]
    assert all(reports[k]["part"] == f"{k}/3" for k in (1, 2, 3))
    merged = json.loads((out / "run_report.json").read_text())
    assert merged["cases_predicted"] == [f"case{i}" for i in range(5)] and not merged["failures"]
    assert sorted(merged["parts"]) == [f"run_report_part{k}of3.json" for k in (1, 2, 3)]

    reports_and_stats = {"run_report.json", "statistics.json"}
    ours = {p.name for p in out.iterdir()} - reports_and_stats - {f"{s}_part{k}of3.json" for k in (1, 2, 3)
                                                                  for s in ("run_report", "statistics")}
    assert ours == {p.name for p in one.iterdir()} - reports_and_stats, "the same files, no temporaries"
    for name in sorted(ours):
        got, geo = read_image(out / name)
        want, want_geo = read_image(one / name)
        assert geo == want_geo and np.array_equal(got, want), name
    assert json.loads((out / "statistics.json").read_text()) == json.loads((one / "statistics.json").read_text())


def test_bad_part_is_one_line(tmp_path):
    r = subprocess.run(_cmd("-i", tmp_path, "-o", tmp_path / "o", "-m", tmp_path, "--part", "4/3"),
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--part 4/3" in r.stderr, r.stderr
