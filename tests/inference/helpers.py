"""Small plans, networks and model folders for inference tests (tiny patches so tests stay fast)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from suprem_nn.planning.plans import Normalization, Plan


def tiny_plan(multilabel: bool = True, classes=("liver", "spleen"), network: str = "segresnet",
              patch=(32, 32, 32), spacing=(6.0, 6.0, 6.0), orientation="RAS", mirror_axes=(0, 1, 2)) -> Plan:
    classes = list(classes)
    return Plan(dataset_name="Dataset999_Tiny", plan_name=f"tiny_{network}", network=network, pretrained=None,
                channel_names=["CT"], class_names=classes, label_values=list(range(1, len(classes) + 1)),
                multilabel=multilabel, orientation=orientation, target_spacing=list(spacing),
                normalization=[Normalization("ct_window", -175.0, 250.0)], crop_threshold=-175.0,
                patch_size=list(patch), batch_size=1, divisibility=8, median_shape=list(patch),
                network_kwargs={"init_filters": 8} if network == "segresnet" else {},
                mirror_axes=list(mirror_axes))


class ThresholdNet(nn.Module):
    """Pointwise network: class c's logit is s_c * (x - t_c) (s_c = 40 by default). The prediction is a function of the voxel's
    intensity only, so it is exactly equivariant to flips and independent of window placement."""

    def __init__(self, thresholds=(0.5, 0.8), background=False, scales=None):
        super().__init__()
        self.register_buffer("t", torch.tensor(thresholds, dtype=torch.float32).view(1, -1, 1, 1, 1))
        scales = scales or [40.0] * len(thresholds)
        self.register_buffer("s", torch.tensor(scales, dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.background = background

    def forward(self, x):
        logits = self.s * (x[:, :1] - self.t)
        if self.background:  # softmax plans: background logit 0
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], 1)
        return logits


def make_model_folder(root: Path, plan: Plan, folds=(0,), seed: int = 0) -> Path:
    """A model folder (plans.json + fold_k/checkpoint_final.pth) with random tiny-network weights."""
    from suprem_nn.networks import build_network

    folder = Path(root) / plan.dataset_name / plan.plan_name
    folder.mkdir(parents=True, exist_ok=True)
    plan.save(folder / "plans.json")
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + i)
        net = build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": net.state_dict(), "network": plan.network, "num_inputs": plan.num_inputs,
                    "num_outputs": plan.num_outputs, "epoch": 1}, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
