"""Fingerprint (+ backbone preset) -> :class:`Plan`.

Two paths:

* ``pretrained=NAME``: the SuPreM weights' conventions win (RAS, 1.5 mm, HU window
  [-175, 250] -> [0, 1], crop to the body, bilinear image resampling as in SuPreM);
  the patch starts from the 96³ pretraining patch, is shrunk where the median image is
  smaller, and is a multiple of the backbone's divisibility; the batch size comes
  from the network's memory estimate on the target device.
* from scratch: nnU-Net's rules (median spacing with the anisotropy rule, CT
  clip + z-score with foreground statistics, patch from the median shape and the
  memory budget, batch size >= 2, one batch covering at most 5 % of the dataset).
* from scratch at a preset's conventions (``plan_scratch_at_conventions``): the
  first path's input conventions with random initialisation and SuPreM's
  supervised-pretraining recipe; this is how a new SuPreM backbone is trained.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from ..errors import PlanError
from ..networks import NETWORK_DIVISIBILITY, estimate_memory_bytes
from .plans import Normalization, Plan

ANISOTROPY_THRESHOLD = 3.0
MIN_BATCH_SIZE = 2
MAX_DATASET_COVERED = 0.05
MEMORY_SAFETY = 0.8
SCRATCH_RECIPE = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5,
                  "schedule": "poly", "warmup_epochs": 0, "epochs": 1000, "iterations_per_epoch": 250,
                  "loss": "dice_ce"}
# SuPreM's supervised pretraining (supervised_pretraining/ of the SuPreM repository): AdamW at lr 1e-3 (its
# scripts; 10x the fine-tuning lr), weight decay 1e-5, 20 warm-up epochs then cosine decay, Dice + BCE on
# sigmoid outputs. SuPreM's 800 epochs over 2,100 CTs draw 1.68 M patches; 1000 epochs of 250 iterations at
# batch 2 draw 0.5 M, so a dataset of thousands of CTs needs more epochs (documentation/make_your_own_suprem.md).
SUPREM_PRETRAINING_RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-5, "warmup_epochs": 20,
                             "schedule": "warmup_cosine", "epochs": 1000, "iterations_per_epoch": 250,
                             "loss": "dice_bce"}


def plan_pretrained(fingerprint: dict, preset: dict, multilabel: bool, gpu_memory_gb: float = 8.0,
                    target_spacing: Optional[Sequence[float]] = None,
                    patch_size: Optional[Sequence[int]] = None, batch_size: Optional[int] = None) -> Plan:
    """Plan that follows the input convention of a SuPreM backbone preset."""
    conv = preset["input_convention"]
    network = preset["network"]
    div = int(preset["divisibility"])
    # a preset without released weights (checkpoint, recipe) is only planned through plan_scratch_at_conventions
    notes = [f"planned for the SuPreM {preset['name']} weights ({preset.get('checkpoint', {}).get('file')})"]
    spacing = [float(s) for s in (target_spacing or conv["spacing_mm"])]
    notes.append(f"target spacing {spacing} mm " + ("(overridden)" if target_spacing else "(what the weights expect)"))
    median = _median_shape_at(fingerprint, "median_shape_after_crop_body", spacing)
    if patch_size:
        patch = _check_patch(patch_size, div)
        notes.append(f"patch {patch} (overridden)")
    else:
        pre = [int(v) for v in preset["pretraining_patch"]]
        patch = [min(p, _round_up(m, div)) for p, m in zip(pre, median)]
        patch = _shrink_to_budget(patch, median, network, div, gpu_memory_gb)
        notes.append(f"patch {patch}: the {pre} pretraining patch, shrunk where the median image "
                     f"{[int(m) for m in median]} is smaller, multiple of {div}")
    bs = batch_size or _batch_size(network, patch, median, fingerprint["num_cases"], gpu_memory_gb)
    notes.append(f"batch size {bs}" + (" (overridden)" if batch_size else
                                       f" from the {network} memory estimate for {gpu_memory_gb:g} GB"))
    norms = [_preset_normalization(conv, name) if c == 0 else Normalization("zscore")
             for c, name in enumerate(fingerprint["channel_names"])]
    crop = float(conv["crop_foreground_above_hu"]) if norms[0].scheme == "ct_window" else None
    mirror, mirror_note = mirror_axes_for(fingerprint["class_names"])
    recipe = dict(preset.get("fine_tuning_recipe", {}))
    recipe.setdefault("iterations_per_epoch", 250)
    return Plan(dataset_name=fingerprint["dataset_name"], plan_name=f"suprem_{preset['name']}", network=network,
                pretrained=preset["name"], channel_names=list(fingerprint["channel_names"]),
                class_names=list(fingerprint["class_names"]), label_values=list(fingerprint["label_values"]), multilabel=multilabel,
                orientation=conv["orientation"], target_spacing=spacing, normalization=norms, crop_threshold=crop,
                patch_size=patch, batch_size=bs, divisibility=div, median_shape=[int(round(m)) for m in median],
                image_order=1, label_order=1, anisotropy_threshold=ANISOTROPY_THRESHOLD,
                network_kwargs=dict(preset.get("network_kwargs", {})), training=recipe,
                checkpoint=dict(preset.get("checkpoint", {})), mirror_axes=mirror,
                notes=notes + ([mirror_note] if mirror_note else []) + list(preset.get("notes", [])))


def plan_scratch_at_conventions(fingerprint: dict, preset: dict, multilabel: bool, gpu_memory_gb: float = 8.0,
                                target_spacing: Optional[Sequence[float]] = None,
                                patch_size: Optional[Sequence[int]] = None,
                                batch_size: Optional[int] = None) -> Plan:
    """Random initialisation at the input conventions of a SuPreM preset (supervised pretraining).

    Orientation, spacing (mm), HU window, foreground crop and the 96^3 patch are those of
    :func:`plan_pretrained`, so the trained backbone can later start ``--pretrained`` plans of other
    datasets; the plan names no weights file and carries :data:`SUPREM_PRETRAINING_RECIPE`.
    Plan name: ``scratch_<network>_suprem``.
    """
    plan = plan_pretrained(fingerprint, preset, multilabel, gpu_memory_gb, target_spacing, patch_size, batch_size)
    notes = [f"planned from scratch at the input conventions of the SuPreM {preset['name']} weights "
             f"(SuPreM's supervised pretraining: AdamW lr 1e-3, warm-up then cosine)"]
    notes += [n.replace("(what the weights expect)", "(the SuPreM weights' convention)") for n in plan.notes[1:]]
    return dataclasses.replace(plan, plan_name=f"scratch_{plan.network}_suprem", pretrained=None, checkpoint={},
                               training=dict(SUPREM_PRETRAINING_RECIPE), notes=notes)


def plan_from_scratch(fingerprint: dict, network: str, multilabel: bool, gpu_memory_gb: float = 8.0,
                      target_spacing: Optional[Sequence[float]] = None,
                      patch_size: Optional[Sequence[int]] = None, batch_size: Optional[int] = None) -> Plan:
    """nnU-Net-style plan for a network trained from random weights."""
    if network not in NETWORK_DIVISIBILITY:
        raise PlanError(f"unknown network '{network}'; choose one of {', '.join(NETWORK_DIVISIBILITY)}")
    div = NETWORK_DIVISIBILITY[network]
    notes = [f"planned from scratch for {network}"]
    if target_spacing:
        spacing = [float(s) for s in target_spacing]
        notes.append(f"target spacing {spacing} mm (overridden)")
    else:
        spacing, why = median_target_spacing(fingerprint)
        notes.append(why)
    median = _median_shape_at(fingerprint, "median_shape_after_crop_nonzero", spacing)
    if patch_size:
        patch = _check_patch(patch_size, div)
        notes.append(f"patch {patch} (overridden)")
    else:
        patch = _initial_scratch_patch(spacing, median, div)
        patch = _shrink_to_budget(patch, median, network, div, gpu_memory_gb)
        notes.append(f"patch {patch} from the median image {[int(m) for m in median]} and the memory budget")
    bs = batch_size or _batch_size(network, patch, median, fingerprint["num_cases"], gpu_memory_gb)
    notes.append(f"batch size {bs}")
    mirror, mirror_note = mirror_axes_for(fingerprint["class_names"])
    norms = []
    for c, name in enumerate(fingerprint["channel_names"]):
        stats = fingerprint["foreground_intensity_properties_per_channel"].get(str(c))
        if name.lower() == "ct" and stats:
            norms.append(Normalization("ct_clip_zscore", stats["percentile_00_5"], stats["percentile_99_5"],
                                       stats["mean"], stats["std"]))
        else:
            norms.append(Normalization("zscore"))
    return Plan(dataset_name=fingerprint["dataset_name"], plan_name=f"scratch_{network}", network=network,
                pretrained=None, channel_names=list(fingerprint["channel_names"]),
                class_names=list(fingerprint["class_names"]), label_values=list(fingerprint["label_values"]), multilabel=multilabel,
                orientation="RAS", target_spacing=spacing, normalization=norms, crop_threshold=None,
                patch_size=patch, batch_size=bs, divisibility=div, median_shape=[int(round(m)) for m in median],
                image_order=3, label_order=1, anisotropy_threshold=ANISOTROPY_THRESHOLD, network_kwargs={},
                training=dict(SCRATCH_RECIPE), checkpoint={}, mirror_axes=mirror,
                notes=notes + ([mirror_note] if mirror_note else []))


def mirror_axes_for(class_names: Sequence[str]) -> tuple[list[int], Optional[str]]:
    """Axes safe to mirror (augmentation and test-time): all three, but not axis 0 (right-left in RAS) when
    classes come in left/right pairs, since a mirrored kidney_left looks exactly like a kidney_right."""
    names = set(class_names)
    lateral = sorted(n for n in names if "left" in n and n.replace("left", "right") in names)
    if lateral:
        return [1, 2], f"no left-right mirroring: classes come in left/right pairs ({', '.join(lateral[:3])}...)"
    return [0, 1, 2], None


def median_target_spacing(fingerprint: dict) -> tuple[list[float], str]:
    """nnU-Net's rule: the median spacing, but the 10th percentile on a strongly anisotropic axis."""
    target = np.array(fingerprint["median_spacing"], dtype=np.float64)
    shape = np.array(fingerprint["median_shape"], dtype=np.float64)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    if target[worst] > ANISOTROPY_THRESHOLD * max(target[others]) and \
            shape[worst] * ANISOTROPY_THRESHOLD < min(shape[others]):
        p10 = float(fingerprint["spacing_percentile_10"][worst])
        target[worst] = max(p10, float(max(target[others])) + 1e-5)
        return target.tolist(), f"target spacing {target.tolist()} mm: median, with the 10th percentile on " \
                                f"the anisotropic axis {worst}"
    return target.tolist(), f"target spacing {target.tolist()} mm: median of the cases"


def _median_shape_at(fingerprint: dict, key: str, spacing: Sequence[float]) -> list[float]:
    shape = np.array(fingerprint[key], dtype=np.float64)
    return (shape * np.array(fingerprint["median_spacing"]) / np.array(spacing)).tolist()


def _round_up(v: float, div: int) -> int:
    return max(div, int(math.ceil(v / div)) * div)


def _check_patch(patch: Sequence[int], div: int) -> list[int]:
    patch = [int(p) for p in patch]
    if len(patch) != 3 or any(p <= 0 or p % div for p in patch):
        raise PlanError(f"patch size {patch} must be 3 positive multiples of {div} for this network")
    return patch


def _initial_scratch_patch(spacing, median, div) -> list[int]:
    """Aspect ratio 1/spacing scaled to 256³ voxels, clipped to the median image (nnU-Net's start)."""
    aspect = 1.0 / np.asarray(spacing, dtype=np.float64)
    aspect = aspect / np.prod(aspect) ** (1 / 3) * 256
    return [_round_up(min(a, m), div) for a, m in zip(aspect, median)]


def _budget_bytes(gpu_memory_gb: float) -> float:
    return gpu_memory_gb * 1e9 * MEMORY_SAFETY


def _shrink_to_budget(patch, median, network, div, gpu_memory_gb) -> list[int]:
    """Shrink the axis largest relative to the median image until batch 2 fits (bf16 activations)."""
    patch = list(patch)
    while estimate_memory_bytes(network, patch, MIN_BATCH_SIZE, dtype_bytes=2) > _budget_bytes(gpu_memory_gb):
        ratios = [p / max(m, 1) if p > div else -1 for p, m in zip(patch, median)]
        axis = int(np.argmax(ratios))
        if ratios[axis] < 0:
            break
        patch[axis] -= div
    return patch


def _batch_size(network, patch, median, num_cases, gpu_memory_gb) -> int:
    per_sample = estimate_memory_bytes(network, patch, 1, dtype_bytes=2)
    fits = int(_budget_bytes(gpu_memory_gb) // per_sample)
    covered = int(MAX_DATASET_COVERED * np.prod(median) * max(num_cases, 1) // np.prod(patch))
    return max(MIN_BATCH_SIZE, min(fits, covered))


def _preset_normalization(conv: dict, channel_name: str) -> Normalization:
    n = conv["normalization"]
    return Normalization(n["scheme"], float(n["lower"]), float(n["upper"]))
