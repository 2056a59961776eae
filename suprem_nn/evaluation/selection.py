"""Choose the best configuration (one plan or an ensemble of two) and its post-processing by cross-validation.

What is scored, for every plan with all folds done (:mod:`.oof`): the pooled out-of-fold predictions, i.e.
every training case predicted by the fold that did not train on it, put back on the case's original grid.
Candidates are each plan alone and each pair of plans of the same kind (softmax with softmax, sigmoid with
sigmoid; a mixed pair is refused and listed with the reason), a pair being the mean of both members'
probabilities on the original grid (:mod:`suprem_nn.inference.ensemble`).

The number (nnU-Net's): Dice per case and class from voxel counts with the code of ``suprem_evaluate``
(:mod:`.metrics`; both masks empty -> NaN, skipped), averaged over cases per class; the foreground mean
averages the classes. The candidate with the highest foreground mean wins (a tie goes to fewer members).
Then, per class of the winner, keeping only the largest 26-connected component is adopted when it raises
that class's CV Dice (strictly): the decision of nnU-Net's ``determine_postprocessing``, made per class.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import SupremError
from ..inference.ensemble import KIND
from ..inference.probabilities import CaseProbabilities, read_probabilities
from ..inference.segmentation import Segmentation, largest_component
from . import metrics
from .oof import DEFAULT_FOLDS, OofPlan, find_oof_plans

Counts = tuple[int, int, int]  # (true positive, reference, predicted) voxels of one class in one case


@dataclass
class Candidate:
    """A configuration: one plan or an ensemble, with its voxel counts per case and class (as predicted, and
    with that class reduced to its largest component)."""

    members: list[str]
    raw: dict[str, dict[str, Counts]] = field(default_factory=dict)
    lcc: dict[str, dict[str, Counts]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The members joined by ``" + "`` (one plan, or an ensemble of two)."""
        return " + ".join(self.members)

    def dice_per_class(self, class_names: Sequence[str], largest_component: Sequence[str] = ()) -> dict[str, float]:
        """Mean over cases of each class's Dice (NaN cases skipped).

        Parameters
        ----------
        class_names : sequence of str
            The classes.
        largest_component : sequence of str
            Classes scored after keeping only their largest connected component.

        Returns
        -------
        dict
            Class name -> mean Dice (NaN when every case is NaN).
        """
        out = {}
        for name in class_names:
            source = self.lcc if name in largest_component else self.raw
            out[name] = metrics.nanmean_with_count(metrics.dice_from_counts(*source[case][name])
                                                   for case in source)[0]
        return out

    def mean_dice(self, class_names: Sequence[str], largest_component: Sequence[str] = ()) -> float:
        """Mean over classes of :meth:`dice_per_class` (NaN classes skipped): the number candidates are ranked by."""
        return metrics.nanmean_with_count(self.dice_per_class(class_names, largest_component).values())[0]


@dataclass
class Selection:
    dataset_folder: Path
    plans: list[OofPlan]
    class_names: list[str]
    label_values: list[int]
    candidates: list[Candidate]
    skipped: list[dict]                  # {"members": [a, b], "reason": ...}: pairs not averaged
    chosen: Candidate
    postprocessing: dict[str, dict]      # class -> {"dice_without", "dice_with", "largest_component"}
    folds: list[int]
    seconds: float = 0.0

    @property
    def largest_component(self) -> list[str]:
        """Classes whose Dice improved when only their largest connected component is kept."""
        return [c for c, d in self.postprocessing.items() if d["largest_component"]]

    @property
    def activation(self) -> str:
        """``"sigmoid"`` or ``"softmax"``: the activation of the chosen candidate's first plan."""
        return next(p.activation for p in self.plans if p.name == self.chosen.members[0])


def find_best_configuration(dataset: str, plans: Optional[Sequence[str]] = None,
                            folds: Sequence[int] = DEFAULT_FOLDS, progress: bool = True) -> Selection:
    """Score every plan and compatible pair on the pooled out-of-fold cases, choose, decide post-processing.

    Parameters
    ----------
    dataset : str
        A dataset with trained cross-validation folds (``SUPREM_RESULTS``).
    plans : sequence of str, optional
        The plans to compare (default: every plan with the folds).
    folds : sequence of int
        The folds whose validation predictions are pooled.
    progress : bool
        Show progress.

    Returns
    -------
    Selection
        Every candidate's Dice per class, the chosen one, and per class whether keeping the largest component
        helps.

    Raises
    ------
    SupremError
        No plan has every fold's validation probabilities, or the plans disagree on classes.
    """
    from ..utils.progress import track

    t0 = time.perf_counter()
    folder, found = find_oof_plans(dataset, plans, folds)
    class_names, label_values = _common_classes(found, folder)
    candidates = [Candidate([p.name]) for p in found]
    skipped = []
    for a, b in itertools.combinations(found, 2):
        if a.activation == b.activation:
            candidates.append(Candidate([a.name, b.name]))
        else:
            skipped.append({"members": [a.name, b.name], "reason": (
                f"not averaged: {a.name} is {KIND[a.activation]}, {b.name} is {KIND[b.activation]}; the mean of a "
                "softmax and a sigmoid probability has no meaning, so the pair is refused (not converted) and each "
                "plan is compared alone")})
    by_name = {p.name: p for p in found}
    cases = sorted(found[0].cases)
    for case in track(cases, "scoring out-of-fold cases", "case", enabled=progress):
        loaded = {p.name: read_probabilities(p.cases[case]) for p in found}
        grids = {name: cp.on_original_grid() for name, cp in loaded.items()}
        _check_grids(loaded, by_name, case)
        refs: dict[str, _Reference] = {}
        for cand in candidates:
            first = loaded[cand.members[0]]
            probs = grids[cand.members[0]] if len(cand.members) == 1 else \
                sum(grids[m] for m in cand.members) / len(cand.members)
            seg = Segmentation.from_probabilities(probs, first.activation, class_names, label_values)
            if first.activation not in refs:
                refs[first.activation] = _Reference(first, class_names, label_values, by_name[cand.members[0]])
            cand.raw[case], cand.lcc[case] = refs[first.activation].counts(seg)
        del grids, loaded
    ranked = sorted(candidates, key=lambda c: (-_key(c.mean_dice(class_names)), len(c.members)))
    chosen = ranked[0]
    without = chosen.dice_per_class(class_names)
    postprocessing = {}
    for name in class_names:
        with_lcc = chosen.dice_per_class([name], [name])[name]
        keep = not math.isnan(with_lcc) and not math.isnan(without[name]) and with_lcc > without[name]
        postprocessing[name] = {"dice_without": without[name], "dice_with": with_lcc, "largest_component": keep}
    return Selection(folder, found, class_names, label_values, candidates, skipped, chosen, postprocessing,
                     list(folds), time.perf_counter() - t0)


def _key(v: float) -> float:
    return -1.0 if math.isnan(v) else v


def _common_classes(found: list[OofPlan], folder: Path) -> tuple[list[str], list[int]]:
    first = found[0].plan
    for p in found[1:]:
        if list(p.plan.class_names) != list(first.class_names) or list(p.plan.label_values) != list(first.label_values):
            a, b = set(first.class_names), set(p.plan.class_names)
            raise SupremError(
                f"plans {found[0].name} and {p.name} predict different classes (only in {found[0].name}: "
                f"{', '.join(sorted(a - b)) or 'none'}; only in {p.name}: {', '.join(sorted(b - a)) or 'none'}"
                f"{'; same names, other order or label values' if a == b else ''}); their Dice and probabilities "
                "cannot be compared. Refused: choose plans of one class set with -p", folder)
    return list(first.class_names), list(first.label_values)


def _check_grids(loaded: dict[str, CaseProbabilities], by_name: dict[str, OofPlan], case: str) -> None:
    items = list(loaded.items())
    for name, cp in items:
        if cp.class_names != by_name[name].plan.class_names:
            raise SupremError(f"out-of-fold file of case '{case}' holds classes {cp.class_names}, plans.json "
                              f"{by_name[name].plan.class_names}", by_name[name].cases[case])
    name0, first = items[0]
    for name, cp in items[1:]:
        if not cp.geometry.same_grid(first.geometry):
            raise SupremError(f"case '{case}' lies on another grid here than in {by_name[name0].cases[case]} "
                              "(the plans were trained on different images)", by_name[name].cases[case])


class _Reference:
    """A case's reference segmentation (the files recorded in its out-of-fold .json), read once."""

    def __init__(self, cp: CaseProbabilities, class_names: list[str], label_values: list[int], oof: OofPlan):
        from ..io import read_image
        from .evaluate import _as_labels, _check_same_grid

        self.class_names, self.label_values = class_names, label_values
        npz = oof.cases[cp.case_id]
        props = cp.props
        self.map = None
        self.masks: dict[str, np.ndarray] = {}
        if cp.activation == "softmax":
            if not props.source_label:
                raise SupremError(f"case '{cp.case_id}' names no reference label map (source_label)",
                                  npz.with_suffix(".json"))
            arr, geo = read_image(props.source_label)
            _check_same_grid(geo, props.source_label, cp.geometry, npz)
            self.map = _as_labels(arr, Path(props.source_label))
        else:
            for name in class_names:
                path = props.source_masks.get(name)
                if path is None:  # no file for this class: an empty reference mask, as suprem_evaluate counts it
                    continue
                arr, geo = read_image(path)
                _check_same_grid(geo, path, cp.geometry, npz)
                self.masks[name] = _as_labels(arr, Path(path)) > 0
            if not props.source_masks:
                raise SupremError(f"case '{cp.case_id}' names no reference masks (source_masks)",
                                  npz.with_suffix(".json"))

    def mask(self, c: int) -> Optional[np.ndarray]:
        if self.map is not None:
            return self.map == self.label_values[c]
        return self.masks.get(self.class_names[c])

    def counts(self, seg: Segmentation) -> tuple[dict[str, Counts], dict[str, Counts]]:
        """Per class: counts as predicted, and with that class reduced to its largest component."""
        raw, lcc = {}, {}
        confusion = metrics.label_map_counts(self.map, seg.label_map()) if self.map is not None and \
            not seg.multilabel else None
        for c, name in enumerate(self.class_names):
            pred = seg.mask(c)
            ref = self.mask(c)
            if confusion is not None:
                k = metrics.counts_for(confusion, self.label_values[c])
                raw[name] = (k.tp, k.n_ref, k.n_pred)
            else:
                raw[name] = _counts(ref, pred)
            kept = largest_component(pred)
            n_kept = int(np.count_nonzero(kept))
            lcc[name] = raw[name] if n_kept == raw[name][2] else _counts(ref, kept)
        return raw, lcc


def _counts(ref: Optional[np.ndarray], pred: np.ndarray) -> Counts:
    if ref is None:
        return 0, 0, int(np.count_nonzero(pred))
    return int(np.count_nonzero(ref & pred)), int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
