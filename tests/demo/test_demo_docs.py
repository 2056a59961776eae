"""Docs that cannot drift, a log that reads in a file, and next steps that run; all from the one quick demo run.

How documentation/getting_started.md is kept true: the demo builds its commands with ``step_commands`` and its
closing advice with ``next_steps`` (suprem_nn/demo/run.py). These tests check that the quick run printed exactly
those, that the page quotes the same ones for the full demo (``DIR`` for the output folder) with the same case
counts and sizes, that every ``suprem_*`` command on the page exists and parses, and they run the printed
next-step commands on a real CT from ../shared in a fresh environment, as a new shell would.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suprem_nn.demo import phantom
from suprem_nn.demo.run import (BACKBONE, DATASET, FULL, MY_CT, MY_OUTPUT, QUICK, DemoResult, find_suprem_weights,
                                next_steps, step_commands)
from suprem_nn.io.image_io import read_geometry, read_image
from suprem_nn.training.splits import kfold_splits

ROOT = Path(__file__).resolve().parents[2]
GETTING_STARTED = ROOT / "documentation" / "getting_started.md"


def console_scripts() -> dict[str, str]:
    """Command name -> module of every console script that setup.py installs."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"(suprem_[a-z_]+)=(suprem_nn\.cli\.[a-z_]+):main"', text))


def check_command(line: str) -> None:
    """``line`` names an installed command and its arguments parse (placeholders are plain strings to argparse)."""
    words = shlex.split(line.split(" #")[0])
    scripts = console_scripts()
    assert words[0] in scripts, f"{words[0]} is not a command setup.py installs: {line}"
    if len(words) == 1:
        return   # a command named in prose
    parser = importlib.import_module(scripts[words[0]]).build_parser()
    try:
        parser.parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"the command does not parse: {line}")


def doc_commands(text: str) -> list[str]:
    """Every suprem_* command on a markdown page: code-block lines and inline code spans, whitespace collapsed."""
    found = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        found += [ln.strip() for ln in block.splitlines() if re.match(r"suprem_[a-z_]+(\s|$)", ln.strip())]
    prose = re.sub(r"```\n.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if re.match(r"suprem_[a-z_]+(\s|$)", span):
            found.append(span)
    return found


def _flat(text: str) -> str:
    return " ".join(text.split())


def _fold0(n: int) -> tuple[int, int]:
    split = kfold_splits([f"case{i}" for i in range(n)])[0]
    return len(split["train"]), len(split["val"])


def _x(values) -> str:
    return " x ".join(f"{v:g}" for v in values)


def _init_flags() -> list[str]:
    weights = find_suprem_weights()
    return ["--from-scratch"] if weights is None else ["--pretrained", BACKBONE, "--pretrained-checkpoint",
                                                       str(weights)]


def _result(out: Path) -> DemoResult:
    d = json.loads((out / "demo_summary.json").read_text())
    return DemoResult(Path(d["out"]), d["initialisation"], d["mean_dice"], d["big_organ_dice"],
                      [Path(p) for p in d["previews"]], Path(d["progress_png"]), Path(d["summary_json"]),
                      d["seconds"], d["epochs"], d["quick"])


def test_the_log_in_a_file_has_lines_not_bars(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "\r" not in log and "\x1b" not in log, [ln for ln in log.split("\n") if "\r" in ln or "\x1b" in ln][:3]
    # the last progress line of each step that shows one (training's epochs have their own summary lines)
    for desc in (f"verifying {DATASET}", f"(?:fingerprint \\+ )?preprocess {DATASET}", "predict"):
        assert re.search(rf"^{desc}: case (?P<n>\d+)/(?P=n) \(100%\), elapsed \d:\d\d:\d\d, done$", proc.stderr,
                         flags=re.M), (desc, proc.stderr)


def test_the_demo_prints_the_commands_and_counts_it_is_built_from(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for command in step_commands(QUICK, out, "cpu", _init_flags()).values():
        assert "      $ " + shlex.join(command) in proc.stdout, shlex.join(command)
    assert (f"generating {QUICK.num_train} training and {QUICK.num_test} test phantoms "
            f"({_x(QUICK.shape)} voxels of {_x(QUICK.spacing)} mm)") in proc.stdout
    train, val = _fold0(QUICK.num_train)
    assert f"cases: {train} training, {val} validation;" in proc.stderr   # suprem_train's log
    assert f"{QUICK.max_epochs} epoch(s) x {QUICK.iterations_per_epoch} steps" in proc.stdout
    # the closing advice is next_steps, word for word
    assert "\n".join(next_steps(_result(out))) in proc.stdout


def test_the_printed_next_step_runs_on_a_real_ct_in_a_new_shell(quick_run, real_ct, tmp_path):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("Next steps", 1)[1].splitlines()
    export = next(ln.strip() for ln in lines if ln.strip().startswith("export SUPREM_RESULTS="))
    predict = next(ln.strip() for ln in lines if ln.strip().startswith(f"suprem_predict -i {MY_CT}"))
    bin_dir = os.path.dirname(sys.executable)
    assert shutil.which("suprem_predict", path=bin_dir), f"suprem_predict is not installed beside {sys.executable}"
    # a new shell: none of the roots set, the environment's commands on PATH
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPREM_") and k != "PYTHONPATH"}
    (tmp_path / "home").mkdir()
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""), HOME=str(tmp_path / "home"), SUPREM_OFFLINE="1")
    shutil.copyfile(real_ct / "ts_abdomen_sm_3mm" / "ct.nii.gz", tmp_path / MY_CT)

    alone = subprocess.run(["bash", "-c", predict], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 1 and f"no trained models for dataset '{DATASET}'" in alone.stderr, alone.stderr
    assert "SUPREM_RESULTS" in alone.stderr   # without the export line: why, and what to do

    r = subprocess.run(["bash", "-c", f"{export}\n{predict}"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    seg = tmp_path / MY_OUTPUT / "my_ct_seg.nii.gz"
    assert read_geometry(seg) == read_geometry(tmp_path / MY_CT)
    assert set(read_image(seg)[0].ravel().tolist()) <= set(range(len(phantom.CLASS_NAMES) + 1))
    assert (tmp_path / MY_OUTPUT / "my_ct_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for line in lines:   # the commands to start on one's own dataset exist and parse
        if line.strip().startswith("suprem_"):
            check_command(line.strip())


def test_getting_started_quotes_what_the_demo_runs():
    text = GETTING_STARTED.read_text()
    commands = doc_commands(text)
    assert len(commands) >= 15
    for command in commands:
        check_command(command)
    flat_commands = {_flat(c.split(" #")[0]) for c in commands}
    for name, command in step_commands(FULL, Path("DIR"), "cpu", ["--from-scratch"]).items():
        assert shlex.join(command) in flat_commands, f"step {name} is not quoted as it runs: {shlex.join(command)}"
    advice = next_steps(DemoResult(Path("DIR"), "", {}, None, [], Path("p"), Path("s"), quick=False))
    quoted = {ln.strip() for ln in text.splitlines()}
    for line in advice:
        if line.strip().startswith(("export ", "suprem_")):
            assert line.strip() in quoted, f"the demo's next step is not on the page: {line.strip()}"
    flat = _flat(text)
    train, val = _fold0(FULL.num_train)
    qtrain, qval = _fold0(QUICK.num_train)
    for phrase in (
            f"{FULL.num_train} training and {FULL.num_test} test synthetic abdominal CTs",
            f"Grid {_x(phantom.DEFAULT_SHAPE)} voxels of {_x(phantom.DEFAULT_SPACING)} mm",
            f"at a coarse {FULL.target_spacing[0]:g} mm spacing with a {_x(FULL.patch_size)} patch",
            f"({train} training, {val} validation cases)",
            f"epochs of {FULL.iterations_per_epoch} steps (batch {FULL.batch_size}), AdamW lr {FULL.lr:g}",
            f"(`--minutes`, default {FULL.minutes:g},",
            f"{QUICK.num_train} training and {QUICK.num_test} test phantoms of {_x(QUICK.shape)} voxels of "
            f"{_x(QUICK.spacing)} mm, with a {_x(QUICK.patch_size)} patch ({qtrain} training, {qval} validation "
            f"case) and {QUICK.max_epochs} epoch of {QUICK.iterations_per_epoch} steps"):
        assert phrase in flat, f"getting_started.md does not say: {phrase}"
