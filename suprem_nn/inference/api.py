"""``predict(input, output, ...)``: the files API behind ``suprem_predict``.

One case after another goes read -> preprocess -> network -> export -> write. With
``num_workers > 0`` reading and preprocessing of the next cases and exporting/writing of the
previous case run in background threads while the network works on the current case
(torch and the resamplers release the GIL, so the stages really overlap).

A case whose output file exists is skipped unless ``overwrite``; outputs are written atomically,
so an interrupted run leaves no half-written file and a re-run continues where it stopped. A
failing case is recorded (file and problem) and the others still run; the summary lists failures.
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
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import SupremError
from ..io.image_io import image_ending, read_image
from ..utils.atomic import remove_stale_temporaries
from .cases import PredictionCase, find_cases
from .engines import prepare_engine
from .parts import merge_part_files, parse_part, part_suffix, select_part
from .precision import choose_precision
from .predictor import Predictor

log = logging.getLogger("suprem_nn.predict")


@dataclass
class RunSummary:
    cases: list[str] = field(default_factory=list)       # predicted in this run
    skipped: list[str] = field(default_factory=list)     # already finished
    failures: list[dict] = field(default_factory=list)   # {"case", "file", "problem"}
    report_path: Optional[Path] = None

    @property
    def ok(self) -> bool:
        return not self.failures


def predict(input, output, model_folder=None, *, dataset: Optional[str] = None, plan: Optional[str] = None,
            folds: Sequence = (0,), checkpoint_name: str = "checkpoint_final.pth", suprem: Optional[str] = None,
            checkpoint=None, device: str = "cpu", step_size: Optional[float] = None, disable_tta: bool = False,
            save_probabilities: bool = False, per_class: bool = False, classes: Optional[Sequence[str]] = None,
            fast: bool = False, postprocess: Optional[str] = None, num_workers: int = 1, overwrite: bool = False,
            bf16: bool = False, fp32: bool = False, channels_last: Optional[bool] = None,
            windows_per_batch: Optional[int] = None, statistics: bool = False, preview: bool = False,
            progress: bool = True, nnunet_model=None, part=None, engine: Optional[str] = None) -> RunSummary:
    """Predict every case of ``input`` (file, image folder, DICOM folder or AbdomenAtlas folder) into ``output``.

    Model source, exactly one of: ``model_folder`` (plans.json + fold_k/), ``dataset`` (+ ``plan``; resolved
    under ``SUPREM_RESULTS``), or ``suprem="unet"|"segresnet"|"swinunetr"`` and/or ``checkpoint`` (a released
    SuPreM file; without ``checkpoint`` the released one, downloaded on first use; without ``suprem`` the family
    is read from the file; run with SuPreM's direct-inference recipe: step 0.25, largest component per organ, the 9
    AbdomenAtlas-1.0 organs unless ``classes``), or ``nnunet_model`` (a trained nnU-Net v2 model folder,
    ``Trainer__Plans__configuration``, run with nnU-Net's own preprocessing and export; ``folds`` None means
    nnU-Net's default 0-4; see documentation/nnunet_models.md). Precision: bfloat16 autocast on CUDA and on CPUs
    with native bfloat16, float32 elsewhere (nnU-Net models: float32 on every CPU, to reproduce nnU-Net);
    ``bf16`` / ``fp32`` force one (:mod:`suprem_nn.inference.precision`); ``channels_last`` None picks the
    measured faster memory layout. ``part`` ``"K/N"`` or ``(K, N)`` predicts only the K-th of N shares of the
    cases (:mod:`suprem_nn.inference.parts`). ``engine`` runs the network pass: ``"torch"``, ``"openvino"`` (CPU
    only), or None: OpenVINO on the CPU when installed, else torch with one logged line saying why
    (:mod:`suprem_nn.inference.engines`). Returns a :class:`RunSummary`; see the module docstring for resuming.
    """
    from .models import load_model_folder, load_suprem_released, resolve_dataset_model, suprem_direct_defaults

    # A SuPreM file alone (--checkpoint without --suprem) is a model source: its family is read from the file.
    released = suprem if suprem is not None else checkpoint
    sources = sum(x is not None for x in (model_folder, dataset, released, nnunet_model))
    if sources != 1:
        raise SupremError("give exactly one model source: -m MODEL_FOLDER, -d DATASET, --suprem BACKBONE, "
                          "--checkpoint SUPREM_FILE or --nnunet-model RESULTS_FOLDER")
    part = part if part is None or isinstance(part, tuple) else parse_part(part)
    if nnunet_model is not None:
        return _predict_nnunet(input, output, nnunet_model, folds, checkpoint_name, device, step_size, disable_tta,
                               save_probabilities, per_class, classes, fast, postprocess, num_workers, overwrite,
                               bf16, fp32, channels_last, windows_per_batch, statistics, preview, progress, part,
                               engine)
    if dataset is not None and plan is None:  # -d without -p: the configuration cross-validation chose, if any
        from .chosen import predict_with_instructions
        from .instructions import find_instructions

        instructions = find_instructions(dataset)
        if instructions is not None:
            return predict_with_instructions(
                input, output, instructions, folds=folds, per_class=per_class, save_probabilities=save_probabilities,
                overwrite=overwrite, progress=progress, unsupported={"--classes": classes, "--fast": fast,
                "--postprocess": postprocess, "--statistics": statistics, "--preview": preview, "--part": part},
                checkpoint_name=checkpoint_name, device=device, step_size=step_size, disable_tta=disable_tta,
                num_workers=num_workers, bf16=bf16, fp32=fp32, channels_last=channels_last,
                windows_per_batch=windows_per_batch, engine=engine)
    folds = (0,) if folds is None else folds
    t_load = time.perf_counter()
    if released is not None:
        if checkpoint is None:
            from ..networks.weights import ensure_weights
            checkpoint = ensure_weights(suprem, progress=progress, use_flag="--checkpoint FILE")
        the_plan, networks = load_suprem_released(suprem, checkpoint)
        suprem = the_plan.pretrained
        defaults = suprem_direct_defaults(suprem)
        step_size = defaults["step_size"] if step_size is None else step_size
        classes = classes or defaults["classes"]
        postprocess = postprocess or defaults["postprocess"]
    else:
        folder = Path(model_folder) if model_folder is not None else resolve_dataset_model(dataset, plan)
        the_plan, networks = load_model_folder(folder, folds, checkpoint_name)
    dev = torch.device(device) if device else torch.device("cpu")
    autocast, channels_last = choose_precision(dev, the_plan.network, bf16, fp32, channels_last)
    networks, engine_report = prepare_engine(networks, engine, dev, [1, the_plan.num_inputs, *the_plan.patch_size],
                                             autocast)
    if engine_report["name"] != "torch":
        channels_last = False  # a torch memory layout; OpenVINO chooses its own
    if windows_per_batch is None:
        windows_per_batch = 4 if dev.type == "cuda" else 1
    predictor = Predictor(the_plan, networks, device=device, step_size=0.5 if step_size is None else step_size,
                          use_mirroring=not disable_tta, windows_per_batch=windows_per_batch,
                          autocast_dtype=autocast, channels_last=channels_last, postprocess=postprocess,
                          classes=classes, spacing_factor=2.0 if fast else 1.0,
                          keep_probabilities=save_probabilities, progress=progress)
    load_seconds = time.perf_counter() - t_load
    return run_prediction(predictor, input, output, per_class=per_class, save_probabilities=save_probabilities,
                          num_workers=num_workers, overwrite=overwrite, statistics=statistics, preview=preview,
                          progress=progress, part=part, extra_report={"model_load_seconds": round(load_seconds, 3),
                                                           "engine": engine_report,
                                                           "fast": fast, "source": _source_text(
                                                               model_folder, dataset, plan, suprem, checkpoint)})


def _predict_nnunet(input, output, folder, folds, checkpoint_name, device, step_size, disable_tta,
                    save_probabilities, per_class, classes, fast, postprocess, num_workers, overwrite, bf16, fp32,
                    channels_last, windows_per_batch, statistics, preview, progress, part=None,
                    engine=None) -> RunSummary:
    """``predict`` for an nnU-Net v2 model folder (see :mod:`suprem_nn.inference.nnunet`)."""
    from .nnunet_model import NnunetPredictor, load_nnunet_model

    if classes or fast:
        raise SupremError("--classes and --fast are not available with --nnunet-model (nnU-Net's own settings "
                          "are reproduced)")
    t_load = time.perf_counter()
    model = load_nnunet_model(folder, (0, 1, 2, 3, 4) if folds is None else folds, checkpoint_name)
    dev = torch.device(device) if device else torch.device("cpu")
    # On the CPU nnU-Net runs float32; bf16 there is opt-in because it moves labels on near-ties (measured
    # 99.73-99.96 % agreement with nnUNetv2_predict, against 99.99 % in float32; documentation/nnunet_models.md).
    autocast, channels_last = choose_precision(dev, None, bf16, fp32 or (dev.type == "cpu" and not bf16),
                                               channels_last)
    patch = [int(p) for p in model.configuration["patch_size"]]
    model.networks, engine_report = prepare_engine(model.networks, engine, dev, [1, model.num_inputs, *patch],
                                                   autocast)
    if engine_report["name"] != "torch":
        channels_last = False
    predictor = NnunetPredictor(model, device=device, step_size=0.5 if step_size is None else step_size,
                                use_mirroring=not disable_tta,
                                windows_per_batch=windows_per_batch or (4 if dev.type == "cuda" else 1),
                                autocast_dtype=autocast, channels_last=channels_last, postprocess=postprocess,
                                keep_probabilities=save_probabilities, progress=progress)
    return run_prediction(predictor, input, output, per_class=per_class, save_probabilities=save_probabilities,
                          num_workers=num_workers, overwrite=overwrite, statistics=statistics, preview=preview,
                          progress=progress, part=part,
                          extra_report={"model_load_seconds": round(time.perf_counter() - t_load, 3),
                                        "engine": engine_report,
                                                           "source": f"nnU-Net model folder {folder} folds "
                                                                     f"{','.join(model.folds)}"})


def run_prediction(predictor: Predictor, input, output, per_class: bool = False, save_probabilities: bool = False,
                   num_workers: int = 1, overwrite: bool = False, statistics: bool = False, preview: bool = False,
                   progress: bool = True, extra_report: Optional[dict] = None,
                   part: Optional[tuple[int, int]] = None) -> RunSummary:
    """Run ``predictor`` over the cases of ``input`` (only part K of N with ``part=(K, N)``); see :func:`predict`."""
    from ..utils.progress import Progress
    from .writers import case_statistics, write_case, write_json

    t_start = time.perf_counter()
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
            except Exception as exc:  # noqa: BLE001
                fail(case, exc)
                bar.update(1)
                continue
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
    report = _run_report(predictor, per_case, summary, time.perf_counter() - t_start, extra_report or {})
    summary.report_path = report_dir / f"run_report{part_suffix(part)}.json"
    write_json(summary.report_path, {**report, "part": None if part is None else f"{part[0]}/{part[1]}"})
    if part is not None:  # the last part to finish merges every part's report into run_report.json
        merged = merge_part_files(report_dir, part)
        if merged is not None:
            log.info("all %d parts finished; merged report: %s", part[1], merged)
    return summary


def _run_report(predictor: Predictor, per_case: dict, summary: RunSummary, total: float, extra: dict) -> dict:
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
                     "folds": len(predictor.networks), "windows_per_batch": predictor.windows_per_batch,
                     "autocast": str(predictor.autocast_dtype) if predictor.autocast_dtype else "float32",
                     "channels_last": predictor.channels_last, "postprocess": predictor.postprocess,
                     "target_spacing": predictor.plan.target_spacing, "patch_size": predictor.plan.patch_size},
        **extra,
        "cases_predicted": summary.cases, "cases_skipped": summary.skipped, "failures": summary.failures,
        "seconds_per_case": per_case, "seconds_total_by_stage": totals, "seconds_wall": round(total, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1), "peak_gpu_mb": None if peak_gpu is None else round(peak_gpu, 1),
        "command": " ".join(sys.argv),
    }


def _source_text(model_folder, dataset, plan, suprem, checkpoint) -> str:
    if suprem:
        return f"suprem {suprem} {checkpoint}"
    if dataset:
        return f"dataset {dataset} plan {plan or '(only one)'}"
    return f"model folder {model_folder}"
