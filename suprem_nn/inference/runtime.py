"""How loaded networks will run, decided once from the settings: precision, memory layout, engine, batch.

Shared by every model source (a trained model folder, a released SuPreM file, an nnU-Net model folder) and by
:class:`suprem_nn.inference.Predictor` when it loads a model itself, so they all run a model the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .engines import prepare_engine
from .precision import choose_precision
from .settings import PredictionSettings

__all__ = ["Runtime", "prepare_runtime"]


@dataclass
class Runtime:
    """Networks ready for the device, and the numerics they run with (the run report records them)."""

    networks: list
    autocast_dtype: Optional[torch.dtype]   # None: float32
    channels_last: bool
    windows_per_batch: int
    engine_report: dict                     # :func:`~suprem_nn.inference.engines.prepare_engine`'s report


def prepare_runtime(networks: Sequence[nn.Module], network_name: Optional[str], input_shape: Sequence[int],
                    settings: PredictionSettings, cpu_float32: bool = False,
                    output_channels: Optional[Sequence[int]] = None) -> Runtime:
    """Choose precision and memory layout for ``network_name`` on ``settings.device`` and set up the engine.

    ``input_shape``: one window ``(1, C, px, py, pz)``. ``cpu_float32``: run float32 on the CPU unless
    ``settings.precision`` is ``"bf16"`` (nnU-Net models: bfloat16 moves labels on near-ties, measured
    99.73-99.96 % agreement with nnUNetv2_predict against 99.99 % in float32; documentation/nnunet_models.md).
    ``output_channels``: the only output channels the prediction keeps (None: all), for the engine.
    """
    dev = torch.device(settings.device) if settings.device else torch.device("cpu")
    bf16 = settings.precision == "bf16"
    fp32 = settings.precision == "fp32" or (cpu_float32 and dev.type == "cpu" and not bf16)
    autocast, channels_last = choose_precision(dev, network_name, bf16, fp32, settings.channels_last)
    networks, report = prepare_engine(networks, settings.engine, dev, list(input_shape), autocast, output_channels)
    if report["name"] != "torch":
        channels_last = False  # a torch memory layout; OpenVINO chooses its own
    windows = settings.windows_per_batch
    if windows is None:
        windows = 4 if dev.type == "cuda" else 1
    return Runtime(list(networks), autocast, channels_last, int(windows), report)
