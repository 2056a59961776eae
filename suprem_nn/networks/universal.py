"""The CLIP-driven "Universal Model" head stored in the released U-Net and Swin UNETR files.

Each class c has a text embedding e_c (row c of the ``organ_embedding``
buffer, 512-d CLIP features).  For every image the network predicts, per
class, the parameters of a tiny 3-layer 1x1x1 conv head (8 -> 8 -> 8 -> 1) from
[global image feature, projected e_c], and applies it to an 8-channel
full-resolution feature map.  Channel c of the output is therefore an
independent binary logit for class c: apply ``sigmoid`` per channel, never
softmax across channels.

Tensor axis order: (B, C, X, Y, Z).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet3d import UNet3D

__all__ = ["UniversalModel", "HEAD_WEIGHT_SIZES", "HEAD_BIAS_SIZES", "UNIVERSAL_HEAD_PREFIXES"]

TEXT_DIM = 512
COND_DIM = 256
HEAD_CHANNELS = 8
# Dynamic head: weights of conv 8->8, 8->8, 8->1, then their biases (153 numbers per class).
HEAD_WEIGHT_SIZES = (HEAD_CHANNELS * HEAD_CHANNELS, HEAD_CHANNELS * HEAD_CHANNELS, HEAD_CHANNELS)
HEAD_BIAS_SIZES = (HEAD_CHANNELS, HEAD_CHANNELS, 1)
# Voxels per block of the dynamic heads (see UniversalModel._apply_heads): 8192 voxels of 8C = 256 hidden float32
# channels are 8 MB. Measured per 96^3 window on 2 CPU cores (f32 / bf16): 4096 voxels 0.21 / 0.17 s, 8192 0.26 /
# 0.16 s, 32768 1.23 / 0.37 s; smaller blocks also make a larger graph for OpenVINO to convert (108 blocks here).
HEAD_VOXEL_BLOCK = 8192
HEAD_VOXEL_BLOCK_TRACED = 32768  # when traced for OpenVINO (see _apply_heads)
UNIVERSAL_HEAD_PREFIXES = ("organ_embedding", "precls_conv.", "GAP.", "controller.", "text_to_vision.")


class UniversalModel(nn.Module):
    """Backbone + text-conditioned dynamic heads.

    Args:
        backbone: ``"unet"`` or ``"swinunetr"``.
        num_classes: C, the number of rows of ``organ_embedding`` (32 in the released files).
        in_channels: image channels of the (B, in_channels, X, Y, Z) input.
        batch_stats_in_eval: passed to the U-Net backbone (ignored for Swin).

    ``forward`` returns logits (B, C, X, Y, Z) with sigmoid semantics.
    """

    def __init__(self, backbone: str, num_classes: int, in_channels: int = 1, batch_stats_in_eval: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone_name = backbone
        self.num_classes = int(num_classes)
        # Registered first so it is the first state-dict key, as in the released files.
        self.register_buffer("organ_embedding", torch.randn(self.num_classes, TEXT_DIM))
        if backbone == "unet":
            self.backbone = UNet3D(in_channels, out_channels=None, batch_stats_in_eval=batch_stats_in_eval)
            bottleneck, decoder = UNet3D.bottleneck_channels, UNet3D.decoder_channels
        elif backbone == "swinunetr":
            from .swinunetr import SuPreMSwinUNETR  # imports MONAI; only Swin models need it
            self.backbone = SuPreMSwinUNETR(in_channels, out_channels=None)
            bottleneck, decoder = 16 * self.backbone.feature_size, self.backbone.feature_size
        else:
            raise ValueError(f"Universal Model backbone must be 'unet' or 'swinunetr', got {backbone!r}")
        self.precls_conv = nn.Sequential(
            nn.GroupNorm(16, decoder), nn.ReLU(inplace=True), nn.Conv3d(decoder, HEAD_CHANNELS, kernel_size=1)
        )
        self.GAP = nn.Sequential(
            nn.GroupNorm(16, bottleneck), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1),
            nn.Conv3d(bottleneck, COND_DIM, kernel_size=1),
        )
        self.controller = nn.Conv3d(2 * COND_DIM, sum(HEAD_WEIGHT_SIZES) + sum(HEAD_BIAS_SIZES), kernel_size=1)
        self.text_to_vision = nn.Linear(TEXT_DIM, COND_DIM)

    @property
    def in_channels(self) -> int:
        """Image channels the backbone expects."""
        return self.backbone.in_channels

    def head_parameters(self, x_feat: torch.Tensor) -> torch.Tensor:
        """Per-class dynamic-head parameters for one image: (C, 153) from a (256,) global feature.

        Parameters
        ----------
        x_feat : torch.Tensor
            float (256,) pooled bottleneck feature of one image (``GAP`` output).

        Returns
        -------
        torch.Tensor
            float (C, 153): for each class, the three 1x1x1 head convolutions' weights (64, 64, 8) then biases
            (8, 8, 1), conditioned on the feature and the class's text embedding.
        """
        task = F.relu(self.text_to_vision(self.organ_embedding))  # (C, 256)
        cond = torch.cat([x_feat.unsqueeze(0).expand(self.num_classes, -1), task], dim=1)  # (C, 512)
        return self.controller(cond[:, :, None, None, None]).flatten(1)

    def _apply_heads(self, feat8: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Run the C dynamic heads on one (8, X, Y, Z) feature map -> (C, X, Y, Z) logits.

        The heads are 1x1x1 convolutions, i.e. per-voxel matrix products: the first layer of all C heads is one
        (8C x 8) GEMM on the shared features, the second and third are C batched (8 x 8) and (1 x 8) products.
        They run on blocks of ``HEAD_VOXEL_BLOCK`` voxels: the hidden (8C, voxels) activations of a whole
        96^3 window are 0.9 GB in float32 (what repeating the features C times for a grouped convolution cost),
        while a block's stay in the CPU caches, which made the heads about 10x faster than that grouped
        convolution on 2 CPU cores (2.54 -> 0.26 s float32, 1.95 -> 0.16 s bfloat16 per 96^3 window).
        """
        c = self.num_classes
        splits = torch.split(params, HEAD_WEIGHT_SIZES + HEAD_BIAS_SIZES, dim=1)
        (w1, w2, w3), (b1, b2, b3) = splits[:3], splits[3:]
        w1 = w1.reshape(c * HEAD_CHANNELS, HEAD_CHANNELS)          # class-major rows: (8C, 8)
        b1 = b1.reshape(c * HEAD_CHANNELS, 1)
        w2 = w2.reshape(c, HEAD_CHANNELS, HEAD_CHANNELS)            # (C, 8 out, 8 in)
        b2 = b2.reshape(c, HEAD_CHANNELS, 1)
        w3 = w3.reshape(c, 1, HEAD_CHANNELS)                        # (C, 1, 8)
        b3 = b3.reshape(c, 1, 1)
        spatial = feat8.shape[1:]
        voxels = feat8.reshape(HEAD_CHANNELS, -1)                   # (8, N); a copy if channels_last
        # Traced for OpenVINO, every block is unrolled into the graph: 108 blocks of 8192 voxels made the first
        # (converting) run of the SuPreM U-Net recipe peak at 6.0 GB, one block at 3.5 GB, 27 blocks at 2.7 GB.
        block = HEAD_VOXEL_BLOCK_TRACED if torch.jit.is_tracing() else HEAD_VOXEL_BLOCK
        blocks = []
        for start in range(0, voxels.shape[1], block):
            v = voxels[:, start:start + block]
            h = F.relu(torch.addmm(b1, w1, v)).reshape(c, HEAD_CHANNELS, -1)   # (C, 8, n)
            h = F.relu(torch.baddbmm(b2, w2, h))                               # (C, 8, n)
            blocks.append(torch.baddbmm(b3, w3, h)[:, 0])                      # (C, n)
        return torch.cat(blocks, dim=1).reshape(c, *spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class logits of a (B, in_channels, X, Y, Z) float image batch.

        Each image's global bottleneck feature and the class embeddings give C dynamic heads, run on that image's
        decoder features. Returns float (B, C, X, Y, Z) raw logits, C = ``num_classes``; each channel is an
        independent binary logit (sigmoid per channel, never softmax across channels). Input size rules are the
        backbone's
        ``forward_features``.
        """
        bottleneck, decoder = self.backbone.forward_features(x)
        x_feat = self.GAP(bottleneck).flatten(1)  # (B, 256)
        feats = self.precls_conv(decoder)  # (B, 8, X, Y, Z)
        # One image at a time: each image conditions its own set of C heads,
        # and this bounds the (8C, X, Y, Z) intermediate to a single image.
        return torch.stack([self._apply_heads(feats[i], self.head_parameters(x_feat[i])) for i in range(x.shape[0])])
