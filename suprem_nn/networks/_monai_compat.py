"""Keep MONAI's Swin UNETR usable when the optional ``einops`` package is absent.

MONAI's Swin transformer calls ``einops.rearrange`` only to move the channel
axis ("b c d h w -> b d h w c" and back).  Without einops MONAI substitutes a
placeholder that raises on use, so the network cannot run.  This module
provides a permutation-only ``rearrange`` and installs it into MONAI's
``swin_unetr`` module *only* when that placeholder is present; with einops
installed nothing is changed.
"""

from __future__ import annotations

import torch

__all__ = ["axis_permutation_rearrange", "ensure_swin_rearrange"]


def axis_permutation_rearrange(tensor: torch.Tensor, pattern: str) -> torch.Tensor:
    """Apply an einops pattern that only permutes named single axes, e.g. ``"b c d h w -> b d h w c"``.

    Grouping, splitting and repetition are not supported and raise ``ValueError``.
    """
    try:
        left, right = (side.split() for side in pattern.split("->"))
    except ValueError:
        raise ValueError(f"not an einops pattern: {pattern!r}") from None
    if sorted(left) != sorted(right) or len(set(left)) != len(left) or any("(" in a or ")" in a for a in left + right):
        raise ValueError(f"only pure axis permutations are supported, got {pattern!r}")
    if len(left) != tensor.dim():
        raise ValueError(f"pattern {pattern!r} has {len(left)} axes, tensor has {tensor.dim()}")
    return tensor.permute(*[left.index(a) for a in right])


def ensure_swin_rearrange() -> None:
    """Install :func:`axis_permutation_rearrange` into MONAI's swin_unetr module if einops is missing."""
    from monai.networks.nets import swin_unetr
    from monai.utils import optional_import

    _, has_einops = optional_import("einops")
    if not has_einops:
        swin_unetr.rearrange = axis_permutation_rearrange
