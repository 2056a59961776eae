"""A model folder (plans.json + fold_0/checkpoint_final.pth) with random weights: the real network cost,
no training needed. Prediction benchmarks time the predictor, not what the weights have learned."""
from __future__ import annotations

from pathlib import Path


def write_model_folder(folder: Path, plan, seed: int = 0) -> Path:
    import torch

    from suprem_nn.networks import build_network

    (folder / "fold_0").mkdir(parents=True)
    plan.save(folder / "plans.json")
    torch.manual_seed(seed)
    net = build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs)
    torch.save({"network_weights": net.state_dict(), "network": plan.network, "num_inputs": plan.num_inputs,
                "num_outputs": plan.num_outputs, "epoch": 0}, folder / "fold_0" / "checkpoint_final.pth")
    return folder
