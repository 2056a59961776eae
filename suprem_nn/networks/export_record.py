"""The JSON record beside an exported backbone (``FILE.pth`` -> ``FILE.json``) and its one-line description.

Written by :func:`suprem_nn.networks.release_layout.write_backbone_export`; read here so that the load
report of an exported file can say where its backbone comes from.  The record is bound to its weights file
by the file's SHA-256.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

__all__ = ["EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "sidecar_path", "file_sha256", "describe_export"]

EXPORT_FORMAT = "suprem_nn backbone export"
EXPORT_FORMAT_VERSION = 1


def sidecar_path(weights_path) -> Path:
    """``FILE.pth`` -> ``FILE.json`` (the record that describes an exported backbone)."""
    return Path(weights_path).with_suffix(".json")


def file_sha256(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_export(path) -> Optional[str]:
    """One line on where an exported backbone comes from, read from ``FILE.json`` beside it; None if absent.

    The record is trusted only if its SHA-256 matches the weights file; otherwise the line says so.
    """
    sidecar = sidecar_path(path)
    if sidecar == Path(path) or not sidecar.is_file():
        return None
    try:
        rec = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{sidecar.name} beside the file is unreadable ({type(exc).__name__}); origin unknown"
    if not isinstance(rec, dict) or rec.get("format") != EXPORT_FORMAT:
        return None
    if rec.get("weights_sha256") != file_sha256(path):
        return f"{sidecar.name} beside the file describes another file (SHA-256 differs); origin unknown"
    train = rec.get("training") if isinstance(rec.get("training"), dict) else {}
    conv = rec.get("input_conventions") if isinstance(rec.get("input_conventions"), dict) else {}
    classes = rec.get("classes") if isinstance(rec.get("classes"), list) else []
    names = ", ".join(map(str, classes[:3])) + (", ..." if len(classes) > 3 else "")
    spacing = conv.get("spacing_mm")
    spacing_text = " x ".join(f"{s:g}" for s in spacing) + " mm" if isinstance(spacing, list) else "spacing unknown"
    n = train.get("num_train_cases")
    cases = f"{n} training cases" if isinstance(n, int) else "training cases not recorded"
    return (f"suprem_nn backbone export: {train.get('dataset', '?')}, plan {train.get('plan', '?')}, fold "
            f"{train.get('fold', '?')} ({cases}), {train.get('epochs_completed', '?')} epochs trained; "
            f"{len(classes)} classes ({names}); {spacing_text}; record {sidecar.name}")
