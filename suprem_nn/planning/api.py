"""``plan_and_preprocess``: raw dataset -> verification -> fingerprint -> plan -> preprocessed cache.

When the plan's cache-shaping fields do not depend on the data (a ``--pretrained``
plan: the SuPreM weights fix orientation, spacing and intensity window), each
case is read once, fingerprinted and preprocessed in the same pass. From-scratch
plans need dataset statistics first, so they take two passes. Per-case
fingerprints are cached, so an interrupted run (even ``kill -9``) resumes where
it stopped and ``--shard i/n`` runs on several machines compose.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..datasets import Case, RawDataset, load_dataset, read_case, verify_dataset
from ..datasets.model import LAYOUT_ABDOMENATLAS
from ..errors import DatasetError, PlanError, SupremError
from ..networks.weights import prefetch_weights
from ..paths import preprocessed_root
from ..preprocessing import PreprocessedCache, preprocess_case, sample_class_locations
from ..utils.atomic import atomic_write_json, atomic_write_with, remove_stale_temporaries
from .fingerprint import case_fingerprint, samples_per_case, summarise
from .planner import plan_from_scratch, plan_pretrained, plan_scratch_at_conventions
from .plans import Plan
from .presets import load_preset

log = logging.getLogger("suprem_nn")


@dataclass
class RunResult:
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
    """Plan and preprocess ``dataset`` (a name, numeric id or path of a raw dataset).

    ``pretrained``: a SuPreM backbone preset ("unet", "segresnet", "swinunetr") or None to plan
    ``network`` from scratch, with nnU-Net's rules (``conventions="nnunet"``) or at the input conventions
    of ``network``'s SuPreM preset (``conventions="suprem"``: 1.5 mm, HU window, 96^3 patch; how a new
    SuPreM backbone is pretrained). Returns what was done; raises :class:`SupremError` when verification
    fails (before anything is written) and reports per-case failures in ``RunResult.failures``.
    """
    if conventions not in ("nnunet", "suprem"):
        raise PlanError(f"unknown conventions '{conventions}'; choose 'nnunet' or 'suprem'")
    if pretrained and conventions != "nnunet":
        raise PlanError("conventions apply to from-scratch plans; a pretrained plan always follows its SuPreM "
                        "preset's input conventions")
    ds = load_dataset(dataset)
    if not ds.cases:
        raise DatasetError("dataset has no training cases", ds.path)
    net = network or "unet"
    preset = load_preset(pretrained or net) if pretrained or conventions == "suprem" else None
    net = preset["network"] if preset else net
    # the two preset-based planners take the same arguments and differ in initialisation and recipe
    plan_at_preset = plan_pretrained if pretrained else plan_scratch_at_conventions
    ml = _decide_multilabel(ds, multilabel)
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
    draft = _draft_plan(ds, preset, plan_at_preset, ml, target_spacing)
    # Exclusive training on AbdomenAtlas masks is only safe once every case is known not to overlap,
    # so that plan waits for the full fingerprint before it writes anything.
    single_pass = draft is not None and not (ds.layout == LAYOUT_ABDOMENATLAS and not ml)
    result = RunResult(None, None)

    if single_pass:
        data_folder = prep / draft.plan_name / "data"
        cache = PreprocessedCache(data_folder)
        cache.clean_interrupted_writes()
        _run_cases(my_cases, ds, draft, cache, fp_folder, num_processes, progress, result, fingerprint=True,
                   preprocess=not plan_only)
    else:
        _run_cases(my_cases, ds, None, None, fp_folder, num_processes, progress, result, fingerprint=True,
                   preprocess=False)

    per_case = _load_fingerprints(ds, fp_folder)
    if len(per_case) < len(ds.cases):
        log.warning(f"{len(ds.cases) - len(per_case)} cases still lack a fingerprint (other shards or failures); "
                    "the plan is written once every case is done")
        return result
    fingerprint = summarise(ds, per_case)
    _check_multilabel(ds, fingerprint, ml)
    atomic_write_json(prep / "dataset_fingerprint.json", fingerprint)
    if preset:
        plan = plan_at_preset(fingerprint, preset, ml, gpu_memory_gb, target_spacing, patch_size, batch_size)
    else:
        plan = plan_from_scratch(fingerprint, net, ml, gpu_memory_gb, target_spacing, patch_size, batch_size)
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


def describe_plan(plan: Plan) -> str:
    """Readable summary of what the planner decided and why."""
    lines = [f"plan '{plan.plan_name}' for {plan.dataset_name}",
             f"  network        {plan.network}" + (f" (SuPreM {plan.pretrained} weights)" if plan.pretrained else ""),
             f"  classes        {len(plan.class_names)}: {', '.join(plan.class_names)}",
             f"  training       {'multi-label (sigmoid per class)' if plan.multilabel else 'exclusive (softmax)'}",
             f"  orientation    {plan.orientation}",
             f"  spacing        {' x '.join(f'{s:g}' for s in plan.target_spacing)} mm",
             f"  normalisation  " + "; ".join(_norm_text(n) for n in plan.normalization),
             f"  patch          {' x '.join(map(str, plan.patch_size))}   batch {plan.batch_size}",
             f"  median image   {' x '.join(map(str, plan.median_shape))} voxels after resampling"]
    lines += [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)


def _norm_text(n) -> str:
    if n.scheme == "ct_window":
        return f"HU window [{n.lower:g}, {n.upper:g}] -> [0, 1]"
    if n.scheme == "ct_clip_zscore":
        return f"clip [{n.lower:.1f}, {n.upper:.1f}] then (x - {n.mean:.1f}) / {n.std:.1f}"
    return n.scheme


def _decide_multilabel(ds: RawDataset, requested: Optional[bool]) -> bool:
    """AbdomenAtlas masks train multi-label (as SuPreM pretrains) unless asked otherwise; label maps are exclusive."""
    if ds.layout != LAYOUT_ABDOMENATLAS:
        if requested:
            raise DatasetError("multi-label training needs one mask per class (AbdomenAtlas layout); an nnU-Net "
                               "label map holds one class per voxel", ds.path)
        return False
    return True if requested is None else requested


def _check_multilabel(ds: RawDataset, fingerprint: dict, multilabel: bool) -> None:
    ov = fingerprint["overlap"]
    if ov["detected"] and not multilabel:
        pairs = ", ".join(f"{a}/{b} ({n} voxels)" for a, b, n in ov["pairs"][:5])
        raise DatasetError(f"masks overlap ({pairs}); exclusive (softmax) training would lose voxels. "
                           "Drop --exclusive to train multi-label", ds.path)


def _draft_plan(ds, preset, plan_at_preset, multilabel, target_spacing) -> Optional[Plan]:
    """The plan's cache-shaping part when it needs no statistics (a preset's conventions + CT), else None."""
    if not preset or ds.channel_names[0].lower() != "ct":
        return None
    stub = {"dataset_name": ds.name, "channel_names": list(ds.channel_names), "class_names": list(ds.class_names),
            "label_values": list(ds.label_values), "num_cases": len(ds.cases), "median_spacing": [1.0, 1.0, 1.0],
            "median_shape_after_crop_body": [96.0, 96.0, 96.0]}
    return plan_at_preset(stub, preset, multilabel, target_spacing=target_spacing,
                          patch_size=[preset["divisibility"]] * 3, batch_size=2)


def _source_signature(case: Case) -> str:
    files = list(case.images) + ([case.label] if case.label else []) + [case.masks[k] for k in sorted(case.masks)]
    parts = []
    for f in files:
        st = os.stat(f)
        parts.append(f"{os.fspath(f)}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _load_fingerprints(ds: RawDataset, folder: Path) -> dict[str, dict]:
    out = {}
    for c in ds.cases:
        f = folder / f"{c.case_id}.json"
        if not f.is_file():
            continue
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if d.get("source_signature") != _source_signature(c):
            continue
        d["intensity_samples"] = [np.asarray(s, dtype=np.float32) for s in np.load(folder / f"{c.case_id}_samples.npy",
                                                                                     allow_pickle=False)]
        out[c.case_id] = d
    return out


def _run_cases(cases, ds, plan, cache, fp_folder, num_processes, progress, result, fingerprint, preprocess):
    existing = _load_fingerprints(ds, fp_folder) if fingerprint else {}
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
        masks_are_multilabel = ds.layout == LAYOUT_ABDOMENATLAS
        if need_fp:
            fp = case_fingerprint(images, geometry, label, masks_are_multilabel, len(ds.class_names),
                                  list(ds.label_values), n_samples)
            samples = np.stack(fp.pop("intensity_samples"))
            fp["source_signature"] = _source_signature(case)
            folder = Path(fp_folder)
            atomic_write_with(folder / f"{case.case_id}_samples.npy",
                              lambda p: np.save(p, samples, allow_pickle=False), suffix=".npy")
            atomic_write_json(folder / f"{case.case_id}.json", fp)
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
        ctx.set_forkserver_preload(["suprem_nn.planning.api"])
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
