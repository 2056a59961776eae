"""``plan_and_preprocess``: raw dataset -> verification -> fingerprint -> plan -> preprocessed cache.

The run lives here, in preprocessing, because it writes the cache; it reads planning (fingerprint and plan),
never the other way round. When the plan's cache-shaping fields do not depend on the data (a ``--pretrained``
plan: the SuPreM weights fix orientation, spacing and intensity window), each case is read once, fingerprinted
and preprocessed in the same pass. From-scratch plans need dataset statistics first, so they take two passes.
Per-case fingerprints are stored, so an interrupted run (even ``kill -9``) resumes where it stopped and
``--shard i/n`` runs on several machines compose.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..datasets import RawDataset, layout_of, load_dataset, read_case, verify_dataset
from ..errors import DatasetError, SupremError
from ..networks.weights import prefetch_weights
from ..paths import preprocessed_root
from ..planning.decide import check_conventions, check_multilabel, choose_plan
from ..planning.fingerprint import case_fingerprint, load_fingerprints, samples_per_case, save_fingerprint, summarise
from ..planning.plans import Plan
from ..utils.atomic import atomic_write_json, remove_stale_temporaries
from .cache import PreprocessedCache
from .pipeline import preprocess_case, sample_class_locations

log = logging.getLogger("suprem_nn")


@dataclass
class RunResult:
    """What one :func:`plan_and_preprocess` call did.

    ``plan`` and ``plan_folder`` are None while cases of other shards still lack a fingerprint; ``complete`` is
    True once every case of the dataset is in the cache.
    """

    plan: Optional[Plan]
    plan_folder: Optional[Path]
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    complete: bool = False


def plan_and_preprocess(dataset: str, pretrained: Optional[str] = "unet", network: Optional[str] = None,
                        num_processes: int = 2, shard: tuple[int, int] = (0, 1), verify: bool = True,
                        multilabel: Optional[bool] = None, gpu_memory_gb: float = 8.0,
                        target_spacing: Optional[Sequence[float]] = None, patch_size: Optional[Sequence[int]] = None,
                        batch_size: Optional[int] = None, plan_only: bool = False,
                        progress: bool = True, conventions: str = "nnunet") -> RunResult:
    """Plan and preprocess a raw dataset: what ``suprem_plan_and_preprocess`` runs.

    Parameters
    ----------
    dataset : str
        A name, numeric id or path of a raw dataset (nnU-Net raw or AbdomenAtlas layout).
    pretrained : str, optional
        A SuPreM backbone preset ("unet", "segresnet", "swinunetr"); None plans ``network`` from scratch.
    network : str, optional
        The network planned from scratch (default "unet").
    num_processes : int
        Worker processes for verification, fingerprinting and preprocessing.
    shard : tuple of int
        ``(i, n)``: process only cases ``i, i + n, i + 2n ...`` (several machines compose).
    verify : bool
        Check every file up front (before anything is written).
    multilabel : bool, optional
        One sigmoid per class; None: AbdomenAtlas masks multi-label, label maps exclusive.
    gpu_memory_gb : float
        Memory budget for patch and batch size, in GB.
    target_spacing : sequence of 3 float, optional
        Target spacing override in mm, per array axis ``(i, j, k)``.
    patch_size : sequence of 3 int, optional
        Patch size override in voxels, per array axis ``(i, j, k)``.
    batch_size : int, optional
        Batch size override.
    plan_only : bool
        Write the fingerprint and plan, not the cache.
    progress : bool
        Show progress bars.
    conventions : str
        From scratch: ``"nnunet"`` (nnU-Net's rules) or ``"suprem"`` (the input conventions of ``network``'s
        SuPreM preset: 1.5 mm, HU window, 96^3 patch; how a new SuPreM backbone is pretrained).

    Returns
    -------
    RunResult
        What was done.

    Raises
    ------
    SupremError
        Verification failed (nothing written), or cases failed (finished cases are kept; the message and
        ``RunResult.failures`` name each one).
    """
    check_conventions(pretrained, conventions)
    ds = load_dataset(dataset)
    if not ds.cases:
        raise DatasetError("dataset has no training cases", ds.path)
    choice = choose_plan(ds, pretrained, network, conventions, multilabel)
    shard_index, shard_count = shard
    my_cases = ds.cases[shard_index::shard_count]
    if verify:
        log.info(f"verifying {len(my_cases)} cases of {ds.name} ...")
        # Dataset-wide checks (listing problems, imagesTs) belong to shard 0 only, so shards don't repeat them.
        subset = RawDataset(**{**ds.__dict__, "cases": my_cases}) if shard_index == 0 else \
            RawDataset(**{**ds.__dict__, "cases": my_cases, "test_cases": [], "layout_problems": []})
        verify_dataset(subset, num_processes=num_processes, progress=progress).raise_if_failed()

    prep = preprocessed_root() / ds.name
    fp_folder = prep / "fingerprints"
    remove_stale_temporaries(fp_folder)
    draft = choice.draft_plan(ds, target_spacing)
    # Exclusive training on per-class masks is only safe once every case is known not to overlap,
    # so that plan waits for the full fingerprint before it writes anything.
    single_pass = draft is not None and not (layout_of(ds).multilabel_masks and not choice.multilabel)
    result = RunResult(None, None)

    if single_pass:
        cache = PreprocessedCache(prep / draft.plan_name / "data")
        cache.clean_interrupted_writes()
        _run_cases(my_cases, ds, draft, cache, fp_folder, num_processes, progress, result, fingerprint=True,
                   preprocess=not plan_only)
    else:
        _run_cases(my_cases, ds, None, None, fp_folder, num_processes, progress, result, fingerprint=True,
                   preprocess=False)

    per_case = load_fingerprints(ds, fp_folder)
    if len(per_case) < len(ds.cases):
        log.warning(f"{len(ds.cases) - len(per_case)} cases still lack a fingerprint (other shards or failures); "
                    "the plan is written once every case is done")
        return result
    fingerprint = summarise(ds, per_case)
    check_multilabel(ds, fingerprint, choice.multilabel)
    atomic_write_json(prep / "dataset_fingerprint.json", fingerprint)
    plan = choice.plan(fingerprint, gpu_memory_gb, target_spacing, patch_size, batch_size)
    if single_pass and plan.cache_hash() != draft.cache_hash():
        raise RuntimeError("internal: single-pass plan changed cache-shaping fields after the fingerprint")
    plan_folder = prep / plan.plan_name
    result.plan, result.plan_folder = plan, plan_folder
    if not single_pass and not plan_only:
        cache = PreprocessedCache(plan_folder / "data")
        cache.clean_interrupted_writes()
        _run_cases(my_cases, ds, plan, cache, fp_folder, num_processes, progress, result, fingerprint=False,
                   preprocess=True)
    plan.save(plan_folder / "plans.json")
    if plan.pretrained:  # planning needs no weights; fetching them now lets training start offline
        prefetch_weights(plan.pretrained, progress=progress)
    cache = PreprocessedCache(plan_folder / "data")
    done = set(cache.case_ids(plan.cache_hash()))
    result.complete = all(c.case_id in done for c in ds.cases)
    return result


def _run_cases(cases, ds, plan, cache, fp_folder, num_processes, progress, result, fingerprint, preprocess):
    existing = load_fingerprints(ds, fp_folder) if fingerprint else {}
    todo = []
    for c in cases:
        need_fp = fingerprint and c.case_id not in existing
        need_pp = preprocess and not cache.is_complete(c.case_id, plan.cache_hash())
        if need_fp or need_pp:
            todo.append((c, need_fp, need_pp))
        else:
            result.skipped.append(c.case_id)
    if not todo:
        return
    jobs = [(c, ds, plan, None if cache is None else os.fspath(cache.folder), os.fspath(fp_folder), fp, pp,
             samples_per_case(len(ds.cases))) for c, fp, pp in todo]
    what = "fingerprint + preprocess" if fingerprint and preprocess else ("fingerprint" if fingerprint else "preprocess")
    for case_id, error in _map(_process_one, jobs, num_processes, progress, f"{what} {ds.name}"):
        if error:
            result.failures[case_id] = error
            log.error(f"case {case_id}: {error}")
        else:
            result.processed.append(case_id)
    if result.failures:
        lines = "\n".join(f"  case {k}: {v}" for k, v in sorted(result.failures.items()))
        raise SupremError(f"{len(result.failures)} of {len(todo)} cases failed (finished cases are kept):\n{lines}",
                          ds.path)


def _process_one(job) -> tuple[str, Optional[str]]:
    case, ds, plan, cache_folder, fp_folder, need_fp, need_pp, n_samples = job
    try:
        images, geometry, label = read_case(case, ds, with_label=True)
        masks_are_multilabel = layout_of(ds).multilabel_masks
        if need_fp:
            fp = case_fingerprint(images, geometry, label, masks_are_multilabel, len(ds.class_names),
                                  list(ds.label_values), n_samples)
            save_fingerprint(case, fp, Path(fp_folder))
        if need_pp:
            if masks_are_multilabel and not plan.multilabel:
                label = _masks_to_map(label)
            data, seg, props = preprocess_case(images, geometry, plan, label, case.case_id)
            props.source_images = [os.fspath(Path(p).resolve()) for p in case.images]
            props.source_label = os.fspath(Path(case.label).resolve()) if case.label else None
            props.source_masks = {k: os.fspath(Path(v).resolve()) for k, v in case.masks.items()}
            locs = sample_class_locations(seg, plan.multilabel, len(plan.class_names))
            PreprocessedCache(cache_folder).write(case.case_id, data, seg, props, locs)
        return case.case_id, None
    except SupremError as exc:
        return case.case_id, str(exc)
    except MemoryError:
        return case.case_id, "ran out of memory (use fewer processes with -np)"
    except OSError as exc:  # disk full, permissions, vanished files: the OS's own words, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        return case.case_id, f"{where}{exc.strerror or exc}"
    except Exception:
        return case.case_id, "unexpected error:\n" + traceback.format_exc()


def _masks_to_map(masks: np.ndarray) -> np.ndarray:
    """Per-class masks (K, i, j, k) -> label map (i, j, k) with values 1..K (checked not to overlap)."""
    out = np.zeros(masks.shape[1:], dtype=np.int16)
    for k in range(masks.shape[0]):
        out[masks[k] > 0] = k + 1
    return out


def _worker_context():
    """Workers forked from a server that has already imported the pipeline: they start fast and share its
    pages (lower total memory than spawn, which imports everything anew per worker). Spawn where there is
    no forkserver (Windows, macOS default)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["suprem_nn.preprocessing.api"])
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_init() -> None:
    import torch
    torch.set_num_threads(1)


def _map(fn: Callable, jobs: list, num_processes: int, progress: bool, desc: str):
    from ..utils.progress import Progress
    bar = Progress(len(jobs), desc, "case", enabled=progress)
    try:
        if num_processes <= 1 or len(jobs) == 1:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        ctx = _worker_context()
        with ctx.Pool(min(num_processes, len(jobs)), initializer=_worker_init, maxtasksperchild=8) as pool:
            for out in pool.imap_unordered(fn, jobs):
                yield out
                bar.update()
    finally:
        bar.close()
