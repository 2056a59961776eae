"""Which number format training runs in: the ``mixed_precision`` setting resolved against the device.

bfloat16 keeps float32's range, so it needs no loss scaling, but only GPUs of compute capability 8.0 (Ampere) and
newer run it natively; older ones (V100, T4) emulate it far slower than float16, whose narrow range in turn needs
a gradient scaler. So on CUDA ``auto`` and ``bf16`` give bfloat16 where the GPU has it and float16 with a
:class:`torch.amp.GradScaler` where it does not. On the CPU ``auto`` stays float32 (the reference numerics; the
CPU is a place to debug, not to train), ``bf16`` autocasts to bfloat16 as asked, and ``fp16`` falls back to
float32 (float16 autocast is a GPU format). The decision and its reason go into the training log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["TrainingPrecision", "choose_training_precision", "gpu_has_bf16"]


@dataclass(frozen=True)
class TrainingPrecision:
    autocast: Optional[torch.dtype]      # None: float32, no autocast
    grad_scaler: bool                    # float16 needs loss scaling
    reason: str                          # one line for the training log

    def describe(self) -> str:
        """One line for the training log, e.g. ``"bfloat16 autocast (<reason>)"``."""
        name = {torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast with a gradient scaler",
                None: "float32"}[self.autocast]
        return f"{name} ({self.reason})"


def gpu_has_bf16() -> bool:
    """Whether the current CUDA device runs bfloat16 natively (not by emulation, which is slower than float16)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 has no including_emulation and reports native support only
        return bool(torch.cuda.is_bf16_supported())


def choose_training_precision(mixed_precision: str, device: torch.device) -> TrainingPrecision:
    """The autocast format, loss scaling and the reason for them, for ``mixed_precision`` on ``device``.

    Parameters
    ----------
    mixed_precision : str
        ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"off"``.
    device : torch.device
        The training device.

    Returns
    -------
    TrainingPrecision
        CUDA: float16 with a gradient scaler for ``fp16`` or a GPU without native bfloat16, else bfloat16. CPU:
        bfloat16 only for ``bf16``. Otherwise (and always for ``off``) float32 without autocast.
    """
    asked = mixed_precision
    if asked == "off":
        return TrainingPrecision(None, False, "mixed_precision off")
    if device.type == "cuda":
        if asked == "fp16":
            return TrainingPrecision(torch.float16, True, "mixed_precision fp16")
        if gpu_has_bf16():
            return TrainingPrecision(torch.bfloat16, False, f"mixed_precision {asked}; the GPU has bfloat16")
        return TrainingPrecision(torch.float16, True, f"mixed_precision {asked}, but this GPU has no native "
                                                      "bfloat16 (compute capability below 8.0)")
    if device.type == "cpu" and asked == "bf16":
        return TrainingPrecision(torch.bfloat16, False, "mixed_precision bf16 on the CPU")
    if asked == "fp16":
        return TrainingPrecision(None, False, f"mixed_precision fp16 is for GPUs; {device.type} trains in float32 "
                                              "(bf16 is the CPU's mixed precision)")
    return TrainingPrecision(None, False, f"mixed_precision auto on {device.type}")
