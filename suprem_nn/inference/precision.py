"""Which number format and memory layout the network runs in, per device and network.

Measured (documentation/prediction.md): bfloat16 autocast changes 0.01 % of the voxels of a trained SegResNet's
labels against float32 and no Dice by more than 0.001, and makes the network pass 2.4x faster on a CPU with
native bfloat16 instructions (AVX512-BF16 / AMX). Without them the CPU emulates bfloat16 and gains nothing, so
the default there stays float32. channels_last_3d speeds up the convolution-only networks where measured (SuPreM
U-Net: 1.7x on the CPU, 1.2x on an H100; SegResNet: 1.25x on the CPU with bf16) and slows down the others
(Swin UNETR, nnU-Net's PlainConvUNet, SegResNet on an H100), so it is chosen per network
(``channels_last`` of its entry in suprem_nn/networks/backbones.py).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..networks.backbones import BACKBONES

__all__ = ["cpu_has_native_bf16", "choose_precision"]


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (x86 AVX512-BF16 or AMX-BF16, Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def choose_precision(device: torch.device, network: Optional[str], bf16: bool = False, fp32: bool = False,
                     channels_last: Optional[bool] = None) -> tuple[Optional[torch.dtype], bool]:
    """``(autocast dtype or None for float32, channels_last)`` for a network name on ``device``.

    ``bf16`` / ``fp32`` force the format; otherwise bfloat16 on CUDA and on CPUs with native bfloat16.
    ``channels_last`` None picks the measured faster layout for ``network`` (a name from the network
    registry; anything else, e.g. an nnU-Net architecture, keeps the default layout).
    """
    if bf16 and fp32:
        raise ValueError("bf16 and fp32 exclude each other")
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    autocast = torch.bfloat16 if bf16 or (native and not fp32) else None
    if channels_last is None:
        spec = BACKBONES.get(network)
        channels_last = spec is not None and device.type in spec.channels_last
    return autocast, bool(channels_last)
