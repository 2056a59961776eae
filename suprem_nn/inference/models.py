"""Where the networks come from: a dataset name (its model folder), or a released SuPreM file.

Model folders themselves are read by :mod:`suprem_nn.model_folder` (their one owner, which training writes
through; this module never imports training).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..model_folder import ModelError, is_model_folder
from ..paths import dataset_folder, results_root, trained_listing
from ..planning.plans import Normalization, Plan

AA10_TARGETS = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava",
                "pancreas"]


def resolve_dataset_model(dataset: str, plan_name: Optional[str] = None) -> Path:
    """``<SUPREM_RESULTS>/<dataset folder>/<plan>``; ``dataset`` may be a full name or a numeric id.

    Parameters
    ----------
    dataset : str
        Dataset folder name, its name part or its numeric id (:func:`suprem_nn.paths.dataset_folder`).
    plan_name : str, optional
        The plan; without it the dataset must have exactly one trained plan (a folder holding ``plans.json``).

    Raises
    ------
    ModelError
        If the dataset has no results folder, ``plan_name`` is None and the dataset has zero or several plans, or
        the named plan is not among them.
    """
    folder = dataset_folder(results_root(), dataset)
    if not folder.is_dir():
        raise ModelError(f"no trained models for dataset '{dataset}'; {trained_listing(results_root())}", folder)
    plans = sorted(p.name for p in folder.iterdir() if is_model_folder(p))
    if plan_name is None:
        if len(plans) != 1:
            raise ModelError(f"dataset has {len(plans)} trained plans ({', '.join(plans) or 'none'}); "
                             "choose one with -p, or let cross-validation choose: suprem_find_best_configuration "
                             f"{folder.name}", folder)
        plan_name = plans[0]
    if plan_name not in plans:
        raise ModelError(f"no trained plan '{plan_name}' (found: {', '.join(plans) or 'none'})", folder)
    return folder / plan_name


def suprem_direct_plan(backbone: str) -> Plan:
    """The plan of SuPreM's direct-inference recipe for a released checkpoint, built from ``plans/<backbone>.json``.

    RAS, 1.5 mm (linear resampling in all axes, as MONAI ``Spacingd``), HU [-175, 250] -> [0, 1] clipped,
    crop to voxels above -175 HU, 96^3 windows, sigmoid per class, no mirroring, 32-class template.
    """
    from ..planning.presets import load_preset

    preset = load_preset(backbone)
    conv = preset["input_convention"]
    norm = conv["normalization"]
    names = list(preset["class_map"]["names"])
    return Plan(
        dataset_name="SuPreM_direct", plan_name=f"suprem_{backbone}_direct", network=preset["network"],
        pretrained=backbone, channel_names=["CT"], class_names=names, label_values=list(range(1, len(names) + 1)),
        multilabel=preset["class_map"]["activation"] == "sigmoid", orientation=conv["orientation"],
        target_spacing=[float(v) for v in conv["spacing_mm"]],
        normalization=[Normalization(norm["scheme"], float(norm["lower"]), float(norm["upper"]))],
        crop_threshold=float(conv["crop_foreground_above_hu"]),
        patch_size=[int(v) for v in preset.get("direct_inference", {}).get("window", preset["pretraining_patch"])],
        batch_size=1, divisibility=int(preset["divisibility"]), median_shape=[96, 96, 96],
        image_order=1, label_order=1, anisotropy_threshold=1000.0,  # MONAI Spacingd: bilinear on every axis
        network_kwargs=dict(preset.get("network_kwargs", {})), mirror_axes=[],
        notes=["SuPreM direct-inference recipe (direct_inference/inference.py), built from plans/"
               f"{backbone}.json"])


def suprem_direct_defaults(backbone: str) -> dict:
    """Step size, threshold and default output classes of the direct-inference recipe."""
    from ..planning.presets import load_preset

    preset = load_preset(backbone)
    di = preset.get("direct_inference", {})
    return {"step_size": 1.0 - float(di.get("overlap", 0.75)),
            "classes": list(preset["class_map"].get("direct_inference_targets", AA10_TARGETS)),
            "postprocess": "largest-component"}


def load_suprem_released(backbone: Optional[str], checkpoint: str | Path) -> tuple[Plan, list[nn.Module]]:
    """Plan and network for direct inference with a released SuPreM Universal/SegResNet file.

    ``backbone`` None reads the family from the file; given, it must be the file's family (one error naming the
    file and both families otherwise). The plan's ``pretrained`` is the family used.
    """
    from ..networks import load_universal_model
    from ..networks import CheckpointError

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ModelError("checkpoint file not found", checkpoint)
    try:
        model, report = load_universal_model(checkpoint)
    except CheckpointError as exc:
        raise ModelError(str(exc)) from None
    family = report.family
    if backbone is not None and backbone != family:
        raise ModelError(f"holds SuPreM {family} weights but --suprem {backbone} was given; drop --suprem to use "
                         f"the file's family, or pass a {backbone} file", checkpoint)
    plan = suprem_direct_plan(family)
    n_out = _count_outputs(model, plan)
    if n_out != len(plan.class_names):
        from ..networks import SUPREM_CLASS_MAPS

        names = SUPREM_CLASS_MAPS.get(n_out)
        if names is None:
            raise ModelError(f"checkpoint has {n_out} output classes; known SuPreM class maps have "
                             f"{sorted(SUPREM_CLASS_MAPS)}", checkpoint)
        plan.class_names = list(names)
        plan.label_values = list(range(1, n_out + 1))
    return plan, [model.eval()]


def _count_outputs(model: nn.Module, plan: Plan) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with torch.inference_mode():
        d = max(plan.divisibility, 16)
        return int(model.eval()(torch.zeros(1, plan.num_inputs, d, d, d)).shape[1])

