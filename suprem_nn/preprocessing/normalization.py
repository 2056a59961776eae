"""Map raw intensities (HU for CT) to network input values, per channel, as the plan says."""
from __future__ import annotations

import numpy as np

from ..planning.plans import Normalization


def normalize(channel: np.ndarray, n: Normalization) -> np.ndarray:
    """Return a float32 copy of ``channel`` normalised by scheme ``n.scheme`` (see :class:`Normalization`)."""
    x = channel.astype(np.float32, copy=True)
    if n.scheme == "ct_window":
        np.clip(x, n.lower, n.upper, out=x)
        x -= np.float32(n.lower)
        x *= np.float32(1.0 / (n.upper - n.lower))
    elif n.scheme == "ct_clip_zscore":
        np.clip(x, n.lower, n.upper, out=x)
        x -= np.float32(n.mean)
        x *= np.float32(1.0 / max(n.std, 1e-8))
    elif n.scheme == "zscore":
        mean, std = float(x.mean()), float(x.std())
        x -= np.float32(mean)
        x *= np.float32(1.0 / max(std, 1e-8))
    elif n.scheme != "none":
        raise ValueError(f"unknown normalization scheme {n.scheme!r}")
    return x
