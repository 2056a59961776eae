"""End-of-training validation: whole validation cases through the predictor, in the original geometry.

Uses :class:`suprem_nn.inference.Predictor` (the same sliding window, mirroring and
export as ``suprem_predict``) and :func:`suprem_nn.evaluation.evaluate_case` (the
same Dice as ``suprem_evaluate``). Writes ``fold_k/validation/<case>.nii.gz``
(label map; multi-label plans also ``<case>/segmentations/<class>.nii.gz``), the case's out-of-fold
probabilities ``<case>.npz`` + ``<case>.json`` (:mod:`suprem_nn.inference.probabilities`; the .json also names
the case's reference, ``source_label`` or ``source_masks``, so configuration selection and ensembling need
nothing else) and, last, ``validation/summary.json``: per-case, per-class Dice and the means.

Under DDP every rank predicts every ``world_size``-th case into the same (shared) folder and the per-case results
are gathered in one collective: no rank waits at a barrier while another predicts all cases alone, and rank 0
writes the summary.json one process would write.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from ..errors import SupremError
from ..model_folder import FINAL_CHECKPOINT, VALIDATION_SUMMARY, validation_folder
from ..utils.atomic import atomic_write_json
from . import distributed as ddp


def validate_fold(trainer) -> dict:
    """Predict and score the fold's validation cases with ``trainer``'s network; returns the summary.

    Every rank calls it (a collective under DDP) and gets the whole summary; rank 0 alone writes summary.json.
    """
    from ..evaluation.report import json_safe
    from ..inference import Predictor

    plan = trainer.plan
    out = validation_folder(trainer.folder)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(plan, [trainer.network], device=str(trainer.device), step_size=trainer.cfg.validation_step_size,
                          use_mirroring=bool(trainer.trained_mirror_axes), autocast_dtype=trainer.amp_dtype,
                          keep_probabilities=True)
    classes = dict(zip(plan.class_names, plan.label_values))
    rank, world = trainer.dist.rank, trainer.dist.world_size
    trainer.log.line(f"final validation: {len(trainer.val_cases)} case(s) with the sliding-window predictor"
                     + (f", shared by {world} ranks" if world > 1 else ""))

    def my_share() -> list[dict]:
        results = []
        for case_id in trainer.val_cases[rank::world]:
            results.append(_validate_case(trainer, predictor, out, case_id, classes))
            trainer.log.line(f"  {case_id}: mean Dice {_nanmean(results[-1]['dice'].values()):.4f}")
        return results

    # a case that cannot be validated on any rank stops every rank with its message
    done = {c["case"]: (r, c) for r, share in enumerate(ddp.all_gather_objects(ddp.on_every_rank(my_share)))
            for c in share}
    cases = [done[case_id][1] for case_id in trainer.val_cases]
    for case_id in trainer.val_cases:
        r, c = done[case_id]
        if r != rank:
            trainer.log.line(f"  {case_id}: mean Dice {_nanmean(c['dice'].values()):.4f} (rank {r})")
    per_class = {name: _nanmean(c["dice"].get(name, math.nan) for c in cases) for name in plan.class_names}
    summary = {"fold": str(trainer.fold), "checkpoint": FINAL_CHECKPOINT, "epoch": trainer.epoch,
               "cases": cases, "mean_dice_per_class": per_class, "mean_dice": _nanmean(per_class.values()),
               "note": "Dice per class on the original grid; NaN (null) where a class is absent from both "
                       "reference and prediction; means ignore NaN"}
    if trainer.dist.is_main:
        _require_visible(cases)
        atomic_write_json(out / VALIDATION_SUMMARY, json_safe(summary))
        trainer.log.line(f"final validation mean Dice {summary['mean_dice']:.4f} -> {out / VALIDATION_SUMMARY}")
    return summary


def _require_visible(cases: list[dict]) -> None:
    """Rank 0 must see the files the other ranks wrote: the results folder is one folder shared by all nodes."""
    for c in cases:
        for key in ("prediction", "probabilities"):
            if not Path(c[key]).is_file():
                raise SupremError(f"validation case '{c['case']}' was written by another rank but is not visible "
                                  f"here; under torchrun on several nodes the results folder ($SUPREM_RESULTS) "
                                  f"must be on a file system every node shares", c[key])


def _validate_case(trainer, predictor, out: Path, case_id: str, classes: dict) -> dict:
    """Predict one validation case, write its label map, masks and probabilities, and score it."""
    from ..evaluation.evaluate import CaseSegmentation, evaluate_case
    from ..inference.probabilities import write_probabilities
    from ..io import read_image, write_image

    plan = trainer.plan
    props = trainer.cache.properties(case_id)
    images = []
    geometry = None
    for path in props.source_images:
        arr, geometry = read_image(path)
        images.append(arr)
    result = predictor.predict_case(images, geometry, case_id)
    # The predictor's props come from the raw images alone; the cache knows the case's reference files.
    oof_props = dataclasses.replace(result.props, source_images=list(props.source_images),
                                    source_label=props.source_label, source_masks=dict(props.source_masks))
    # every channel of the plan (softmax: background first), as suprem_predict --save-probabilities writes
    npz, _ = write_probabilities(out / case_id, result.probabilities, plan.class_names, plan.label_values,
                                 oof_props, plan)
    pred_file = out / f"{case_id}.nii.gz"
    write_image(result.label_map, result.geometry, pred_file)
    if plan.multilabel:
        mask_dir = out / case_id / "segmentations"
        masks = {}
        for k, name in enumerate(result.class_names):
            masks[name] = mask_dir / f"{name}.nii.gz"
            write_image(result.masks[k].astype(np.uint8), result.geometry, masks[name])
        prediction = CaseSegmentation(case_id, masks=masks, folder=out / case_id)
        if not props.source_masks:
            raise SupremError(f"case '{case_id}' has no mask files recorded in the cache; cannot validate")
        ref_masks = {n: Path(p) for n, p in props.source_masks.items()}
        # the case folder (<case>/segmentations/<class>.nii.gz) names the reference in reports
        reference = CaseSegmentation(case_id, masks=ref_masks, folder=next(iter(ref_masks.values())).parent.parent)
    else:
        if not props.source_label:
            raise SupremError(f"case '{case_id}' has no label file recorded in the cache; cannot validate")
        prediction = CaseSegmentation(case_id, label_map=pred_file)
        reference = CaseSegmentation(case_id, label_map=Path(props.source_label))
    r = evaluate_case(reference, prediction, classes)
    dice = {name: r["classes"][name]["dice"] for name in plan.class_names if name in r["classes"]}
    return {"case": case_id, "prediction": str(pred_file), "reference": reference.display,
            "probabilities": str(npz), "dice": dice}


def _nanmean(values) -> float:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return float(np.mean(v)) if v else math.nan
