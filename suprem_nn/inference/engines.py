"""Which engine runs the network pass (``torch`` or ``openvino``), and setting it up with its fallbacks.

Only the network call changes: :func:`prepare_engine` returns modules with the torch network's call signature
for the plan's fixed window, and the sliding window, mirroring, fold ensembling and export stay the same.

Default (``engine=None``): OpenVINO on the CPU when it is installed, torch elsewhere. When the default engine
cannot be used (not installed, a conversion or compilation failure, an unsupported operator, outputs that do
not match torch's) one line says what happened and torch runs instead. ``engine="openvino"`` given explicitly
raises :class:`EngineError` instead, so a user who asked for it is never silently given something else.

Compiled models come from :mod:`suprem_nn.inference.engine_cache` when present; otherwise the network is
converted, its f32 output checked against torch on one sample window (:func:`_convert_and_check`), compiled,
and stored there.
"""
from __future__ import annotations

import logging
import mmap
import time
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import SupremError
from ..utils.heap import release_free_heap

__all__ = ["ENGINES", "EngineError", "choose_engine", "prepare_engine", "openvino_problem"]

log = logging.getLogger("suprem_nn.predict")

ENGINES = ("torch", "openvino")
# Largest |OpenVINO f32 - torch| logit difference accepted when a conversion is checked, relative to the
# largest |logit| (at least 1). Measured differences are 1e-6 .. 6e-4 absolute on SuPreM's backbones;
# a wrong conversion (e.g. running statistics instead of batch statistics) is off by O(1).
CHECK_TOLERANCE = 1e-3


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
            problem = f"OpenVINO could not convert the network ({_first_line(exc)})"
    if explicit:
        raise EngineError(f"--engine openvino: {problem}")
    # The default engine must never stop a prediction that torch can do: one line, then torch.
    log.warning("%s; using the torch engine instead", problem)
    return list(networks), {"name": "torch", "fallback_from": "openvino", "fallback_reason": problem}


def _first_line(exc: BaseException) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def _openvino_networks(networks, input_shape, autocast_dtype, output_channels) -> tuple[list, dict]:
    from . import engine_cache as cache
    from .openvino_engine import OpenVINONetwork, compiled_precision, export_compiled, import_compiled, openvino_version
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
            compiled, checked = _convert_and_check(net, input_shape, output_channels, precision, threads)
            entry.update(checked)
            entry["status"] = "rebuilt" if status == "corrupt" else "converted"
            entry["convert_seconds"] = round(time.perf_counter() - t0, 3)
            log.info("OpenVINO: converted in %.1f s (%s; float32 logits within %.1e of torch's)",
                     entry["convert_seconds"], checked["conversion"], checked["check_max_abs_diff"])
            report["convert_seconds"] += time.perf_counter() - t0
            blob = export_compiled(compiled)
            try:
                cache.write_entry(key, blob)
            except OSError as exc:  # a read-only or full disk costs the next run a conversion, not this one
                log.warning("could not store the compiled model in %s (%s); the next run converts again",
                            cache.engine_cache_root(), exc.strerror or exc)
            else:
                # Run from the stored entry as a later run would: the model compiled here and the converted
                # graph's weights go (69 MB less resident for SuPreM's U-Net).
                compiled, blob = _reload(key, precision, threads) or (compiled, blob)
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


def _reload(key, precision, threads):
    """``(compiled model, mapped entry)`` imported from the cache entry just written, or None if that fails."""
    from . import engine_cache as cache
    from .openvino_engine import import_compiled

    stored, _ = cache.read_entry(key)
    if stored is None:
        return None
    try:
        return import_compiled(stored, precision, threads), stored
    except Exception:  # noqa: BLE001 - keep the model compiled in this process
        stored.close()
        return None


def _convert_and_check(net, input_shape, output_channels, precision, threads) -> tuple[object, dict]:
    """``(compiled model, report)``: ``net`` (only ``output_channels`` if given) converted, its f32 logits checked
    against torch's on one sample window, compiled for ``input_shape`` at ``precision``.

    SuPreM's U-Net (and MedNeXt) are exported for any window size up to ``input_shape`` without running them
    (:func:`~suprem_nn.inference.openvino_engine.convert_network_any_size`) and checked on the smallest window of
    that range, so no float32 torch pass over a full window happens: for the U-Net at 96³ that pass alone peaked
    at 2.4 GB, above a whole bfloat16 torch prediction. Other networks (SegResNet, Swin UNETR, nnU-Net's; see
    :func:`~suprem_nn.networks.registry.size_generic_export`), and any that the export cannot handle, are traced
    at the window and checked there.
    """
    from ..networks.registry import size_generic_export
    from .openvino_engine import OpenVINONetwork, compile_model, convert_network, convert_network_any_size

    full = [int(s) for s in input_shape]
    model, check_shape, how = None, full, "traced at the window"
    if size_generic_export(net):
        try:
            model, check_shape = convert_network_any_size(net, full, output_channels)
            how = "exported for any window size" if check_shape != full else "exported at the window"
        except Exception as exc:  # noqa: BLE001 - torch.export and the converter raise many kinds; trace instead
            log.info("size-generic export failed (%s); tracing at the window instead", _first_line(exc))
    sample = torch.randn(check_shape, generator=torch.Generator().manual_seed(1))
    # torch's reference pass before any compiled model exists, so their memory does not add up
    with torch.inference_mode():
        was_training = net.training
        net.eval()
        try:
            reference = net(sample).float()
            if output_channels is not None:
                reference = reference[:, [int(c) for c in output_channels]]
        finally:
            net.train(was_training)
    if model is None:
        model = convert_network(net, full, output_channels)  # tracing runs the network once more in torch
    release_free_heap()  # what the torch passes freed stays resident otherwise (utils/heap.py)
    model.reshape({0: check_shape})
    checked = compile_model(model, "f32", threads)
    check_network = OpenVINONetwork(checked, check_shape, False, "f32")
    with torch.inference_mode():
        ours = check_network(sample)
    check_network.release_buffers()  # the prediction's first window allocates them again
    diff = float((ours - reference).abs().max())
    scale = max(1.0, float(reference.abs().max()))
    del reference, ours
    if not diff <= CHECK_TOLERANCE * scale:  # also catches NaN
        raise RuntimeError(f"converted outputs differ from torch's by {diff:.3g} (limit "
                           f"{CHECK_TOLERANCE * scale:.3g})")
    report = {"conversion": how, "check_window": check_shape[2:], "check_max_abs_diff": float(f"{diff:.3g}")}
    if precision == "f32" and check_shape == full:
        return checked, report
    # The check model holds its own weights and activation buffers: free it before the final one is built,
    # so a first run's peak memory is not the sum of both.
    del checked, check_network
    model.reshape({0: full})
    return compile_model(model, precision, threads), report
