"""The small parts of training: splits, losses, schedules, checkpoints, patch sampling, config layering."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from suprem_nn.errors import SupremError
from suprem_nn.model_folder import read_checkpoint, write_checkpoint
from suprem_nn.training.checkpoint import capture_rng_state, restore_rng_state
from suprem_nn.training.config import resolve_config
from suprem_nn.training.data import TRAIN, VAL, PatchSampler
from suprem_nn.training.losses import DiceBCELoss, DiceCELoss, dice_counts, pseudo_dice_per_class
from suprem_nn.training.schedule import LRSchedule
from suprem_nn.training.splits import SPLITS_FILE, cases_for_fold, kfold_splits


def test_kfold_matches_sklearn_sizes_and_covers_every_case_once():
    ids = [f"case_{i:02d}" for i in range(12)]
    splits = kfold_splits(ids)
    assert [len(s["val"]) for s in splits] == [3, 3, 2, 2, 2]
    assert sorted(c for s in splits for c in s["val"]) == ids
    for s in splits:
        assert not set(s["train"]) & set(s["val"]) and len(s["train"]) + len(s["val"]) == 12
    assert kfold_splits(list(reversed(ids))) == splits       # sorted first: order of discovery does not matter


def test_splits_file_is_written_once_and_user_edits_are_respected(tmp_path):
    ids = ["a", "b", "c", "d", "e"]
    train, val = cases_for_fold(tmp_path, ids, 0)
    assert len(val) == 1 and (tmp_path / SPLITS_FILE).is_file()
    (tmp_path / SPLITS_FILE).write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]}]))
    assert cases_for_fold(tmp_path, ids, 0) == (["a", "b"], ["c"])
    with pytest.raises(SupremError, match="fold 3 does not exist"):
        cases_for_fold(tmp_path, ids, 3)
    assert cases_for_fold(tmp_path, ids, "all") == (ids, ids)
    (tmp_path / SPLITS_FILE).write_text(json.dumps([{"train": ["zz"], "val": ["c"]}]))
    with pytest.raises(SupremError, match="zz"):
        cases_for_fold(tmp_path, ids, 0)


def test_losses_reward_the_right_answer():
    labels = torch.zeros(2, 1, 8, 8, 8, dtype=torch.int16)
    labels[:, :, 2:6, 2:6, 2:6] = 2
    perfect = torch.nn.functional.one_hot(labels[:, 0].long(), 3).movedim(-1, 1).float() * 40
    assert DiceCELoss()(perfect, labels) < 0.01
    assert DiceCELoss()(torch.zeros(2, 3, 8, 8, 8), labels) > 0.9
    counts = dice_counts(perfect, labels, multilabel=False)
    assert counts[:, 1].tolist() == [2 * 64, 0, 0]                  # class 2: all TP
    assert np.isnan(pseudo_dice_per_class(counts)[0]) and pseudo_dice_per_class(counts)[1] == 1.0
    masks = (torch.rand(2, 2, 8, 8, 8) > 0.5).to(torch.uint8)
    assert DiceBCELoss()(masks.float() * 40 - 20, masks) < 0.01
    half = pseudo_dice_per_class(dice_counts(torch.full((2, 2, 8, 8, 8), 5.0), masks, multilabel=True))
    frac = float(masks.float().mean())
    assert half[0] == pytest.approx(2 * frac / (1 + frac), abs=0.05)


def test_warmup_cosine_and_poly_schedules():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    s = LRSchedule(opt, "warmup_cosine", 1e-4, total_steps=10, warmup_steps=4)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        s.step()
    assert lrs[:4] == pytest.approx([2e-5, 4e-5, 6e-5, 8e-5])
    assert lrs[4] == pytest.approx(1e-4) and lrs[-1] < 1e-5 and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    p = LRSchedule(opt, "poly", 1e-2, total_steps=100)
    p.load_state_dict({"last_step": 50})
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** 0.9)


def test_checkpoint_with_rng_state_loads_weights_only_and_restores_every_generator(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    write_checkpoint(tmp_path / "c.pth", {"rng_state": state, "epoch": 4})
    assert not list(tmp_path.glob(".tmp-*"))
    loaded = torch.load(tmp_path / "c.pth", weights_only=True)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(loaded["rng_state"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SupremError, match="bad.pth"):
        read_checkpoint(tmp_path / "bad.pth")


class _Cache:
    """Two synthetic cases: one smaller than the patch, one with a single labelled voxel far from the centre."""

    def __init__(self):
        self.cases = {"small": (np.ones((1, 10, 12, 6), np.float32), np.ones((1, 10, 12, 6), np.int16)),
                      "big": (np.zeros((1, 60, 60, 60), np.float32), np.zeros((1, 60, 60, 60), np.int16))}
        self.cases["big"][1][0, 55, 3, 50] = 1

    def load(self, case_id, mmap=True):
        d, s = self.cases[case_id]
        return d, s, None

    def class_locations(self, case_id):
        return {0: np.argwhere(self.cases[case_id][1][0] > 0)}


def test_sampler_pads_oversamples_and_is_a_pure_function_of_its_seed():
    s = PatchSampler(_Cache(), ["big"], [16, 16, 16], batch_size=3, seed=1, augmentation=None)
    for it in range(5):
        b = s.batch(0, it)
        assert b["data"].shape == (3, 1, 16, 16, 16) and b["target"].dtype == np.int16
        assert b["target"][2].sum() == 1          # the forced (last third) sample holds the single fg voxel
    small = PatchSampler(_Cache(), ["small"], [16, 16, 16], batch_size=1, seed=1, oversample_foreground=0)
    b = small.batch(0, 0)
    assert b["data"].sum() == 10 * 12 * 6      # the whole case, padded with zeros
    aug = PatchSampler(_Cache(), ["big", "small"], [16, 16, 16], batch_size=2, seed=5,
                       augmentation=resolve_config({}, {}, {}).augmentation)
    x, y = aug.batch(3, 7), aug.batch(3, 7)
    assert np.array_equal(x["data"], y["data"]) and np.array_equal(x["target"], y["target"])
    assert x["target"].min() >= 0                  # rotation borders (-1) are background again
    # two ranks split one global draw of cases
    ids = [f"c{i}" for i in range(40)]
    seen = {}

    class _Tagged(_Cache):   # every case's data is its own index, so a patch tells which case it came from
        def load(self, case_id, mmap=True):
            return np.full((1, 8, 8, 8), ids.index(case_id), np.float32), np.zeros((1, 8, 8, 8), np.int16), None

        def class_locations(self, case_id):
            return {}

    for rank in (0, 1):
        r = PatchSampler(_Tagged(), ids, [8, 8, 8], 4, seed=2, rank=rank, world_size=2, augmentation=None)
        seen[rank] = [int(v) for v in r.batch(0, 0, VAL)["data"][:, 0, 0, 0, 0]]
    whole = PatchSampler(_Tagged(), ids, [8, 8, 8], 8, seed=2, augmentation=None)
    assert seen[0] + seen[1] == [int(v) for v in whole.batch(0, 0, VAL)["data"][:, 0, 0, 0, 0]]


def test_config_layers_and_recipe_defaults():
    plan_training = {"optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-5, "warmup_epochs": 20,
                     "schedule": "warmup_cosine", "epochs": 200}
    cfg = resolve_config(plan_training, {"epochs": 50}, {"iterations_per_epoch": 10})
    assert (cfg.recipe, cfg.lr, cfg.epochs, cfg.iterations_per_epoch) == ("adamw_cosine", 3e-4, 50, 10)
    sgd = resolve_config(plan_training, {}, {"recipe": "sgd_poly"})
    assert (sgd.lr, sgd.weight_decay) == (1e-2, 3e-5)     # the plan's AdamW lr does not leak into SGD
    assert resolve_config(plan_training, {}, {"recipe": "sgd_poly", "lr": 0.1}).lr == 0.1
    with pytest.raises(SupremError, match="unknown augmentation setting"):
        resolve_config({}, {"augmentation": {"p_rotaton": 0.1}}, {})
    with pytest.raises(SupremError, match="exclude"):
        resolve_config({}, {}, {"pretrained": "unet", "from_scratch": True})
