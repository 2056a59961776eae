"""Sliding-window prediction of a whole volume with a patch-sized network.

Arrays are ``(C, x, y, z)`` in network space (see :mod:`suprem_nn.io.geometry`
for the axis order); the network maps ``(B, C, px, py, pz)`` to
``(B, K, px, py, pz)`` logits.

What happens, in order:

1. The volume is padded with ``pad_value`` to at least the patch size on each
   axis (split evenly before/after, the extra voxel after). ``pad_value`` is 0 by
   default: in normalised space 0 is air for SuPreM's CT window ([-175, 250] HU
   -> [0, 1]); pass the plan's background value when another normalisation is used.
2. Windows are placed nnU-Net style: per axis ``n = ceil((size - patch) / (step_size * patch)) + 1``
   windows spread evenly from 0 to ``size - patch``. The positions are made exactly
   mirror-symmetric, so predicting a flipped volume places the windows flipped.
3. Each window's logits are weighted by a Gaussian importance map (sigma = patch / 8
   per axis, as nnU-Net and MONAI, centred at ``(patch - 1) / 2`` so it is symmetric)
   and accumulated in float32 on ``device``; the sum is divided by the summed weights.
4. Mirroring test-time augmentation averages the logits of all ``2^n`` flip
   combinations of ``mirror_axes`` exactly (each flip is un-flipped before averaging).
5. ``activation`` (softmax over channels, or sigmoid) is applied to the averaged
   logits, as nnU-Net and SuPreM/MONAI do. The result comes back on ``result_device`` (the CPU by default).

Windows and mirrors are averaged in logit space; ensembles of several networks
are averaged in probability space by :class:`suprem_nn.inference.Predictor`.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["compute_steps", "window_layout", "gaussian_importance_map", "sliding_window_predict",
           "network_uses_batch_statistics"]


def compute_steps(size: int, patch: int, step_size: float) -> list[int]:
    """Window start indices along one axis of length ``size`` (``size >= patch``).

    ``n = ceil((size - patch) / (step_size * patch)) + 1`` windows, evenly spread from
    0 to ``size - patch`` (one more when an odd count cannot be placed symmetrically). The list is mirror-symmetric: ``steps[n-1-i] == size - patch - steps[i]``.
    """
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch {patch}; pad first")
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    span = size - patch
    if span == 0:
        return [0]
    n = int(math.ceil(span / (step_size * patch))) + 1
    if n % 2 == 1 and span % 2 == 1:
        n += 1  # a middle window cannot sit symmetrically on an odd span; use one more window instead
    exact = [span * i / (n - 1) for i in range(n)]
    steps = [0] * n
    for i in range((n + 1) // 2):
        steps[i] = int(math.floor(exact[i] + 0.5))
        steps[n - 1 - i] = span - steps[i]
    return steps


def window_layout(shape: Sequence[int], patch: Sequence[int], step_size: float,
                  step_rule: Callable[[int, int, float], list[int]] = compute_steps
                  ) -> tuple[list[int], list[int], list[tuple[int, int, int]]]:
    """Where :func:`sliding_window_predict` places its windows on a volume of spatial ``shape`` (voxels).

    Returns ``(pad_lo, pad_hi, starts)``: the padding before and after each axis that brings it to at least the
    patch (split evenly, the extra voxel after), and each window's start ``(x, y, z)`` in the padded volume.
    """
    pad_lo = [max(p - s, 0) // 2 for s, p in zip(shape, patch)]
    pad_hi = [max(p - s, 0) - lo for s, p, lo in zip(shape, patch, pad_lo)]
    padded = [s + lo + hi for s, lo, hi in zip(shape, pad_lo, pad_hi)]
    return pad_lo, pad_hi, list(itertools.product(*(step_rule(s, p, step_size) for s, p in zip(padded, patch))))


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 0.125,
                            device: str | torch.device = "cpu") -> torch.Tensor:
    """Separable Gaussian weights of shape ``patch_size`` (max 1, strictly positive, mirror-symmetric).

    Parameters
    ----------
    patch_size : sequence of int
        Window size per axis in voxels (3 values).
    sigma_scale : float
        Standard deviation per axis as a fraction of its size.
    device : str or torch.device
        Where the map is returned.

    Returns
    -------
    torch.Tensor
        float32 of shape ``patch_size``, centred at ``(p - 1) / 2``; voxels that underflow to 0 get the smallest
        positive weight.
    """
    maps = []
    for p in patch_size:
        x = torch.arange(p, dtype=torch.float64)
        sigma = max(p * sigma_scale, 1e-6)
        maps.append(torch.exp(-((x - (p - 1) / 2.0) ** 2) / (2 * sigma ** 2)))
    g = maps[0][:, None, None] * maps[1][None, :, None] * maps[2][None, None, :]
    g = g / g.max()
    # Border weights underflow to tiny values for small sigmas; keep them positive so every
    # voxel covered by a window gets a defined average (nnU-Net does the same).
    positive = g[g > 0]
    g = torch.clamp(g, min=float(positive.min()) if positive.numel() else 1.0)
    return g.to(device=device, dtype=torch.float32)


def network_uses_batch_statistics(network: nn.Module) -> bool:
    """True when a normalisation layer of ``network`` uses the batch's statistics in eval mode.

    Uses :func:`suprem_nn.networks.uses_batch_statistics` when available; a network may also
    declare it with a boolean ``uses_batch_statistics`` attribute.
    """
    flag = getattr(network, "uses_batch_statistics", None)
    if isinstance(flag, bool):
        return flag
    try:
        from ..networks.registry import uses_batch_statistics
    except ImportError:  # networks package without the registry: fall back to the plain BatchNorm rule
        from torch.nn.modules.batchnorm import _BatchNorm
        return any(isinstance(m, _BatchNorm) and not m.track_running_stats for m in network.modules())
    return bool(uses_batch_statistics(network))


def _flip_sets(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    axes = sorted(set(int(a) for a in mirror_axes))
    for a in axes:
        if a not in (0, 1, 2):
            raise ValueError(f"mirror axes are spatial axes 0, 1, 2; got {a}")
    return [tuple(2 + a for a in c) for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.inference_mode()
def _tta_logits(network: nn.Module, batch: torch.Tensor, flips: list[tuple[int, ...]], autocast_dtype,
                keep_channels: Optional[torch.Tensor]) -> torch.Tensor:
    """Average over ``flips`` of un-flipped network logits, float32, ``(B, K, px, py, pz)``."""
    total = None
    device_type = batch.device.type
    for dims in flips:
        x = torch.flip(batch, dims) if dims else batch
        ctx = (torch.autocast(device_type=device_type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
        if keep_channels is not None and getattr(network, "selects_channels", False):
            y = network(x, keep_channels=keep_channels)  # an engine that copies out only the kept channels
        else:
            with ctx:
                y = network(x)
            if keep_channels is not None:
                y = y.index_select(1, keep_channels)
        y = y.float()
        if dims:
            y = torch.flip(y, dims)
        total = y if total is None else total.add_(y)
    return total / len(flips) if len(flips) > 1 else total


def sliding_window_predict(network: nn.Module, data: torch.Tensor, patch_size: Sequence[int],
                           step_size: float = 0.5, mirror_axes: Sequence[int] = (), windows_per_batch: int = 1,
                           device: str | torch.device = "cpu", activation: Optional[str] = None, *,
                           pad_value: float = 0.0, use_gaussian: bool = True, skip_constant_windows: bool = False,
                           keep_channels: Optional[Sequence[int]] = None, autocast_dtype: Optional[torch.dtype] = None,
                           channels_last: bool = False, progress: bool = False,
                           importance_map: Optional[torch.Tensor] = None,
                           result_device: str | torch.device = "cpu",
                           step_rule: Callable[[int, int, float], list[int]] = compute_steps,
                           accumulate_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Predict a whole ``(C, x, y, z)`` volume window by window; returns ``(K, x, y, z)`` in ``accumulate_dtype``.

    Args:
        network: maps ``(B, C, *patch_size)`` to ``(B, K, *patch_size)`` logits; must already be on ``device``.
            It is put in eval mode for the call and restored afterwards.
        data: the normalised volume in network space, any device.
        patch_size: window size per axis (voxels).
        step_size: window spacing as a fraction of the patch (0.5 = nnU-Net default, 0.25 = SuPreM's overlap 0.75).
        mirror_axes: spatial axes (0, 1, 2) to mirror for test-time augmentation; () disables it.
        windows_per_batch: windows per forward call. Forced to 1 when the network normalises with batch
            statistics (SuPreM's U-Net), whose output for one window would otherwise depend on its batch mates.
        device: where the network runs and the float32 accumulators live.
        activation: ``"softmax"`` (over channels), ``"sigmoid"`` or None (averaged logits).
        pad_value: value used to pad volumes smaller than the patch (see the module docstring).
        use_gaussian: Gaussian importance weighting (True) or uniform weights.
        skip_constant_windows: run the network once on a window filled with ``pad_value`` and reuse that
            output for every window whose input is entirely ``pad_value``. Exact: the network's output is a
            function of its input alone (with one window per call for batch-statistics networks), so every
            such window would produce the same logits.
        keep_channels: accumulate only these output channels (sigmoid/None activations only; softmax needs all).
        autocast_dtype: e.g. ``torch.bfloat16`` to run the network under autocast; accumulation stays float32.
        channels_last: feed windows in ``torch.channels_last_3d`` memory format (faster convolutions on CPU).
        progress: show progress over windows (:mod:`suprem_nn.utils.progress`).
        importance_map: per-voxel window weights of shape ``patch_size`` replacing the Gaussian (e.g. nnU-Net's
            own map, centred at ``patch // 2``, to reproduce its outputs); must be strictly positive.
        result_device: where the result is returned (the CPU by default; ``device`` keeps it on the GPU
            for on-device export).
        step_rule: ``(size, patch, step_size) -> window starts`` along one axis (default :func:`compute_steps`).
        accumulate_dtype: dtype of the weighted sums (and of the result). float32 by default; nnU-Net v2 sums
            in float16, which :class:`~suprem_nn.inference.nnunet.NnunetPredictor` reproduces.
    """
    if data.ndim != 4:
        raise ValueError(f"expected a (C, x, y, z) volume, got shape {tuple(data.shape)}")
    patch = [int(p) for p in patch_size]
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_size needs 3 positive values, got {patch_size}")
    if activation not in (None, "softmax", "sigmoid"):
        raise ValueError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
    if keep_channels is not None and activation == "softmax":
        raise ValueError("keep_channels cannot be combined with softmax (it needs every channel)")
    device = torch.device(device)
    if network_uses_batch_statistics(network):
        windows_per_batch = 1
    windows_per_batch = max(1, int(windows_per_batch))
    flips = _flip_sets(mirror_axes)
    keep = (torch.as_tensor(list(keep_channels), dtype=torch.long, device=device)
            if keep_channels is not None else None)

    spatial = list(data.shape[1:])
    pad_lo, pad_hi, starts = window_layout(spatial, patch, step_size, step_rule)
    data = data.to(dtype=torch.float32)
    if any(pad_lo) or any(pad_hi):
        # F.pad takes (last axis lo, hi, ..., first axis lo, hi).
        pads = [v for a in (2, 1, 0) for v in (pad_lo[a], pad_hi[a])]
        data = torch.nn.functional.pad(data, pads, mode="constant", value=float(pad_value))
    padded = list(data.shape[1:])
    # Decided before the volume moves to the GPU: a per-window check there would stall the GPU once per window.
    constant = [skip_constant_windows and bool((data[:, s[0]:s[0] + patch[0], s[1]:s[1] + patch[1],
                                                     s[2]:s[2] + patch[2]] == pad_value).all()) for s in starts]
    data = data.to(device=device)

    if importance_map is not None:
        if list(importance_map.shape) != patch or not bool((importance_map > 0).all()):
            raise ValueError(f"importance_map must be strictly positive with shape {patch}")
        weight_map = importance_map.to(device=device)
    else:
        weight_map = (gaussian_importance_map(patch, device=device) if use_gaussian
                      else torch.ones(patch, dtype=torch.float32, device=device))
    was_training = network.training
    network.eval()
    accum = None
    weights = torch.zeros(padded, dtype=accumulate_dtype, device=device)
    constant_weighted = None  # weighted logits of a window of pad_value only, shared by all such windows

    def window(s):
        return data[:, s[0]:s[0] + patch[0], s[1]:s[1] + patch[1], s[2]:s[2] + patch[2]]

    def run(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        return _tta_logits(network, batch, flips, autocast_dtype, keep)

    def add(s, weighted: torch.Tensor) -> None:
        nonlocal accum
        if accum is None:
            accum = torch.zeros([weighted.shape[0]] + padded, dtype=accumulate_dtype, device=device)
        sl = (slice(s[0], s[0] + patch[0]), slice(s[1], s[1] + patch[1]), slice(s[2], s[2] + patch[2]))
        accum[(slice(None),) + sl].add_(weighted)
        weights[sl].add_(weight_map)

    def weighted(logits: torch.Tensor) -> torch.Tensor:
        # In place (the same products as ``logits * weight_map``): each window's logits are a new tensor that
        # nothing else holds. A weighted copy per window was a block of tens of MB allocated and freed every
        # window, which fragments the heap; kept as one reused buffer it stayed resident through the pass.
        with torch.inference_mode():  # the logits were made under inference mode, which in-place updates need
            return logits.mul_(weight_map)

    from ..utils.progress import Progress

    # nested under the per-case progress: a transient bar on a terminal, a line per 30 s in a log file
    bar = Progress(len(starts), "windows", "window", enabled=progress, nested=True)
    try:
        pending: list = []
        for s, is_constant in zip(starts, constant):
            if is_constant:
                if constant_weighted is None:
                    constant_weighted = weighted(run(torch.full([1, data.shape[0]] + patch, float(pad_value),
                                                                dtype=torch.float32, device=device))[0])
                add(s, constant_weighted)
                bar.update(1)
                continue
            pending.append(s)
            if len(pending) == windows_per_batch:
                out = run(torch.stack([window(p) for p in pending]))
                for p, o in zip(pending, out):
                    add(p, weighted(o))
                bar.update(len(pending))
                pending = []
        if pending:
            out = run(torch.stack([window(p) for p in pending]))
            for p, o in zip(pending, out):
                add(p, weighted(o))
            bar.update(len(pending))
    finally:
        bar.close()
        network.train(was_training)
        # An engine that keeps activation buffers between calls (OpenVINO) frees them now, before the
        # activation and the export below, and before the next fold's network allocates its own.
        release = getattr(network, "release_buffers", None)
        if callable(release):
            release()

    accum /= weights
    del weights
    crop = tuple(slice(lo, lo + s) for lo, s in zip(pad_lo, spatial))
    result = accum[(slice(None),) + crop]
    if activation == "softmax":
        result = torch.softmax(result, dim=0)
    elif activation == "sigmoid":
        # In place: a second (K, x, y, z) float32 volume at the end of the pass was the run's peak (397 MB for
        # SuPreM's 9 organs on a 244 x 202 x 224 grid).
        result = result.sigmoid_()
    return result.to(result_device).contiguous()
