"""SuPreM's Swin UNETR: MONAI's ``SwinUNETR`` with the MONAI 0.9 patch merging.

SuPreM trained MONAI 0.9.0's ``SwinUNETR`` (feature_size 48, depths 2,2,2,2,
heads 3,6,12,24, instance norm, window 7, patch 2).  MONAI >= 1.5 changed the
order in which ``PatchMerging`` gathers the eight 2x2x2 neighbours; parameter
names and shapes are unchanged, so released weights load silently but give
different outputs.  :class:`PatchMergingV09` restores the release's gather
order and is passed to MONAI as ``downsample=``.

Tensor axis order: (B, C, X, Y, Z) for the network; inside the Swin stages
MONAI uses channels-last (B, X, Y, Z, C).  Spatial sizes must be divisible by 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMergingV2, SwinUNETR
from torch import nn

from ._monai_compat import ensure_swin_rearrange

ensure_swin_rearrange()

__all__ = [
    "PatchMergingV09",
    "SuPreMSwinUNETR",
    "V09_MERGE_OFFSETS",
]

# (x, y, z) start offsets of the eight strided slices, in concatenation order,
# as in MONAI <= 1.4.  Two offsets repeat and (1, 1, 0), (0, 1, 1) are never
# gathered; this is a known quirk (MONAI issue #4757) that the weights depend on.
V09_MERGE_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class PatchMergingV09(PatchMergingV2):
    """Patch merging with the MONAI 0.9 slice order.

    Input (B, X, Y, Z, C) channels-last; output (B, ceil(X/2), ceil(Y/2), ceil(Z/2), 2C).
    Parameters (``reduction``, ``norm``) are those of MONAI's ``PatchMergingV2``,
    so state-dict keys are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Merge 2x2x2 neighbourhoods of a channels-last (B, X, Y, Z, C) float tensor.

        Odd X, Y or Z are zero-padded at the end first. Returns (B, ceil(X/2), ceil(Y/2), ceil(Z/2), 2C): the eight
        strided slices of :data:`V09_MERGE_OFFSETS` concatenated on C, normalised and reduced from 8C to 2C. A
        non-5-D input goes to MONAI's ``PatchMergingV2`` unchanged.
        """
        if x.dim() != 5:
            # 2D inputs never occur in SuPreM; the MONAI 2D order was never changed.
            return super().forward(x)
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        parts = [x[:, i::2, j::2, k::2, :] for i, j, k in V09_MERGE_OFFSETS]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class SuPreMSwinUNETR(SwinUNETR):
    """Swin UNETR in the SuPreM configuration.

    Args:
        in_channels: image channels of the (B, in_channels, X, Y, Z) input.
        out_channels: logit channels; ``None`` removes MONAI's ``out`` block
            (the bare backbone used inside the Universal Model, 157 state-dict keys).
        feature_size, depths, num_heads: SuPreM values by default.
        use_checkpoint: gradient checkpointing inside the Swin stages (saves memory).
        downsample: patch-merging module class; defaults to :class:`PatchMergingV09`.

    ``forward`` returns logits (B, out_channels, X, Y, Z); ``forward_features``
    returns (bottleneck ``encoder10`` output (B, 16*feature_size, X/32, Y/32, Z/32),
    ``decoder1`` output (B, feature_size, X, Y, Z)).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = 1,
        feature_size: int = 48,
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        use_checkpoint: bool = False,
        downsample: type[nn.Module] = PatchMergingV09,
    ) -> None:
        super().__init__(
            in_channels=int(in_channels),
            out_channels=1 if out_channels is None else int(out_channels),
            feature_size=feature_size,
            depths=depths,
            num_heads=num_heads,
            norm_name="instance",
            drop_rate=0.0,
            attn_drop_rate=0.0,
            dropout_path_rate=0.0,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
            downsample=downsample,
        )
        self.in_channels = int(in_channels)
        self.out_channels = None if out_channels is None else int(out_channels)
        self.feature_size = feature_size
        if out_channels is None:
            # The Universal Model's backbone has no ``out`` block; removing it keeps
            # the key set identical to the released files.
            del self.out
            self.out = None

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bottleneck and decoder features of a (B, in_channels, X, Y, Z) float image batch.

        Returns
        -------
        bottleneck : torch.Tensor
            ``encoder10`` output, (B, 16 * feature_size, X/32, Y/32, Z/32).
        decoder : torch.Tensor
            ``decoder1`` output, (B, feature_size, X, Y, Z).

        Raises
        ------
        ValueError
            If the input is not 5-D with ``in_channels`` channels, or (MONAI's size check) X, Y or Z is not divisible
            by 32.
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"SwinUNETR expects (B, {self.in_channels}, X, Y, Z) input, got {tuple(x.shape)}")
        self._check_input_size(x.shape[2:])
        hidden = self.swinViT(x, self.normalize)
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(hidden[0])
        enc2 = self.encoder3(hidden[1])
        enc3 = self.encoder4(hidden[2])
        dec4 = self.encoder10(hidden[4])
        dec3 = self.decoder5(dec4, hidden[3])
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return dec4, self.decoder1(dec0, enc0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a (B, in_channels, X, Y, Z) float image batch: float (B, out_channels, X, Y, Z), no activation.

        Raises
        ------
        RuntimeError
            If the network was built without a head (``out_channels=None``).
        ValueError
            As :meth:`forward_features`.
        """
        if self.out is None:
            raise RuntimeError("this SwinUNETR was built without a head (out_channels=None); use forward_features")
        return self.out(self.forward_features(x)[1])
