"""Check a whole raw dataset up front and report every problem at once, by case."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DatasetError, ImageReadError
from ..io.geometry import Geometry
from ..io.image_io import read_image
from ..utils.progress import Progress
from .checks import describe_values, grid_difference, integer_label_values, is_binary, nifti_file_problems
from .layouts import layout_of
from .model import Problem, RawCase, RawDataset, display_path
from .nnunet import test_case_id


@dataclass
class VerificationReport:
    """Outcome of :func:`verify_dataset`. ``problems`` stop training; ``warnings`` are worth reading."""

    dataset_name: str
    path: Path
    num_cases: int
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing stops training (warnings allowed)."""
        return not self.problems

    def problem_lines(self) -> list[str]:
        """One line per problem: ``"case X: <file>: <problem>"`` (files relative to the dataset folder)."""
        return [p.format(self.path) for p in self.problems]

    def __str__(self) -> str:
        lines = [f"dataset {self.dataset_name} ({self.path}): {self.num_cases} case(s) checked, "
                 f"{len(self.problems)} problem(s), {len(self.warnings)} warning(s)"]
        for title, items in (("problems", self.problems), ("warnings", self.warnings)):
            if not items:
                continue
            lines.append(f"{title}:")
            for who, group in _group(items):
                lines.append(f"  {who}:")
                for p in group:
                    where = "" if p.path is None else f"{display_path(p.path, self.path)}: "
                    lines.append(f"    {where}{p.message}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise one DatasetError listing every problem, one per line, when there is any."""
        if self.problems:
            n_cases = len({p.case_id for p in self.problems if p.case_id is not None})
            raise DatasetError(f"{len(self.problems)} problem(s) in {n_cases} case(s) of dataset "
                               f"{self.dataset_name}:\n" + "\n".join(self.problem_lines()), self.path)


def _group(items: list[Problem]) -> list[tuple[str, list[Problem]]]:
    groups: dict[Optional[str], list[Problem]] = {}
    for p in items:
        groups.setdefault(p.case_id, []).append(p)
    return [("dataset" if k is None else f"case {k}", v) for k, v in groups.items()]


@dataclass(frozen=True)
class _Spec:
    """What a worker needs to know about the dataset (small, so it pickles cheaply)."""

    multilabel_masks: bool        # the layout's annotations: per-class masks, else one label map per case
    channel_names: tuple[str, ...]
    declared_values: frozenset[int]


@dataclass
class _CaseResult:
    problems: list[Problem]
    warnings: list[Problem]
    foreground: Optional[bool]  # None: no readable label / masks


def verify_dataset(dataset: RawDataset, num_processes: int = 1, progress: bool = True) -> VerificationReport:
    """Read every file of every case and report all problems at once.

    Checked: missing, unreadable, truncated or corrupt files; missing channels; non-3D images, empty axes,
    impossible spacing, non-orthonormal directions, NaN/inf voxels; channels, labels and masks on a grid that
    differs from channel 0 (shape, spacing, origin, direction); label values not declared in dataset.json and
    non-integer label values; non-binary AbdomenAtlas masks; duplicate case ids and badly named files; an
    empty dataset; all training labels empty. Warnings: empty labels of single cases, numTraining mismatch,
    cases without masks.

    Parameters
    ----------
    dataset : RawDataset
        The dataset, as listed by :func:`~suprem_nn.datasets.load_dataset`.
    num_processes : int
        Cases are checked in this many processes (spawn).
    progress : bool
        Show a progress bar.

    Returns
    -------
    VerificationReport
        Every problem and warning, sorted by case; :meth:`VerificationReport.raise_if_failed` stops on problems.
    """
    layout = layout_of(dataset)
    spec = _Spec(layout.multilabel_masks, tuple(dataset.channel_names),
                 frozenset([0, *dataset.label_values]))
    problems = list(dataset.layout_problems)
    warnings = list(dataset.layout_warnings)
    if not dataset.cases:
        problems.append(Problem(None, dataset.path, f"dataset has no training cases ({layout.no_cases_hint})"))

    jobs = [(c, False) for c in dataset.cases] + [(c, True) for c in dataset.test_cases]
    results: list[Optional[_CaseResult]] = [None] * len(jobs)
    bar = Progress(len(jobs), f"verifying {dataset.name}", "case", enabled=progress and bool(jobs))
    try:
        if num_processes > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(num_processes, len(jobs)), mp_context=ctx) as pool:
                futures = {pool.submit(_check_case, c, spec, t): i for i, (c, t) in enumerate(jobs)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
        else:
            for i, (c, t) in enumerate(jobs):
                results[i] = _check_case(c, spec, t)
                bar.update()
    finally:
        bar.close()

    for r in results:
        problems += r.problems
        warnings += r.warnings
    train_fg = [(c, r.foreground) for c, r in zip(dataset.cases, results) if r.foreground is not None]
    if train_fg and not any(fg for _, fg in train_fg):
        problems.append(Problem(None, dataset.path, f"every training label is empty: none of the {len(train_fg)} "
                                                    "readable training cases has a foreground voxel"))
    else:
        for c, fg in train_fg:
            if not fg:
                what = (c.images[0].parent / "segmentations") if layout.multilabel_masks else c.label
                warnings.append(Problem(c.case_id, what, "label has no foreground voxel (all background)"))

    order = {c.case_id: i for i, c in enumerate(dataset.cases)}
    order.update({test_case_id(c.case_id): len(order) + i for i, c in enumerate(dataset.test_cases)})

    def key(p: Problem):
        return (p.case_id is not None, order.get(p.case_id, len(order)), p.case_id or "")

    return VerificationReport(dataset.name, dataset.path, len(dataset.cases) + len(dataset.test_cases),
                              sorted(problems, key=key), sorted(warnings, key=key))


def _read(path: Path, cid: str, problems: list[Problem]):
    """(array, geometry) of ``path``, or None after appending what is wrong with it."""
    found = nifti_file_problems(path)
    if found:
        problems += [Problem(cid, path, m) for m in found]
        return None
    try:
        return read_image(path)
    except ImageReadError as exc:
        problems.append(Problem(cid, path, exc.problem))
    except Exception as exc:  # any reader failure is a problem of this file, never a crash of the check
        problems.append(Problem(cid, path, f"cannot read ({type(exc).__name__}: {exc})"))
    return None


def _check_case(case: RawCase, spec: _Spec, test: bool) -> _CaseResult:
    cid = test_case_id(case.case_id) if test else case.case_id
    problems: list[Problem] = []
    warnings: list[Problem] = []
    ref: Optional[tuple[Geometry, Path, int]] = None
    for ch, path in enumerate(case.images):
        name = spec.channel_names[ch] if ch < len(spec.channel_names) else "?"
        if not path.exists():
            problems.append(Problem(cid, path, f"missing image file for channel {ch} ({name})"))
            continue
        got = _read(path, cid, problems)
        if got is None:
            continue
        geom = got[1]
        if ref is None:
            ref = (geom, path, ch)
        else:
            diff = grid_difference(ref[0], geom)
            if diff:
                problems.append(Problem(cid, path, f"channel {ch} ({name}) is not on the grid of channel {ref[2]} "
                                                   f"({ref[1].name}): {diff}"))
    if test:
        return _CaseResult(problems, warnings, None)
    ref_geom = ref[0] if ref else None
    if spec.multilabel_masks:
        fg = _check_masks(case, cid, ref_geom, problems)
    else:
        fg = _check_label(case, cid, spec, ref_geom, problems)
    return _CaseResult(problems, warnings, fg)


def _check_label(case: RawCase, cid: str, spec: _Spec, ref: Optional[Geometry], problems: list[Problem]):
    path = case.label
    if path is None:
        return None
    if not path.exists():
        problems.append(Problem(cid, path, "missing label file: every training case needs its label map in labelsTr/"))
        return None
    got = _read(path, cid, problems)
    if got is None:
        return None
    arr, geom = got
    if ref is not None:
        diff = grid_difference(ref, geom)
        if diff:
            problems.append(Problem(cid, path, f"label is not on the image grid: {diff}"))
    values, bad = integer_label_values(arr)
    if bad.size:
        problems.append(Problem(cid, path, f"label holds non-integer values ({describe_values(bad)}); label maps "
                                           "must hold integer class values"))
        return None
    undeclared = [v for v in values.tolist() if int(v) not in spec.declared_values]
    if undeclared:
        problems.append(Problem(cid, path, f"label values {describe_values(undeclared)} are not declared in "
                                           f"dataset.json 'labels' (declared: "
                                           f"{describe_values(sorted(spec.declared_values), limit=30)})"))
    return bool(np.any(values != 0))


def _check_masks(case: RawCase, cid: str, ref: Optional[Geometry], problems: list[Problem]):
    if not case.masks:
        return None
    fg = False
    for organ, path in case.masks.items():
        got = _read(path, cid, problems)
        if got is None:
            continue
        arr, geom = got
        if ref is not None:
            diff = grid_difference(ref, geom)
            if diff:
                problems.append(Problem(cid, path, f"mask {organ!r} is not on the CT grid: {diff}"))
        if not is_binary(arr):
            values, _ = integer_label_values(arr)
            problems.append(Problem(cid, path, f"mask {organ!r} is not binary: values {describe_values(values)}; "
                                               "expected 0 and 1"))
            continue
        fg = fg or bool(np.any(arr))
    return fg
