"""Temporary files belong to the process writing them: a second run starting up (its sweep of leftovers) must
not delete a write that another running process has in flight, and must still clean up after a dead one."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from suprem_nn.io import read_image
from suprem_nn.utils import atomic
from suprem_nn.utils.atomic import STALE_SECONDS, atomic_path, remove_stale_temporaries

from .conftest import cli, command_env, popen

SM = "ts_abdomen_sm_3mm"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: the pid names no process now (a recycled pid would only keep a file longer)
    return p.pid


def test_sweep_removes_only_temporaries_whose_owner_is_gone(tmp_path):
    host = atomic._host()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"mine": f".tmp-a.nii.gz.@{os.getpid()}@{host}@x1.nii.gz",
                 "live_other": f".tmp-b.json.@{live.pid}@{host}@x2",
                 "dead": f".tmp-c.json.@{_dead_pid()}@{host}@x3",
                 "other_host_young": f".tmp-d.json.@{live.pid}@node-17.cluster@x4",
                 "other_host_old": f".tmp-e.json.@1@node-17.cluster@x5",
                 "unowned_young": ".tmp-f.jsonabc123", "unowned_old": ".tmp-g.jsonabc123",
                 "mine_but_ancient": f".tmp-h.json.@{os.getpid()}@{host}@x6"}
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        old = time.time() - STALE_SECONDS - 60
        for key in ("other_host_old", "unowned_old", "mine_but_ancient"):
            os.utime(tmp_path / names[key], (old, old))
        (tmp_path / "result.json").write_text("{}")  # finished files are never touched

        assert remove_stale_temporaries(tmp_path) == 4
        left = {k for k, n in names.items() if (tmp_path / n).exists()}
        assert left == {"mine", "live_other", "other_host_young", "unowned_young"}
        assert (tmp_path / "result.json").exists()
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temporaries(tmp_path) == 1  # the writer is gone now: its leftover goes too


def test_own_write_in_flight_survives_a_sweep_and_completes(tmp_path):
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
        assert tmp.name.startswith(".tmp-out.json.@") and remove_stale_temporaries(tmp_path) == 0
    assert (tmp_path / "out.json").read_text() == "{}" and not list(tmp_path.glob(".tmp-*"))


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".tmp-*")) if folder.is_dir() else []


def _freeze_mid_write(proc: subprocess.Popen, folder: Path, timeout: float = 300) -> list[Path]:
    """SIGSTOP ``proc`` at a moment it has a temporary file open in ``folder``; return those files."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if _temporaries(folder):
            proc.send_signal(signal.SIGSTOP)
            caught = _temporaries(folder)
            if caught:
                return caught
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    raise AssertionError("the first run finished before it could be stopped mid-write")


def test_second_prediction_starting_while_the_first_writes(real_ct, tmp_path, tiny_model):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(6):
        shutil.copyfile(real_ct / SM / "ct.nii.gz", inp / f"case{i}.nii.gz")
    out = tmp_path / "out"
    args = ("-i", inp, "-o", out, "-m", tiny_model, "-np", "0", "--save-probabilities", "--per-class", "--quiet")
    first = popen("predict", *args, env=command_env())
    try:
        in_flight = _freeze_mid_write(first, out)
        # the second run starts (and sweeps leftovers) while the first holds a half-written file
        second = cli("predict", *args, env=command_env())
        assert second.returncode == 0, second.stderr
        assert all(p.exists() for p in in_flight), "the running first run's temporary files survive"
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert not _temporaries(out)
    reference = tmp_path / "reference"
    assert cli("predict", *args[:2], "-o", reference, *args[4:], env=command_env()).returncode == 0
    labels = sorted(p.name for p in reference.glob("*.nii.gz"))
    assert len(labels) == 6 and sorted(p.name for p in out.glob("*.nii.gz")) == labels
    for name in labels:
        got, geo = read_image(out / name)
        want, want_geo = read_image(reference / name)
        assert geo == want_geo and np.array_equal(got, want), name
