"""The files loop: ``run_prediction(predictor, input, output, settings)`` predicts every case of ``input``.

One case after another goes read -> preprocess -> network -> export -> write. With
``num_workers > 0`` reading and preprocessing of the next cases and exporting/writing of the
previous case run in background threads while the network works on the current case
(torch and the resamplers release the GIL, so the stages really overlap).

A case whose output file exists is skipped unless ``overwrite``; outputs are written atomically,
so an interrupted run leaves no half-written file and a re-run continues where it stopped. A
failing case is recorded (file and problem) and the others still run; the summary lists failures.
Finally ``run_report.json`` records versions, model, settings, timings and failures.
"""
from __future__ import annotations

import json
import logging
import platform
import resource
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import SupremError
from ..io.image_io import image_ending, read_image
from ..utils.atomic import remove_stale_temporaries
from ..utils.heap import release_free_heap
from .cases import PredictionCase, find_cases
from .parts import merge_part_files, part_suffix, select_part
from .predictor import StagedPrediction
from .settings import PredictionSettings

__all__ = ["RunSummary", "run_prediction"]

log = logging.getLogger("suprem_nn.predict")


@dataclass
class RunSummary:
    """What a prediction run did; ``report_path`` is its ``run_report.json``."""

    cases: list[str] = field(default_factory=list)       # predicted in this run
    skipped: list[str] = field(default_factory=list)     # already finished
    failures: list[dict] = field(default_factory=list)   # {"case", "file", "problem"}
    report_path: Optional[Path] = None

    @property
    def ok(self) -> bool:
        """True when no case failed."""
        return not self.failures


def run_prediction(predictor: StagedPrediction, input, output, settings: Optional[PredictionSettings] = None, *,
                   extra_report: Optional[dict] = None, release_networks: bool = False, **options) -> RunSummary:
    """Predict every case of ``input`` with ``predictor`` into ``output``; see :func:`suprem_nn.inference.predict`.

    Parameters
    ----------
    predictor : StagedPrediction
        A loaded predictor (:class:`~suprem_nn.inference.Predictor` or the nnU-Net one); its own numerics are
        used, the settings here decide the run: which files are written, threads, resuming, the part.
    input, output : str or Path
        As for :func:`~suprem_nn.inference.predict`.
    settings : PredictionSettings, optional
        Default: ``PredictionSettings()``; ``options`` (field names, e.g. ``progress=False``) override fields.
    extra_report : dict, optional
        More entries for ``run_report.json`` (model source, load time, engine).
    release_networks : bool
        The run owns ``predictor``: free its networks (:meth:`~StagedPrediction.release_networks`) right after
        the last case's network pass, so the last export does not carry an idle engine's buffers.

    Returns
    -------
    RunSummary
    """
    from ..utils.progress import Progress
    from .writers import case_statistics, write_case, write_json

    settings = (settings or PredictionSettings()).replace(**options)
    part, overwrite, progress = settings.part, settings.overwrite, settings.progress
    per_class, save_probabilities = settings.per_class, settings.save_probabilities
    statistics, preview, num_workers = settings.statistics, settings.preview, settings.num_workers
    t_start = time.perf_counter()
    num_networks = len(predictor.networks)
    cases = select_part(find_cases(input, output), part)
    report_dir = Path(output).parent if image_ending(output) else Path(output)
    summary = RunSummary()
    todo = []
    for case in cases:
        if case.output.exists() and not overwrite:
            summary.skipped.append(case.case_id)
        else:
            todo.append(case)
    for folder in {c.output.parent for c in todo}:
        remove_stale_temporaries(folder)
    if summary.skipped:
        log.info("%d case(s) already predicted, skipped (use --overwrite to redo them)", len(summary.skipped))

    per_case: dict[str, dict] = {}
    stats: dict[str, dict] = {}

    def prepare(case: PredictionCase):
        t0 = time.perf_counter()
        images, geometry = [], None
        for path in case.images:
            arr, geo = read_image(path)
            if geometry is not None and not geo.same_grid(geometry):
                raise SupremError(f"channel grid {geo.shape} differs from the first channel's {geometry.shape}", path)
            images.append(arr)
            geometry = geometry or geo
        t_read = time.perf_counter() - t0
        prepared = predictor.prepare(images, geometry, case.case_id)
        prepared.timings["read"] = t_read
        release_free_heap()  # the resampler's temporaries, freed in this thread's heap
        return prepared

    def finish(case: PredictionCase, prepared, probs):
        # Full-size per-class masks only where they are written or counted (AbdomenAtlas cases always get
        # segmentations/<class>.nii.gz); multi-label overlaps live only in the masks.
        result = predictor.to_input_grid(prepared, probs, keep_masks=per_class or case.atlas or statistics)
        t0 = time.perf_counter()
        write_case(result, case, per_class, save_probabilities, prepared.images[0] if preview else None)
        result.timings["write"] = time.perf_counter() - t0
        if statistics:
            stats[case.case_id] = case_statistics(result, prepared.images[0])
        per_case[case.case_id] = {k: round(v, 3) for k, v in result.timings.items()}
        summary.cases.append(case.case_id)
        release_free_heap()  # the export's full-size volumes

    def fail(case: PredictionCase, exc: BaseException):
        if isinstance(exc, SupremError):
            entry = {"case": case.case_id, "file": exc.path or str(case.images[0]), "problem": exc.problem}
        elif isinstance(exc, OSError):
            entry = {"case": case.case_id, "file": exc.filename or str(case.images[0]),
                     "problem": exc.strerror or str(exc)}
        elif isinstance(exc, (ValueError, RuntimeError, MemoryError)):
            entry = {"case": case.case_id, "file": str(case.images[0]), "problem": f"{type(exc).__name__}: {exc}"}
        else:
            raise exc
        summary.failures.append(entry)
        # Said once, by the caller at the end (suprem_predict: failed: CASE: FILE: PROBLEM) and in
        # run_report.json; meanwhile the progress counts the failures.
        bar.set_postfix(failed=len(summary.failures))
        log.debug("%s: traceback (--debug)", case.case_id, exc_info=exc)

    workers = max(0, int(num_workers))
    prep_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep") if workers else None
    export_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export") if workers else None
    prep_futures: dict[int, Future] = {}
    export_futures: list[tuple[PredictionCase, Future]] = []

    def wait_exports(limit: int):
        while len(export_futures) > limit:
            c, fut = export_futures.pop(0)
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - routed through fail(), which re-raises non-user errors
                fail(c, exc)

    bar = Progress(len(todo), "predict", "case", enabled=progress and bool(todo))
    try:
        for i, case in enumerate(todo):
            if prep_pool is not None:
                for j in range(i, min(len(todo), i + workers + 1)):
                    if j not in prep_futures:
                        prep_futures[j] = prep_pool.submit(prepare, todo[j])
            try:
                prepared = prep_futures.pop(i).result() if prep_pool is not None else prepare(case)
                t0 = time.perf_counter()
                probs = predictor.network_pass(prepared)
                prepared.timings["network"] = time.perf_counter() - t0
                release_free_heap()  # the windows' outputs and the accumulators' temporaries
            except Exception as exc:  # noqa: BLE001
                fail(case, exc)
                bar.update(1)
                continue
            finally:
                if release_networks and i == len(todo) - 1:
                    predictor.release_networks()
            if export_pool is not None:
                export_futures.append((case, export_pool.submit(finish, case, prepared, probs)))
                wait_exports(1)  # back-pressure: at most one export waiting behind the running one
            else:
                try:
                    finish(case, prepared, probs)
                except Exception as exc:  # noqa: BLE001
                    fail(case, exc)
            bar.update(1)
        wait_exports(0)
    finally:
        bar.close()
        for pool in (prep_pool, export_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    report_dir.mkdir(parents=True, exist_ok=True)
    if statistics:
        stats_path = report_dir / f"statistics{part_suffix(part)}.json"
        old = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
        old.update(stats)
        write_json(stats_path, old)
    report = _run_report(predictor, num_networks, per_case, summary, time.perf_counter() - t_start,
                         extra_report or {})
    summary.report_path = report_dir / f"run_report{part_suffix(part)}.json"
    write_json(summary.report_path, {**report, "part": None if part is None else f"{part[0]}/{part[1]}"})
    if part is not None:  # the last part to finish merges every part's report into run_report.json
        merged = merge_part_files(report_dir, part)
        if merged is not None:
            log.info("all %d parts finished; merged report: %s", part[1], merged)
    return summary

def _run_report(predictor: StagedPrediction, num_networks: int, per_case: dict, summary: RunSummary, total: float,
                extra: dict) -> dict:
    import SimpleITK
    import scipy

    from .. import __version__ as suprem_version

    stages = ("read", "preprocess", "network", "export", "write")
    totals = {s: round(sum(t.get(s, 0.0) for t in per_case.values()), 3) for s in stages}
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    peak_gpu = (torch.cuda.max_memory_allocated(predictor.device) / 2 ** 20
                if predictor.device.type == "cuda" else None)
    return {
        "versions": {"suprem_nn": suprem_version, "python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "SimpleITK": SimpleITK.Version_VersionString(),
                     "scipy": scipy.__version__},
        "plan": predictor.plan.plan_name, "dataset": predictor.plan.dataset_name, "network": predictor.plan.network,
        # class name -> value of the written label maps: suprem_evaluate matches classes by these names
        "labels": dict(zip(predictor.plan.class_names, (int(v) for v in predictor.plan.label_values))),
        "device": str(predictor.device), "torch_threads": torch.get_num_threads(),
        "settings": {"step_size": predictor.step_size, "mirror_axes": list(predictor.mirror_axes),
                     "folds": num_networks, "windows_per_batch": predictor.windows_per_batch,
                     "autocast": str(predictor.autocast_dtype) if predictor.autocast_dtype else "float32",
                     "channels_last": predictor.channels_last, "postprocess": predictor.postprocess,
                     "target_spacing": predictor.plan.target_spacing, "patch_size": predictor.plan.patch_size},
        **extra,
        "cases_predicted": summary.cases, "cases_skipped": summary.skipped, "failures": summary.failures,
        "seconds_per_case": per_case, "seconds_total_by_stage": totals, "seconds_wall": round(total, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1), "peak_gpu_mb": None if peak_gpu is None else round(peak_gpu, 1),
        "command": " ".join(sys.argv),
    }
