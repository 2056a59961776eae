"""Which classes ``suprem_evaluate`` compares, matched by NAME between a reference and a prediction.

A reference and a prediction may number their classes differently (liver is 6 in the BTCV numbering and 5 in
TotalSegmentator's); comparing values blindly once scored a liver prediction against a spleen reference. So
each side's label names are read separately, and classes are matched by name:

* each side's labels, first that applies: ``--ref-labels`` / ``--pred-labels``; ``-l`` (both sides); the
  first label file found near that side (:data:`LABEL_FILES`, nearest folder first): a prediction run's
  ``run_report.json``, a trained model's ``plans.json``, a ``dataset.json``; the mask file names of an
  AbdomenAtlas side. A side without any is assumed to follow the other side's labels (a warning says so).
* a label file found beside a side that contradicts ``-l`` (the same name with another value, or the same
  value with another name) is an ERROR: that is the liver-against-spleen mistake. ``--ref-labels`` /
  ``--pred-labels`` say deliberately what one side holds, so a contradicting file is only a warning.
* the classes evaluated are the reference's names that the prediction also has (``-l``: its names). Names
  on one side only are listed and not scored; no name in common is an error.

After the evaluation, :func:`data_checks` flags classes with no voxel in any case on either side and label
values found in the data that a side's label file does not name.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

from ..errors import SupremError
from ..utils.json_file import read_json
from .cases import Side
from .labels import labels_from_json, parse_label_spec, validate_labels

log = logging.getLogger(__name__)

LabelMap = dict  # class name -> label value (int), a region (list of ints), or None for an AbdomenAtlas mask
# Searched in this order; (file name, how many folders up from the side's folder: 0 = the folder itself).
LABEL_FILES = (("run_report.json", 0), ("plans.json", 0), ("dataset.json", 0), ("plans.json", 1),
               ("dataset.json", 1), ("plans.json", 2))
Spec = Union[str, os.PathLike, Mapping[str, Union[int, list]], None]


@dataclass
class SideLabels:
    """One side's labels and where they came from."""

    labels: Optional[LabelMap]   # None: nothing names this side's values
    source: str                  # for settings and messages
    complete: bool = False       # a whole label file (not a hand-picked -l selection): every value it holds


@dataclass
class LabelMatch:
    """The classes to evaluate: ``classes`` (name -> reference value) and ``pred_classes`` (name -> prediction
    value), both None when every value found in the data is evaluated under its number."""

    classes: Optional[LabelMap]
    pred_classes: Optional[LabelMap]
    reference: SideLabels
    prediction: SideLabels
    matched_by: str
    reference_only: list = field(default_factory=list)
    prediction_only: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def settings(self) -> dict:
        """The summary.json ``settings`` entries that say what was compared with what."""
        return {"labels": self.classes, "prediction_labels": self.pred_classes,
                "label_source": self.reference.source, "prediction_label_source": self.prediction.source,
                "classes_matched_by": self.matched_by,
                "classes_not_evaluated": {"reference_only": self.reference_only,
                                          "prediction_only": self.prediction_only}}


def match_classes(ref: Side, pred: Side, labels: Spec = None, ref_labels: Spec = None, pred_labels: Spec = None,
                  ref_mask_names: tuple = (), pred_mask_names: tuple = ()) -> LabelMatch:
    """Resolve both sides' labels and match them by name (see the module docstring).

    ``*_mask_names``: class names of the side's AbdomenAtlas mask files (empty for label maps). Raises
    SupremError naming the file for a contradiction with ``-l`` or when no class name is shared.
    """
    if labels is not None and (ref_labels is not None or pred_labels is not None):
        raise SupremError("-l gives the labels of both sides; with --ref-labels or --pred-labels, give each side "
                          "its own instead of -l")
    warnings: list[str] = []
    both = _parse(labels, "-l") if labels is not None else None
    sides = []
    for side, own, flag, masks, role in ((ref, ref_labels, "--ref-labels", ref_mask_names, "reference"),
                                         (pred, pred_labels, "--pred-labels", pred_mask_names, "prediction")):
        explicit = _parse(own, flag) if own is not None else both
        found = find_label_file(side.label_folder)
        sides.append(_side_labels(explicit, found, masks, role, own is not None, warnings))
    r, p = sides
    match = _match(r, p, both is not None, warnings)
    for w in match.warnings:
        log.warning("%s", w)
    return match


def find_label_file(folder: Path) -> Optional[tuple[LabelMap, Path]]:
    """The labels of the first :data:`LABEL_FILES` entry near ``folder`` that names classes, and its path.

    Parameters
    ----------
    folder : Path
        The folder of one evaluation side; label files are looked for in it and in its parents.

    Returns
    -------
    tuple of (LabelMap, Path) or None
        None when no label file names classes.

    Raises
    ------
    SupremError
        A ``dataset.json`` or ``plans.json`` that is not valid.

    Notes
    -----
    A ``run_report.json`` of an older run names no classes and is passed over; a ``dataset.json`` or
    ``plans.json`` that is not valid is an error naming it (a broken file must not be silently ignored).
    """
    folder = Path(folder).resolve()
    for name, up in LABEL_FILES:
        base = folder
        for _ in range(up):
            base = base.parent
        path = base / name
        if not path.is_file():
            continue
        if name == "run_report.json":
            data = read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
                continue
        elif name == "plans.json":
            data = read_json(path)
            if not isinstance(data, dict) or "class_names" not in data:
                continue   # a plans file of another kind (e.g. nnU-Net's) says nothing about label values
        return labels_from_json(path), path
    return None


def data_checks(summary: dict, match: LabelMatch) -> dict:
    """Flags from the scored cases: classes with no voxel anywhere, and values a side's label file misses.

    Parameters
    ----------
    summary : dict
        The summary being built (its ``cases`` and ``mean``).
    match : LabelMatch
        How classes were matched.

    Returns
    -------
    dict
        ``{"absent_classes": [...], "undeclared_values": {"reference": [...], "prediction": [...]},
        "warnings": [...]}``; each warning is also logged.
    """
    cases = list(summary["cases"].values())
    absent = [n for n in summary["mean"]
              if all(c["classes"][n]["n_ref"] == 0 and c["classes"][n]["n_pred"] == 0 for c in cases)]
    warnings = []
    for n in absent:
        label = summary["mean"][n]
        values = _value_text(label.get("label"), label.get("prediction_label"))
        warnings.append(f"class '{n}' ({values}) has no voxel in any of the {len(cases)} case(s), in the reference "
                        "or the prediction: it scores n/a everywhere. If the organ should be there, the label "
                        "value is wrong (check -l / --ref-labels / --pred-labels)")
    undeclared = {}
    for role, labels in (("reference", match.reference), ("prediction", match.prediction)):
        if labels.labels is None or not labels.complete:
            continue  # nothing to compare with, or a hand-picked selection of classes (-l liver=6)
        named = set()
        for v in labels.labels.values():
            named.update(v if isinstance(v, list) else [v])
        found = sorted({v for c in cases for v in c.get("values_found", {}).get(role, []) if v not in named})
        if found:
            undeclared[role] = found
            n_cases = sum(1 for c in cases if set(c.get("values_found", {}).get(role, [])) - named)
            warnings.append(f"the {role} holds label values {_short(found)} (in {n_cases} case(s)) that its labels "
                            f"({labels.source}) do not name: are these the right labels for it?")
    for w in warnings:
        log.warning("%s", w)
    return {"absent_classes": absent, "undeclared_values": undeclared, "warnings": warnings}


# ----------------------------------------------------------------------------------------------- internals

def _parse(spec: Spec, flag: str) -> SideLabels:
    if isinstance(spec, Mapping):
        return SideLabels(validate_labels(spec, "argument"), "argument", complete=False)
    labels, source = parse_label_spec(spec)
    text = os.fspath(spec).strip()
    from_file = text.lower().endswith(".json") or Path(text).is_file()
    return SideLabels(labels, source if from_file else f"{flag} {text}", complete=from_file)


def _side_labels(explicit: Optional[SideLabels], found: Optional[tuple], masks: tuple, role: str,
                 side_specific: bool, warnings: list) -> SideLabels:
    if found is not None:
        found_labels, found_path = found
        if explicit is not None:
            clash = _contradictions(explicit.labels, found_labels)
            if clash and not side_specific:
                flag = "--ref-labels" if role == "reference" else "--pred-labels"
                raise SupremError(f"{explicit.source} contradicts the {role} labels of this file ({clash}); the "
                                  f"{role} would be scored under the wrong names. Fix -l, or say what each side "
                                  f"holds with --ref-labels / --pred-labels ({flag} overrides this file)", found_path)
            if clash:
                warnings.append(f"{explicit.source} overrides {found_path}, which disagrees ({clash})")
            return explicit
        return SideLabels(found_labels, str(found_path), complete=True)
    if explicit is not None:
        return explicit
    if masks:
        return SideLabels({n: None for n in masks}, f"mask file names of the {role} folders")
    return SideLabels(None, f"none found for the {role}")


def _match(r: SideLabels, p: SideLabels, from_l: bool, warnings: list) -> LabelMatch:
    if r.labels is None and p.labels is None:
        data = "label values found in the data"
        return LabelMatch(None, None, SideLabels(None, data), SideLabels(None, data), "value (no label names on "
                          "either side: every value found is evaluated under its number)", warnings=warnings)
    if r.labels is None or p.labels is None:
        known, role = (r, "prediction") if p.labels is None else (p, "reference")
        flag = "--pred-labels" if role == "prediction" else "--ref-labels"
        if all(v is None for v in known.labels.values()):
            raise SupremError("AbdomenAtlas mask folders are compared with label maps, so class names must be mapped "
                              f"to label values: pass -l name=value,... , {flag} or a dataset.json")
        files = ", ".join(dict.fromkeys(f for f, _ in LABEL_FILES))
        warnings.append(f"the {role} names no classes (no {files} near it and no {flag}); its label values are "
                        f"assumed to be those of {known.source}. If it numbers classes differently, pass {flag}")
        other = "reference" if role == "prediction" else "prediction"
        assumed = SideLabels(dict(known.labels), f"assumed equal to the {other} labels ({known.source})",
                             complete=known.complete)
        r, p = (known, assumed) if role == "prediction" else (assumed, known)
        return LabelMatch(dict(r.labels), dict(p.labels), r, p, "value (one side names no classes)",
                          warnings=warnings)
    if p.source.startswith("mask file names"):
        # AbdomenAtlas predictions: a class without a mask file in a case is an empty prediction there (listed
        # under missing_mask_files), so every reference class is scored
        names = list(r.labels)
        return LabelMatch(dict(r.labels), {n: p.labels.get(n) for n in names}, r, p, "name", [],
                          [n for n in p.labels if n not in r.labels], warnings)
    names = [n for n in r.labels if n in p.labels]
    ref_only = [n for n in r.labels if n not in p.labels]
    pred_only = [n for n in p.labels if n not in r.labels]
    if not names:
        raise SupremError(f"no class name in common: the reference labels ({r.source}) name {_short(list(r.labels))}; "
                          f"the prediction labels ({p.source}) name {_short(list(p.labels))}. Pass --ref-labels / "
                          "--pred-labels that use the same names for the same organs")
    if ref_only and not from_l:
        warnings.append(f"reference classes with no prediction class of that name are not evaluated: "
                        f"{_short(ref_only)} (prediction labels: {p.source})")
    if pred_only:
        log.info("prediction classes with no reference class of that name are not evaluated: %s", _short(pred_only))
    renumbered = [f"{n} {r.labels[n]}->{p.labels[n]}" for n in names
                  if r.labels[n] is not None and p.labels[n] is not None and r.labels[n] != p.labels[n]]
    if renumbered:
        log.info("classes matched by name across different numbering (reference->prediction): %s", _short(renumbered))
    return LabelMatch({n: r.labels[n] for n in names}, {n: p.labels[n] for n in names}, r, p, "name",
                      ref_only, pred_only, warnings)


def _contradictions(given: LabelMap, found: LabelMap) -> str:
    """'' when ``given`` agrees with ``found``; else the contradictions, e.g. "liver=1 where the file has liver=6".

    Names that are only a number (``-l 1,2``) name no organ, so only their values could clash, and never do.
    """
    by_value = {}
    for name, v in found.items():
        by_value.setdefault(_key(v), name)
    out = []
    for name, v in given.items():
        if name in found and _key(found[name]) != _key(v):
            out.append(f"{name}={_value_str(v)} where the file has {name}={_value_str(found[name])}")
        elif name not in found and not name.isdigit() and _key(v) in by_value:
            out.append(f"{name}={_value_str(v)} where value {_value_str(v)} is '{by_value[_key(v)]}' in the file")
    return "; ".join(out[:4]) + (f"; and {len(out) - 4} more" if len(out) > 4 else "")


def _key(v) -> tuple:
    return tuple(sorted(v)) if isinstance(v, list) else (v,)


def _value_str(v) -> str:
    return "+".join(map(str, v)) if isinstance(v, list) else str(v)


def _value_text(ref_value, pred_value) -> str:
    if pred_value is None or pred_value == ref_value:
        return f"value {_value_str(ref_value)}" if ref_value is not None else "mask files"
    if ref_value is None:
        return f"prediction value {_value_str(pred_value)}"
    return f"reference value {_value_str(ref_value)}, prediction value {_value_str(pred_value)}"


def _short(items: list, n: int = 8) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
