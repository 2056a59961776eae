"""The written and printed forms of an evaluation summary: the CSV, NaN-free JSON and the console table."""
from __future__ import annotations

import csv
import io
import math

import numpy as np

CSV_COLUMNS = ["case", "class", "label", "dice", "iou", "nsd", "tp_voxels", "reference_voxels",
               "prediction_voxels", "reference_ml", "prediction_ml"]


def format_table(summary: dict) -> str:
    """Readable table of per-class mean Dice / NSD / IoU and the foreground mean."""
    tol = summary["settings"]["nsd_tolerance_mm"]
    rows = [("class", "cases", "Dice", f"NSD@{tol:g}mm", "IoU", "both empty")]
    for name, m in summary["mean"].items():
        rows.append((name, str(m["n_cases"]), _fmt(m["dice"]), _fmt(m["nsd"]), _fmt(m["iou"]),
                     str(m["n_excluded_both_empty"])))
    fg = summary["foreground_mean"]
    rows.append(("foreground mean", str(summary["num_cases"]), _fmt(fg["dice"]), _fmt(fg["nsd"]), _fmt(fg["iou"]), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))))
        if n == 0 or n == len(rows) - 2:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def csv_text(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for case, r in summary["cases"].items():
        for name, c in r["classes"].items():
            label = c["label"]
            w.writerow([case, name, "+".join(map(str, label)) if isinstance(label, list) else label,
                        _csv_num(c["dice"]), _csv_num(c["iou"]), _csv_num(c["nsd"]), c["tp"], c["n_ref"], c["n_pred"],
                        f"{c['reference_ml']:.6g}", f"{c['prediction_ml']:.6g}"])
    return buf.getvalue()


def json_safe(obj):
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
