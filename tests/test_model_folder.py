"""The trained-model folder format stays what earlier releases wrote, and suprem_nn.model_folder reads it.

The "written before" folder below is built with plain torch.save and literal names and keys, exactly as
training wrote them before suprem_nn.model_folder existed (trainer._payload of release 0.1.0), so a change of
file name or key in the module fails here rather than on a user's old results.
"""
from __future__ import annotations

import json

import pytest
import torch

from suprem_nn import model_folder as mf
from suprem_nn.networks import build_network
from suprem_nn.planning.plans import Plan

from tests.inference.helpers import tiny_plan

# Every key a fold checkpoint held in release 0.1.0, in its order (training's own state included; the final
# checkpoint adds ddp_weight_checksums after them).
KEYS_OF_RELEASE_0_1 = ["network_weights", "network", "num_inputs", "num_outputs", "epoch", "plan_name", "dataset",
                       "fold", "final", "optimizer_state", "schedule_state", "grad_scaler_state", "rng_state",
                       "rng_state_per_rank", "history", "ema_dice", "best_ema", "config",
                       "inference_allowed_mirroring_axes"]


def _old_checkpoint(plan: Plan, net: torch.nn.Module, fold: str, axes) -> dict:
    """A checkpoint as release 0.1.0's trainer wrote it (values of the plain types it used)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    return {"network_weights": net.state_dict(), "network": plan.network, "num_inputs": plan.num_inputs,
            "num_outputs": plan.num_outputs, "epoch": 3, "plan_name": plan.plan_name, "dataset": plan.dataset_name,
            "fold": fold, "final": True, "optimizer_state": opt.state_dict(), "schedule_state": {"last_step": 6},
            "grad_scaler_state": {}, "rng_state": {"torch": torch.get_rng_state()},
            "rng_state_per_rank": [{"torch": torch.get_rng_state()}],
            "history": [{"epoch": 1, "train_loss": 0.9}], "ema_dice": 0.5, "best_ema": 0.5,
            "config": json.dumps({"epochs": 3}), "inference_allowed_mirroring_axes": axes}


def _folder_written_before(root, plan: Plan, axes_per_fold: dict):
    folder = root / plan.dataset_name / plan.plan_name
    folder.mkdir(parents=True)
    plan.save(folder / "plans.json")
    nets = {}
    for fold, axes in axes_per_fold.items():
        torch.manual_seed(int(fold) if fold.isdigit() else 9)
        nets[fold] = build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs)
        (folder / f"fold_{fold}").mkdir()
        ckpt = _old_checkpoint(plan, nets[fold], fold, axes)
        assert list(ckpt) == KEYS_OF_RELEASE_0_1
        torch.save(ckpt, folder / f"fold_{fold}" / "checkpoint_final.pth")
        (folder / f"fold_{fold}" / "config.json").write_text(json.dumps({"epochs": 3}))
    return folder, nets


def test_a_folder_written_by_an_earlier_release_loads(tmp_path):
    plan = tiny_plan(mirror_axes=(0, 1, 2))
    folder, nets = _folder_written_before(tmp_path, plan, {"0": [0, 1, 2], "1": [1, 2], "all": [0, 1, 2]})
    (folder / "fold_3").mkdir()  # an unfinished fold (no final checkpoint) is not a fold to predict with
    (folder / "fold_3" / "checkpoint_latest.pth").write_bytes(b"")

    assert mf.is_model_folder(folder) and mf.plan_path(folder) == folder / "plans.json"
    assert mf.checkpoint_path(folder, 1) == folder / "fold_1" / "checkpoint_final.pth"
    assert mf.folds_with(folder) == ["0", "1", "all"]
    assert mf.folds_with(folder, "checkpoint_latest.pth") == ["3"]
    model = mf.load_trained_model(folder, folds=None)
    assert model.folds == ["0", "1", "all"] and model.mirror_axes == [1, 2]
    assert model.plan == Plan.load(folder / "plans.json")  # the plan is read as written, never changed
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.inference_mode():
        for fold, net in zip(model.folds, model.networks):
            torch.testing.assert_close(net(x), nets[fold].eval()(x))
    ckpt = mf.read_checkpoint(mf.checkpoint_path(folder, 0))
    assert list(ckpt) == KEYS_OF_RELEASE_0_1


def test_written_checkpoints_keep_the_keys_of_earlier_releases(tmp_path):
    """What training writes through the module: the same keys in the same order, atomically, weights_only."""
    plan = tiny_plan()
    net = build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs)
    old = _old_checkpoint(plan, net, "0", [0, 1, 2])
    state = {k: old[k] for k in KEYS_OF_RELEASE_0_1[9:-1]}
    record = mf.checkpoint_record(net.state_dict(), plan, plan.dataset_name, 0, 3, True, (0, 1, 2), state)
    assert list(record) == KEYS_OF_RELEASE_0_1
    path = mf.checkpoint_path(tmp_path, 0)
    path.parent.mkdir()
    mf.write_checkpoint(path, record)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint_final.pth"]  # no temporary file left
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == KEYS_OF_RELEASE_0_1 and loaded["fold"] == "0" and loaded["final"] is True


def test_model_folder_errors_name_the_file(tmp_path):
    plan = tiny_plan()
    folder, _ = _folder_written_before(tmp_path, plan, {"0": [0, 1, 2]})
    with pytest.raises(mf.ModelError, match="model folder not found"):
        mf.load_trained_model(tmp_path / "missing")
    with pytest.raises(mf.ModelError, match=r"checkpoint missing \(folds present: fold_0\)"):
        mf.load_trained_model(folder, folds=[2])
    other = tiny_plan(network="unet")
    with pytest.raises(mf.ModelError, match="holds a 'segresnet' network but plans.json says 'unet'"):
        mf.load_fold(folder, other, 0)
    bad = mf.checkpoint_path(folder, 0)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(mf.ModelError, match="checkpoint_final.pth"):
        mf.load_trained_model(folder)
