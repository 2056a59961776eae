"""What ``suprem_find_best_configuration`` writes beside the trained plans, ``<results>/<dataset>/``:

* ``inference_instructions.json``: the choice (:mod:`suprem_nn.inference.instructions`) plus the CV numbers;
* ``cv_report.md``: tables of per-class CV Dice by configuration and of the post-processing decision;
* ``cv_report.csv``: one row per configuration and class (``mean`` = foreground mean), same numbers;
* ``cv_dice_by_configuration.png``: bar chart of per-class CV Dice by configuration.

All files are written atomically.
"""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

from .. import __version__
from ..inference.instructions import INSTRUCTIONS_FILE, InferenceInstructions, Member
from ..utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from .report import json_safe
from .selection import Selection

REPORT_MD, REPORT_CSV, CHART = "cv_report.md", "cv_report.csv", "cv_dice_by_configuration.png"
PP_SUFFIX = " (post-processed)"


def write_selection(sel: Selection) -> dict[str, Path]:
    """Write the selection's four files into the dataset's results folder, atomically.

    Parameters
    ----------
    sel : Selection
        The outcome of the selection.

    Returns
    -------
    dict
        ``"instructions"``, ``"markdown"``, ``"csv"``, ``"chart"`` -> the path written.
    """
    folder = sel.dataset_folder
    paths = {"instructions": folder / INSTRUCTIONS_FILE, "markdown": folder / REPORT_MD, "csv": folder / REPORT_CSV,
             "chart": folder / CHART}
    atomic_write_json(paths["instructions"], json_safe(instructions_json(sel)))
    atomic_write_text(paths["markdown"], markdown(sel, paths))
    atomic_write_text(paths["csv"], csv_text(sel))
    atomic_write_bytes(paths["chart"], chart_png(sel))
    return paths


def columns(sel: Selection) -> list[tuple[str, dict[str, float], float]]:
    """``(configuration, per-class CV Dice, foreground mean)`` for every candidate, then the chosen one
    post-processed."""
    names = sel.class_names
    out = [(c.name, c.dice_per_class(names), c.mean_dice(names)) for c in sel.candidates]
    lcc = sel.largest_component
    out.append((sel.chosen.name + PP_SUFFIX, sel.chosen.dice_per_class(names, lcc), sel.chosen.mean_dice(names, lcc)))
    return out


def instructions_json(sel: Selection) -> dict:
    """The ``inference_instructions.json`` object of a selection: what ``suprem_predict -d`` runs, plus the
    cross-validation numbers that chose it.

    Parameters
    ----------
    sel : Selection
        The outcome of :func:`~suprem_nn.evaluation.selection.find_best_configuration`.

    Returns
    -------
    dict
        JSON-ready (NaN Dice still to be made safe by the writer).
    """
    by_name = {p.name: p for p in sel.plans}
    chosen = InferenceInstructions(sel.dataset_folder.name, [Member(m, list(by_name[m].folds))
                                                             for m in sel.chosen.members],
                                   sel.activation, sel.class_names, sel.label_values, sel.largest_component)
    names, lcc = sel.class_names, sel.largest_component
    return {**chosen.to_json(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tool": f"suprem_nn {__version__}",
            "cross_validation": {
                "metric": "Dice per case and class from voxel counts (suprem_evaluate's code), averaged over the "
                          "pooled out-of-fold cases per class (cases where reference and prediction are both empty "
                          "are skipped); mean_dice = mean over classes",
                "folds": sel.folds, "num_cases": len(sel.plans[0].cases),
                "cases": {case: sel.plans[0].fold_of[case] for case in sorted(sel.plans[0].cases)},
                "chosen": {"name": sel.chosen.name, "mean_dice": sel.chosen.mean_dice(names),
                           "mean_dice_after_postprocessing": sel.chosen.mean_dice(names, lcc),
                           "dice_per_class_after_postprocessing": sel.chosen.dice_per_class(names, lcc)},
                "postprocessing_decision": sel.postprocessing,
                "configurations": [{"name": c.name, "members": c.members, "mean_dice": c.mean_dice(names),
                                    "dice_per_class": c.dice_per_class(names)} for c in sel.candidates],
                "ensembles_not_evaluated": sel.skipped,
                "model_folders": {p.name: str(p.folder) for p in sel.plans},
                "seconds": round(sel.seconds, 2)}}


def markdown(sel: Selection, paths: dict[str, Path]) -> str:
    """The human-readable report of a selection: Dice per class and configuration, post-processing, usage.

    Parameters
    ----------
    sel : Selection
        The outcome of the selection.
    paths : dict
        ``"instructions"``, ``"chart"``, ``"csv"`` -> the files written beside the report (named in it).

    Returns
    -------
    str
        Markdown text.
    """
    cols = columns(sel)
    lines = [f"# Configuration selection for {sel.dataset_folder.name}", "",
             f"Cross-validation Dice on the pooled out-of-fold predictions of folds "
             f"{', '.join(map(str, sel.folds))} ({len(sel.plans[0].cases)} cases). Each number is a class's Dice "
             "averaged over the cases (cases where reference and prediction are both empty are skipped); `mean` "
             "averages the classes. An ensemble averages its members' probabilities on each case's original grid.",
             "", f"**Chosen: {sel.chosen.name}** (mean CV Dice {_f(sel.chosen.mean_dice(sel.class_names))}, "
             f"{_f(cols[-1][2])} with the post-processing below).", "",
             "| class | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name in sel.class_names:
        lines.append(f"| {name} | " + " | ".join(_f(c[1][name]) for c in cols) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_f(c[2])}**" for c in cols) + " |")
    lines += ["", "## Post-processing (keep the largest 26-connected component)", "",
              "Adopted for a class only when it raises that class's CV Dice.", "",
              "| class | Dice as predicted | Dice, largest component | kept |", "|---|---:|---:|:---:|"]
    for name, d in sel.postprocessing.items():
        lines.append(f"| {name} | {_f(d['dice_without'])} | {_f(d['dice_with'])} | "
                     f"{'yes' if d['largest_component'] else 'no'} |")
    if sel.skipped:
        lines += ["", "## Ensembles not evaluated", ""] + [f"- {s['members'][0]} + {s['members'][1]}: {s['reason']}"
                                                          for s in sel.skipped]
    lines += ["", "## Use it", "", f"    suprem_predict -i IMAGES -o OUTPUT -d {sel.dataset_folder.name}", "",
              f"reads `{paths['instructions'].name}`; `-p PLAN` predicts with one plan instead.", "",
              f"Chart: `{paths['chart'].name}`; numbers as CSV: `{paths['csv'].name}`.", ""]
    return "\n".join(lines)


def csv_text(sel: Selection) -> str:
    """The selection's numbers as CSV: ``configuration, class, cv_dice, chosen``, one row per class and a mean.

    Parameters
    ----------
    sel : Selection
        The outcome of the selection.

    Returns
    -------
    str
        CSV text with a header row.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["configuration", "class", "cv_dice", "chosen"])
    for name, per_class, mean in columns(sel):
        chosen = "yes" if name in (sel.chosen.name, sel.chosen.name + PP_SUFFIX) else ""
        for cls in sel.class_names:
            w.writerow([name, cls, _c(per_class[cls]), chosen])
        w.writerow([name, "mean", _c(mean), chosen])
    return buf.getvalue()


def chart_png(sel: Selection) -> bytes:
    """A bar chart of cross-validation Dice per class, one bar per configuration, as PNG bytes (matplotlib, Agg).

    Parameters
    ----------
    sel : Selection
        The outcome of the selection.

    Returns
    -------
    bytes
        The PNG file's contents.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = columns(sel)
    labels = list(sel.class_names) + ["mean"]
    x = np.arange(len(labels))
    width = 0.8 / len(cols)
    # about a quarter inch per bar, so 13 classes x 4 configurations stay readable on a page
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.25 * len(labels) * len(cols) + 2)), 5.0))
    for i, (name, per_class, mean) in enumerate(cols):
        values = [per_class[c] for c in sel.class_names] + [mean]
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, [0 if math.isnan(v) else v for v in values], width,
               label=name + (" (chosen)" if name == sel.chosen.name else ""))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("CV Dice (pooled out-of-fold)")
    ax.set_title(f"{sel.dataset_folder.name}: per-class CV Dice by configuration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _f(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"


def _c(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6f}"
