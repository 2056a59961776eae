"""Building networks by backbone name (the facts about each backbone: :mod:`.backbones`)."""

from __future__ import annotations

import importlib

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import backbones
from .backbones import BACKBONES, OPENVINO_CONVERSIONS
from .unet3d import BatchStatsBatchNorm3d

__all__ = [
    "NETWORK_DIVISIBILITY",
    "build_network",
    "build_universal_model",
    "openvino_conversion",
    "uses_batch_statistics",
]

NETWORK_DIVISIBILITY: dict[str, int] = {name: b.divisibility for name, b in BACKBONES.items()}


def build_network(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Build backbone ``name`` with a fresh task head.

    Args:
        name: a key of :data:`~.backbones.BACKBONES`, e.g. "unet".
        in_channels: image channels of the (B, in_channels, X, Y, Z) float input.
        out_channels: logit channels of the (B, out_channels, X, Y, Z) output.
        kwargs: the plan's ``network_kwargs``, passed to the backbone's class (its docstring lists them).
            Non-default sizes no longer match released SuPreM weights.

    The class is imported here, so MONAI (seconds to import) loads only when a MONAI-based network is built.
    """
    spec = backbones.backbone(name)
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    module, cls = spec.constructor.split(":")
    network_class = getattr(importlib.import_module(f".{module}", __package__), cls)
    return network_class(in_channels, out_channels, **kwargs)


def build_universal_model(backbone: str, num_classes: int, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build the released Universal Model (U-Net or Swin UNETR backbone, C sigmoid outputs).

    forward((B, in_channels, X, Y, Z)) -> logits (B, num_classes, X, Y, Z).
    """
    universal = [n for n, b in BACKBONES.items() if b.release is not None and b.release.universal]
    if backbone not in universal:
        raise ValueError(f"the Universal Model exists only for {' and '.join(map(repr, universal))}, "
                         f"got {backbone!r}")
    from .universal import UniversalModel
    return UniversalModel(backbone, num_classes, in_channels=in_channels, **kwargs)


def uses_batch_statistics(model: nn.Module) -> bool:
    """True if some normalisation layer uses the current batch's statistics in eval mode.

    Such a model's output for one window depends on the other windows in the
    batch, so a predictor must run it one window per forward call to be
    reproducible.
    """
    for m in model.modules():
        if isinstance(m, BatchStatsBatchNorm3d) and m.batch_stats_in_eval:
            return True
        if isinstance(m, _BatchNorm) and not m.track_running_stats:
            return True
    return False


def openvino_conversion(model: nn.Module) -> str:
    """How the OpenVINO engine converts ``model``: ``"any size"``, ``"window"`` or ``"trace"``
    (:attr:`~.backbones.Backbone.openvino_conversion`; U-Net, SegResNet and MedNeXt "any size", Swin UNETR "window").

    A model holding several of this package's backbones takes the heaviest of theirs. Networks from elsewhere
    (nnU-Net's) are traced: their windows are small, so a float32 pass over one costs little, and converted at the
    fixed window their labels stayed closer to nnUNetv2_predict's (99.998 % against 99.993-99.997 % on the three
    real CTs) with a 3.4 s conversion instead of 8.7 s.
    """
    found = []
    for m in model.modules():
        kind = type(m)
        for spec in BACKBONES.values():
            module, cls = spec.constructor.split(":")
            if kind.__name__ == cls and kind.__module__ == f"{__package__}.{module}":
                found.append(OPENVINO_CONVERSIONS.index(spec.openvino_conversion))
    return OPENVINO_CONVERSIONS[max(found)] if found else "trace"
