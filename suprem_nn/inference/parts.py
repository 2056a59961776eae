"""Prediction in parts: ``suprem_predict --part K/N`` predicts the K-th of N disjoint shares of the input cases.

Separate processes, GPUs or nodes run the parts independently into one output folder (like nnU-Net's
``-num_parts/-part_id``, but numbered 1..N so that a SLURM array ``--array=1-N`` maps straight onto it). The
split is deterministic: the cases are sorted by case id and case ``i`` (0-based, in that order) belongs to part
``i % N + 1``, so every part gets a fair share of a folder whatever order the files are listed in, and the parts
together hold each case exactly once.

Each part writes its own ``run_report_partKofN.json`` (and ``statistics_partKofN.json``); whichever part finishes
last, finding all N part reports present, merges them into ``run_report.json`` (and ``statistics.json``). A part
that failed or was re-run simply rewrites its report and the merge is redone, so re-running only the missing
part completes the folder.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence, TypeVar

from ..errors import SupremError
from ..utils.atomic import atomic_write_json

__all__ = ["parse_part", "select_part", "part_suffix", "merge_part_files"]

T = TypeVar("T")
_PART = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_part(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``"3/8"`` -> ``(3, 8)``; None stays None. Anything else is a :class:`SupremError` saying what is accepted."""
    if text is None:
        return None
    m = _PART.match(str(text))
    if m is None:
        raise SupremError(f"--part must be K/N (e.g. 3/8: the third of eight parts), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise SupremError(f"--part {text}: K must be between 1 and N (parts are numbered 1..{max(n, 1)})")
    return k, n


def select_part(cases: Sequence[T], part: Optional[tuple[int, int]], key=lambda c: c.case_id) -> list[T]:
    """The cases of ``part`` (all of them, in their order, when None): sorted by ``key``, every N-th starting at K-1.

    Parameters
    ----------
    cases : sequence
        All cases.
    part : tuple of (int, int), optional
        ``(K, N)``: part K (1-based) of N.
    key : callable
        Sort key; default the case id.
    """
    if part is None:
        return list(cases)
    ordered = sorted(cases, key=key)
    k, n = part
    return ordered[k - 1::n]


def part_suffix(part: Optional[tuple[int, int]]) -> str:
    """``"_part3of8"`` for part (3, 8); ``""`` for a whole run."""
    return "" if part is None else f"_part{part[0]}of{part[1]}"


def merge_part_files(folder: Path, part: tuple[int, int]) -> Optional[Path]:
    """Merge the N part reports in ``folder`` into ``run_report.json`` once all are present; return its path.

    Part statistics (``statistics_partKofN.json``, present with ``--statistics``) are merged into
    ``statistics.json`` at the same time. Returns None while some part has not finished yet.
    """
    n = part[1]
    names = [f"run_report{part_suffix((k, n))}.json" for k in range(1, n + 1)]
    reports = []
    for name in names:
        path = folder / name
        if not path.is_file():
            return None
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise SupremError(f"cannot read a part report to merge ({exc})", path) from None
    merged = merge_reports(reports, names)
    target = folder / "run_report.json"
    atomic_write_json(target, merged)
    stats = {}
    for k in range(1, n + 1):
        path = folder / f"statistics{part_suffix((k, n))}.json"
        if path.is_file():
            stats.update(json.loads(path.read_text()))
    if stats:
        atomic_write_json(folder / "statistics.json", dict(sorted(stats.items())))
    return target


def merge_reports(reports: list[dict], names: Sequence[str]) -> dict:
    """One run report for a folder predicted in parts: the first part's settings, every part's cases and
    failures, stage times summed, wall time and peak memory the largest of any part."""
    first = reports[0]
    merged = {k: v for k, v in first.items() if k not in _PER_PART}
    merged["parts"] = {name: {"cases_predicted": len(r.get("cases_predicted", [])),
                              "cases_skipped": len(r.get("cases_skipped", [])),
                              "failures": len(r.get("failures", [])), "seconds_wall": r.get("seconds_wall"),
                              "command": r.get("command")} for name, r in zip(names, reports)}
    for key in ("cases_predicted", "cases_skipped"):
        merged[key] = sorted(c for r in reports for c in r.get(key, []))
    merged["failures"] = [f for r in reports for f in r.get("failures", [])]
    merged["seconds_per_case"] = {c: t for r in reports for c, t in sorted(r.get("seconds_per_case", {}).items())}
    stages = sorted({s for r in reports for s in r.get("seconds_total_by_stage", {})})
    merged["seconds_total_by_stage"] = {s: round(sum(r.get("seconds_total_by_stage", {}).get(s, 0.0)
                                                     for r in reports), 3) for s in stages}
    for key in ("seconds_wall", "peak_rss_mb", "peak_gpu_mb"):
        values = [r[key] for r in reports if r.get(key) is not None]
        merged[key] = max(values) if values else None
    return merged


# Entries that differ per part: merged above, not copied from the first part.
_PER_PART = {"cases_predicted", "cases_skipped", "failures", "seconds_per_case", "seconds_total_by_stage",
             "seconds_wall", "peak_rss_mb", "peak_gpu_mb", "command", "part"}
