"""The written and printed forms of an evaluation summary: the CSV, NaN-free JSON and the console table."""
from __future__ import annotations

import csv
import io
import math

import numpy as np

CSV_COLUMNS = ["case", "class", "label", "prediction_label", "dice", "iou", "nsd", "nsd_1voxel", "tp_voxels",
               "reference_voxels", "prediction_voxels", "reference_ml", "prediction_ml"]


def format_table(summary: dict) -> str:
    """Readable table of an evaluation summary.

    Parameters
    ----------
    summary : dict
        The ``summary.json`` dict.

    Returns
    -------
    str
        Per-class mean Dice / NSD (at the tolerance and at one voxel) / IoU and the foreground mean, then a line
        on what the NSD tolerance (mm) means on these voxels and one per flagged class.
    """
    settings = summary["settings"]
    tol = settings["nsd_tolerance_mm"]
    voxel = settings.get("nsd_1voxel_tolerance_mm") or []
    voxel_head = "NSD@1vox" + (f"({voxel[0]:g}mm)" if len(voxel) == 1 else "")
    rows = [("class", "cases", "Dice", f"NSD@{tol:g}mm", voxel_head, "IoU", "both empty")]
    flags = [""]
    for name, m in summary["mean"].items():
        rows.append((name, str(m["n_cases"]), _fmt(m["dice"]), _fmt(m["nsd"]), _fmt(m.get("nsd_1voxel")),
                     _fmt(m["iou"]), str(m["n_excluded_both_empty"])))
        flags.append("  <- absent everywhere" if m.get("absent_everywhere") else "")
    fg = summary["foreground_mean"]
    rows.append(("foreground mean", str(summary["num_cases"]), _fmt(fg["dice"]), _fmt(fg["nsd"]),
                 _fmt(fg.get("nsd_1voxel")), _fmt(fg["iou"]), ""))
    flags.append("")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r)))
                     + flags[n])
        if n == 0 or n == len(rows) - 2:
            lines.append("-" * len(lines[0]))
    if settings.get("nsd_note"):
        lines.append(settings["nsd_note"])
    if summary.get("absent_classes"):
        lines.append(f"{len(summary['absent_classes'])} class(es) have no voxel in any case, reference or prediction "
                     f"(absent everywhere): {', '.join(summary['absent_classes'])}; check their label values")
    return "\n".join(lines)


def csv_text(summary: dict) -> str:
    """The ``metrics.csv`` text of an evaluation summary.

    Parameters
    ----------
    summary : dict
        The ``summary.json`` dict.

    Returns
    -------
    str
        One row per case and class (:data:`CSV_COLUMNS`), NaN as an empty field.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for case, r in summary["cases"].items():
        for name, c in r["classes"].items():
            w.writerow([case, name, _label(c["label"]), _label(c.get("prediction_label")),
                        _csv_num(c["dice"]), _csv_num(c["iou"]), _csv_num(c["nsd"]), _csv_num(c["nsd_1voxel"]),
                        c["tp"], c["n_ref"], c["n_pred"], f"{c['reference_ml']:.6g}", f"{c['prediction_ml']:.6g}"])
    return buf.getvalue()


def _label(value) -> str:
    """A label value for the CSV: ``6``, a region ``2+3``, or empty for an AbdomenAtlas mask (no value)."""
    if value is None:
        return ""
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def json_safe(obj):
    """``obj`` with every NaN float replaced by None (JSON has no NaN), inside dicts, lists and tuples too.

    Parameters
    ----------
    obj : object
        A JSON-like value.

    Returns
    -------
    object
        The same structure (tuples become lists), valid strict JSON.
    """
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def _csv_num(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6f}"


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
