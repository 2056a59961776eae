"""``suprem_ensemble``: average the saved probabilities of several predictions and write labels on the original grid.

Each input folder holds ``<case>.npz`` + ``<case>.json`` pairs (:mod:`suprem_nn.inference.probabilities`, from
``suprem_predict --save-probabilities``; AbdomenAtlas outputs hold ``<CASE>/combined_labels.npz``). Cases are
matched by that relative path, and each output mirrors it: ``<out>/<case>.nii.gz`` (or
``<out>/<CASE>/combined_labels.nii.gz``). Every member is put back on its case's original grid first
(members may come from plans with different spacings), the mean is taken there, and labels follow the rules of
:mod:`suprem_nn.inference.segmentation`. Only members of the same kind are averaged: softmax (exclusive) with
softmax, sigmoid (multi-label) with sigmoid, over the same classes; anything else is refused, naming the files.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Optional, Sequence

import numpy as np

from ..errors import SupremError
from ..io.image_io import write_image
from ..utils.atomic import atomic_write_json, remove_stale_temporaries
from .probabilities import CaseProbabilities, read_probabilities
from .segmentation import Segmentation

log = logging.getLogger("suprem_nn.ensemble")

KIND = {"softmax": "softmax (exclusive labels)", "sigmoid": "sigmoid (multi-label masks)"}


@dataclass
class EnsembleSummary:
    cases: list[str] = field(default_factory=list)      # written in this run
    skipped: list[str] = field(default_factory=list)    # output existed (no overwrite)
    report_path: Optional[Path] = None


def find_probability_files(folder: str | Path) -> dict[str, Path]:
    """Relative stem (``case`` or ``CASE/combined_labels``) -> ``.npz`` path, for every npz with a .json beside it,
    in ``folder`` and one level below."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SupremError("probabilities folder not found", folder)
    found = {}
    for npz in sorted(list(folder.glob("*.npz")) + list(folder.glob("*/*.npz"))):
        hidden = any(part.startswith(".") for part in npz.relative_to(folder).parts)  # temporaries, .members/
        if hidden or not npz.with_suffix(".json").is_file():
            continue
        found[npz.relative_to(folder).with_suffix("").as_posix()] = npz
    if not found:
        raise SupremError("no saved probabilities (<case>.npz with <case>.json) in this folder; predict with "
                          "suprem_predict --save-probabilities", folder)
    return found


def check_compatible(members: Sequence[CaseProbabilities], paths: Sequence[Path]) -> None:
    """Refuse members that cannot be averaged: mixed activations, different classes, or different grids.

    Parameters
    ----------
    members : sequence of CaseProbabilities
        One case's saved probabilities from each prediction folder; the first is the reference.
    paths : sequence of Path
        The file of each member, named in errors.

    Raises
    ------
    SupremError
        If a member's activation, class names or label values (in order) differ from the first member's, or its
        original grid (shape, spacing, origin, direction) differs.
    """
    first, p0 = members[0], paths[0]
    for m, p in zip(members[1:], paths[1:]):
        if m.activation != first.activation:
            raise SupremError(
                f"cannot average {KIND.get(m.activation, m.activation)} probabilities with the "
                f"{KIND.get(first.activation, first.activation)} ones of {p0}: a softmax channel is the share of one "
                "class among mutually exclusive ones, a sigmoid channel an independent yes/no, so their mean has no "
                "meaning. Refused (not converted); ensemble plans of one kind", p)
        if list(m.class_names) != list(first.class_names) or list(m.label_values) != list(first.label_values):
            only_here = [c for c in m.class_names if c not in first.class_names]
            only_there = [c for c in first.class_names if c not in m.class_names]
            detail = (f"only here: {', '.join(only_here) or 'none'}; only in {p0}: {', '.join(only_there) or 'none'}"
                      if only_here or only_there else "same classes in a different order or with other label values")
            raise SupremError(f"different classes than {p0} ({detail}); refused: only predictions of the same "
                              "classes can be averaged", p)
        if not m.geometry.same_grid(first.geometry):
            raise SupremError(f"case '{m.case_id}' lies on another original grid ({tuple(m.geometry.shape)}) than in "
                              f"{p0} ({tuple(first.geometry.shape)}); were these predictions made from the same "
                              "images?", p)


def average_on_original_grid(members: Sequence[CaseProbabilities]) -> np.ndarray:
    """Mean of the members' probabilities, each first put on the original grid: float32 ``(C, i, j, k)``."""
    total = None
    for m in members:
        probs = m.on_original_grid()
        total = probs if total is None else np.add(total, probs, out=total)
    total /= len(members)
    return total


def segment_members(members: Sequence[CaseProbabilities]) -> Segmentation:
    """Average compatible members on the original grid and turn the mean into labels."""
    first = members[0]
    return Segmentation.from_probabilities(average_on_original_grid(members), first.activation, first.class_names,
                                           first.label_values)


def ensemble_folders(inputs: Sequence[str | Path], output: str | Path, largest_component: Sequence[str] = (),
                     per_class: bool = False, overwrite: bool = False, progress: bool = True,
                     skip_cases: Collection[str] = ()) -> EnsembleSummary:
    """Average the probabilities of ``inputs`` (one folder per prediction) case by case into ``output``.

    ``largest_component``: class names that keep only their largest 26-connected component, or ``["all"]``.
    ``output`` may be a ``.nii.gz`` file name when the inputs hold exactly one case. ``per_class`` also writes
    ``<case>/segmentations/<class>.nii.gz`` (always written for AbdomenAtlas ``combined_labels`` cases, and the
    only place where multi-label overlaps survive). A single input folder is allowed: it relabels (and
    post-processes) one prediction. ``skip_cases``: case ids left out (e.g. failed in one member).
    """
    from ..utils.progress import track

    inputs = [Path(p) for p in inputs]
    if len(set(p.resolve() for p in inputs)) != len(inputs):
        raise SupremError(f"the same folder is given twice among the inputs ({', '.join(map(str, inputs))})")
    listings = [{rel: p for rel, p in find_probability_files(folder).items() if Path(rel).parts[0] not in skip_cases}
                for folder in inputs]
    _check_same_cases(inputs, listings)
    output = Path(output)
    single_file = output.name.endswith(".nii.gz")
    if single_file and len(listings[0]) != 1:
        raise SupremError(f"the inputs hold {len(listings[0])} cases, so the output must be a folder", output)
    summary = EnsembleSummary()
    postprocessed: Optional[list[str]] = None
    for rel in track(sorted(listings[0]), "ensemble", "case", enabled=progress):
        target = output if single_file else output / f"{rel}.nii.gz"
        if target.exists() and not overwrite:
            summary.skipped.append(rel)
            continue
        remove_stale_temporaries(target.parent)
        paths = [lst[rel] for lst in listings]
        members = [read_probabilities(p) for p in paths]
        check_compatible(members, paths)
        seg = segment_members(members)
        if postprocessed is None:
            postprocessed = _resolve_classes(largest_component, seg.class_names, paths[0])
        if postprocessed:
            seg = seg.keep_largest_component(postprocessed)
        _write(seg, members[0], target, rel, per_class)
        summary.cases.append(rel)
    if summary.skipped:
        log.info("%d case(s) already ensembled, skipped (use --overwrite to redo them)", len(summary.skipped))
    report_dir = output.parent if single_file else output
    summary.report_path = report_dir / "ensemble_report.json"
    atomic_write_json(summary.report_path, {
        "inputs": [str(p) for p in inputs], "output": str(output), "cases_written": summary.cases,
        "cases_skipped": summary.skipped, "largest_component": postprocessed or list(largest_component),
        "rule": "mean of the members' probabilities on each case's original grid (linear resampling), then argmax "
                "(softmax) or > 0.5 per class (sigmoid)"})
    return summary


def _check_same_cases(inputs: list[Path], listings: list[dict]) -> None:
    reference = set(listings[0])
    for folder, lst in zip(inputs[1:], listings[1:]):
        missing, extra = sorted(reference - set(lst)), sorted(set(lst) - reference)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more"
                                                                      if len(missing) > 5 else ""))
            if extra:
                parts.append(f"not in {inputs[0]}: {', '.join(extra[:5])}")
            raise SupremError(f"the folders hold different cases ({'; '.join(parts)}); every member must have "
                              "predicted the same cases", folder)


def _resolve_classes(requested: Sequence[str], class_names: list[str], where: Path) -> list[str]:
    if list(requested) == ["all"]:
        return list(class_names)
    unknown = [c for c in requested if c not in class_names]
    if unknown:
        raise SupremError(f"largest-component classes {unknown} are not predicted here (classes: "
                          f"{', '.join(class_names)})", where)
    return [c for c in class_names if c in requested]


def _write(seg: Segmentation, first: CaseProbabilities, target: Path, rel: str, per_class: bool) -> None:
    """Per-class masks first, the label map last: its presence marks the case finished (resumable)."""
    geometry = first.geometry
    atlas = Path(rel).name == "combined_labels"
    if per_class or atlas:
        seg_dir = target.parent / "segmentations" if atlas else target.parent / Path(rel).name / "segmentations"
        for c, name in enumerate(seg.class_names):
            write_image(seg.mask(c).astype(np.uint8), geometry, seg_dir / f"{name}.nii.gz")
    write_image(seg.label_map(), geometry, target)

