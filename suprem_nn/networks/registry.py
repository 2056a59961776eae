"""Name -> network registry and per-family facts used by the loader and the planner."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .constants import SEGRESNET_DIVISIBILITY, SEGRESNET_INPUT_CONV_KEYS, SWIN_DIVISIBILITY, SWIN_INPUT_CONV_KEYS
from .unet3d import UNET_DIVISIBILITY, UNET_INPUT_CONV_KEYS, BatchStatsBatchNorm3d, UNet3D

# SegResNet and Swin UNETR build on MONAI, whose import loads all of MONAI (seconds); they are
# imported when first built, so planning and the U-Net never pay for it.

__all__ = [
    "NetworkSpec",
    "NETWORK_SPECS",
    "NETWORK_DIVISIBILITY",
    "build_network",
    "build_universal_model",
    "uses_batch_statistics",
]


@dataclass(frozen=True)
class NetworkSpec:
    """Facts about one SuPreM backbone family.

    ``backbone_keys``: state-dict tensors of the network without its task head
    (what a released file must provide for fine-tuning).  ``head_prefixes``:
    key prefixes of the task-specific output layer, replaced when fine-tuning.
    ``input_conv_keys``: tensors whose axis 1 is the image channel count.
    """

    name: str
    display: str
    divisibility: int
    backbone_keys: int
    head_prefixes: tuple[str, ...]
    input_conv_keys: tuple[str, ...]
    universal: bool


NETWORK_SPECS: dict[str, NetworkSpec] = {
    "unet": NetworkSpec("unet", "U-Net (Models Genesis UNet3D)", UNET_DIVISIBILITY, 104, ("out_tr.",),
                        UNET_INPUT_CONV_KEYS, True),
    "segresnet": NetworkSpec("segresnet", "SegResNet (MONAI)", SEGRESNET_DIVISIBILITY, 81,
                             ("conv_final.2.",),
                             SEGRESNET_INPUT_CONV_KEYS, False),
    "swinunetr": NetworkSpec("swinunetr", "Swin UNETR (MONAI 0.9 layout)", SWIN_DIVISIBILITY, 157, ("out.",),
                             SWIN_INPUT_CONV_KEYS, True),
}

NETWORK_DIVISIBILITY: dict[str, int] = {name: spec.divisibility for name, spec in NETWORK_SPECS.items()}


def _spec(name: str) -> NetworkSpec:
    try:
        return NETWORK_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORK_SPECS)}") from None


def build_network(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Build a SuPreM backbone with a fresh task head.

    Args:
        name: ``"unet"``, ``"segresnet"`` or ``"swinunetr"``.
        in_channels: image channels of the (B, in_channels, X, Y, Z) float input.
        out_channels: logit channels of the (B, out_channels, X, Y, Z) output.
        kwargs: family options.  unet: ``batch_stats_in_eval`` (default True).
            swinunetr: ``use_checkpoint``, ``feature_size``, ``depths``, ``num_heads``.
            segresnet: ``init_filters``, ``blocks_down``, ``blocks_up``.  Non-default
            sizes no longer match the SuPreM weights.
    """
    _spec(name)
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    if name == "unet":
        return UNet3D(in_channels, out_channels, **kwargs)
    if name == "segresnet":
        from .segresnet import SuPreMSegResNet
        return SuPreMSegResNet(in_channels, out_channels, **kwargs)
    from .swinunetr import SuPreMSwinUNETR
    return SuPreMSwinUNETR(in_channels, out_channels, **kwargs)


def build_universal_model(backbone: str, num_classes: int, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build the released Universal Model (U-Net or Swin UNETR backbone, C sigmoid outputs).

    forward((B, in_channels, X, Y, Z)) -> logits (B, num_classes, X, Y, Z).
    """
    if backbone not in ("unet", "swinunetr"):
        raise ValueError(f"the Universal Model exists only for 'unet' and 'swinunetr', got {backbone!r}")
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
