"""Map raw intensities (HU for CT) to network input values, per channel, as the plan says."""
from __future__ import annotations

import numpy as np

from ..planning.plans import Normalization


def normalize(channel: np.ndarray, n: Normalization) -> np.ndarray:
    """Normalise one channel as the plan says.

    Parameters
    ----------
    channel : numpy.ndarray
        One channel ``(i, j, k)`` in raw units (HU for CT).
    n : Normalization
        The plan's entry for this channel: ``ct_window`` (clip to ``[lower, upper]`` HU, map to [0, 1]),
        ``ct_clip_zscore`` (clip, then ``(x - mean) / std`` with dataset statistics), ``zscore`` (per image) or
        ``none``.

    Returns
    -------
    numpy.ndarray
        A float32 copy, same shape.

    Raises
    ------
    ValueError
        An unknown scheme.
    """
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
