"""Converting a network for the OpenVINO engine, checked against torch, in a separate Python process where that
costs less memory than it saves.

:func:`convert_into_cache` runs :func:`convert_and_check` for a backbone exported for any window size
(:func:`~suprem_nn.networks.registry.openvino_conversion` ``"any size"``: SuPreM's U-Net, SegResNet, MedNeXt) in
a fresh interpreter (``python -m`` this module) that stores the compiled model in the engine cache and exits; the
prediction then loads it from there, exactly as a later run does. Why, at a cost of some seconds (the helper
imports torch, MONAI and OpenVINO and warms up ``torch.export`` afresh: 7.3 s against 1.0 s for a tiny network):

* ``torch.export``'s machinery (about 130 MB of modules that cannot be unloaded) and the heap the conversion
  freed would otherwise stay under the prediction, whose peak comes later: in the prediction's own process the
  first U-Net run peaked at 1,728 MB of private memory, in the helper at 1,518 MB (both processes summed), where
  a cached run peaks (``benchmarks/bench_engine_peaks.py``).
* A converter that crashes in native code (a segmentation fault or an abort, not an exception) ends the helper
  process, not the prediction: the default engine says so in one line and falls back to torch.

The other conversions run in the prediction's process. The helper's own imports and its copy of the weights
(about 300 MB plus the weights) sit on top of the prediction's process meanwhile, and where the conversion runs
the network over a full window in float32 (a trace, or the check of a model fixed to the window) that moment is
the first run's peak. Private memory of first runs, summed over both processes, against torch's whole run:
Swin UNETR 2,938 MB with the helper, 2,309 MB without, torch 2,618 MB; an nnU-Net model on one CT 1,071 MB with
the helper, 797 MB without, torch 784 MB.

The network travels to the helper as a pickle on its standard input, between two processes of this program:
nothing is read from disk. A network that cannot be pickled or whose class the helper cannot import (defined in
a script's ``__main__``) is converted in this process instead, as before.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..utils.atomic import atomic_write_bytes, atomic_write_json
from ..utils.heap import release_free_heap

__all__ = ["CHECK_TOLERANCE", "ConversionFailed", "convert_and_check", "convert_into_cache", "first_line"]

# Largest |OpenVINO f32 - torch| logit difference accepted when a conversion is checked, relative to the
# largest |logit| (at least 1). Measured differences are 1e-6 .. 6e-4 absolute on SuPreM's backbones;
# a wrong conversion (e.g. running statistics instead of batch statistics) is off by O(1).
CHECK_TOLERANCE = 1e-3
_RESULT, _BLOB, _RECEIVED = "result.json", "model.blob", "received"
log = logging.getLogger("suprem_nn.predict")


class ConversionFailed(RuntimeError):
    """The conversion raised or crashed in the helper process; ``kind`` names the helper's exception type (None
    for a crash)."""

    def __init__(self, message: str, kind: Optional[str] = None):
        super().__init__(message)
        self.kind = kind


class _NotTransferable(Exception):
    """The network cannot reach a helper process (not picklable, or its class not importable there)."""


def first_line(exc: BaseException) -> str:
    """``"Type: message"`` on one line of at most 300 characters of message, for one-line reports."""
    kind = exc.kind if isinstance(exc, ConversionFailed) else type(exc).__name__
    text = _one_line(str(exc))
    return f"{kind}: {text}" if kind else text


# OpenVINO's C++ checks open their message with the source location ("Check 'false' failed at
# src/frontends/.../unconverted_ops_report.cpp:151:"); the lines after it name the operation.
_SOURCE_LOCATION = re.compile(r"^Check '.*' failed at \S+:\d+:?$")


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(line for line in lines if not _SOURCE_LOCATION.match(line))[:300]


def convert_into_cache(net: torch.nn.Module, key: dict, cache_root: Path, input_shape: Sequence[int],
                       output_channels: Optional[Sequence[int]], precision: str, threads: int
                       ) -> tuple[dict, Optional[bytes]]:
    """Convert, check and compile ``net`` for ``input_shape`` at ``precision``; store it in the cache under ``key``.

    In a helper process for the backbones exported for any window size, else in this process (module docstring).

    Parameters
    ----------
    net : torch.nn.Module
        The CPU network (any train/eval mode; converted in eval mode).
    key : dict
        Its :func:`~suprem_nn.inference.engine_cache.cache_key`.
    cache_root : Path
        The engine cache folder.
    input_shape, output_channels, precision, threads
        As in :func:`convert_and_check`.

    Returns
    -------
    tuple of (dict, bytes or None)
        :func:`convert_and_check`'s report plus ``"converted_in"`` (``"a separate process"`` or
        ``"this process"``), and the compiled model's bytes only when the cache could not store them (the
        report's ``"store_error"`` says why); None when the entry is in the cache.

    Raises
    ------
    ConversionFailed
        The helper's conversion raised (its exception type and first line) or the helper crashed.
    Exception
        Whatever the conversion raises when it runs in this process.
    """
    from ..networks.registry import openvino_conversion

    request = {"key": key, "cache_root": str(cache_root), "input_shape": [int(s) for s in input_shape],
               "output_channels": None if output_channels is None else [int(c) for c in output_channels],
               "precision": precision, "threads": int(threads)}
    if openvino_conversion(net) == "any size":
        try:
            return _convert_in_helper(net, request)
        except _NotTransferable as exc:
            log.info("OpenVINO: converting in this process (the helper process could not take the network: %s)",
                     exc)
    compiled, report = convert_and_check(net, input_shape, output_channels, precision, threads)
    report["converted_in"] = "this process"
    return _store(compiled, report, request)


def _convert_in_helper(net, request: dict) -> tuple[dict, Optional[bytes]]:
    # The helper imports what this process can: the same sys.path (a test's or a notebook's additions included).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with tempfile.TemporaryDirectory(prefix="suprem_nn_convert_") as tmp, \
            tempfile.TemporaryFile() as stderr:  # a file: the helper may write more than a pipe holds
        try:
            proc = subprocess.Popen([sys.executable, "-m", __name__, tmp], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        except OSError as exc:  # no runnable interpreter at sys.executable (some embedding applications)
            raise _NotTransferable(first_line(exc)) from exc
        try:
            # Streamed, not pickled to bytes first: no second copy of the weights here (250 MB for Swin UNETR).
            pickle.dump((net, request), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.close()
        except BrokenPipeError:  # the helper died while reading; its exit code says how
            pass
        except Exception as exc:  # noqa: BLE001 - pickling fails with many exception types
            proc.kill()
            proc.wait()
            raise _NotTransferable(first_line(exc)) from exc
        proc.wait()
        release_free_heap()  # pickling made a transient copy of each tensor
        result_path = Path(tmp) / _RESULT
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        if result is None or proc.returncode != 0:
            if result is not None and result.get("stage") == "load":
                raise _NotTransferable(result["error"])
            stderr.seek(0)
            said = stderr.read().decode(errors="replace")
            if result is None and not (Path(tmp) / _RECEIVED).exists():
                # It never got the network: this interpreter cannot start helpers (an embedding application's
                # sys.executable, say), which is no reason to give up OpenVINO.
                raise _NotTransferable(_crash_message(proc.returncode, said))
            if result is not None and "error" in result:
                raise ConversionFailed(result["error"], kind=result.get("kind"))
            raise ConversionFailed(_crash_message(proc.returncode, said))
        blob = (Path(tmp) / _BLOB).read_bytes() if not result["stored"] else None
    return result["report"], blob


def _crash_message(code: int, stderr: str) -> str:
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
        else f"exited with code {code}"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # faulthandler's "Fatal Python error: Segmentation fault" comes before its stack dump
    said = [line for line in lines if line.startswith("Fatal Python error")] or lines[-1:]
    return f"the conversion process {how} without a result" + (f"; it said: {said[0][:200]}" if said else "")


def _store(compiled, report: dict, request: dict) -> tuple[dict, Optional[bytes]]:
    """Export ``compiled`` into the cache; ``(report, None)``, or ``(report with "store_error", bytes)``."""
    from . import engine_cache as cache
    from .openvino_engine import export_compiled

    blob = export_compiled(compiled)
    del compiled
    try:
        cache.write_entry(request["key"], blob, Path(request["cache_root"]))
    except OSError as exc:  # a read-only or full disk costs the next run a conversion, not this one
        report["store_error"] = str(exc.strerror or exc)
        return report, blob
    return report, None


def convert_and_check(net, input_shape, output_channels, precision, threads) -> tuple[object, dict]:
    """``(compiled model, report)``: ``net`` (only ``output_channels`` if given) converted, its f32 logits checked
    against torch's on one sample window, compiled for ``input_shape`` at ``precision``.

    SuPreM's U-Net, SegResNet and MedNeXt are exported for any window size up to ``input_shape`` without running
    them (:func:`~suprem_nn.inference.openvino_engine.convert_network_exported`) and checked on the smallest
    window of that range, so no float32 torch pass over a full window happens: for the U-Net at 96³ that pass
    alone peaked at 2.4 GB, above a whole bfloat16 torch prediction. Swin UNETR is exported at the window and
    checked there (torch's reference pass is the only one). Other networks (nnU-Net's), and any that the export
    cannot handle, are traced at the window and checked there
    (:func:`~suprem_nn.networks.registry.openvino_conversion`).

    Parameters
    ----------
    net : torch.nn.Module
        The CPU network.
    input_shape : sequence of int
        ``(1, C, X, Y, Z)``, the window the prediction runs.
    output_channels : sequence of int, optional
        Only these output channels (None: all).
    precision : str
        ``"f32"`` or ``"bf16"``, the compiled model's inference precision.
    threads : int
        Inference threads.

    Returns
    -------
    tuple of (openvino.CompiledModel, dict)
        The report: ``"conversion"`` (how), ``"check_window"``, ``"check_max_abs_diff"`` and, when the
        export failed and the network was traced instead, ``"export_error"``.

    Raises
    ------
    RuntimeError
        When the converted model's logits differ from torch's by more than :data:`CHECK_TOLERANCE`.
    """
    from ..networks.registry import openvino_conversion
    from .openvino_engine import OpenVINONetwork, compile_model, convert_network, convert_network_exported

    full = [int(s) for s in input_shape]
    model, check_shape, report = None, full, {"conversion": "traced at the window"}
    method = openvino_conversion(net)
    if method != "trace":
        try:
            model, check_shape = convert_network_exported(net, full, output_channels, any_size=method == "any size")
            report["conversion"] = "exported for any window size" if check_shape != full else "exported at the window"
        except Exception as exc:  # noqa: BLE001 - torch.export and the converter raise many kinds; trace instead
            report["export_error"] = first_line(exc)
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
    # What the torch pass freed stays resident otherwise (utils/heap.py), under the trace's own pass: Swin
    # UNETR's trace at 96³ peaked at 2.7 GB on top of 0.57 GB so kept.
    release_free_heap()
    if model is None:
        model = convert_network(net, full, output_channels)  # tracing runs the network once more in torch
        release_free_heap()
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
    report.update({"check_window": check_shape[2:], "check_max_abs_diff": float(f"{diff:.3g}")})
    if precision == "f32" and check_shape == full:
        return checked, report
    # The check model holds its own weights and activation buffers: free it before the final one is built,
    # so a first run's peak memory is not the sum of both.
    del checked, check_network
    model.reshape({0: full})
    return compile_model(model, precision, threads), report


def _helper_main(result_dir: str) -> int:
    """The helper process: read ``(network, request)`` from stdin, convert, store, write ``result.json``."""
    import faulthandler

    faulthandler.enable()  # a native crash leaves a line on stderr for the parent's message
    out = Path(result_dir)
    try:
        net, request = pickle.load(sys.stdin.buffer)
    except Exception as exc:  # noqa: BLE001 - e.g. the network's class lives in the parent's __main__
        atomic_write_json(out / _RESULT, {"stage": "load", "error": first_line(exc)})
        return 1
    (out / _RECEIVED).touch()  # from here on a missing result means the conversion itself died
    try:
        torch.set_num_threads(request["threads"])
        compiled, report = convert_and_check(net, request["input_shape"], request["output_channels"],
                                             request["precision"], request["threads"])
        report["converted_in"] = "a separate process"
        report, blob = _store(compiled, report, request)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides (fallback or error)
        atomic_write_json(out / _RESULT, {"stage": "convert", "kind": type(exc).__name__,
                                          "error": _one_line(str(exc))})
        return 1
    if blob is not None:
        atomic_write_bytes(out / _BLOB, blob)
    atomic_write_json(out / _RESULT, {"stored": blob is None, "report": report})
    return 0


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1]))
