"""``export_onnx``: a trained fold (or a released SuPreM file) -> ``model.onnx`` and ``model.onnx.json`` beside it.

The ONNX file holds the network pass only: one window ``(B, C, px, py, pz)`` float32 in network space (axes
``x, y, z`` = array axes after reorientation to the plan's orientation, see :mod:`suprem_nn.io.geometry`) to
logits ``(B, K, px, py, pz)``. Everything around it (reorientation, crop, intensity normalisation, resampling,
sliding windows, activation, label values) is written to the JSON record, so the model can be deployed with
ONNX Runtime or OpenVINO alone (documentation/deploy_onnx.md shows how).

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``. It needs only the ``onnx``
package, and it traces all three backbones at their fixed patch (Swin UNETR's window partition included, because
the trace records the static shapes); the torch.export-based exporter would add onnxscript and its dependencies.
"""
from __future__ import annotations

import dataclasses
import datetime
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..planning.plans import Plan
from ..utils.atomic import atomic_path, atomic_write_json
from .. import model_folder as mf
from ..model_folder import ModelError
from .backbone_export import code_version, find_model_folder

__all__ = ["export_onnx", "onnx_record_path", "ONNX_OPSET", "INPUT_NAME", "OUTPUT_NAME", "RECORD_FORMAT_VERSION"]

# Opset 17 has LayerNormalization (Swin UNETR) and runs on ONNX Runtime >= 1.13 and every OpenVINO since 2023.
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
RECORD_FORMAT_VERSION = 1
# The importance weights suprem_nn's sliding window uses: a Gaussian with sigma = patch * this, per axis.
GAUSSIAN_SIGMA_SCALE = 0.125


def onnx_record_path(output: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (the record written beside the network)."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def export_onnx(output: str | Path, model: Optional[str | Path] = None, *, fold: Optional[str] = None,
                checkpoint_name: str = mf.FINAL_CHECKPOINT, plan_name: Optional[str] = None,
                suprem: Optional[str] = None, checkpoint: Optional[str | Path] = None, opset: int = ONNX_OPSET,
                verify: bool = True) -> dict:
    """Export one network to ONNX at its planned patch and write its record; return the record.

    Source, exactly one of: ``model`` (a model folder ``<results>/<dataset>/<plan>``, or a dataset name/id with
    ``plan_name``; ``fold`` "0".."4"/"all", None = the only fold with ``checkpoint_name``), or ``suprem`` and/or
    ``checkpoint`` (a released SuPreM file run with SuPreM's direct-inference recipe; ``suprem`` alone takes
    the released file from ``$SUPREM_WEIGHTS``, downloaded on first use).
    ``verify``: run the written file once in ONNX Runtime on a random window and record the largest absolute
    logit difference to torch (skipped, and recorded as skipped, when onnxruntime is not installed).
    Raises :class:`ModelError` naming the file for every problem a user can cause.
    """
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ModelError("the output file must end in .onnx", output)
    plan, net, source, step_size, direct, mirror_axes = _load(model, fold, checkpoint_name, plan_name, suprem,
                                                              checkpoint)
    net = net.float().eval()
    from ..networks.registry import uses_batch_statistics

    # Batch-statistics BatchNorm (SuPreM's U-Net) normalises with the statistics of the whole batch, so several
    # windows in one call would change each other's logits: such a file takes exactly one window per call.
    batch_stats = uses_batch_statistics(net)
    window = torch.rand((1, plan.num_inputs) + tuple(plan.patch_size), generator=torch.Generator().manual_seed(0))
    dynamic = None if batch_stats else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with atomic_path(output, suffix=".onnx") as tmp:
        _torch_export(net, window, tmp, opset, dynamic, plan)
        check = _verify(net, window, tmp, output) if verify else {"skipped": "not requested (--no-verify)"}
    record = _record(plan, net, output, opset, batch_stats, step_size, direct, source, check, mirror_axes)
    atomic_write_json(onnx_record_path(output), record)
    return record


def _load(model, fold, checkpoint_name, plan_name, suprem, checkpoint):
    """(plan, network, source description, default step size, direct-inference defaults or None, mirror axes)."""
    if model is not None and (suprem is not None or checkpoint is not None):
        raise ModelError("give either a model folder or --suprem/--checkpoint, not both")
    if model is None:
        if suprem is None and checkpoint is None:
            raise ModelError("nothing to export: give a model folder, or --suprem BACKBONE [--checkpoint FILE]")
        from .models import load_suprem_released, suprem_direct_defaults

        if checkpoint is None:
            from ..networks.weights import ensure_weights
            checkpoint = ensure_weights(suprem, progress=False, use_flag="--checkpoint FILE")
        plan, nets = load_suprem_released(suprem, checkpoint)
        defaults = suprem_direct_defaults(plan.pretrained)
        source = {"kind": "released SuPreM checkpoint (direct-inference recipe)",
                  "checkpoint": str(Path(checkpoint).resolve()), "backbone": plan.pretrained}
        return plan, nets[0], source, defaults["step_size"], defaults, list(plan.mirror_axes)
    from .backbone_export import _pick_fold

    folder = find_model_folder(str(model), plan_name)
    plan = mf.read_plan(folder)
    fold = _pick_fold(folder, fold, checkpoint_name)
    ckpt, net = mf.load_fold(folder, plan, fold, checkpoint_name)
    # The record's mirroring axes are those the fold was trained with (older checkpoints: the plan's).
    mirror_axes = mf.trained_mirror_axes(plan, ckpt)
    source = {"kind": "trained model folder", "model_folder": str(folder.resolve()), "fold": fold,
              "checkpoint": checkpoint_name, "epochs_completed": ckpt.get("epoch"),
              "finished": bool(ckpt.get("final", False))}
    return plan, net, source, 0.5, None, mirror_axes


def _torch_export(net: nn.Module, window: torch.Tensor, path: Path, opset: int, dynamic, plan: Plan) -> None:
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter announces its deprecation and tracer details on every call; they say
            # nothing about this export, whose result is checked against torch below.
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (window,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                              do_constant_folding=True)
    except ImportError as exc:
        raise ModelError(f"ONNX export needs the onnx package ({exc}); install it with: pip install -e \".[onnx]\" "
                         "(or pip install onnx)") from None
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as one line naming the network
        if "onnx is not installed" in str(exc).lower():
            raise ModelError("ONNX export needs the onnx package; install it with: pip install -e \".[onnx]\" "
                             "(or pip install onnx)") from None
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"torch.onnx could not export the {plan.network} network at patch "
                         f"{'x'.join(map(str, plan.patch_size))} (opset {opset}): {first}") from None


def _verify(net: nn.Module, window: torch.Tensor, path: Path, output: Path) -> dict:
    """Largest |ONNX Runtime - torch| logit difference on ``window`` run from ``path`` (the temporary file that
    becomes ``output``, which errors name), or why it was not measured."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # warnings about unused initialisers are noise here
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: window.numpy()})[0]
    with torch.inference_mode():
        ref = net(window).float().numpy()
    if got.shape != ref.shape:
        raise ModelError(f"the exported network returns shape {got.shape}, torch {ref.shape}", output)
    diff = float(np.abs(got - ref).max())
    if not np.isfinite(diff) or diff > 1e-2:
        raise ModelError(f"the exported network disagrees with torch (max abs logit difference {diff:.3g} on a "
                         "random window); please report this with the model folder", output)
    return {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", "window": "uniform random [0, 1)",
            "max_abs_logit_diff": diff}


def _classes(plan: Plan) -> list[dict]:
    """Output channel -> class name and label value (channel 0 is background for softmax plans)."""
    rows = [] if plan.multilabel else [{"channel": 0, "name": "background", "label_value": 0}]
    first = 0 if plan.multilabel else 1
    for k, (name, value) in enumerate(zip(plan.class_names, plan.label_values)):
        rows.append({"channel": first + k, "name": name, "label_value": int(value)})
    return rows


def _pad_value(plan: Plan) -> float:
    """Network-space value of air: what pads volumes smaller than the patch (``Predictor._pad_value``'s rule)."""
    n = plan.normalization[0]
    if n.scheme == "ct_clip_zscore" and n.lower is not None and n.mean is not None and n.std:
        return float((n.lower - n.mean) / n.std)
    return 0.0


_NORMALISATION_FORMULAS = {
    "ct_window": "clip(x, lower, upper), then (x - lower) / (upper - lower): values in [0, 1]",
    "ct_clip_zscore": "clip(x, lower, upper), then (x - mean) / std (dataset foreground statistics)",
    "zscore": "(x - mean(image)) / max(std(image), 1e-8), statistics of the cropped image",
    "none": "unchanged",
}


def _record(plan: Plan, net: nn.Module, output: Path, opset: int, batch_stats: bool, step_size: float,
            direct: Optional[dict], source: dict, check: dict, mirror_axes: list[int]) -> dict:
    batch = 1 if batch_stats else "batch"
    patch = [int(v) for v in plan.patch_size]
    activation = "sigmoid" if plan.multilabel else "softmax"
    return {
        "format": "suprem_nn ONNX export", "format_version": RECORD_FORMAT_VERSION,
        "model_file": output.name,
        "network": {"name": plan.network, "kwargs": dict(plan.network_kwargs),
                    "parameters": int(sum(p.numel() for p in net.parameters()))},
        "onnx": {
            "opset": int(opset), "exporter": f"torch.onnx TorchScript exporter (torch {torch.__version__})",
            "input": {"name": INPUT_NAME, "shape": [batch, plan.num_inputs] + patch, "dtype": "float32",
                      "axes": ["batch", "channel", "x", "y", "z"]},
            "output": {"name": OUTPUT_NAME, "shape": [batch, plan.num_outputs] + patch, "dtype": "float32",
                       "axes": ["batch", "class channel", "x", "y", "z"], "values": "logits (before activation)"},
            "dynamic_batch": not batch_stats,
            "batch_note": ("one window per call: the network normalises with the statistics of its batch "
                           "(SuPreM U-Net BatchNorm), so windows batched together would change each other's logits"
                           if batch_stats else "any number of windows per call; each window's logits are "
                           "independent of its batch mates"),
            "spatial_shape": "static: every call takes exactly the patch size",
        },
        "preprocessing": {
            "axis_order": "array axes (i, j, k) as nibabel reads a NIfTI file (i fastest on disk); network axes "
                          "x, y, z are the array axes after reorientation",
            "orientation": plan.orientation,
            "orientation_note": "permute and flip the array axes so that they point towards these anatomical "
                                "directions (closest axis-aligned orientation, as nibabel.as_closest_canonical "
                                "for RAS); null keeps the file's axes",
            "crop": {"threshold": plan.crop_threshold,
                     "rule": "crop to the bounding box of the voxels whose raw channel-0 value is > threshold "
                             "(null: of voxels where any channel is non-zero); outside it the prediction is "
                             "background"},
            "channels": [{"name": name, "normalization": dataclasses.asdict(n),
                          "formula": _NORMALISATION_FORMULAS.get(n.scheme, n.scheme)}
                         for name, n in zip(plan.channel_names, plan.normalization)],
            "order": "reorient -> crop -> normalise -> resample",
            "target_spacing_mm": [float(v) for v in plan.target_spacing],
            "resampling": {
                "new_shape": "round(shape * spacing / target_spacing) per axis (at least 1)",
                "image_spline_order": int(plan.image_order),
                "grid": "voxel edges aligned (scipy.ndimage.zoom grid_mode=True, mode='nearest'; order <= 1 is "
                        "torch interpolate align_corners=False)",
                "anisotropy_threshold": float(plan.anisotropy_threshold),
                "anisotropic_rule": "when max(spacing) / min(spacing) > threshold (of the source or the target) "
                                    "and one axis is the coarsest alone: resample in-plane with the spline order, "
                                    "then pick the nearest slice along that axis",
            },
            "pad_value": _pad_value(plan),
        },
        "sliding_window": {
            "patch_size": patch, "step_size_default": float(step_size),
            "steps": "per axis n = ceil((size - patch) / (step_size * patch)) + 1 windows spread evenly from 0 "
                     "to size - patch (rounded, mirror-symmetric; one more when n is odd and size - patch is odd)",
            "pad": "volumes smaller than the patch are padded with pad_value, split evenly (extra voxel after)",
            "importance_map": {"kind": "gaussian", "sigma_scale": GAUSSIAN_SIGMA_SCALE,
                               "centre": "(patch - 1) / 2", "normalised": "max 1, floored at its smallest "
                                                                         "positive value"},
            "mirror_axes": [int(a) for a in mirror_axes],
            "mirroring_note": "test-time mirroring averages the logits of every flip combination of these network "
                              "axes (each un-flipped); [] = not allowed",
            "average": "logits, weighted by the importance map, then divided by the summed weights",
        },
        "output": {
            "activation": activation,
            "activation_note": ("sigmoid per channel; a voxel belongs to a class where its probability > 0.5 "
                                "(masks may overlap; in one label map the highest channel wins)"
                                if plan.multilabel else "softmax over channels; label = argmax"),
            "multilabel": bool(plan.multilabel), "classes": _classes(plan),
            "restore": "resample probabilities linearly (align_corners=False) back to the cropped grid, decide "
                       "labels there, paste into a background-filled array, undo the reorientation",
        },
        "direct_inference_defaults": direct,
        "plan": plan.to_json(),
        "source": source,
        "verification": check,
        "code": code_version(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
