"""Small plans, networks and model folders for inference tests (tiny patches so tests stay fast)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from torch import nn

from suprem_nn.planning.plans import Normalization, Plan


def tiny_plan(multilabel: bool = True, classes=("liver", "spleen"), network: str = "segresnet",
              patch=(32, 32, 32), spacing=(6.0, 6.0, 6.0), orientation="RAS", mirror_axes=(0, 1, 2)) -> Plan:
    classes = list(classes)
    return Plan(dataset_name="Dataset999_Tiny", plan_name=f"tiny_{network}", network=network, pretrained=None,
                channel_names=["CT"], class_names=classes, label_values=list(range(1, len(classes) + 1)),
                multilabel=multilabel, orientation=orientation, target_spacing=list(spacing),
                normalization=[Normalization("ct_window", -175.0, 250.0)], crop_threshold=-175.0,
                patch_size=list(patch), batch_size=1, divisibility=8, median_shape=list(patch),
                network_kwargs={"init_filters": 8} if network == "segresnet" else {},
                mirror_axes=list(mirror_axes))


class ThresholdNet(nn.Module):
    """Pointwise network: class c's logit is s_c * (x - t_c) (s_c = 40 by default). The prediction is a function of the voxel's
    intensity only, so it is exactly equivariant to flips and independent of window placement."""

    def __init__(self, thresholds=(0.5, 0.8), background=False, scales=None):
        super().__init__()
        self.register_buffer("t", torch.tensor(thresholds, dtype=torch.float32).view(1, -1, 1, 1, 1))
        scales = scales or [40.0] * len(thresholds)
        self.register_buffer("s", torch.tensor(scales, dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.background = background

    def forward(self, x):
        logits = self.s * (x[:, :1] - self.t)
        if self.background:  # softmax plans: background logit 0
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], 1)
        return logits


class UnconvertibleNet(nn.Module):
    """A convolution, then ``lgamma``: OpenVINO's converter has no rule for ``aten::lgamma``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1)

    def forward(self, x):
        return torch.lgamma(self.conv(x).abs() + 1)


class CrashesWhenTraced(nn.Module):
    """A convolution whose trace kills its process with SIGSEGV, as a converter crashing in native code does,
    in any process but the one that built it (a test process must survive to report)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1)
        self.builder = os.getpid()

    def forward(self, x):
        if torch.jit.is_tracing() and os.getpid() != self.builder:
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.conv(x)


def make_model_folder(root: Path, plan: Plan, folds=(0,), seed: int = 0) -> Path:
    """A model folder (plans.json + fold_k/checkpoint_final.pth) with random tiny-network weights."""
    from suprem_nn.networks import build_network

    folder = Path(root) / plan.dataset_name / plan.plan_name
    folder.mkdir(parents=True, exist_ok=True)
    plan.save(folder / "plans.json")
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + i)
        net = build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": net.state_dict(), "network": plan.network, "num_inputs": plan.num_inputs,
                    "num_outputs": plan.num_outputs, "epoch": 1}, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def make_nnunet_model_folder(root: Path) -> Path:
    """A 3-stage PlainConvUNet nnU-Net v2 model folder with random weights (what nnUNetv2_train writes)."""
    import json

    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    arch = {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}
    folder = root / "Dataset990_Fab" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    plans = {"dataset_name": "Dataset990_Fab", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "foreground_intensity_properties_per_channel": {"0": {
                 "max": 1300.0, "mean": 50.0, "median": 55.0, "min": -1000.0, "percentile_00_5": -900.0,
                 "percentile_99_5": 250.0, "std": 100.0}},
             "configurations": {"3d_fullres": {
                 "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
                 "batch_size": 2, "patch_size": [32, 32, 32], "spacing": [6.0, 6.0, 6.0],
                 "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
                 "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                  "arch_kwargs": arch,
                                  "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                     "labels": {"background": 0, "liver": 1, "spleen": 2}}))
    torch.manual_seed(0)
    net = PlainConvUNet(input_channels=1, num_classes=3, deep_supervision=False, conv_op=torch.nn.Conv3d,
                        norm_op=torch.nn.InstanceNorm3d, dropout_op=None, nonlin=torch.nn.LeakyReLU,
                        **{k: arch[k] for k in ("n_stages", "features_per_stage", "kernel_sizes", "strides",
                                                "n_conv_per_stage", "n_conv_per_stage_decoder", "conv_bias",
                                                "norm_op_kwargs", "nonlin_kwargs")})
    torch.save({"network_weights": net.state_dict(), "inference_allowed_mirroring_axes": [0, 1, 2]},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder
