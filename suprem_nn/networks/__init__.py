"""SuPreM backbones (U-Net, SegResNet, Swin UNETR), the Universal-Model head and a safe checkpoint loader.

All networks take (B, C_in, X, Y, Z) float tensors and return logits
(B, C_out, X, Y, Z); X, Y, Z must be divisible by ``NETWORK_DIVISIBILITY[name]``.
"""

from .load_weights import (
    CheckpointError,
    LoadReport,
    ParsedCheckpoint,
    init_from_pretrained,
    is_universal_model,
    load_checkpoint_file,
    load_universal_model,
    read_checkpoint,
)
from .class_maps import DIRECT_INFERENCE_TARGETS, SUPREM_CLASS_MAPS, class_names_for
from .memory import estimate_memory_bytes, measure_saved_activation_bytes
from .registry import (
    NETWORK_DIVISIBILITY,
    NETWORK_SPECS,
    build_network,
    build_universal_model,
    uses_batch_statistics,
)
from .unet3d import BatchStatsBatchNorm3d, UNet3D
from .universal import UniversalModel

# Classes built on MONAI are loaded on first use: importing MONAI takes seconds and loads all of it.
_LAZY = {"PatchMergingV09": ".swinunetr", "SuPreMSwinUNETR": ".swinunetr", "SuPreMSegResNet": ".segresnet"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BatchStatsBatchNorm3d",
    "CheckpointError",
    "DIRECT_INFERENCE_TARGETS",
    "LoadReport",
    "NETWORK_DIVISIBILITY",
    "NETWORK_SPECS",
    "ParsedCheckpoint",
    "PatchMergingV09",
    "SUPREM_CLASS_MAPS",
    "SuPreMSegResNet",
    "SuPreMSwinUNETR",
    "UNet3D",
    "UniversalModel",
    "build_network",
    "build_universal_model",
    "class_names_for",
    "estimate_memory_bytes",
    "init_from_pretrained",
    "is_universal_model",
    "load_checkpoint_file",
    "load_universal_model",
    "measure_saved_activation_bytes",
    "read_checkpoint",
    "uses_batch_statistics",
]
