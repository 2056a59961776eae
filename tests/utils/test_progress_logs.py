"""Logs that read in a file: plain progress lines instead of bars, every error once on its own line, in our words.

The command test runs ``suprem_predict`` with stdout and stderr going to a file, as ``cmd > log 2>&1`` or a CI
runner would, on a folder holding one real CT and one corrupt file.
"""
from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suprem_nn.utils import progress as progress_module
from suprem_nn.utils.progress import Progress, format_seconds, track, use_bars

from tests.inference.helpers import make_model_folder, tiny_plan

REPO = Path(__file__).resolve().parents[2]
ESCAPE = re.compile(r"\x1b\[")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """A controllable time.monotonic for the progress module."""
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def no_ci(monkeypatch):
    for name in progress_module._CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")


def test_lines_in_a_file_first_periodic_last(clock):
    out = io.StringIO()
    with Progress(10, "predict", "case", stream=out, interval=30) as bar:
        for step in range(10):
            clock[0] += 12.0            # 12 s per case
            bar.update(1)
            if step == 4:
                bar.set_postfix(failed=1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and not ESCAPE.search(out.getvalue())
    # the first case, then at most one line per 30 s (every third case at 12 s each), then the last
    assert lines[0] == "predict: case 1/10 (10%), elapsed 0:00:12, ETA 0:01:48"
    assert lines[1] == "predict: case 4/10 (40%), elapsed 0:00:48, ETA 0:01:12"
    assert lines[2] == "predict: case 7/10 (70%), elapsed 0:01:24, ETA 0:00:36, failed 1"
    assert lines[-1] == "predict: case 10/10 (100%), elapsed 0:02:00, done, failed 1"
    assert len(lines) == 4


def test_nested_progress_is_silent_unless_slow(clock):
    out = io.StringIO()
    with Progress(100, "windows", "window", nested=True, stream=out, interval=30) as bar:
        for _ in range(10):              # a fast case: 10 s in all, nothing in the log
            clock[0] += 1.0
            bar.update(1)
    assert out.getvalue() == ""
    with Progress(100, "windows", "window", nested=True, stream=out, interval=30) as bar:
        for _ in range(100):             # a slow one: a line every 30 s, indented under its case
            clock[0] += 1.0
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines == ["  windows: window 30/100 (30%), elapsed 0:00:30, ETA 0:01:10",
                     "  windows: window 60/100 (60%), elapsed 0:01:00, ETA 0:00:40",
                     "  windows: window 90/100 (90%), elapsed 0:01:30, ETA 0:00:10"]


def test_bytes_and_unknown_totals(clock):
    out = io.StringIO()
    with Progress(4 * 2 ** 20, "download x.pth", "B", unit_scale=True, stream=out) as bar:
        clock[0] += 2
        bar.update(2 ** 20)
    assert out.getvalue().splitlines()[0] == \
        "download x.pth: 1.0 MiB of 4.0 MiB (25%), elapsed 0:00:02, ETA 0:00:06"
    assert progress_module._format_amount(512, "B", True) == "512 B"
    assert progress_module._format_amount(3 * 2 ** 30, "B", True) == "3.0 GiB"
    out = io.StringIO()
    list(track(iter(range(3)), "post-processing", stream=out))
    assert out.getvalue().splitlines() == ["post-processing: 1 case(s), elapsed 0:00:00"]


def test_disabled_progress_writes_nothing(clock):
    out = io.StringIO()
    with Progress(3, "predict", stream=out, enabled=False) as bar:
        bar.update(3)
    assert out.getvalue() == ""
    assert format_seconds(3725) == "1:02:05"


def test_bars_only_on_a_terminal(monkeypatch, no_ci):
    assert use_bars(FakeTerminal()) is True
    assert use_bars(io.StringIO()) is False
    monkeypatch.setenv("TERM", "dumb")
    assert use_bars(FakeTerminal()) is False
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("CI", "true")
    assert use_bars(FakeTerminal()) is False


def test_on_a_terminal_an_error_is_not_glued_to_the_bar(monkeypatch, no_ci):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)   # the commands log to stderr, where the bar is drawn
    logger = logging.getLogger("suprem_nn.test_progress")
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with Progress(2, "predict", "case") as bar:
            assert bar.bars
            bar.update(1)
            logger.error("case1: x.nii.gz: cannot read image")
            bar.update(1)
    finally:
        root.removeHandler(handler)
    text = term.getvalue()
    assert "\r" in text   # a real bar was drawn
    # the message starts a line of its own and ends it: the bar line is cleared before it and redrawn after it
    error_lines = [ln for ln in re.split(r"[\r\n]", text) if "cannot read image" in ln]
    assert len(error_lines) == 1
    assert re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", error_lines[0]).strip() == "case1: x.nii.gz: cannot read image"


def test_predict_log_in_a_file(real_ct, tmp_path):
    model = make_model_folder(tmp_path / "results", tiny_plan(spacing=(12.0, 12.0, 12.0), mirror_axes=()))
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copyfile(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz", inp / "abdomen_0000.nii.gz")
    (inp / "corrupt_0000.nii.gz").write_bytes(b"\x89 not an image at all " * 100)
    log = tmp_path / "predict.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in progress_module._CI_VARIABLES:
        env.pop(name, None)
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o",
                              str(tmp_path / "out"), "-m", str(model), "-np", "0"], stdout=f, stderr=f, env=env,
                             timeout=300)
    text = log.read_text()
    assert rc == 1, text
    assert "\r" not in text and not ESCAPE.search(text), repr(text)
    lines = text.splitlines()
    # cases run in name order: abdomen (fine), then corrupt (fails)
    assert any(re.fullmatch(r"predict: case 1/2 \(50%\), elapsed \d:\d\d:\d\d, ETA \d:\d\d:\d\d", ln)
               for ln in lines), text
    assert any(re.fullmatch(r"predict: case 2/2 \(100%\), elapsed \d:\d\d:\d\d, done, failed 1", ln)
               for ln in lines), text
    # the corrupt file's error: once, on its own line, naming the file, in our words (not ITK's)
    mentions = [ln for ln in lines if "corrupt_0000.nii.gz" in ln]
    assert mentions == [f"suprem_predict: failed: corrupt: {inp / 'corrupt_0000.nii.gz'}: cannot read image (no "
                        "image reader recognises its contents: the file is corrupt, or not a NIfTI/NRRD/MetaImage "
                        "image)"], text
    assert "sitk::" not in text and "ITK" not in text and "Traceback" not in text
    assert (tmp_path / "out" / "abdomen.nii.gz").is_file()


def test_evaluate_says_a_bad_prediction_once(real_ct, tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    seg = real_ct / "ts_abdomen_sm_3mm" / "seg_btcv13.nii.gz"
    for case in ("good", "bad"):
        shutil.copyfile(seg, ref / f"{case}.nii.gz")
    shutil.copyfile(seg, pred / "good.nii.gz")
    (pred / "bad.nii.gz").write_bytes(b"not an image " * 100)
    log = tmp_path / "evaluate.log"
    with open(log, "w") as f:   # a real process: in pytest's own process the log records would be captured
        rc = subprocess.call([sys.executable, "-m", "suprem_nn.cli.evaluate", "-ref", str(ref), "-pred", str(pred),
                              "-l", "liver=6", "-o", str(tmp_path / "eval")], stdout=f, stderr=f,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    text = log.read_text()
    assert rc == 1, text
    mentions = [ln for ln in text.splitlines() if "bad.nii.gz" in ln]
    assert len(mentions) == 1, text
    assert mentions[0].startswith(f"suprem_evaluate: failed: {pred / 'bad.nii.gz'}: cannot read image (no image "
                                  "reader recognises its contents"), mentions
