"""The backbones, the SuPreM Universal-Model head, and a safe loader for SuPreM weights files.

All networks take (B, C_in, X, Y, Z) float tensors and return logits
(B, C_out, X, Y, Z); X, Y, Z must be divisible by ``NETWORK_DIVISIBILITY[name]``.
What the pipeline knows about each backbone is one entry of :data:`BACKBONES` (:mod:`.backbones`).

Names are imported on first use: :mod:`.backbones` needs neither torch nor MONAI, so the commands can read
their choice lists without loading either (seconds each).
"""

import importlib

# public name -> submodule that defines it
_EXPORTS = {
    "BACKBONES": ".backbones", "Backbone": ".backbones", "SuPreMRelease": ".backbones",
    "backbone_names": ".backbones", "released_backbones": ".backbones",
    "CheckpointError": ".weights_file", "ParsedCheckpoint": ".weights_file", "read_checkpoint": ".weights_file",
    "load_checkpoint_file": ".weights_file",
    "LoadReport": ".load_weights", "init_from_pretrained": ".load_weights", "is_universal_model": ".load_weights",
    "load_universal_model": ".load_weights",
    "DIRECT_INFERENCE_TARGETS": ".class_maps", "SUPREM_CLASS_MAPS": ".class_maps", "class_names_for": ".class_maps",
    "estimate_memory_bytes": ".memory", "measure_saved_activation_bytes": ".memory",
    "NETWORK_DIVISIBILITY": ".registry", "build_network": ".registry", "build_universal_model": ".registry",
    "uses_batch_statistics": ".registry",
    "BatchStatsBatchNorm3d": ".unet3d", "UNet3D": ".unet3d",
    "UniversalModel": ".universal",
    "PatchMergingV09": ".swinunetr", "SuPreMSwinUNETR": ".swinunetr",
    "SuPreMSegResNet": ".segresnet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
