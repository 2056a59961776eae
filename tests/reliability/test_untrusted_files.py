"""Untrusted files through the commands: a checkpoint that runs code when unpickled is refused and never runs;
a broken plans.json is a schema error naming the field, not a KeyError."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.fabricated_weights import make_fake_released_checkpoint

from .conftest import DATASET, assert_clean_failure, cli
from .evil import make_malicious_checkpoint

SM_CT = "ts_abdomen_sm_3mm/ct.nii.gz"


def test_malicious_checkpoint_in_a_model_folder_is_refused(real_ct, tmp_path, tiny_model):
    marker = tmp_path / "PWNED"
    final = tiny_model / "fold_0" / "checkpoint_final.pth"
    make_malicious_checkpoint(final, marker, torch.load(final, weights_only=True))
    r = cli("predict", "-i", real_ct / SM_CT, "-o", tmp_path / "o.nii.gz", "-m", tiny_model)
    line = assert_clean_failure(r, str(final), "refused to load", "can execute code", command="predict")
    assert "weights_only" not in line  # no advice to load it unsafely
    assert not marker.exists() and not (tmp_path / "o.nii.gz").exists()


def test_malicious_released_checkpoint_for_direct_inference_is_refused(real_ct, tmp_path):
    marker = tmp_path / "PWNED"
    released = torch.load(make_fake_released_checkpoint("segresnet", tmp_path / "released.pth"), weights_only=True)
    evil = make_malicious_checkpoint(tmp_path / "evil.pth", marker, released)
    r = cli("predict", "-i", real_ct / SM_CT, "-o", tmp_path / "o.nii.gz", "--suprem", "segresnet",
            "--checkpoint", evil)
    assert_clean_failure(r, str(evil), "refused to load", command="predict")
    assert not marker.exists()


def test_malicious_pretrained_checkpoint_for_training_is_refused(train_env, tmp_path):
    marker = tmp_path / "PWNED"
    released = torch.load(make_fake_released_checkpoint("segresnet", tmp_path / "released.pth"), weights_only=True)
    evil = make_malicious_checkpoint(tmp_path / "evil.pth", marker, released)
    args = [DATASET, "0", "--pretrained", "segresnet", "--pretrained-checkpoint", evil, "--epochs", "1",
            "--iterations-per-epoch", "1", "--val-iterations", "0", "--num-workers", "0", "--device", "cpu",
            "--no-final-validation", "--quiet"]
    r = cli("train", *args, env=train_env)
    assert_clean_failure(r, str(evil), "refused to load", command="train")
    assert not marker.exists()


def test_malicious_checkpoint_latest_is_refused_by_continue(train_env, tmp_path):
    marker = tmp_path / "PWNED"
    args = [DATASET, "0", "--plan", "tiny_segresnet", "--from-scratch", "--epochs", "1", "--iterations-per-epoch",
            "1", "--val-iterations", "0", "--num-workers", "0", "--device", "cpu", "--no-final-validation", "--quiet"]
    assert cli("train", *args, env=train_env).returncode == 0
    fold = tmp_path / "results" / DATASET / "tiny_segresnet" / "fold_0"
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
        make_malicious_checkpoint(fold / name, marker, torch.load(fold / name, weights_only=True))
    r = cli("train", *args, "--continue", env=train_env)
    assert_clean_failure(r, "refused to load", command="train")
    assert not marker.exists()


@pytest.mark.parametrize("change, words", [
    (lambda p: p.pop("patch_size"), ["missing field 'patch_size'"]),
    (lambda p: p.update(patch_size="32"), ["field 'patch_size' must be a list of int"]),
    (lambda p: p.update(target_spacing=[-6.0, 6.0, 6.0]), ["field 'target_spacing' must hold positive numbers"]),
    ("{not json", ["not valid JSON"]),
], ids=["missing-field", "wrong-type", "negative-spacing", "not-json"])
def test_corrupt_plans_json_in_a_model_folder(real_ct, tmp_path, tiny_model, change, words):
    plans = tiny_model / "plans.json"
    if isinstance(change, str):
        plans.write_text(change)
    else:
        plan = json.loads(plans.read_text())
        change(plan)
        plans.write_text(json.dumps(plan))
    r = cli("predict", "-i", real_ct / SM_CT, "-o", tmp_path / "o.nii.gz", "-m", tiny_model)
    assert_clean_failure(r, str(plans), *words, command="predict")
    assert "KeyError" not in r.stderr


def test_corrupt_plans_json_for_training(train_env, tmp_path):
    plans = tmp_path / "preprocessed" / DATASET / "tiny_segresnet" / "plans.json"
    plan = json.loads(plans.read_text())
    plan["batch_size"] = "two"
    plans.write_text(json.dumps(plan))
    r = cli("train", DATASET, "0", "--plan", "tiny_segresnet", "--from-scratch", "--device", "cpu", env=train_env)
    assert_clean_failure(r, str(plans), "field 'batch_size' must be", command="train")
