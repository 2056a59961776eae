"""Test fixture: checkpoints in the exact layout of the SuPreM release, with random values.

The real ``supervised_suprem_*_2100.pth`` files cannot be downloaded in every
environment; tests and benchmarks use these stand-ins instead (the library itself never does, so this
lives under ``tests/``; benchmarks import it as ``tests.fabricated_weights``).  The
layout is the released one: ``{'net': state_dict}``, every key prefixed with
``module.`` (the files were saved from a DistributedDataParallel model), keys
in the model's state-dict order:

* ``unet``: Universal Model with U-Net backbone, 117 tensors;
* ``swinunetr``: Universal Model with Swin UNETR backbone, 170 tensors;
* ``segresnet``: plain SegResNet with a ``num_classes`` head, 83 tensors.

Values are random but well formed (positive running variances, unit-scale
norm weights) so that fabricated models run.  Tensors that a fresh model
initialises to constants (norm weights and biases, running statistics) are
randomised too, so that a test can tell a loaded tensor from a default one.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from suprem_nn.networks import BACKBONES, build_network, build_universal_model, released_backbones

__all__ = ["make_fake_released_checkpoint", "fake_released_state_dict"]


def _randomise(name: str, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if not t.is_floating_point():
        # relative_position_index is a fixed function of the window size; counters are arbitrary.
        return torch.full_like(t, 1000) if name.endswith("num_batches_tracked") else t.clone()
    noise = torch.randn(t.shape, generator=gen, dtype=t.dtype)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype)
    if name.endswith("running_mean"):
        return 0.1 * noise
    if name == "organ_embedding":
        # CLIP text embeddings are unit-norm 512-d vectors.
        return noise / noise.norm(dim=1, keepdim=True)
    if bool((t == t.flatten()[0]).all()):
        # Constant at initialisation (norm gains/shifts, zero biases): perturb around it.
        return t + 0.1 * noise
    return t.clone()


def fake_released_state_dict(family: str, num_classes: int = 32, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """The ``net`` state dict of a released file (with ``module.`` prefixes) filled with random values."""
    torch.manual_seed(seed)  # the model's own initialisation draws from the global generator
    gen = torch.Generator().manual_seed(seed + 1)
    if family not in released_backbones():
        raise ValueError(f"no released SuPreM file for {family!r}; choose one of {', '.join(released_backbones())}")
    if BACKBONES[family].release.universal:
        model = build_universal_model(family, num_classes)
    else:
        model = build_network(family, 1, num_classes)
    with torch.no_grad():
        return OrderedDict((f"module.{k}", _randomise(k, v, gen)) for k, v in model.state_dict().items())


def make_fake_released_checkpoint(family: str, path, num_classes: int = 32, seed: int = 0) -> Path:
    """Write a checkpoint in the exact released layout of ``family`` to ``path`` and return the path.

    Key names, order, count (117 / 170 / 83) and shapes are those of the
    released file; C = ``num_classes`` sets the ``organ_embedding`` rows
    (U-Net, Swin UNETR) or the head width (SegResNet).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net": fake_released_state_dict(family, num_classes, seed)}, path)
    return path
