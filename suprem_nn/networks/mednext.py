"""MedNeXt (Roy et al., MICCAI 2023): MONAI's ``MedNeXt`` configured for CT, trained from scratch.

No SuPreM weights exist for MedNeXt, so it is only offered ``--from-scratch``.  The default configuration is
MedNeXt-B with 3x3x3 kernels, the paper's from-scratch setting:

* B (expansion ratios 2,3,4,4 / bottleneck 4 / 4,4,3,2, two blocks per stage, 32 base filters, about 10 M
  parameters) is the paper's second of four sizes: wider than S where CT organs need it, while M and L
  (more blocks per stage, L also wider) multiply the compute and memory of every window of a CT patch of
  96^3 or more.  Any size is one ``network_kwargs`` entry of a plan away (the arguments below).
* kernel 3: the paper trains 5x5x5 kernels only by up-sampling trained 3x3x3 kernels (UpKern); from random
  weights 3x3x3 is the setting it recommends.
* residual connections on and one GroupNorm group per channel, as in all of the paper's variants
  (MONAI's ``MedNeXt`` class defaults to no residual connections; its ``create_mednext`` turns them on).
* deep supervision off: the trainer computes one loss on one full-resolution output.

Tensor axis order: (B, C, X, Y, Z); spatial sizes divisible by 2 ** len(blocks_down) (16 by default: four
stride-2 down-sampling blocks).  MedNeXt is in MONAI since 1.5.0 (unchanged up to 1.6.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import MedNeXt

__all__ = ["MedNeXtCT"]


class MedNeXtCT(MedNeXt):
    """MONAI MedNeXt-B with 3x3x3 kernels (see the module docstring for why), with a clear input check.

    Args:
        in_channels: image channels of the (B, in_channels, X, Y, Z) input.
        out_channels: logit channels of the (B, out_channels, X, Y, Z) output.
        init_filters: channels of the first stage (doubled at every down-sampling).
        kernel_size: edge of the depth-wise convolution kernels (voxels).
        encoder_expansion_ratio, decoder_expansion_ratio, bottleneck_expansion_ratio: width of each block's
            inner 1x1x1 layer as a multiple of its channels, per stage.
        blocks_down, blocks_bottleneck, blocks_up: MedNeXt blocks per encoder stage, in the bottleneck and per
            decoder stage (``blocks_up`` from the deepest stage up; as many stages as ``blocks_down``).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, init_filters: int = 32, kernel_size: int = 3,
                 encoder_expansion_ratio: Sequence[int] = (2, 3, 4, 4),
                 decoder_expansion_ratio: Sequence[int] = (4, 4, 3, 2), bottleneck_expansion_ratio: int = 4,
                 blocks_down: Sequence[int] = (2, 2, 2, 2), blocks_bottleneck: int = 2,
                 blocks_up: Sequence[int] = (2, 2, 2, 2)) -> None:
        if len(blocks_up) != len(blocks_down):
            raise ValueError(f"MedNeXt needs as many decoder as encoder stages, got blocks_down {list(blocks_down)} "
                             f"and blocks_up {list(blocks_up)}")
        super().__init__(
            spatial_dims=3,
            init_filters=init_filters,
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            encoder_expansion_ratio=list(encoder_expansion_ratio),
            decoder_expansion_ratio=list(decoder_expansion_ratio),
            bottleneck_expansion_ratio=bottleneck_expansion_ratio,
            kernel_size=kernel_size,
            deep_supervision=False,
            use_residual_connection=True,
            blocks_down=tuple(blocks_down),
            blocks_bottleneck=blocks_bottleneck,
            blocks_up=tuple(blocks_up),
            norm_type="group",
            global_resp_norm=False,
        )
        self.in_channels = int(in_channels)
        self.divisibility = 2 ** len(blocks_down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a (B, in_channels, X, Y, Z) float image batch.

        Returns a float tensor (B, out_channels, X, Y, Z) of raw logits (no activation).

        Raises
        ------
        ValueError
            If the input is not 5-D with ``in_channels`` channels, if X, Y or Z is not divisible by
            ``2 ** len(blocks_down)``, or if in training mode every spatial axis equals that divisor (the deepest stage
            would hold one voxel).
        """
        # MONAI fails deep inside the decoder (a skip-connection size mismatch) on a bad size; say what is wrong
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"MedNeXt expects (B, {self.in_channels}, X, Y, Z) input, got {tuple(x.shape)}")
        if any(s % self.divisibility for s in x.shape[2:]):
            raise ValueError(f"MedNeXt spatial sizes must be divisible by {self.divisibility}, "
                             f"got {tuple(x.shape[2:])}")
        if self.training and all(s == self.divisibility for s in x.shape[2:]):
            # the deepest stage would hold one voxel, and one-group-per-channel GroupNorm cannot train on that
            raise ValueError(f"MedNeXt cannot train on {tuple(x.shape[2:])} patches: at least one axis must be "
                             f"{2 * self.divisibility} voxels or more")
        return super().forward(x)
