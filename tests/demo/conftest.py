"""The one ``suprem_demo --quick`` run that every demo test inspects (it takes about a minute, so it runs once)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """``(out, proc)``: the demo's output folder and its finished process, whose stdout and stderr went to files
    (as ``suprem_demo > log 2>&1`` or a CI runner would have them), read back into ``proc.stdout``/``proc.stderr``."""
    base = tmp_path_factory.mktemp("demo")
    out = base / "out dir"   # a space in the path must survive the subprocesses
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "suprem_nn.cli.demo", "--quick", "--out", str(out)]
    with open(base / "stdout.log", "w") as stdout, open(base / "stderr.log", "w") as stderr:
        rc = subprocess.call(command, stdout=stdout, stderr=stderr, env=env, timeout=600)
    proc = subprocess.CompletedProcess(command, rc, (base / "stdout.log").read_text(),
                                       (base / "stderr.log").read_text())
    return out, proc
