"""Shared set-up of the reliability suite: how to run the real commands, and tiny models and datasets for them.

Everything is built with the commands themselves where possible (``suprem_plan_and_preprocess`` makes the
training cache) and kept tiny (6 mm spacing, 16^3 patches, an 8-filter SegResNet) so the suite runs in minutes.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import add_tiny_scratch_plan, make_nnunet_dataset

REPO = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).resolve().parent / "shim"
DATASET = "Dataset101_RealCT"
SMALL = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]
COMMANDS = {"plan_and_preprocess": "suprem_plan_and_preprocess", "train": "suprem_train",
            "predict": "suprem_predict", "evaluate": "suprem_evaluate"}


def command_env(extra: dict | None = None, shim: bool = False) -> dict:
    path = [str(REPO)] + ([str(SHIM)] if shim else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1", **(extra or {})}


def cli(command: str, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m suprem_nn.cli.<command> args`` as a user would, and capture its output."""
    return subprocess.run([sys.executable, "-m", f"suprem_nn.cli.{command}", *map(str, args)], capture_output=True,
                          text=True, env=env or command_env(), cwd=REPO, timeout=timeout)


def popen(command: str, *args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"suprem_nn.cli.{command}", *map(str, args)],
                            env=env or command_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def assert_clean_failure(proc: subprocess.CompletedProcess, *words: str, command: str) -> str:
    """Non-zero exit, no traceback, and an error line from ``command`` that holds every word; returns that line."""
    assert proc.returncode != 0, f"expected a failure\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines, in_message = [], False
    for ln in proc.stderr.splitlines():
        # the command's own lines, and the indented per-case lines that continue its error message
        in_message = ln.startswith(f"{COMMANDS[command]}: ") or (in_message and ln.startswith("  "))
        if in_message:
            lines.append(ln)
    hits = [ln for ln in lines if all(w in ln for w in words)]
    assert hits, f"no error line of {COMMANDS[command]} holds {words}:\n{proc.stderr}"
    return hits[0]


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_training_roots(tmp_path_factory):
    """Raw + preprocessed roots of a 2-case real-CT dataset planned by the CLI, plus a tiny from-scratch plan."""
    base = tmp_path_factory.mktemp("reliability_roots")
    make_nnunet_dataset(base / "raw", cases=SMALL)
    env = command_env({"SUPREM_RAW": str(base / "raw"), "SUPREM_PREPROCESSED": str(base / "preprocessed")})
    r = cli("plan_and_preprocess", "-d", DATASET, "--pretrained", "segresnet", "--spacing", "6", "6", "6",
            "--patch-size", "16", "16", "16", "--batch-size", "2", "-np", "1", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    add_tiny_scratch_plan(base / "preprocessed" / DATASET)
    return base


@pytest.fixture
def train_env(tiny_training_roots, tmp_path):
    """Environment for suprem_train on a private copy of the tiny cache, results under tmp_path."""
    pre = tmp_path / "preprocessed"
    shutil.copytree(tiny_training_roots / "preprocessed", pre)
    return command_env({"SUPREM_RAW": str(tiny_training_roots / "raw"), "SUPREM_PREPROCESSED": str(pre),
                        "SUPREM_RESULTS": str(tmp_path / "results")})


@pytest.fixture
def tiny_model(tmp_path):
    """A model folder (plans.json + fold_0/checkpoint_final.pth) of a tiny SegResNet: one 32^3 window per case."""
    from tests.inference.helpers import make_model_folder, tiny_plan
    return make_model_folder(tmp_path / "models", tiny_plan(spacing=(12.0, 12.0, 12.0), mirror_axes=()))
