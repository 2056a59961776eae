"""Find the out-of-fold predictions of a dataset's trained plans and refuse, naming them, when folds are missing.

Results layout (written by training, :mod:`suprem_nn.model_folder`): ``<results>/<dataset>/<plan>/plans.json``
and, per fold, ``fold_<k>/checkpoint_final.pth`` and ``fold_<k>/validation/``: ``<case>.npz`` + ``<case>.json``
(the case's probabilities, :mod:`suprem_nn.inference.probabilities`) and ``summary.json`` (written last, so its
presence means the fold's final validation finished).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import SupremError
from ..model_folder import (FINAL_CHECKPOINT, PLAN_FILE, VALIDATION_SUMMARY, fold_folder, is_model_folder,
                            plan_path, validation_folder)
from ..paths import dataset_folder, results_root, trained_listing
from ..planning.plans import Plan
from ..utils.json_file import read_json

DEFAULT_FOLDS = (0, 1, 2, 3, 4)


@dataclass
class OofPlan:
    """One trained plan with every requested fold done: its out-of-fold probability file per case."""

    name: str
    folder: Path
    plan: Plan
    folds: list[int]
    cases: dict[str, Path] = field(default_factory=dict)   # case id -> validation/<case>.npz
    fold_of: dict[str, int] = field(default_factory=dict)  # case id -> the fold that validated it

    @property
    def activation(self) -> str:
        """``"sigmoid"`` for a multi-label plan, else ``"softmax"``: how its stored logits become probabilities."""
        return "sigmoid" if self.plan.multilabel else "softmax"


def results_dataset_folder(dataset: str) -> Path:
    """The folder of ``dataset``'s trained models under the results root (``SUPREM_RESULTS``).

    Parameters
    ----------
    dataset : str
        A dataset name.

    Returns
    -------
    Path

    Raises
    ------
    SupremError
        Nothing is trained for ``dataset``; the message lists what the results root holds.
    """
    folder = dataset_folder(results_root(), dataset)
    if not folder.is_dir():
        raise SupremError(f"no trained models for dataset '{dataset}'; {trained_listing(results_root())}", folder)
    return folder


def find_oof_plans(dataset: str, plans: Optional[Sequence[str]] = None,
                   folds: Sequence[int] = DEFAULT_FOLDS) -> tuple[Path, list[OofPlan]]:
    """``(results dataset folder, one OofPlan per plan)``; refuses with every missing fold named."""
    folder = results_dataset_folder(dataset)
    trained = sorted(p.name for p in folder.iterdir() if is_model_folder(p))
    if plans:
        unknown = [p for p in plans if p not in trained]
        if unknown:
            raise SupremError(f"no trained plan {', '.join(unknown)} (found: {', '.join(trained) or 'none'})", folder)
        names = list(dict.fromkeys(plans))
    else:
        names = trained
    if not names:
        raise SupremError(f"no trained plans here (<plan>/{PLAN_FILE}); train all folds first: suprem_train "
                          f"{folder.name} cv --plan PLAN", folder)
    problems, found = [], []
    for name in names:
        oof, missing = _collect(folder / name, name, list(folds))
        if missing:
            problems.append(f"{name} " + "; ".join(missing))
        else:
            found.append(oof)
    if problems:
        raise SupremError("cannot compare configurations, folds are missing: " + " | ".join(problems) +
                          f". Finish them (suprem_train {folder.name} cv --plan PLAN resumes and skips finished "
                          "folds), or leave a plan out with -p / choose folds with -f", folder)
    _check_same_cases(found, folder)
    return folder, found


def _collect(plan_folder: Path, name: str, folds: list[int]) -> tuple[OofPlan, list[str]]:
    """The plan's out-of-fold files, and one text per kind of problem naming its fold numbers."""
    plan = Plan.load(plan_path(plan_folder))
    oof = OofPlan(name, plan_folder, plan, folds)
    reasons: dict[str, list[str]] = {}
    for k in folds:
        fold = fold_folder(plan_folder, k)
        val = validation_folder(fold)
        if not fold.is_dir():
            reasons.setdefault("not trained", []).append(str(k))
        elif not (fold / FINAL_CHECKPOINT).is_file():
            reasons.setdefault(f"training not finished (no {FINAL_CHECKPOINT})", []).append(str(k))
        elif not (val / VALIDATION_SUMMARY).is_file():
            reasons.setdefault("no final validation (validation/summary.json; trained with --no-final-validation?)",
                               []).append(str(k))
        else:
            summary = read_json(val / VALIDATION_SUMMARY)
            expected = [c["case"] for c in summary.get("cases", []) if isinstance(c, dict) and "case" in c]
            absent = [c for c in expected if not (val / f"{c}.npz").is_file() or not (val / f"{c}.json").is_file()]
            if absent or not expected:
                reasons.setdefault("no out-of-fold probabilities (validation/<case>.npz; validated by an older "
                                   "suprem_nn: train the fold again)", []).append(str(k))
                continue
            for c in expected:
                if c in oof.cases:
                    raise SupremError(f"case '{c}' was validated by folds {oof.fold_of[c]} and {k}; out-of-fold "
                                      "predictions need each case in exactly one validation set "
                                      "(splits_final.json)", plan_folder)
                oof.cases[c], oof.fold_of[c] = val / f"{c}.npz", k
    missing = [f"fold{'s' if len(ks) > 1 else ''} {', '.join(ks)}: {why}" for why, ks in reasons.items()]
    return oof, missing


def _check_same_cases(found: list[OofPlan], folder: Path) -> None:
    ref = found[0]
    for other in found[1:]:
        a, b = set(ref.cases), set(other.cases)
        if a != b:
            raise SupremError(f"plans {ref.name} and {other.name} were cross-validated on different cases (only in "
                              f"{ref.name}: {', '.join(sorted(a - b)[:5]) or 'none'}; only in {other.name}: "
                              f"{', '.join(sorted(b - a)[:5]) or 'none'}); their scores are not comparable. Train "
                              "them on the same splits_final.json", folder)
