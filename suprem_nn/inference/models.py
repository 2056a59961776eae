"""Where the networks come from: a trained model folder, a dataset name, or a released SuPreM file.

A model folder is ``<folder>/plans.json`` plus ``fold_<k>/<checkpoint_name>`` (written by
training; this module never imports training). Checkpoints load with ``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import SupremError
from ..paths import dataset_folder, results_root, trained_listing
from ..planning.plans import Normalization, Plan
from ..utils.safe_load import load_weights_only

AA10_TARGETS = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava",
                "pancreas"]


class ModelError(SupremError):
    """A model folder, fold or checkpoint is missing or unusable."""


def load_model_folder(folder: str | Path, folds: Sequence[str | int] = (0,),
                      checkpoint_name: str = "checkpoint_final.pth") -> tuple[Plan, list[nn.Module]]:
    """The plan and one eval-mode CPU network per fold of a trained model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError("model folder not found", folder)
    plan = Plan.load(folder / "plans.json")
    if not folds:
        folds = sorted((p.name[5:] for p in folder.glob("fold_*") if (p / checkpoint_name).is_file()),
                       key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
        if not folds:
            raise ModelError(f"no fold_*/{checkpoint_name} in the model folder", folder)
    networks = []
    trained_axes = set(plan.mirror_axes)
    for fold in folds:
        ckpt, net = load_fold_checkpoint(folder, plan, fold, checkpoint_name)
        networks.append(net)
        # Test-time mirroring over the axes every fold was trained with (absent in older checkpoints: the plan's).
        trained_axes &= set(ckpt.get("inference_allowed_mirroring_axes", plan.mirror_axes))
    plan.mirror_axes = sorted(trained_axes)
    return plan, networks


def load_fold_checkpoint(folder: str | Path, plan: Plan, fold: str | int,
                         checkpoint_name: str = "checkpoint_final.pth") -> tuple[dict, nn.Module]:
    """The checkpoint dict of ``<folder>/fold_<fold>/<checkpoint_name>`` and its eval-mode CPU network.

    The weights must fit the network ``plan`` builds; every problem is a :class:`ModelError` naming the file.
    """
    from ..networks import build_network

    folder = Path(folder)
    path = folder / f"fold_{fold}" / checkpoint_name
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("fold_*"))
        raise ModelError(f"checkpoint missing (folds present: {', '.join(have) or 'none'})", path)
    ckpt = load_weights_only(path, ModelError)  # refuses pickled code; one line for broken files
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise ModelError("not a suprem_nn checkpoint (no 'network_weights')", path)
    if ckpt.get("network", plan.network) != plan.network:
        raise ModelError(f"checkpoint holds a '{ckpt.get('network')}' network but plans.json says "
                         f"'{plan.network}'", path)
    net = build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs)
    try:
        net.load_state_dict(ckpt["network_weights"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"weights do not fit the planned network ({str(exc).splitlines()[0][:200]})",
                         path) from None
    return ckpt, net.eval()


def resolve_dataset_model(dataset: str, plan_name: Optional[str] = None) -> Path:
    """``<SUPREM_RESULTS>/<dataset folder>/<plan>``; ``dataset`` may be a full name or a numeric id."""
    folder = dataset_folder(results_root(), dataset)
    if not folder.is_dir():
        raise ModelError(f"no trained models for dataset '{dataset}'; {trained_listing(results_root())}", folder)
    plans = sorted(p.name for p in folder.iterdir() if (p / "plans.json").is_file())
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

