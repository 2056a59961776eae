"""Rough training-memory estimate per network, for choosing the batch size.

estimate = activations + parameter state, where

* activations = batch_size * voxels(patch_size) * activation_values_per_voxel * dtype_bytes;
  the factor (an entry of :data:`~.backbones.BACKBONES`) is the number of values
  autograd keeps for the backward pass per input voxel and per sample, measured
  with :func:`measure_saved_activation_bytes` on the CPU at a 96^3 patch (see
  ``documentation/pretrained_weights.md``);
* parameter state = 4 fp32 copies of the backbone's ``parameter_count`` weights
  (weights, gradients and the two AdamW moments).

It leaves out allocator fragmentation, cuDNN workspaces and the CUDA context,
so a planner should keep a safety margin (e.g. use 80% of the device memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .backbones import backbone

__all__ = ["estimate_memory_bytes", "measure_saved_activation_bytes"]


def estimate_memory_bytes(name: str, patch_size: Sequence[int], batch_size: int, dtype_bytes: int = 4) -> int:
    """Estimated bytes to train one batch of ``batch_size`` patches of ``patch_size`` (X, Y, Z voxels).

    ``dtype_bytes`` is the activation element size (4 for fp32, 2 for bf16/fp16
    autocast); parameters and optimiser state are always counted in fp32.
    """
    spec = backbone(name)
    if batch_size < 1 or len(patch_size) != 3 or min(patch_size) < 1:
        raise ValueError(f"need batch_size >= 1 and a 3D patch size, got {batch_size}, {tuple(patch_size)}")
    voxels = math.prod(int(s) for s in patch_size)
    activations = batch_size * voxels * spec.activation_values_per_voxel * dtype_bytes
    return int(activations + 4 * 4 * spec.parameter_count)


def measure_saved_activation_bytes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Bytes of the distinct tensors autograd saves during one training forward pass.

    ``input_shape`` is (B, C, X, Y, Z).  Tensors that share storage (views,
    in-place results) are counted once; parameters (which convolutions also
    save for backward) are excluded because the estimate counts them separately.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    model.train()
    x = torch.randn(*input_shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(storages.values())
