"""Which engine runs the network pass (``torch`` or ``openvino``), and setting it up with its fallbacks.

Only the network call changes: :func:`prepare_engine` returns modules with the torch network's call signature
for the plan's fixed window, and the sliding window, mirroring, fold ensembling and export stay the same.

Default (``engine=None``): OpenVINO on the CPU when it is installed, torch elsewhere. When the default engine
cannot be used (not installed, a conversion or compilation failure, an unsupported operator, outputs that do
not match torch's) one line says what happened and torch runs instead. ``engine="openvino"`` given explicitly
raises :class:`EngineError` instead, so a user who asked for it is never silently given something else.

Compiled models come from :mod:`suprem_nn.inference.engine_cache` when present; otherwise the network is
converted, its f32 output checked against torch on one sample window, compiled and stored there (in a separate
process for the backbones exported for any window size: :mod:`suprem_nn.inference.engine_conversion`), and
loaded from there like a later run's.
"""
from __future__ import annotations

import logging
import mmap
import time
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import SupremError
from .engine_conversion import first_line

__all__ = ["ENGINES", "EngineError", "choose_engine", "prepare_engine", "openvino_problem"]

log = logging.getLogger("suprem_nn.predict")

ENGINES = ("torch", "openvino")


class EngineError(SupremError):
    """The requested engine cannot run this model here."""


def openvino_problem() -> Optional[str]:
    """None when OpenVINO can be imported, else why not (one line)."""
    try:
        from .openvino_engine import import_openvino

        import_openvino()
    except ImportError as exc:
        return f"OpenVINO is not installed ({exc}; pip install openvino)"
    return None


def choose_engine(engine: Optional[str], device: torch.device) -> tuple[str, bool]:
    """``(engine name, explicit)`` for the ``engine`` argument (None = the default) on ``device``.

    Parameters
    ----------
    engine : str or None
        One of :data:`ENGINES`, or None: OpenVINO on the CPU, torch elsewhere.
    device : torch.device
        The prediction device.

    Returns
    -------
    tuple of (str, bool)
        The engine, and whether the caller named it (False when it is the default).

    Raises
    ------
    EngineError
        For an unknown engine, or ``"openvino"`` on a device other than the CPU.
    """
    if engine is not None:
        if engine not in ENGINES:
            raise EngineError(f"unknown engine '{engine}' (choose: {', '.join(ENGINES)})")
        if engine == "openvino" and device.type != "cpu":
            raise EngineError(f"--engine openvino runs on the CPU, not on '{device}'; use --device cpu or "
                              "--engine torch")
        return engine, True
    return ("openvino" if device.type == "cpu" else "torch"), False


def prepare_engine(networks: Sequence[nn.Module], engine: Optional[str], device: torch.device,
                   input_shape: Sequence[int], autocast_dtype: Optional[torch.dtype],
                   output_channels: Optional[Sequence[int]] = None) -> tuple[list, dict]:
    """``(networks to run, report)`` for ``engine`` (None = default) on windows of ``input_shape`` = (1, C, *patch).

    ``autocast_dtype`` is the torch precision decision (:mod:`suprem_nn.inference.precision`): bfloat16 becomes
    OpenVINO's bf16 inference precision, None its f32. ``output_channels``: the only output channels the
    prediction keeps (its ``keep_channels``), or None for all; OpenVINO then computes and holds only these, and
    must be called with exactly them. The report goes into run_report.json under "engine".
    """
    name, explicit = choose_engine(engine, device)
    if name == "torch":
        return list(networks), {"name": "torch"}
    problem = openvino_problem()
    if problem is None:
        try:
            return _openvino_networks(networks, input_shape, autocast_dtype, output_channels)
        except Exception as exc:  # noqa: BLE001 - a third-party converter may raise anything; see fallback below
            problem = f"OpenVINO could not convert the network ({first_line(exc)})"
    if explicit:
        raise EngineError(f"--engine openvino: {problem}")
    # The default engine must never stop a prediction that torch can do: one line, then torch.
    log.warning("%s; using the torch engine instead", problem)
    return list(networks), {"name": "torch", "fallback_from": "openvino", "fallback_reason": problem}


def _openvino_networks(networks, input_shape, autocast_dtype, output_channels) -> tuple[list, dict]:
    from . import engine_cache as cache
    from .engine_conversion import convert_into_cache
    from .openvino_engine import OpenVINONetwork, compiled_precision, import_compiled, openvino_version
    from .sliding_window import network_uses_batch_statistics

    precision = "bf16" if autocast_dtype == torch.bfloat16 else "f32"
    threads = torch.get_num_threads()
    version = openvino_version()
    report = {"name": "openvino", "version": version, "precision_requested": precision, "cache": [],
              "convert_seconds": 0.0, "load_seconds": 0.0, "cache_folder": str(cache.engine_cache_root()),
              "output_channels": None if output_channels is None else [int(c) for c in output_channels]}
    wrapped = []
    for net in networks:
        t0 = time.perf_counter()
        key = cache.cache_key(cache.network_fingerprint(net), input_shape, precision, version, output_channels)
        blob, status = cache.read_entry(key)
        compiled = None
        if blob is not None:
            try:
                compiled = import_compiled(blob, precision, threads)
            except Exception:  # noqa: BLE001 - an unreadable blob of any kind is rebuilt, never fatal
                status = "corrupt"
        entry = {"status": status}
        if compiled is None:
            # A first run is silent for seconds to a minute here (Swin UNETR: 24-34 s): say what it is doing.
            log.info("OpenVINO: converting the network for %s windows in %s (once per network, window and "
                     "precision; stored in %s)", "x".join(str(s) for s in input_shape[2:]), precision,
                     report["cache_folder"])
            checked, blob = convert_into_cache(net, key, cache.engine_cache_root(), input_shape, output_channels,
                                               precision, threads)
            if "export_error" in checked:
                log.info("the export failed (%s); traced at the window instead", checked["export_error"])
            if "store_error" in checked:  # a read-only or full disk costs the next run a conversion, not this one
                log.warning("could not store the compiled model in %s (%s); the next run converts again",
                            cache.engine_cache_root(), checked["store_error"])
            else:
                blob, _ = cache.read_entry(key)  # run from the stored entry, as a later run does
                if blob is None:
                    raise RuntimeError(f"the compiled model just stored in {cache.engine_cache_root()} cannot be "
                                       "read back")
            compiled = import_compiled(blob, precision, threads)
            entry.update(checked)
            entry["status"] = "rebuilt" if status == "corrupt" else "converted"
            entry["convert_seconds"] = round(time.perf_counter() - t0, 3)
            log.info("OpenVINO: converted in %.1f s (%s, in %s; float32 logits within %.1e of torch's)",
                     entry["convert_seconds"], checked["conversion"], checked["converted_in"],
                     checked["check_max_abs_diff"])
            report["convert_seconds"] += time.perf_counter() - t0
        else:
            entry["load_seconds"] = round(time.perf_counter() - t0, 3)
            report["load_seconds"] += time.perf_counter() - t0
        entry["file"] = str(cache.entry_path(key))
        entry["megabytes"] = round(len(blob) / 2 ** 20, 1)
        report["cache"].append(entry)
        mapped = blob if isinstance(blob, mmap.mmap) else None  # imported without a copy: the model refers to it
        wrapped.append(OpenVINONetwork(compiled, input_shape, network_uses_batch_statistics(net),
                                       compiled_precision(compiled), blob=mapped, output_channels=output_channels))
        # Start lean: the plugin repacked the weights on import, so the mapping's pages (and a conversion's freed
        # memory) can go until a pass needs them.
        wrapped[-1].release_buffers()
    report["precision"] = wrapped[0].precision
    report["convert_seconds"] = round(report["convert_seconds"], 3)
    report["load_seconds"] = round(report["load_seconds"], 3)
    return wrapped, report
