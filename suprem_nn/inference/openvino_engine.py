"""The OpenVINO engine: one network converted for one fixed window shape, called like the torch module.

:class:`OpenVINONetwork` takes ``(B, C, *patch)`` float32 windows and returns ``(B, K, *patch)`` float32
logits, so :func:`suprem_nn.inference.sliding_window_predict` drives it exactly as it drives the torch network;
only the network pass changes. It is compiled for one window (batch 1) and runs batch members one by one,
which is what the CPU predictor feeds it anyway, and what batch-statistics networks need.

Conversion traces the eval-mode torch module with ``openvino.convert_model`` at the fixed input shape.
SuPreM's U-Net normalises with the statistics of the window in eval mode (``BatchStatsBatchNorm3d`` calls
``batch_norm(training=True)``); the trace records that call as it is, so the converted model keeps the
behaviour. The fixed shape also makes Swin UNETR's window partition trace to static reshapes.

OpenVINO's usage telemetry is switched off before OpenVINO is imported (:func:`import_openvino`).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import mmap
import sys
import threading
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from ..utils.heap import release_free_heap

__all__ = ["import_openvino", "openvino_core", "openvino_version", "SelectedOutputs", "convert_network_exported",
           "convert_network", "compile_model", "import_compiled",
           "export_compiled", "compiled_precision", "OpenVINONetwork", "PRECISIONS"]

# suprem_nn precision name -> OpenVINO INFERENCE_PRECISION_HINT
PRECISIONS = {"f32": "f32", "bf16": "bf16"}
# OpenVINO's model-conversion modules that send usage events through a module-level ``tm``.
_TELEMETRY_USERS = ("openvino.tools.ovc.main", "openvino.tools.ovc.convert_impl", "openvino.tools.ovc.telemetry_utils",
                    "openvino.tools.ovc.utils")


def import_openvino():
    """The ``openvino`` module, with its usage telemetry off; raises ImportError when it is not installed.

    ``openvino.convert_model`` sends usage events unless a consent file in the user's home says no. Making the
    ``openvino_telemetry`` package unimportable in this process turns every sender into OpenVINO's own no-op
    stub (its fallback when the package is absent), without writing anything into the user's home.
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # an import of it now raises ImportError
    import openvino

    _silence_loaded_telemetry()
    return openvino


def _silence_loaded_telemetry() -> None:
    """Point the conversion modules at the no-op stub, also when openvino_telemetry was imported before us."""
    try:
        stub = importlib.import_module("openvino.tools.ovc.telemetry_stub")
        for name in _TELEMETRY_USERS:
            module = importlib.import_module(name)
            if getattr(module, "tm", stub) is not stub:
                module.tm = stub
    except ImportError:  # an OpenVINO without the conversion tools sends nothing from them either
        pass


_core = None
_core_lock = threading.Lock()


def openvino_core():
    """The process's one ``openvino.Core``, made on first use and kept until the process exits.

    Each Core makes its own CPU plugin instance, and on Linux each instance gives the thread that made it a new
    alternate signal stack (room for AMX's larger signal frames) and, when destroyed, puts back the stack it found.
    Instances destroyed in any order but the reverse of their creation (two predictions' models dropped
    first-made first) leave the thread on a stack that is already unmapped; the next signal with a Python handler
    (Ctrl-C, the SIGCHLD of a training DataLoader's worker) then kills the process with SIGSEGV. One Core makes
    one plugin instance, which lives as long as the process.
    """
    global _core
    with _core_lock:
        if _core is None:
            _core = import_openvino().Core()
        return _core


def openvino_version() -> str:
    """The installed OpenVINO runtime version (part of the cache key)."""
    return import_openvino().get_version()


class SelectedOutputs(nn.Module):
    """``network`` returning only the output channels ``channels`` (in that order).

    Converted in place of the network when a prediction keeps a subset of the classes (SuPreM's direct recipe
    keeps 9 of 32): the compiled model then computes and holds an output buffer of only those channels, 32 MB
    instead of 113 MB per 96³ window in float32.
    """

    def __init__(self, network: nn.Module, channels: Sequence[int]):
        super().__init__()
        self.network = network
        self.register_buffer("channels", torch.as_tensor([int(c) for c in channels], dtype=torch.long),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, len(channels), *patch)`` logits."""
        return self.network(x).index_select(1, self.channels)


# Largest power of two a window axis is split into for a size-generic export (networks halve an axis at most
# five times); each axis may then be any multiple of it from two up to the window's size.
_MAX_AXIS_STEP = 32


def convert_network_exported(network: nn.Module, input_shape: Sequence[int],
                             output_channels: Optional[Sequence[int]] = None, any_size: bool = True):
    """``(openvino.Model, small_shape)``: ``network`` exported for windows of any size up to ``input_shape``, or
    (``any_size=False``) for exactly ``input_shape``, where ``small_shape`` is ``input_shape``.

    ``torch.export`` records the network on symbolic shapes without running it, so unlike tracing
    (:func:`convert_network`) no window's activations are allocated: a float32 pass of SuPreM's U-Net at 96³
    needs about 2 GB, more than a whole bfloat16 prediction with it. The export is sound for every size in the
    declared range, or it raises: each spatial axis ``a`` may be ``k * step_a`` for ``k`` from 2 to
    ``input_shape[a] / step_a``, where ``step_a`` is the largest power of two (at most 32) dividing the window
    axis. ``small_shape`` is the smallest window of that range, where the caller checks the converted model
    against torch cheaply before reshaping it to the full window.

    Parameters
    ----------
    network : torch.nn.Module
        Exported in eval mode; its train/eval mode is restored afterwards.
    input_shape : sequence of int
        ``(1, C, X, Y, Z)``, the window the prediction runs.
    output_channels : sequence of int, optional
        As in :func:`convert_network`.
    any_size : bool
        False: static shapes, the window only. For networks whose shape arithmetic is slow to export
        symbolically (Swin UNETR: 185 s), still without running them (5 s).

    Raises
    ------
    Exception
        Whatever ``torch.export`` or the converter raises for a network they cannot handle;
        :func:`convert_network` then traces it at the fixed window.
    """
    from torch.export import Dim, export

    ov = import_openvino()
    shape = [int(s) for s in input_shape]
    dims, small = {}, list(shape)
    for axis in (2, 3, 4) if any_size else ():
        step = shape[axis] & -shape[axis]  # the largest power of two dividing it
        step = min(step, _MAX_AXIS_STEP)
        if shape[axis] // step >= 3:  # at least two sizes to choose from, else the axis stays fixed
            dims[axis] = step * Dim(f"k{axis}", min=2, max=shape[axis] // step)
            small[axis] = 2 * step
    with _converting(network, output_channels) as converted:
        program = export(converted, (_example(shape),), dynamic_shapes=(dims or None,))
        return ov.convert_model(program), small


def convert_network(network: nn.Module, input_shape: Sequence[int], output_channels: Optional[Sequence[int]] = None):
    """``openvino.Model`` of the eval-mode ``network`` for windows of exactly ``input_shape`` = (1, C, *patch).

    Parameters
    ----------
    network : torch.nn.Module
        Traced in eval mode on a fixed random float32 input; its train/eval mode is restored afterwards.
    input_shape : sequence of int
        ``(1, C, X, Y, Z)`` window shape in voxels; the converted model has this static input shape.
    output_channels : sequence of int, optional
        Only these output channels, in this order (:class:`SelectedOutputs`); None: all of them.

    Returns
    -------
    openvino.Model
    """
    ov = import_openvino()
    shape = [int(s) for s in input_shape]
    with _converting(network, output_channels) as traced:
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

        # check_trace=False: torch's trace check re-runs the network twice and compares (two thirds of the
        # conversion time); the engine checks the converted model's logits against torch's instead.
        try:
            decoder = TorchScriptPythonDecoder(traced, example_input=_example(shape),
                                               trace_kwargs={"check_trace": False})
        except TypeError:  # an OpenVINO from before trace_kwargs: its default trace, check included
            decoder = TorchScriptPythonDecoder(traced, example_input=_example(shape))
        return ov.convert_model(decoder, input=[tuple(shape)])


@contextlib.contextmanager
def _converting(network: nn.Module, output_channels: Optional[Sequence[int]]):
    """The module to convert: ``network`` in eval mode (restored afterwards), only ``output_channels`` if given,
    with gradients and the converters' warnings off (they warn about every Python-level shape check), and the
    process's logging as it was."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), _root_logging_kept():
            warnings.simplefilter("ignore")
            yield network if output_channels is None else SelectedOutputs(network, output_channels).eval()
    finally:
        network.train(was_training)


@contextlib.contextmanager
def _root_logging_kept():
    """Undo what OpenVINO's converter does to the root logger when a conversion fails (OpenVINO 2026.4: level
    ERROR and a stderr handler added), which silenced every later warning of the process, the fallback's own
    "using the torch engine instead" included."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)


def _example(shape: Sequence[int]) -> torch.Tensor:
    # A fixed normal sample: conversion only records operations, but degenerate inputs (all zeros) could make a
    # data-dependent branch, if a network had one, take an unusual path while tracing.
    return torch.randn(list(shape), generator=torch.Generator().manual_seed(0))


def _config(precision: str, threads: int) -> dict:
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
            # the thread count torch was given (OMP_NUM_THREADS, torch.set_num_threads) also bounds OpenVINO
            "INFERENCE_NUM_THREADS": max(1, int(threads))}


def compile_model(model, precision: str, threads: int):
    """An ``openvino.CompiledModel`` of ``model`` on the CPU at ``precision`` ("f32" or "bf16").

    Parameters
    ----------
    model : openvino.Model
        From :func:`convert_network`.
    precision : str
        ``"f32"`` or ``"bf16"`` (OpenVINO's inference precision hint).
    threads : int
        Inference threads (at least 1).
    """
    return openvino_core().compile_model(model, "CPU", _config(precision, threads))


def import_compiled(blob, precision: str, threads: int):
    """A compiled model back from what ``CompiledModel.export_model()`` wrote.

    Parameters
    ----------
    blob : bytes or mmap.mmap
        The exported model (an engine-cache entry). A writable memory map (copy-on-write, as
        :func:`~suprem_nn.inference.engine_cache.read_entry` gives) is imported without a copy: the compiled
        model then refers to it, so keep it alive as long as the model (:class:`OpenVINONetwork` does).
    precision, threads
        As in :func:`compile_model`.
    """
    import io

    import numpy as np

    ov = import_openvino()
    if isinstance(blob, mmap.mmap):
        source = ov.Tensor(np.frombuffer(blob, dtype=np.uint8), shared_memory=True)
    else:
        source = io.BytesIO(blob)
    return openvino_core().import_model(source, "CPU", _config(precision, threads))


def export_compiled(compiled) -> bytes:
    """The bytes :func:`import_compiled` reads back (``export_model`` gives a BytesIO in recent versions)."""
    blob = compiled.export_model()
    return blob if isinstance(blob, bytes) else blob.getvalue()


def compiled_precision(compiled) -> str:
    """The precision the CPU plugin actually runs (it keeps f32 where the CPU lacks bf16)."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return "unknown"
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value).lower()


class OpenVINONetwork(nn.Module):
    """A compiled OpenVINO model behind the call signature of the torch network it came from.

    Args:
        compiled: ``openvino.CompiledModel`` for one ``(1, C, *patch)`` float32 window.
        input_shape: that window shape.
        uses_batch_statistics: copied from the torch network, so the sliding window keeps one window per call.
        precision: what the compiled model runs in ("f32" / "bf16"), for reports.
        blob: the memory-mapped cache entry ``compiled`` was imported from without a copy (kept alive here);
            None when it was compiled in this process or imported from bytes.
        output_channels: the network's output channels ``compiled`` returns, when it was converted for a subset
            (:class:`SelectedOutputs`); None when it returns all of them.
    """

    def __init__(self, compiled, input_shape: Sequence[int], uses_batch_statistics: bool, precision: str,
                 blob: Optional[mmap.mmap] = None, output_channels: Optional[Sequence[int]] = None):
        super().__init__()
        self.compiled = compiled
        self.blob = blob
        self.output_channels = None if output_channels is None else [int(c) for c in output_channels]
        self.request = None  # made by the first call after construction or release_buffers
        port = compiled.outputs[0]  # read once: every window's output tensor has this shape and dtype
        self._output_shape = list(port.get_shape())
        self._output_dtype = port.get_element_type().to_dtype()
        self._tensor = import_openvino().Tensor
        self.input_shape = tuple(int(s) for s in input_shape)
        self.uses_batch_statistics = bool(uses_batch_statistics)
        self.precision = precision

    # The sliding window passes the output channels it keeps (see sliding_window._tta_logits).
    selects_channels = True

    def forward(self, x: torch.Tensor, keep_channels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits of (B, C, *patch) windows, run one window at a time.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, X, Y, Z) windows of the compiled shape (B free); sent to the CPU as float32.
        keep_channels : torch.Tensor, optional
            int64 indices of the output channels to return (default: all). A model converted for a subset
            (``output_channels``) computes only those and needs exactly them here.

        Returns
        -------
        torch.Tensor
            float CPU tensor (B, K, X, Y, Z) of raw logits (K = len(keep_channels) if given), in the compiled
            model's output dtype; a new tensor per call (the next call does not change it).

        Raises
        ------
        ValueError
            If the window shape differs from the compiled one, or the model was converted for other channels.
        """
        if x.dim() != len(self.input_shape) or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"this OpenVINO model was compiled for windows of shape {self.input_shape[1:]}, "
                             f"got {tuple(x.shape)}")
        if self.output_channels is not None:
            asked = None if keep_channels is None else [int(c) for c in keep_channels]
            if asked != self.output_channels:
                raise ValueError(f"this OpenVINO model was converted for output channels {self.output_channels}"
                                 f", not {'all' if asked is None else asked}")
            keep_channels = None  # the compiled output holds exactly these
        if self.request is None:
            self.request = self.compiled.create_infer_request()
        outputs = []
        for window in x.split(1):
            array = window.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
            logits = self._infer_into_new_tensor(array)
            outputs.append(logits if keep_channels is None else logits.index_select(1, keep_channels.cpu()))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _infer_into_new_tensor(self, array) -> torch.Tensor:
        """One window's logits, written by OpenVINO straight into a new tensor.

        The sliding window keeps each window's logits (e.g. across mirror flips), so they cannot live in a buffer
        the next call reuses; the other way, copying them out of the request's own output buffer, costs 17 ms of a
        0.22 s SegResNet window and keeps that buffer allocated between calls. The request refers to the new
        tensor until the next call sets the next one, and never writes it again.
        """
        import numpy as np

        out = np.empty(self._output_shape, dtype=self._output_dtype)
        self.request.set_output_tensor(0, self._tensor(out, shared_memory=True))
        self.request.infer({0: array}, share_inputs=True, share_outputs=True)
        return torch.from_numpy(out)

    def release_buffers(self) -> None:
        """Give back what a pass needs and the next one rebuilds; the compiled weights stay.

        Released, each measured for nnU-Net's 32 x 112 x 128 PlainConvUNet (f32) and SuPreM's SegResNet at 96³
        (bf16), ``benchmarks/bench_engine_memory.py``:

        * the activation buffers the compiled model planned once and keeps between calls (224 / 111 MB);
        * the infer request with its output buffer (25 / 108 MB);
        * the resident pages of the memory-mapped cache entry: the CPU plugin repacked the weights from it on
          import (about the entry's size: 58 MB for the PlainConvUNet); they are read again from the file
          should OpenVINO need them.

        :func:`~suprem_nn.inference.sliding_window_predict` calls this at the end of each volume's pass, so a
        case's export, the next case's reading and the other folds' passes do not carry them. The next call
        allocates them again (0.05-0.3 s).
        """
        release = getattr(self.compiled, "release_memory", None)  # older OpenVINO releases lack it
        if release is not None:
            release()
        self.request = None
        if self.blob is not None:
            # The mapping is private and OpenVINO only reads it, so dropped pages come back unchanged from the file.
            self.blob.madvise(mmap.MADV_DONTNEED)
        # The buffers are malloc'ed: once the process has freed large blocks, glibc keeps such memory in its
        # heap instead of unmapping it (suprem_nn/utils/heap.py).
        release_free_heap()

    def extra_repr(self) -> str:
        """``input_shape=..., precision=...`` for the module's repr."""
        channels = "" if self.output_channels is None else f", output_channels={self.output_channels}"
        return f"input_shape={self.input_shape}, precision={self.precision}{channels}"
