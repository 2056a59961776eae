"""suprem_train killed (SIGKILL) mid-checkpoint-write and mid-epoch, then resumed with --continue."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch

from .conftest import DATASET, cli, command_env, popen

TRAIN = [DATASET, "0", "--plan", "tiny_segresnet", "--from-scratch", "--epochs", "3", "--iterations-per-epoch", "2",
         "--val-iterations", "1", "--num-workers", "0", "--seed", "7", "--device", "cpu", "--no-final-validation",
         "--quiet"]


def _fold(env) -> Path:
    return Path(env["SUPREM_RESULTS"]) / DATASET / "tiny_segresnet" / "fold_0"


def _every_checkpoint_loads(fold: Path) -> dict[str, int]:
    """Every *.pth in the fold is complete: it loads with weights_only=True. Returns name -> epoch."""
    epochs = {}
    for p in sorted(fold.glob("checkpoint_*.pth")):  # .tmp-* leftovers are not checkpoints
        epochs[p.name] = torch.load(p, map_location="cpu", weights_only=True)["epoch"]
    return epochs


def _wait(proc, condition, what, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"exited before {what}: {proc.communicate()[1]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_kill_during_checkpoint_write_keeps_the_last_complete_one_and_continue_finishes(train_env, tmp_path):
    ready = tmp_path / "stalled"
    # The 3rd checkpoint rename is epoch 2's checkpoint_latest.pth (epoch 1 writes latest, then best): the shim
    # cuts its temporary file to half and stalls, and the kill lands while that half file exists.
    env = command_env({**{k: train_env[k] for k in ("SUPREM_RAW", "SUPREM_PREPROCESSED", "SUPREM_RESULTS")},
                       "SUPREM_FAULT_STALL_CHECKPOINT": "3", "SUPREM_FAULT_READY": str(ready)}, shim=True)
    fold = _fold(env)
    proc = popen("train", *TRAIN, env=env)
    _wait(proc, ready.exists, "the stalled checkpoint write")
    partial = list(fold.glob(".tmp-checkpoint_*"))
    assert partial, "the kill must land while a checkpoint's temporary file exists"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    before = _every_checkpoint_loads(fold)  # nothing truncated under a final name
    assert before["checkpoint_latest.pth"] == 1 and "checkpoint_final.pth" not in before
    records = [json.loads(x) for x in (fold / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] in ([1], [1, 2])

    r = cli("train", *TRAIN, "--continue", env=train_env)
    assert r.returncode == 0, r.stderr
    after = _every_checkpoint_loads(fold)
    assert after["checkpoint_final.pth"] == 3 and after["checkpoint_latest.pth"] == 3
    assert not list(fold.glob(".tmp-*")), "the half-written temporary file is cleaned up"
    log = (fold / "training_log.txt").read_text()
    assert "--continue: resumed from checkpoint_latest.pth after epoch 1 of 3" in log
    assert [json.loads(x)["epoch"] for x in (fold / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_kill_mid_epoch_before_any_checkpoint_then_continue_and_restart(train_env):
    fold = _fold(train_env)
    proc = popen("train", *TRAIN, env=train_env)
    _wait(proc, lambda: (fold / "config.json").is_file(), "training to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _every_checkpoint_loads(fold) == {}
    # --continue with nothing to continue from says so; a plain restart then works
    r = cli("train", *TRAIN, "--continue", env=train_env)
    assert r.returncode == 1 and "no checkpoint to continue from" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", *TRAIN, env=train_env)
    assert r.returncode == 0, r.stderr
    assert _every_checkpoint_loads(fold)["checkpoint_final.pth"] == 3
