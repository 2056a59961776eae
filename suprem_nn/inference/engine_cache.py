"""On-disk cache of compiled engine models, so that only the first run with a network pays for its conversion.

One entry per network weights + code, window shape, output channels, precision, library versions and CPU:
``<key>.blob`` (the compiled model's bytes) and ``<key>.json`` (what went into the key, the blob's size and
SHA-256). The JSON is written last, after the blob, both atomically (:mod:`suprem_nn.utils.atomic`), so an
entry whose JSON exists is complete. A blob that is missing, truncated or altered fails the size/SHA-256 check
and is rebuilt; an entry made by another library version or CPU has another key and is never read.

Location: ``$SUPREM_ENGINE_CACHE`` if set, else ``~/suprem_nn_data/engine_cache``.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import mmap
import os
import platform
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from .. import __version__ as suprem_version
from ..utils.atomic import atomic_write_bytes, atomic_write_json, remove_stale_temporaries

__all__ = ["engine_cache_root", "network_fingerprint", "cache_key", "read_entry", "write_entry"]

ENV = "SUPREM_ENGINE_CACHE"
FORMAT = 1  # bump when the entry layout changes


def engine_cache_root() -> Path:
    """``$SUPREM_ENGINE_CACHE`` or ``~/suprem_nn_data/engine_cache``."""
    value = os.environ.get(ENV)
    return Path(value).expanduser() if value else Path("~/suprem_nn_data/engine_cache").expanduser()


def network_fingerprint(network: nn.Module) -> str:
    """SHA-256 of a network's weights and buffers (names, dtypes, shapes, bytes), its module structure and the
    source files of its module classes, so changed weights or changed network code never reuse an entry."""
    h = hashlib.sha256()
    h.update(repr(network).encode())
    for name, t in network.state_dict().items():
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        t = t.detach().cpu().contiguous().reshape(-1)  # flat: 0-d buffers (num_batches_tracked) cannot be viewed
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    for path in sorted({_source_file(type(m)) for m in network.modules()} - {None}):
        h.update(path.encode())
        h.update(_file_digest(path).encode())
    return h.hexdigest()


def _source_file(cls) -> Optional[str]:
    try:
        return inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None


@functools.lru_cache(maxsize=None)
def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


@functools.lru_cache(maxsize=1)
def cpu_identity() -> str:
    """The CPU model and its instruction-set flags: compiled kernels are chosen for them."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not flags:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}|{hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def cache_key(fingerprint: str, input_shape: Sequence[int], precision: str, engine_version: str,
              output_channels: Optional[Sequence[int]] = None) -> dict:
    """Everything an entry depends on; :func:`key_name` hashes it into the file name.

    Parameters
    ----------
    fingerprint : str
        :func:`network_fingerprint` of the network (weights, structure and code).
    input_shape : sequence of int
        The compiled window shape ``(1, C, X, Y, Z)`` in voxels.
    precision : str
        Inference precision, e.g. ``"f32"`` or ``"bf16"``.
    engine_version : str
        Version of the engine that compiled the entry.
    output_channels : sequence of int, optional
        The network's output channels the compiled model returns (None: all of them).

    Returns
    -------
    dict
        These plus the cache format, torch and suprem_nn versions and :func:`cpu_identity`.
    """
    return {"format": FORMAT, "network": fingerprint, "input_shape": [int(s) for s in input_shape],
            "precision": precision, "engine_version": engine_version,
            "output_channels": None if output_channels is None else [int(c) for c in output_channels],
            "torch": torch.__version__,
            "suprem_nn": suprem_version, "cpu": cpu_identity()}


def key_name(key: dict) -> str:
    """Entry file name of a :func:`cache_key` dict: the first 32 hex digits of the SHA-256 of its sorted-key JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def read_entry(key: dict, root: Optional[Path] = None) -> tuple[Optional[mmap.mmap], str]:
    """``(blob, "hit")`` for a complete, intact entry; ``(None, "miss")`` when there is none; ``(None,
    "corrupt")`` when one exists but fails its checks (the caller rebuilds it).

    The blob comes back memory-mapped copy-on-write, not read into memory: the compiled model refers to it
    instead of holding a copy, and its pages can be dropped once the CPU plugin has repacked the weights
    (:meth:`~suprem_nn.inference.openvino_engine.OpenVINONetwork.release_buffers`). Entries are only ever
    replaced by a rename, so a mapped blob never changes under a running prediction.
    """
    root = engine_cache_root() if root is None else Path(root)
    name = key_name(key)
    meta_path, blob_path = root / f"{name}.json", root / f"{name}.blob"
    if not meta_path.is_file():
        return None, "miss"
    try:
        meta = json.loads(meta_path.read_text())
        with open(blob_path, "rb") as f:
            blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):  # ValueError: an empty blob cannot be mapped
        return None, "corrupt"
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("bytes") != len(blob) \
            or meta.get("sha256") != hashlib.sha256(blob).hexdigest():
        blob.close()
        return None, "corrupt"
    return blob, "hit"


def write_entry(key: dict, blob: bytes, root: Optional[Path] = None) -> Path:
    """Store ``blob`` under ``key`` (blob first, then its JSON); returns the blob's path.

    Parameters
    ----------
    key : dict
        From :func:`cache_key`.
    blob : bytes
        The compiled model.
    root : Path, optional
        Cache folder (created if needed); default :func:`engine_cache_root`.

    Returns
    -------
    Path
        ``<root>/<key_name>.blob``; ``<key_name>.json`` beside it records the key, size and SHA-256.
    """
    root = engine_cache_root() if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    name = key_name(key)
    atomic_write_bytes(root / f"{name}.blob", blob)
    atomic_write_json(root / f"{name}.json", {"key": key, "bytes": len(blob),
                                              "sha256": hashlib.sha256(blob).hexdigest()})
    return root / f"{name}.blob"


def entry_path(key: dict, root: Optional[Path] = None) -> Path:
    """Where the blob of ``key`` lives (whether or not it exists)."""
    root = engine_cache_root() if root is None else Path(root)
    return root / f"{key_name(key)}.blob"
