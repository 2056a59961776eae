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

__all__ = ["EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "sidecar_path", "file_sha256", "describe_export",
           "conventions_mismatch"]

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


def _load_record(path) -> tuple[Optional[dict], Optional[str]]:
    """(record, None) when ``FILE.json`` beside ``path`` is an export record of this very file;
    (None, why) when one is there but unusable; (None, None) when there is none."""
    sidecar = sidecar_path(path)
    if sidecar == Path(path) or not sidecar.is_file():
        return None, None
    try:
        rec = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{sidecar.name} beside the file is unreadable ({type(exc).__name__}); origin unknown"
    if not isinstance(rec, dict) or rec.get("format") != EXPORT_FORMAT:
        return None, None
    if rec.get("weights_sha256") != file_sha256(path):
        return None, f"{sidecar.name} beside the file describes another file (SHA-256 differs); origin unknown"
    return rec, None


def _section(rec: dict, name: str) -> dict:
    return rec.get(name) if isinstance(rec.get(name), dict) else {}


def _spacing_text(spacing) -> str:
    return " x ".join(f"{s:g}" for s in spacing) + " mm" if isinstance(spacing, list) else "spacing unknown"


def describe_export(path) -> Optional[str]:
    """One line on where an exported backbone comes from, read from ``FILE.json`` beside it; None if absent.

    The record is trusted only if its SHA-256 matches the weights file; otherwise the line says so.
    """
    rec, problem = _load_record(path)
    if rec is None:
        return problem
    train, conv = _section(rec, "training"), _section(rec, "input_conventions")
    classes = rec.get("classes") if isinstance(rec.get("classes"), list) else []
    names = ", ".join(map(str, classes[:3])) + (", ..." if len(classes) > 3 else "")
    n = train.get("num_train_cases")
    cases = f"{n} training cases" if isinstance(n, int) else "training cases not recorded"
    return (f"suprem_nn backbone export: {train.get('dataset', '?')}, plan {train.get('plan', '?')}, fold "
            f"{train.get('fold', '?')} ({cases}), {train.get('epochs_completed', '?')} epochs trained; "
            f"{len(classes)} classes ({names}); {_spacing_text(conv.get('spacing_mm'))}; "
            f"record {sidecar_path(path).name}")


def conventions_mismatch(path, spacing_mm, normalization: list[dict]) -> Optional[str]:
    """Why the input conventions a backbone was exported with differ from a plan's, or None.

    ``spacing_mm``: the plan's target spacing; ``normalization``: its per-channel normalisation dicts
    (scheme, lower, upper; HU for CT windows); channel 0 (the CT) is compared.  None also when the file has
    no trusted export record.
    """
    rec, _ = _load_record(path)
    if rec is None:
        return None
    conv = _section(rec, "input_conventions")
    theirs, ours = conv.get("spacing_mm"), [float(v) for v in spacing_mm]
    differences = []
    if not isinstance(theirs, list) or len(theirs) != 3 or any(abs(float(a) - b) > 1e-6 for a, b in zip(theirs, ours)):
        differences.append(f"spacing {_spacing_text(theirs)} vs {_spacing_text(ours)}")

    def window(n: dict) -> tuple:
        return n.get("scheme"), n.get("lower"), n.get("upper")

    their_norm = conv.get("normalization") if isinstance(conv.get("normalization"), list) else []
    if [window(n) for n in their_norm if isinstance(n, dict)][:1] != [window(n) for n in normalization][:1]:
        differences.append(f"normalisation {list(map(window, their_norm[:1]))} vs "
                           f"{list(map(window, normalization[:1]))}")
    if not differences:
        return None
    return (f"the backbone in {Path(path).name} was trained at other input conventions than this plan's "
            f"({'; '.join(differences)}), so its features may transfer poorly; plan this dataset at the "
            f"conventions in {sidecar_path(path).name} (e.g. --spacing) to match")
