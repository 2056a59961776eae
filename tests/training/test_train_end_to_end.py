"""Train -> checkpoint -> kill -9 -> --continue -> final validation on real CT, as a user runs it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.training.conftest import DATASET

REPO = Path(__file__).resolve().parents[2]
COMMON = ["--plan", "tiny_segresnet", "--from-scratch", "--epochs", "3", "--iterations-per-epoch", "2",
          "--val-iterations", "1", "--num-workers", "0", "--seed", "7", "--device", "cpu", "--quiet"]


def _cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "suprem_nn.cli.train", DATASET, *args], cwd=REPO,
                            env={**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_kill_and_continue_equals_uninterrupted_run(tiny_dataset, tmp_path):
    env_a = {**os.environ, "SUPREM_RESULTS": str(tmp_path / "results_a")}
    env_b = {**os.environ, "SUPREM_RESULTS": str(tmp_path / "results_b")}
    # A: uninterrupted, no final validation (only the weights are compared)
    a = _cli(["0", *COMMON, "--no-final-validation"], env_a)
    out, err = a.communicate(timeout=600)
    assert a.returncode == 0, err
    # B: killed with SIGKILL during epoch 2, after epoch 1's checkpoint was written
    fold_b = tmp_path / "results_b" / DATASET / "tiny_segresnet" / "fold_0"
    b = _cli(["0", *COMMON], env_b)
    deadline = time.time() + 300
    while time.time() < deadline:
        m = fold_b / "metrics.jsonl"
        if m.is_file() and len(m.read_text().splitlines()) >= 1 and (fold_b / "checkpoint_latest.pth").is_file():
            break
        assert b.poll() is None, b.communicate()[1]
        time.sleep(0.05)
    b.send_signal(signal.SIGKILL)
    b.wait()
    assert not (fold_b / "checkpoint_final.pth").exists()
    killed_at = _weights(fold_b / "checkpoint_latest.pth")["epoch"]
    assert 1 <= killed_at < 3
    # restarting without --continue refuses to overwrite the run
    again = _cli(["0", *COMMON], env_b)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 1 and "--continue" in err and err.count("\n") == 1
    # B resumes and finishes, with final validation
    c = _cli(["0", *COMMON, "--continue"], env_b)
    out, err = c.communicate(timeout=600)
    assert c.returncode == 0, err

    fa = _weights(tmp_path / "results_a" / DATASET / "tiny_segresnet" / "fold_0" / "checkpoint_final.pth")
    fb = _weights(fold_b / "checkpoint_final.pth")
    assert fa["epoch"] == fb["epoch"] == 3
    for k, v in fa["network_weights"].items():
        assert torch.equal(v, fb["network_weights"][k]), k
    for sa, sb in zip(fa["optimizer_state"]["state"].values(), fb["optimizer_state"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert fa["schedule_state"] == fb["schedule_state"]
    # the logs continue where they stopped: one record per epoch, identical numbers
    fold_a = tmp_path / "results_a" / DATASET / "tiny_segresnet" / "fold_0"
    rec_a = [json.loads(x) for x in (fold_a / "metrics.jsonl").read_text().splitlines()]
    rec_b = [json.loads(x) for x in (fold_b / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rec_b] == [1, 2, 3]
    assert [r["train_loss"] for r in rec_a] == [r["train_loss"] for r in rec_b]
    log = (fold_b / "training_log.txt").read_text()
    assert f"--continue: resumed from checkpoint_latest.pth after epoch {killed_at} of 3" in log
    assert (fold_b / "progress.png").stat().st_size > 1000
    cfg = json.loads((fold_b / "config.json").read_text())
    assert cfg["epochs"] == 3 and cfg["iterations_per_epoch"] == 2 and cfg["augmentation"]["p_rotation"] == 0.2
    assert (fold_b.parent / "plans.json").is_file()
    # final validation: predictions in the original geometry + summary
    from suprem_nn.io import read_image
    splits = json.loads((tiny_dataset / "splits_final.json").read_text())
    summary = json.loads((fold_b / "validation" / "summary.json").read_text())
    for case in splits[0]["val"]:
        pred, geo = read_image(fold_b / "validation" / f"{case}.nii.gz")
        _, ref_geo = read_image(Path(os.environ["SUPREM_RAW"]) / DATASET / "labelsTr" / f"{case}.nii.gz")
        assert geo.shape == ref_geo.shape and pred.shape[-3:] == tuple(ref_geo.shape)
    assert "mean_dice" in summary or "mean" in summary


def test_pretrained_init_missing_weights_message_and_frozen_encoder(tiny_dataset, tmp_path, monkeypatch, capsys):
    from suprem_nn.cli.train import main
    from tests.fabricated_weights import make_fake_released_checkpoint
    monkeypatch.setenv("SUPREM_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SUPREM_WEIGHTS", str(tmp_path / "weights"))
    args = [DATASET, "0", "--pretrained", "segresnet", "--epochs", "1", "--iterations-per-epoch", "1",
            "--val-iterations", "0", "--num-workers", "0", "--device", "cpu", "--no-final-validation",
            "--freeze-encoder-epochs", "1", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "supervised_suprem_segresnet_2100.pth" in err and "huggingface.co" in err
    assert str(tmp_path / "weights") in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results" / DATASET / "suprem_segresnet" / "fold_0" / "checkpoint_latest.pth").exists()

    fake = make_fake_released_checkpoint("segresnet", tmp_path / "weights" / "supervised_suprem_segresnet_2100.pth")
    assert main(args) == 0
    fold = tmp_path / "results" / DATASET / "suprem_segresnet" / "fold_0"
    log = (fold / "training_log.txt").read_text()
    assert "initialisation: SuPreM segresnet" in log and "loaded: 81 tensors" in log
    trained = torch.load(fold / "checkpoint_final.pth", weights_only=True)["network_weights"]
    released = torch.load(fake, weights_only=True)["net"]
    # frozen for the only epoch: encoder tensors are exactly the released ones, the fresh head has learned
    assert torch.equal(trained["convInit.conv.weight"], released["module.convInit.conv.weight"])
    assert torch.equal(trained["down_layers.1.1.conv1.conv.weight"],
                       released["module.down_layers.1.1.conv1.conv.weight"])
    assert not torch.equal(trained["up_layers.0.0.conv1.conv.weight"],
                           released["module.up_layers.0.0.conv1.conv.weight"])
