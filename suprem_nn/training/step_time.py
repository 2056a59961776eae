"""``time_training_step``: seconds of one training step of a network, as the trainer takes it.

For sizing a run to a time budget before starting it (the demo trains as many epochs as fit its minutes).
"""
from __future__ import annotations

import time
from typing import Sequence

__all__ = ["time_training_step"]


def time_training_step(network: str, num_inputs: int, num_outputs: int, patch_size: Sequence[int],
                       batch_size: int, device: str = "cpu", repeats: int = 5, **network_kwargs) -> float:
    """Seconds of one forward + backward + AdamW step of ``network`` on random patches.

    Parameters
    ----------
    network : str
        Registry name (``"unet"``, ``"segresnet"``, ``"swinunetr"``, ...).
    num_inputs, num_outputs : int
        Input channels and output channels (softmax plans: classes + background).
    patch_size : sequence of 3 ints
        Patch in voxels, network axes ``x, y, z``.
    batch_size : int
        Patches per step.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    repeats : int
        Steps timed after one untimed warm-up step (memory allocation, kernel selection).
    **network_kwargs
        Passed to the network's constructor.

    Returns
    -------
    float
        The fastest of the timed steps, in seconds: a brief burst of other work on a small machine otherwise
        inflates a mean (once 8x on 2 cores). Data loading, augmentation and validation come on top.
    """
    import torch

    from ..networks import build_network
    from .losses import make_loss
    from .schedule import make_optimizer

    dev = torch.device(device)
    net = build_network(network, num_inputs, num_outputs, **network_kwargs).to(dev)
    opt = make_optimizer("adamw", net.parameters(), 1e-4, 3e-5)
    loss_fn = make_loss(multilabel=False)
    x = torch.randn(batch_size, num_inputs, *patch_size, device=dev)
    target = torch.randint(0, num_outputs, (batch_size, 1, *patch_size), device=dev)
    times = []
    for _ in range(int(repeats) + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), target).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    return min(times[1:])
