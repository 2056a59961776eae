"""``cross_validate(dataset, ...)``: every cross-validation fold of one plan in one call (``suprem_train D cv``).

Folds run in turn in this process, or ``parallel_folds`` at a time as ``suprem_train DATASET K`` subprocesses
(one per GPU group on a multi-GPU node: fold-parallel scales better than data-parallel for these models; see
:mod:`~suprem_nn.training.fold_processes`). Each fold is resumable as a single-fold run is:

* finished (``checkpoint_final.pth`` and ``validation/summary.json``): skipped;
* a checkpoint but no summary (killed while training or validating): continued as with ``--continue``;
* nothing to resume from: trained from the start.

A failing fold does not stop the others; the failures are reported together, each with its log, at the end.
"""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import SupremError
from ..utils.json_file import read_json
from ..model_folder import FINAL_CHECKPOINT, VALIDATION_SUMMARY, fold_folder, validation_folder
from .checkpoint import find_resume_checkpoint
from .config import TrainingConfig
from .progress import LOG_FILE

FINISHED, RESUMABLE, NEW = "finished", "resumable", "new"


@dataclass
class FoldOutcome:
    """What happened to one fold in this call."""

    fold: int
    status: str                        # "skipped" (finished before), "trained", "continued" or "failed"
    folder: Path
    log: Path                          # the file to read when it failed
    seconds: float = 0.0               # wall time spent on it in this call
    error: Optional[str] = None        # why it failed
    note: Optional[str] = None         # e.g. a finished fold trained for other epochs than asked
    mean_dice: Optional[float] = None  # from validation/summary.json
    dice_per_class: dict = field(default_factory=dict)
    epochs: Optional[int] = None       # epochs the finished fold was trained for


@dataclass
class CrossValidationResult:
    dataset: str
    plan_name: str
    model_folder: Path
    folds: list[FoldOutcome]

    @property
    def failed(self) -> list[FoldOutcome]:
        """The folds whose status is ``"failed"``."""
        return [f for f in self.folds if f.status == "failed"]

    @property
    def mean_dice(self) -> float:
        """Mean over folds of each fold's mean validation Dice (NaN-ignoring)."""
        return _nanmean(f.mean_dice for f in self.folds)

    @property
    def mean_dice_per_class(self) -> dict:
        """``{class name: mean over folds of that class's validation Dice}``, NaN-ignoring, in first-seen class
        order.
        """
        names = [n for f in self.folds for n in f.dice_per_class]
        return {n: _nanmean(f.dice_per_class.get(n) for f in self.folds) for n in dict.fromkeys(names)}


def fold_state(folder: Path) -> str:
    """``"finished"``, ``"resumable"`` (a checkpoint to ``--continue`` from) or ``"new"``."""
    folder = Path(folder)
    if (folder / FINAL_CHECKPOINT).is_file() and (validation_folder(folder) / VALIDATION_SUMMARY).is_file():
        return FINISHED
    return RESUMABLE if find_resume_checkpoint(folder) else NEW


def select_folds(dataset: str, cfg: TrainingConfig, folds: Optional[Sequence[int]] = None):
    """``(plan, model folder, fold numbers)`` for ``cfg``'s plan; writes ``splits_final.json`` if missing.

    ``folds`` None means every fold of the split (5, fewer with fewer cases). A fold the split does not define
    is an error naming the splits file.
    """
    from ..paths import results_root
    from ..planning import find_plan
    from ..preprocessing.cache import PreprocessedCache
    from .splits import SPLITS_FILE, load_or_create_splits

    plan_folder, plan = find_plan(dataset, cfg.plan_name or (f"suprem_{cfg.pretrained}" if cfg.pretrained else None))
    case_ids = PreprocessedCache(plan_folder / "data").case_ids(plan.cache_hash())
    if not case_ids:
        raise SupremError("no preprocessed cases for this plan; run suprem_plan_and_preprocess first",
                          plan_folder / "data")
    splits = load_or_create_splits(plan_folder.parent, case_ids)
    n = len(splits)
    chosen = list(range(n)) if folds is None else list(dict.fromkeys(int(k) for k in folds))
    bad = [k for k in chosen if not 0 <= k < n]
    if bad:
        raise SupremError(f"fold(s) {', '.join(map(str, bad))} do not exist: the split defines folds 0-{n - 1}",
                          plan_folder.parent / SPLITS_FILE)
    if not chosen:
        raise SupremError("no folds to train: --folds is empty")
    return plan, results_root() / plan_folder.parent.name / plan.plan_name, chosen


def cross_validate(dataset: str, folds: Optional[Sequence[int]] = None, parallel_folds: Optional[int] = None,
                   config_file: Optional[str] = None, echo: bool = True,
                   progress_interval_s: float = 60.0, **options) -> CrossValidationResult:
    """Train every fold in ``folds`` (default: all folds of the split) of ``dataset`` and collect their Dice.

    ``options``/``config_file``: as for :func:`~suprem_nn.training.train`. ``parallel_folds``: folds run at the
    same time as subprocesses (default: one per GPU group of ``num_gpus`` visible GPUs when training on CUDA,
    else 1, which runs them in turn in this process). ``progress_interval_s``: seconds between the progress
    lines of running parallel folds. Never raises for a failing fold; see ``result.failed``.
    """
    from .api import resolve_training_config

    if parallel_folds is not None and parallel_folds < 1:
        raise SupremError(f"--parallel-folds must be at least 1, got {parallel_folds}")
    cfg = resolve_training_config(dataset, config_file, options)
    if not cfg.final_validation:
        raise SupremError("cross-validation needs each fold's final validation (its Dice and out-of-fold "
                          "probabilities); drop --no-final-validation")
    plan, model_folder, chosen = select_folds(dataset, cfg, folds)
    _say(echo, f"cross-validation of plan '{plan.plan_name}' on {dataset}: folds {', '.join(map(str, chosen))} "
               f"-> {model_folder}")
    outcomes: dict[int, FoldOutcome] = {}
    todo = []
    for k in chosen:
        folder = fold_folder(model_folder, k)
        if fold_state(folder) == FINISHED:
            outcomes[k] = FoldOutcome(k, "skipped", folder, folder / LOG_FILE)
            _say(echo, f"fold {k}: already finished, skipped (delete {folder} to train it again)")
        else:
            todo.append(k)
    if todo:
        from .fold_processes import default_parallel_folds, run_folds_in_processes
        n_parallel = parallel_folds if parallel_folds is not None else default_parallel_folds(cfg)
        if n_parallel == 1:
            for k in todo:
                outcomes[k] = _run_fold_here(dataset, k, fold_folder(model_folder, k), config_file, options, echo)
        else:
            settings = {**cfg.to_json(), "plan_name": plan.plan_name}
            jobs = [(k, fold_state(fold_folder(model_folder, k)) == RESUMABLE) for k in todo]
            for run in run_folds_in_processes(dataset, jobs, model_folder, settings, min(n_parallel, len(todo)),
                                              cfg, echo, progress_interval_s):
                folder = fold_folder(model_folder, run.fold)
                o = FoldOutcome(run.fold, "continued" if run.resumed else "trained", folder, run.log, run.seconds)
                if run.error or fold_state(folder) != FINISHED:
                    o.status = "failed"
                    o.error = run.error or "the fold process ended without writing validation/summary.json"
                outcomes[run.fold] = o
    result = CrossValidationResult(dataset, plan.plan_name, model_folder, [outcomes[k] for k in chosen])
    for o in result.folds:
        _read_summary(o, cfg.epochs)
    return result


def _run_fold_here(dataset: str, k: int, folder: Path, config_file: Optional[str], options: dict,
                   echo: bool) -> FoldOutcome:
    """One fold in this process, exactly as ``suprem_train DATASET k`` would run it; an error is recorded (with
    its traceback in the fold's log), not raised."""
    from .api import train

    resume = fold_state(folder) == RESUMABLE
    _say(echo, f"fold {k}: {'continuing from its last checkpoint' if resume else 'training'}")
    t0 = time.perf_counter()
    outcome = FoldOutcome(k, "continued" if resume else "trained", folder, folder / LOG_FILE)
    try:
        train(dataset, k, config_file=config_file, continue_training=resume, echo=echo, **options)
    except SupremError as exc:
        outcome.status, outcome.error = "failed", str(exc)
        _append(outcome.log, f"cross-validation: fold {k} failed: {exc}\n")
    except Exception as exc:  # noqa: BLE001
        # not a user error, but one fold's crash (e.g. out of GPU memory) must not cost the other folds
        outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
        _append(outcome.log, f"cross-validation: fold {k} failed:\n{traceback.format_exc()}")
    finally:
        _release_gpu_memory()
    outcome.seconds = time.perf_counter() - t0
    if outcome.error:
        _say(echo, f"fold {k}: FAILED: {outcome.error} (log: {outcome.log})")
    return outcome


def _append(log: Path, text: str) -> None:
    """Add ``text`` to a fold's log (which may not exist yet when the fold failed early), so the log named in
    the report says why."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(text)


def _release_gpu_memory() -> None:
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _read_summary(o: FoldOutcome, epochs_asked: int) -> None:
    """Fill ``o``'s Dice from its validation/summary.json (when the fold finished)."""
    path = validation_folder(o.folder) / VALIDATION_SUMMARY
    if o.status == "failed" or not path.is_file():
        return
    s = read_json(path)
    o.mean_dice = s.get("mean_dice")
    o.dice_per_class = dict(s.get("mean_dice_per_class") or {})
    o.epochs = s.get("epoch")
    if o.epochs not in (None, epochs_asked):
        o.note = (f"trained for {o.epochs} epochs, this run asks {epochs_asked}; kept as it is (continue it "
                  f"with the single-fold command and --continue --epochs {epochs_asked})")


def format_summary(result: CrossValidationResult) -> str:
    """A per-fold table and the mean over folds, as ``suprem_train DATASET cv`` prints it."""
    lines = [f"cross-validation of '{result.plan_name}' on {result.dataset} ({result.model_folder}):"]
    for o in result.folds:
        if o.status == "failed":
            lines.append(f"  fold {o.fold}: FAILED ({o.error}); log: {o.log}")
            continue
        dice = "n/a" if o.mean_dice is None else f"{o.mean_dice:.4f}"
        how = "finished before, skipped" if o.status == "skipped" else f"{o.status} in {o.seconds:.0f} s"
        note = f"; {o.note}" if o.note else ""
        lines.append(f"  fold {o.fold}: mean Dice {dice}  ({how}{note})")
    done = [o for o in result.folds if o.mean_dice is not None]
    mean = result.mean_dice
    lines.append(f"  mean Dice over {len(done)} of {len(result.folds)} fold(s): "
                 f"{'n/a' if math.isnan(mean) else f'{mean:.4f}'} (per-fold means of per-class validation Dice)")
    if result.failed:
        lines.append(f"  {len(result.failed)} fold(s) failed: {', '.join(str(o.fold) for o in result.failed)}; "
                     f"fix the cause and run the same command again (finished folds are skipped)")
    return "\n".join(lines)


def _say(echo: bool, text: str) -> None:
    if echo:
        import sys
        print(text, file=sys.stderr, flush=True)


def _nanmean(values) -> float:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return float(np.mean(v)) if v else math.nan
