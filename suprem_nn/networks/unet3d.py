"""The Models Genesis 3D U-Net used as SuPreM's "U-Net" backbone.

Written from the architecture description (Models Genesis, MIT licence): four
resolution levels with 32/64 -> 128 -> 256 -> 512 channels, three 2x max-pools,
transposed-convolution up-sampling and concatenation skips.  Module and
parameter names reproduce the released state-dict keys exactly
(``down_tr64.ops.0.conv1.weight``, ``up_tr256.up_conv.weight``, ...), so the
SuPreM files load by name.

Tensor axis order everywhere: (B, C, X, Y, Z).  Spatial sizes must be
divisible by 8 (three pooling steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["BatchStatsBatchNorm3d", "UNet3D", "UNET_DIVISIBILITY"]

UNET_DIVISIBILITY = 8  # three 2x max-pools


class BatchStatsBatchNorm3d(_BatchNorm):
    """BatchNorm3d that can keep normalising with the current batch's statistics in eval mode.

    The SuPreM / Models Genesis U-Net weights were trained (and are meant to be
    run) with a BatchNorm that *always* uses the statistics of the batch it is
    given.  Its running buffers were never used at inference time, so they may
    not describe the data; switching to them changes the outputs.

    Args:
        num_features: channel count C of the (B, C, X, Y, Z) input.
        batch_stats_in_eval: when True (default, the behaviour the weights were
            trained with) eval mode normalises with the batch statistics.  When
            False it behaves like ``nn.BatchNorm3d`` (running statistics in eval).

    In eval mode with ``batch_stats_in_eval`` the running buffers are *not*
    updated: the original implementation kept updating them, but nothing reads
    them in this mode, and leaving them untouched keeps inference free of side
    effects on the weights (outputs are identical either way).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 batch_stats_in_eval: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.batch_stats_in_eval = bool(batch_stats_in_eval)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected a 5D (B, C, X, Y, Z) input, got shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise a (B, C, X, Y, Z) float tensor; same shape out.

        Training mode and eval mode without ``batch_stats_in_eval`` behave as ``nn.BatchNorm3d``; eval mode with it
        normalises with the batch's own statistics and leaves the running buffers untouched.

        Raises
        ------
        ValueError
            If the input is not 5-D.
        """
        self._check_input_dim(input)
        if self.training:
            return super().forward(input)
        if self.batch_stats_in_eval:
            # running_mean/var=None: normalise with batch statistics without touching the buffers.
            return F.batch_norm(input, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(input)

    def extra_repr(self) -> str:
        """``nn.BatchNorm3d``'s summary plus ``batch_stats_in_eval``."""
        return super().extra_repr() + f", batch_stats_in_eval={self.batch_stats_in_eval}"


class LUConv(nn.Module):
    """3x3x3 convolution (with bias) -> batch-statistics BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, batch_stats_in_eval: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1, bias=True)
        self.bn1 = BatchStatsBatchNorm3d(out_ch, batch_stats_in_eval=batch_stats_in_eval)
        self.relu1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, X, Y, Z) float -> (B, out_ch, X, Y, Z): convolution, BatchNorm, ReLU (values >= 0)."""
        return self.relu1(self.bn1(self.conv1(x)))


def _double_conv(in_ch: int, mid_ch: int, out_ch: int, batch_stats_in_eval: bool) -> nn.Sequential:
    return nn.Sequential(LUConv(in_ch, mid_ch, batch_stats_in_eval), LUConv(mid_ch, out_ch, batch_stats_in_eval))


class DownTransition(nn.Module):
    """Two LUConvs, then an optional 2x max-pool; returns (pooled, skip)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, pool: bool, batch_stats_in_eval: bool) -> None:
        super().__init__()
        self.ops = _double_conv(in_ch, mid_ch, out_ch, batch_stats_in_eval)
        self.maxpool = nn.MaxPool3d(2) if pool else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder stage on a (B, in_ch, X, Y, Z) float tensor.

        Returns ``(pooled, skip)``: ``skip`` is the (B, out_ch, X, Y, Z) output of the two LUConvs, ``pooled`` that
        max-pooled to (B, out_ch, X/2, Y/2, Z/2), or ``skip`` itself for a stage without pooling.
        """
        skip = self.ops(x)
        return (self.maxpool(skip) if self.maxpool is not None else skip), skip


class UpTransition(nn.Module):
    """2x transposed-conv up-sampling, concatenation [up, skip] on C, two LUConvs."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, batch_stats_in_eval: bool) -> None:
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_ch, in_ch, kernel_size=2, stride=2)
        self.ops = _double_conv(in_ch + skip_ch, out_ch, out_ch, batch_stats_in_eval)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Decoder stage: ``x`` (B, in_ch, X/2, Y/2, Z/2) up-sampled 2x, concatenated before ``skip``
        (B, skip_ch, X, Y, Z) on C, then two LUConvs; returns float (B, out_ch, X, Y, Z).
        """
        # The up-sampled tensor comes first in the concatenation: the pretrained
        # first decoder conv weights depend on this channel order.
        return self.ops(torch.cat((self.up_conv(x), skip), dim=1))


class OutputTransition(nn.Module):
    """1x1x1 convolution to class logits (no activation)."""

    def __init__(self, in_ch: int, n_classes: int) -> None:
        super().__init__()
        self.final_conv = nn.Conv3d(in_ch, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, X, Y, Z) float features -> (B, n_classes, X, Y, Z) raw logits."""
        return self.final_conv(x)


class UNet3D(nn.Module):
    """Models Genesis / SuPreM 3D U-Net.

    Args:
        in_channels: image channels of the (B, in_channels, X, Y, Z) input.
        out_channels: logit channels of the output; ``None`` builds the bare
            backbone (no ``out_tr``), as used inside the Universal Model.
        batch_stats_in_eval: keep the batch-statistics BatchNorm in eval mode
            (default True: this is how the SuPreM weights were trained and run;
            the predictor must then feed one window per forward call).

    ``forward`` returns logits (B, out_channels, X, Y, Z) when a head exists;
    ``forward_features`` returns (bottleneck (B, 512, X/8, Y/8, Z/8),
    decoder output (B, 64, X, Y, Z)).  X, Y, Z must be divisible by 8.
    """

    bottleneck_channels = 512
    decoder_channels = 64

    def __init__(self, in_channels: int = 1, out_channels: int | None = 1, batch_stats_in_eval: bool = True) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = None if out_channels is None else int(out_channels)
        b = bool(batch_stats_in_eval)
        self.down_tr64 = DownTransition(self.in_channels, 32, 64, pool=True, batch_stats_in_eval=b)
        self.down_tr128 = DownTransition(64, 64, 128, pool=True, batch_stats_in_eval=b)
        self.down_tr256 = DownTransition(128, 128, 256, pool=True, batch_stats_in_eval=b)
        self.down_tr512 = DownTransition(256, 256, 512, pool=False, batch_stats_in_eval=b)
        self.up_tr256 = UpTransition(512, 256, 256, batch_stats_in_eval=b)
        self.up_tr128 = UpTransition(256, 128, 128, batch_stats_in_eval=b)
        self.up_tr64 = UpTransition(128, 64, 64, batch_stats_in_eval=b)
        self.out_tr = OutputTransition(64, self.out_channels) if self.out_channels is not None else None

    @property
    def batch_stats_in_eval(self) -> bool:
        """True if any BatchNorm of the network normalises with batch statistics in eval mode."""
        return any(isinstance(m, BatchStatsBatchNorm3d) and m.batch_stats_in_eval for m in self.modules())

    def set_batch_stats_in_eval(self, enabled: bool) -> None:
        """Switch every BatchNorm between batch statistics and running statistics for eval mode."""
        for m in self.modules():
            if isinstance(m, BatchStatsBatchNorm3d):
                m.batch_stats_in_eval = bool(enabled)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet3D expects (B, {self.in_channels}, X, Y, Z) input, got {tuple(x.shape)}")
        bad = [s for s in x.shape[2:] if s % UNET_DIVISIBILITY]
        if bad:
            raise ValueError(f"UNet3D spatial sizes must be divisible by {UNET_DIVISIBILITY}, got {tuple(x.shape[2:])}")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bottleneck and decoder features of a (B, in_channels, X, Y, Z) float image batch.

        Returns
        -------
        bottleneck : torch.Tensor
            (B, 512, X/8, Y/8, Z/8).
        decoder : torch.Tensor
            (B, 64, X, Y, Z), the last up-sampling stage's output.

        Raises
        ------
        ValueError
            If the input is not 5-D with ``in_channels`` channels, or X, Y or Z is not divisible by 8.
        """
        self._check_input(x)
        out64, skip64 = self.down_tr64(x)
        out128, skip128 = self.down_tr128(out64)
        out256, skip256 = self.down_tr256(out128)
        out512, _ = self.down_tr512(out256)
        up256 = self.up_tr256(out512, skip256)
        up128 = self.up_tr128(up256, skip128)
        up64 = self.up_tr64(up128, skip64)
        return out512, up64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a (B, in_channels, X, Y, Z) float image batch: float (B, out_channels, X, Y, Z), no activation.

        Raises
        ------
        RuntimeError
            If the network was built without a head (``out_channels=None``).
        ValueError
            As :meth:`forward_features`.
        """
        if self.out_tr is None:
            raise RuntimeError("this UNet3D was built without a head (out_channels=None); use forward_features")
        return self.out_tr(self.forward_features(x)[1])
