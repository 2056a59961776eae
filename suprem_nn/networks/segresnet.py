"""SuPreM's SegResNet: MONAI's ``SegResNet`` in the released configuration.

init_filters 16, blocks_down (1, 2, 2, 4), blocks_up (1, 1, 1), GroupNorm(8),
ReLU, non-trainable (trilinear) up-sampling.  MONAI 0.9 and >= 1.5 give the
same keys and outputs for this network, so MONAI's class is used unchanged;
the subclass only adds a clear input check (MONAI fails deep inside the
decoder with a size-mismatch error otherwise).

Tensor axis order: (B, C, X, Y, Z); spatial sizes divisible by 8.
"""

from __future__ import annotations

import torch
from monai.networks.nets import SegResNet

__all__ = ["SuPreMSegResNet"]

GROUPS = 8  # MONAI's default GroupNorm, which SuPreM kept


class SuPreMSegResNet(SegResNet):
    """MONAI SegResNet with SuPreM's constructor values.

    Args:
        in_channels: image channels of the (B, in_channels, X, Y, Z) input.
        out_channels: logit channels of the (B, out_channels, X, Y, Z) output.
        init_filters, blocks_down, blocks_up: SuPreM values by default.

    Raises:
        ValueError: if ``init_filters`` is not a positive multiple of 8 (GroupNorm's 8 groups), a block count is
            negative, or ``blocks_up`` does not have one entry fewer than ``blocks_down`` (one decoder stage per
            down-sampling). MONAI builds such a network and fails only in its first forward pass.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, init_filters: int = 16,
                 blocks_down: tuple[int, ...] = (1, 2, 2, 4), blocks_up: tuple[int, ...] = (1, 1, 1)) -> None:
        _check_sizes(init_filters, blocks_down, blocks_up)
        super().__init__(
            spatial_dims=3,
            init_filters=init_filters,
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            dropout_prob=0.0,
            blocks_down=tuple(blocks_down),
            blocks_up=tuple(blocks_up),
        )
        self.divisibility = 2 ** (len(blocks_down) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a (B, in_channels, X, Y, Z) float image batch.

        Returns a float tensor (B, out_channels, X, Y, Z) of raw logits (no activation).

        Raises
        ------
        ValueError
            If the input is not 5-D with ``in_channels`` channels, or X, Y or Z is not divisible by
            ``2 ** (len(blocks_down) - 1)``.
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"SegResNet expects (B, {self.in_channels}, X, Y, Z) input, got {tuple(x.shape)}")
        if any(s % self.divisibility for s in x.shape[2:]):
            raise ValueError(
                f"SegResNet spatial sizes must be divisible by {self.divisibility}, got {tuple(x.shape[2:])}"
            )
        return super().forward(x)


def _check_sizes(init_filters, blocks_down, blocks_up) -> None:
    if not isinstance(init_filters, int) or isinstance(init_filters, bool) or init_filters < GROUPS \
            or init_filters % GROUPS:
        raise ValueError(f"SegResNet init_filters must be a positive multiple of {GROUPS} (its GroupNorm has "
                         f"{GROUPS} groups), got {init_filters!r}")
    for name, blocks in (("blocks_down", blocks_down), ("blocks_up", blocks_up)):
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in blocks):
            raise ValueError(f"SegResNet {name} must be block counts >= 0, got {list(blocks)!r}")
    if len(blocks_down) < 1 or len(blocks_up) != len(blocks_down) - 1:
        raise ValueError(f"SegResNet needs one up stage per down-sampling: blocks_up must have "
                         f"len(blocks_down) - 1 entries, got blocks_down {list(blocks_down)} and blocks_up "
                         f"{list(blocks_up)}")
