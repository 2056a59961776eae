"""Real ``torchrun`` on the CPU (gloo): two processes on one node, and two "nodes" on 127.0.0.1 with a c10d
rendezvous. The results contract is that of one process: one log, one progress.png, one set of checkpoints
(rank 0 writes them), identical weights on every rank, an exact resume after any rank is SIGKILLed, and a final
validation shared by the ranks that writes what one process writes.

Every run trains fold 0 of the tiny real-CT dataset with a split of 1 training and 2 validation cases, so the
final validation has one case per rank. Runs are tiny (3 epochs x 2 iterations of 32^3 patches, one thread per
process) but every process is a real interpreter started by torchrun; the results folder is shared by the
"nodes", as the documented multi-node setup requires.
"""
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
import torch

from suprem_nn.training.distributed import free_port
from tests.training.conftest import DATASET

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")   # the console script torch installs beside python
PLAN, FOLD = "tiny_segresnet", "0"
VAL_CASES = ["ts_abdomen_sm_3mm", "ts_upper_abdomen_ce_dicom"]   # the two smaller real CTs: one per rank
TRAIN_ARGS = [DATASET, FOLD, "--plan", PLAN, "--from-scratch", "--epochs", "3", "--iterations-per-epoch", "2",
              "--val-iterations", "1", "--num-workers", "0", "--seed", "7", "--device", "cpu", "--quiet"]
TIMEOUT = 600   # seconds for one launch on a busy 2-core machine; a hang fails instead of blocking the suite

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").is_file(),
                                reason="finding torchrun's worker processes to kill one reads /proc (Linux)")


@pytest.fixture(scope="module")
def shared(_tiny_roots, tmp_path_factory):
    """Environment of every launch (a private copy of the tiny dataset) and the uninterrupted reference run."""
    base = tmp_path_factory.mktemp("torchrun")
    shutil.copytree(_tiny_roots / "preprocessed", base / "preprocessed")
    splits = [{"train": ["ts_abdomen_pelvis_3mm"], "val": VAL_CASES}]
    (base / "preprocessed" / DATASET / "splits_final.json").write_text(json.dumps(splits))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "SUPREM_PREPROCESSED": str(base / "preprocessed"), "SUPREM_RAW": str(_tiny_roots / "raw")}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "TORCHELASTIC_RESTART_COUNT"):
        env.pop(k, None)
    # the reference: torchrun, 2 processes, uninterrupted, final validation shared by the ranks
    cwd = base / "cwd"
    cwd.mkdir()
    run = _launch(_single_node(), TRAIN_ARGS, env, base / "results_ref", base / "ref.log", cwd=cwd)
    assert _finish(run) == 0, _tail(base / "ref.log")
    return {"env": env, "base": base, "ref": _fold(base / "results_ref"), "cwd": cwd}


def _single_node(*extra: str) -> list[str]:
    return [str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
            str(free_port()), *extra]


def _node(rank: int, port: int) -> list[str]:
    return [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank), "--rdzv-backend",
            "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"suprem-test-{port}"]


def _launch(torchrun: list[str], args: list[str], env: dict, results: Path, log: Path, cwd: Path = REPO):
    out = open(log, "a")
    proc = subprocess.Popen([*torchrun, "-m", "suprem_nn.cli.train", *args], cwd=cwd,
                            env={**env, "SUPREM_RESULTS": str(results)}, stdout=out, stderr=subprocess.STDOUT)
    proc.log_file = out
    return proc


def _finish(proc) -> int:
    try:
        return proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.log_file.close()


def _tail(log: Path) -> str:
    return log.read_text()[-4000:]


def _fold(results: Path) -> Path:
    return results / DATASET / PLAN / f"fold_{FOLD}"


def _workers(torchrun_pid: int) -> dict[int, int]:
    """``{RANK: pid}`` of the worker processes that the torchrun process ``torchrun_pid`` started."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid != torchrun_pid:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue   # a process that ended while being read
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(stat.parent.name)
    return found


def _kill_rank_after_first_epoch(fold: Path, launches: list, rank: int) -> int:
    """SIGKILL the worker with global ``rank`` once epoch 1's checkpoint exists; returns the epoch it held."""
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if (fold / "checkpoint_latest.pth").is_file():
            pids = {r: p for launch in launches for r, p in _workers(launch.pid).items()}
            if rank in pids:
                os.kill(pids[rank], signal.SIGKILL)
                return torch.load(fold / "checkpoint_latest.pth", weights_only=True)["epoch"]
        assert all(p.poll() is None for p in launches), "a launch ended before a rank could be killed"
        time.sleep(0.05)
    raise AssertionError("no checkpoint_latest.pth within the time limit")


def _assert_same_final_weights(fold: Path, ref: Path) -> None:
    got = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    want = torch.load(ref / "checkpoint_final.pth", weights_only=True)
    assert got["epoch"] == want["epoch"] == 3
    assert got["network_weights"].keys() == want["network_weights"].keys()
    for k, v in want["network_weights"].items():
        assert torch.equal(v, got["network_weights"][k]), k
    for a, b in zip(want["optimizer_state"]["state"].values(), got["optimizer_state"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    sums = got["ddp_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1] == want["ddp_weight_checksums"][0]
    # the resumed run's metric history is the uninterrupted one's, epoch by epoch
    rows = [json.loads(x) for x in (fold / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]


def test_torchrun_two_processes_write_one_set_of_outputs(shared):
    ref, results = shared["ref"], shared["base"] / "results_ref"
    final = torch.load(ref / "checkpoint_final.pth", weights_only=True)
    sums = final["ddp_weight_checksums"]                    # each rank's own checksum of its weights
    assert len(sums) == 2 and sums[0] == sums[1] > 0
    assert len(final["rng_state_per_rank"]) == 2
    assert json.loads((ref / "config.json").read_text())["world_size"] == 2
    # exactly one fold folder's files, written once: a second writer would add files or duplicate log lines
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
    prefix = f"{DATASET}/{PLAN}/"
    expected = [f"{prefix}fold_0/{n}" for n in ("checkpoint_best.pth", "checkpoint_final.pth",
                                                "checkpoint_latest.pth", "config.json", "metrics.jsonl",
                                                "progress.png", "training_log.txt")]
    expected += [f"{prefix}fold_0/validation/{c}{ext}" for c in VAL_CASES for ext in (".json", ".nii.gz", ".npz")]
    expected += [f"{prefix}fold_0/validation/summary.json", f"{prefix}plans.json"]
    assert files == sorted(expected)
    assert not any(shared["cwd"].iterdir())                 # nothing written beside the launch either
    log = (ref / "training_log.txt").read_text()
    assert log.count(f"suprem_train {DATASET} fold 0") == 1 and log.count("epoch 3/3") == 1
    assert "2 process(es)" in log and "weights after training identical on all 2 ranks: True" in log
    assert "final validation: 2 case(s) with the sliding-window predictor, shared by 2 ranks" in log
    assert f"  {VAL_CASES[1]}: mean Dice" in log and "(rank 1)" in log
    assert [json.loads(x)["epoch"] for x in (ref / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (ref / "progress.png").stat().st_size > 1000


def test_distributed_validation_equals_single_process(shared, tmp_path):
    """The same final checkpoint validated by one process: same summary.json, same out-of-fold probabilities."""
    ref = shared["ref"]
    single = _fold(tmp_path / "results")
    shutil.copytree(ref.parent, single.parent)
    shutil.rmtree(single / "validation")
    # One process, run as a subprocess like the ranks (an in-process run once crashed the pytest process after
    # the OpenVINO engine tests had loaded their runtime into it). One thread: the ranks' kernels and sums.
    # --continue on a finished fold: no epochs left, so it re-saves the final weights and validates.
    env = {**shared["env"], "SUPREM_RESULTS": str(tmp_path / "results")}
    r = subprocess.run([sys.executable, "-m", "suprem_nn.cli.train", *TRAIN_ARGS, "--continue"], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    def summary(fold: Path) -> dict:
        s = json.loads((fold / "validation" / "summary.json").read_text())
        for c in s["cases"]:   # the files' folders differ; their names must not
            c["prediction"], c["probabilities"] = Path(c["prediction"]).name, Path(c["probabilities"]).name
        return s

    got, want = summary(single), summary(ref)
    assert [c["case"] for c in want["cases"]] == VAL_CASES
    assert got == want
    for case in VAL_CASES:
        with np.load(single / "validation" / f"{case}.npz") as a, np.load(ref / "validation" / f"{case}.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (case, key)
        assert (json.loads((single / "validation" / f"{case}.json").read_text())
                == json.loads((ref / "validation" / f"{case}.json").read_text()))
    assert "shared by" not in (single / "training_log.txt").read_text().split("--continue")[-1]


def test_two_torchrun_nodes_c10d_kill_rank0_then_continue_exactly(shared, tmp_path):
    """Two torchrun "nodes" (--nnodes 2, c10d rendezvous on 127.0.0.1) sharing one results folder."""
    results = tmp_path / "results"
    fold = _fold(results)
    args = [*TRAIN_ARGS, "--no-final-validation"]
    port = free_port()
    nodes = [_launch(_node(n, port), args, shared["env"], results, tmp_path / f"node{n}.log") for n in (0, 1)]
    try:
        killed_at = _kill_rank_after_first_epoch(fold, nodes, rank=0)   # the writer's process
    finally:
        codes = [_finish(n) for n in nodes]
    # both "nodes" stop (the killed worker's agent, and the other one whose peer vanished), and nothing is final
    assert all(c != 0 for c in codes), codes
    assert not (fold / "checkpoint_final.pth").exists()
    assert 1 <= killed_at < 3

    # restarted without --continue: rank 0 refuses to overwrite the run, and every rank on both nodes stops
    # with that one line instead of waiting for rank 0 until the process-group timeout
    port = free_port()
    logs = [tmp_path / f"refused{n}.log" for n in (0, 1)]
    nodes = [_launch(_node(n, port), args, shared["env"], results, logs[n]) for n in (0, 1)]
    assert [_finish(n) for n in nodes] != [0, 0]
    refusal = "suprem_train: error: " + str(fold) + ": this fold already has checkpoints; add --continue"
    assert [log.read_text().count(refusal) for log in logs] == [1, 1]

    port = free_port()
    nodes = [_launch(_node(n, port), [*args, "--continue"], shared["env"], results, tmp_path / f"node{n}.log")
             for n in (0, 1)]
    codes = [_finish(n) for n in nodes]
    assert codes == [0, 0], _tail(tmp_path / "node0.log") + _tail(tmp_path / "node1.log")
    text = (fold / "training_log.txt").read_text()
    assert text.count(f"suprem_train {DATASET} fold 0") == 1
    assert "--continue: resumed from checkpoint_latest.pth after epoch" in text
    assert sorted(p.name for p in results.rglob("training_log.txt")) == ["training_log.txt"]
    assert sorted(p.name for p in results.rglob("progress.png")) == ["progress.png"]
    _assert_same_final_weights(fold, shared["ref"])


def test_ranks_come_from_the_torchrun_environment(monkeypatch):
    """LOCAL_RANK picks the GPU, RANK the data slice; a launcher without LOCAL_RANK gets RANK % LOCAL_WORLD_SIZE."""
    from suprem_nn.errors import SupremError
    from suprem_nn.training.distributed import from_environment
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert from_environment() is None
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    info = from_environment()
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size, info.is_main) == (3, 4, 1, 2, False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert from_environment().local_rank == 0
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(SupremError, match="RANK=4 is outside 0..WORLD_SIZE-1"):
        from_environment()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(SupremError, match="RANK='one' must be an integer"):
        from_environment()


def test_local_rank_beyond_the_visible_gpus_is_one_error(monkeypatch):
    from suprem_nn.errors import SupremError
    from suprem_nn.training.trainer import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda", 1) == torch.device("cuda", 1)
    assert pick_device("cuda:1", 0) == torch.device("cuda", 1)
    with pytest.raises(SupremError, match=r"local rank 1 needs GPU 2, but this node sees 2; run at most 1 "):
        pick_device("cuda:1", 1)
