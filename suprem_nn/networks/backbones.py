"""The backbones this package trains: one :class:`Backbone` entry each, the only place a backbone's facts live.

Every stage reads them from :data:`BACKBONES`: the planner (divisibility, memory figures), the weights-file
reader (released-file marker and key counts), the trainer (encoder prefixes for ``--freeze-encoder-epochs``),
the predictor (memory format), the presets (``plans/<preset>``) and the command-line choice lists
(``--pretrained`` / ``--suprem`` / ``suprem_download_weights`` offer :func:`released_backbones`,
``--from-scratch`` offers :func:`backbone_names`).  Adding a backbone is a module, a preset and one entry
here: documentation/adding_a_backbone.md.

This module imports neither torch nor MONAI (the commands build their choice lists from it at start-up); the
network class named by ``constructor`` is imported when the first network is built.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backbone", "SuPreMRelease", "BACKBONES", "OPENVINO_CONVERSIONS", "backbone", "backbone_names",
           "released_backbones"]

# How the OpenVINO engine converts a network, from the lightest on memory to the heaviest (Backbone.openvino_conversion)
OPENVINO_CONVERSIONS = ("any size", "window", "trace")


@dataclass(frozen=True)
class SuPreMRelease:
    """How the released SuPreM weights file of a backbone is laid out (documentation/pretrained_weights.md).

    ``marker``: a key prefix only this family's state dicts have (after ``module.`` / ``backbone.`` are
    removed); it tells the reader which family a file holds.  ``backbone_keys``: tensors of the backbone
    without its task head.  ``file_keys``: tensors in the released file.  ``universal``: the file holds the
    Universal Model (backbone under ``backbone.``, 13 text-driven head tensors) rather than a plain network
    with its head.
    """

    marker: str
    backbone_keys: int
    file_keys: int
    universal: bool

    @property
    def key_prefix(self) -> str:
        """Where the backbone's keys sit in the released file (and in a backbone exported in its layout)."""
        return "module.backbone." if self.universal else "module."


@dataclass(frozen=True)
class Backbone:
    """Everything the pipeline needs to know about one backbone.

    Attributes:
        name: the name in plans (``plan.network``) and on the command line.
        display: how messages name it.
        constructor: ``"module:Class"`` inside :mod:`suprem_nn.networks`; called as
            ``Class(in_channels, out_channels, **plan.network_kwargs)`` and returning a module that maps
            (B, in_channels, X, Y, Z) float tensors to (B, out_channels, X, Y, Z) logits.
        divisibility: X, Y and Z of an input must be multiples of this (voxels); patches are planned so.
        encoder_prefixes: parameter-name prefixes of the encoder, frozen by ``--freeze-encoder-epochs``.
        head_prefixes: state-dict key prefixes of the task-specific output layer (left out of an exported
            backbone, kept fresh when fine-tuning).
        input_conv_keys: state-dict tensors whose axis 1 is the image channel count (adapted when a
            1-channel pretrained backbone starts a multi-channel model).
        activation_values_per_voxel: values autograd keeps for the backward pass per input voxel and per
            sample in fp32 training with default sizes, measured with
            :func:`~suprem_nn.networks.memory.measure_saved_activation_bytes` (the planner's memory estimate).
        parameter_count: parameters with default sizes and a 32-class head (memory estimate).
        channels_last: device types (``"cpu"``, ``"cuda"``) on which ``torch.channels_last_3d`` measured
            faster than the default layout for prediction (documentation/prediction.md).
        preset: file name of its preset in ``plans/`` (input conventions; for released weights also the
            file, address, class map and fine-tuning recipe).
        release: the released SuPreM weights' layout, or None when no SuPreM weights exist (the backbone is
            trained from scratch only).
        openvino_conversion: how the OpenVINO engine converts it (:data:`OPENVINO_CONVERSIONS`).
            ``"any size"``: ``torch.export`` for any window size up to the plan's, checked on a small window, so
            no float32 pass over a full window runs. SuPreM's U-Net needs 2.4 GB for that pass at 96³, more than
            a whole bfloat16 prediction with it, and MedNeXt's activations are larger still. SegResNet's pass is
            smaller, but the conversion runs in a helper process beside the prediction's (whose own imports and
            weights hold about 370 MB meanwhile): traced there, the two processes peaked at 1,226-1,314 MB of
            private memory, above the prediction's 1,066-1,090 MB; exported, the helper peaked at 582 MB.
            ``"window"``: ``torch.export`` at the plan's window only (static shapes): Swin UNETR, whose shifted
            attention windows pad and partition by shape arithmetic that took 185 s to export for any size; at
            the window it exports in 5 s without running, where its trace's float32 pass peaked at 2.5 GB.
            ``"trace"``: ``openvino.convert_model`` traces the torch module at the window.
    """

    name: str
    display: str
    constructor: str
    divisibility: int
    encoder_prefixes: tuple[str, ...]
    head_prefixes: tuple[str, ...]
    input_conv_keys: tuple[str, ...]
    activation_values_per_voxel: float
    parameter_count: int
    channels_last: frozenset[str]
    preset: str
    release: SuPreMRelease | None
    openvino_conversion: str = "trace"

    @property
    def suprem_weights(self) -> bool:
        """True when released SuPreM weights exist for this backbone."""
        return self.release is not None


# Activation factors and parameter counts: measured at 96^3 on the CPU (documentation/pretrained_weights.md);
# tests/networks/test_net_memory.py re-measures them at another size.
BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone(
        name="unet", display="U-Net (Models Genesis UNet3D)", constructor="unet3d:UNet3D", divisibility=8,
        encoder_prefixes=("down_tr",), head_prefixes=("out_tr.",),
        input_conv_keys=("down_tr64.ops.0.conv1.weight",),
        activation_values_per_voxel=876.0, parameter_count=19_075_680,
        channels_last=frozenset({"cpu", "cuda"}), preset="unet.json",
        release=SuPreMRelease(marker="down_tr64.", backbone_keys=104, file_keys=117, universal=True),
        openvino_conversion="any size"),
    Backbone(
        name="segresnet", display="SegResNet (MONAI)", constructor="segresnet:SuPreMSegResNet", divisibility=8,
        encoder_prefixes=("convInit", "down_layers"),
        # only the final 1x1x1 conv is task specific; conv_final.0 (GroupNorm) is pretrained and loaded
        head_prefixes=("conv_final.2.",), input_conv_keys=("convInit.conv.weight",),
        activation_values_per_voxel=252.0, parameter_count=4_701_424,
        channels_last=frozenset({"cpu"}), preset="segresnet.json",
        release=SuPreMRelease(marker="convInit.", backbone_keys=81, file_keys=83, universal=False),
        openvino_conversion="any size"),
    Backbone(
        name="swinunetr", display="Swin UNETR (MONAI 0.9 layout)", constructor="swinunetr:SuPreMSwinUNETR",
        divisibility=32, encoder_prefixes=("swinViT", "encoder"), head_prefixes=("out.",),
        # patch embedding, and encoder1's 3x3x3 conv plus its 1x1x1 residual projection
        input_conv_keys=("swinViT.patch_embed.proj.weight", "encoder1.layer.conv1.conv.weight",
                         "encoder1.layer.conv3.conv.weight"),
        activation_values_per_voxel=1368.0, parameter_count=62_188_178,
        channels_last=frozenset(), preset="swinunetr.json",
        release=SuPreMRelease(marker="swinViT.", backbone_keys=157, file_keys=170, universal=True),
        openvino_conversion="window"),
    # MedNeXt-B, 3x3x3 kernels, from scratch only (no SuPreM weights); why this configuration: mednext.py.
    # Activations: 1903.9 / 1940.3 / 1953.2 values per voxel at 32^3 / 64^3 / 96^3 (MONAI 1.6.1, CPU).
    # channels_last_3d on the CPU: one 96^3 window in 19.9 s against 34.4 s (benchmarks/bench_networks.py,
    # fp32, 2 busy cores); not measured on a GPU, so the default layout there.
    Backbone(
        name="mednext", display="MedNeXt (MONAI)", constructor="mednext:MedNeXtCT", divisibility=16,
        encoder_prefixes=("stem", "enc_stages", "down_blocks", "bottleneck"), head_prefixes=("out_0.",),
        input_conv_keys=("stem.weight",), activation_values_per_voxel=1954.0, parameter_count=10_511_840,
        channels_last=frozenset({"cpu"}), preset="mednext.json", release=None,
        openvino_conversion="any size"),
)}


def backbone(name: str) -> Backbone:
    """The entry of backbone ``name``; ValueError naming the choices for an unknown name."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(BACKBONES)}") from None


def backbone_names() -> list[str]:
    """Every backbone, in table order (the ``--from-scratch`` choices)."""
    return list(BACKBONES)


def released_backbones() -> list[str]:
    """Backbones with released SuPreM weights, in table order (the ``--pretrained`` / ``--suprem`` choices)."""
    return [name for name, b in BACKBONES.items() if b.suprem_weights]
