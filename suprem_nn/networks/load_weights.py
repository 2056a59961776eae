"""Putting a SuPreM weights file's tensors into a network (reading the file: :mod:`.weights_file`).

Two uses:

* :func:`init_from_pretrained` copies the backbone into a model built by
  ``build_network`` and leaves its fresh task head untouched (fine-tuning).
* :func:`load_universal_model` rebuilds the complete network stored in the
  file (Universal Model with C sigmoid outputs, or SegResNet with its head)
  for direct inference.

Both return or raise in plain words: a :class:`LoadReport` of what was loaded, skipped and adapted, or
:class:`~.weights_file.CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import backbones
from .backbones import BACKBONES
from .class_maps import class_names_for
from .export_record import describe_export
from .registry import build_network, build_universal_model
from .universal import UNIVERSAL_HEAD_PREFIXES, UniversalModel
from .weights_file import (CheckpointError, ParsedCheckpoint, _describe_keys, _first_line, load_checkpoint_file,
                           read_checkpoint)

__all__ = [
    "CheckpointError",
    "LoadReport",
    "ParsedCheckpoint",
    "load_checkpoint_file",
    "read_checkpoint",
    "init_from_pretrained",
    "load_universal_model",
]

_UNIVERSAL_SKIP_REASONS = {
    "organ_embedding": "CLIP text embedding of the file's classes, used only by the Universal Model's dynamic heads",
    "text_to_vision.": "Universal-Model text projection (feeds the dynamic heads), not part of the backbone",
    "controller.": "Universal-Model dynamic-head generator, not part of the backbone",
    "GAP.": "Universal-Model global-pooling branch (feeds the dynamic heads), not part of the backbone",
    "precls_conv.": "Universal-Model 8-channel pre-classifier (feeds the dynamic heads), not part of the backbone",
}


@dataclass
class LoadReport:
    """What a load did, in data (fields) and in plain words (``str(report)``).

    ``loaded`` holds the model's key names that received file tensors;
    ``skipped`` maps the file's key names (``module.`` removed) to the reason
    they were not used; ``adapted`` maps model keys to how a tensor was changed.
    """

    path: str
    family: str
    mode: str  # "backbone" (fine-tuning init) or "full" (direct inference)
    layout: str  # "universal", "plain with head" or "backbone only"
    container: str | None
    stripped_prefixes: list[str]
    keys_in_file: int
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    adapted: dict[str, str] = field(default_factory=dict)
    ignored_entries: list[str] = field(default_factory=list)
    kept_fresh: list[str] = field(default_factory=list)
    num_classes_in_file: int | None = None
    class_names_in_file: list[str] | None = None
    output_activation: str | None = None
    origin: str | None = None  # where an exported backbone comes from (its JSON record), None for other files

    def __str__(self) -> str:
        spec = BACKBONES[self.family]
        where = f"'{self.container}' entry" if self.container else "top level (bare state dict)"
        lines = [
            f"Checkpoint {self.path}",
            f"  contents: {spec.display}, {self.layout}, {self.keys_in_file} tensors read from the {where}"
            + (f"; removed key prefixes {', '.join(repr(p) for p in self.stripped_prefixes)}"
               if self.stripped_prefixes else ""),
        ]
        if self.origin:
            lines.append(f"  origin: {self.origin}")
        if self.num_classes_in_file is not None:
            names = self.class_names_in_file
            order = (f"{names[0]}, {names[1]}, ..., {names[-1]}" if names and len(names) > 3
                     else ", ".join(names) if names else "unknown class order")
            lines.append(f"  classes in file: {self.num_classes_in_file} ({order})")
        what = "backbone for fine-tuning" if self.mode == "backbone" else "complete network for direct inference"
        lines.append(f"  loaded: {len(self.loaded)} tensors ({what})")
        for key, how in self.adapted.items():
            lines.append(f"  adapted: {key}: {how}")
        if self.kept_fresh:
            lines.append(f"  kept freshly initialised: {', '.join(self.kept_fresh)} (new task head)")
        groups: dict[str, list[str]] = {}
        for key, reason in self.skipped.items():
            groups.setdefault(reason, []).append(key)
        for reason, keys in groups.items():
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            lines.append(f"  skipped {len(keys)}: {shown}: {reason}")
        if self.ignored_entries:
            lines.append(f"  ignored top-level entries: {', '.join(self.ignored_entries)} (training state)")
        if self.output_activation:
            lines.append(f"  output: logits; apply {self.output_activation}")
        return "\n".join(lines)


def _model_in_channels(model: nn.Module, family: str) -> int:
    return int(model.state_dict()[BACKBONES[family].input_conv_keys[0]].shape[1])


# --------------------------------------------------------------------------- loading


def init_from_pretrained(model: nn.Module, network_name: str, path, allow_unsafe: bool = False) -> LoadReport:
    """Copy the pretrained backbone of ``path`` into ``model`` (built by ``build_network``).

    The model's task head (``out_tr``, ``out`` or ``conv_final.2``) keeps its
    fresh initialisation.  When the model has n > 1 input channels, each
    1-channel input convolution of the file is repeated over the n channels
    and divided by n, so a CT-like input replicated on every channel gives the
    pretrained response; this is recorded in ``report.adapted``.
    Raises :class:`CheckpointError` if the file holds another backbone, a
    tensor shape differs outside the head, or the file is unreadable/incomplete.
    """
    spec = backbones.backbone(network_name)
    if spec.release is None:
        raise CheckpointError(f"{path}: no SuPreM weights exist for {spec.display} ('{network_name}'), so no weights "
                              f"file can start it; train it from scratch")
    parsed = read_checkpoint(path, allow_unsafe)
    if parsed.family != network_name:
        raise CheckpointError(
            f"{parsed.path}: this file holds a {BACKBONES[parsed.family].display} checkpoint, but the model "
            f"is a {spec.display} ('{network_name}'); build the network as '{parsed.family}' or use the matching file"
        )
    target = model.state_dict()
    target_backbone = [k for k in target if not k.startswith(spec.head_prefixes)]
    file_body = parsed.network_state
    absent = [k for k in target_backbone if k not in file_body]
    if absent:
        raise CheckpointError(
            f"{parsed.path}: the model has {len(absent)} backbone tensors the file lacks ({_describe_keys(absent)}); "
            f"was the model built with non-default sizes?"
        )
    n_in = _model_in_channels(model, network_name)
    new_state: dict[str, torch.Tensor] = {}
    adapted: dict[str, str] = {}
    mismatched: list[str] = []
    for key in target_backbone:
        src, want = file_body[key], target[key]
        if src.shape != want.shape:
            if (key in spec.input_conv_keys and src.dim() >= 2 and src.shape[1] == 1
                    and src.shape[0] == want.shape[0] and src.shape[2:] == want.shape[2:]):
                src = src.repeat(1, n_in, *([1] * (src.dim() - 2))) / n_in
                adapted[key] = f"1 input channel -> {n_in}: weights repeated across channels and divided by {n_in}"
            else:
                mismatched.append(f"{key}: file {tuple(src.shape)} vs model {tuple(want.shape)}")
                continue
        if src.dtype != want.dtype and src.is_floating_point():
            adapted.setdefault(key, f"cast from {src.dtype} to {want.dtype}")
        new_state[key] = src
    if mismatched:
        raise CheckpointError(
            f"{parsed.path}: {len(mismatched)} backbone tensor shapes differ from the model: "
            + "; ".join(mismatched[:4]) + (" ..." if len(mismatched) > 4 else "")
        )
    result = model.load_state_dict(new_state, strict=False)
    fresh = sorted(result.missing_keys)
    if result.unexpected_keys or any(not k.startswith(spec.head_prefixes) for k in fresh):
        raise CheckpointError(f"{parsed.path}: internal load mismatch: missing {fresh}, unexpected {result.unexpected_keys}")

    c_file = parsed.num_classes
    skipped: dict[str, str] = {}
    for key in parsed.state_dict:
        if parsed.universal and not key.startswith("backbone."):
            prefix = next(p for p in UNIVERSAL_HEAD_PREFIXES if key.startswith(p))
            skipped[key] = _UNIVERSAL_SKIP_REASONS[prefix]
    for key in file_body:
        if key.startswith(spec.head_prefixes):
            shown = f"backbone.{key}" if parsed.universal else key
            skipped[shown] = (f"task head of the pretrained model ({c_file} classes); the model keeps its freshly "
                              f"initialised head")
    layout = "universal" if parsed.universal else ("plain with head" if c_file is not None else "backbone only")
    return LoadReport(
        path=parsed.path, family=parsed.family, mode="backbone", layout=layout, container=parsed.container,
        stripped_prefixes=parsed.stripped_prefixes, keys_in_file=len(parsed.state_dict), loaded=list(new_state),
        skipped=skipped, adapted=adapted, ignored_entries=parsed.ignored_entries, kept_fresh=fresh,
        num_classes_in_file=c_file, class_names_in_file=class_names_for(c_file) if c_file else None,
        output_activation=None, origin=describe_export(parsed.path),
    )


def load_universal_model(path, backbone: str | None = None, allow_unsafe: bool = False,
                         batch_stats_in_eval: bool = True) -> tuple[nn.Module, LoadReport]:
    """Rebuild the complete network stored in ``path`` for direct inference.

    U-Net / Swin UNETR release files give a :class:`UniversalModel` with C
    sigmoid outputs (C read from ``organ_embedding``); the SegResNet release
    gives a SegResNet with its C-channel head; a plain fine-tuned file gives
    that network with its head.  ``backbone`` (optional) must match the file.
    The model is returned in eval mode on the CPU.
    """
    parsed = read_checkpoint(path, allow_unsafe)
    if backbone is not None and backbone != parsed.family:
        raise CheckpointError(
            f"{parsed.path}: holds a {BACKBONES[parsed.family].display} checkpoint, not '{backbone}'"
        )
    family, c = parsed.family, parsed.num_classes
    if c is None:
        raise CheckpointError(
            f"{parsed.path}: holds only a {BACKBONES[family].display} backbone without an output head, so it "
            f"cannot run direct inference; use init_from_pretrained() and fine-tune a new head"
        )
    n_in = parsed.in_channels
    extra = {"batch_stats_in_eval": batch_stats_in_eval} if family == "unet" else {}
    if parsed.universal:
        model: nn.Module = build_universal_model(family, c, in_channels=n_in, **extra)
        state = parsed.state_dict
        layout, activation = "universal", "sigmoid per channel (multi-label)"
    else:
        model = build_network(family, n_in, c, **extra)
        state = parsed.network_state
        layout = "plain with head"
        # The SegResNet release was trained with a per-class sigmoid loss; for any
        # other plain file the training loss is not recorded in the checkpoint.
        activation = ("sigmoid per channel (multi-label)" if family == "segresnet" and c in (9, 25, 32)
                      else "the activation used in training (SuPreM fine-tuning uses softmax)")
    target = model.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and v.shape != target[k].shape]
    if mismatched:
        raise CheckpointError(f"{parsed.path}: tensor shapes differ from the rebuilt network: " + "; ".join(mismatched[:4]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{parsed.path}: does not match the rebuilt network: {_first_line(err)}") from None
    model.eval()
    report = LoadReport(
        path=parsed.path, family=family, mode="full", layout=layout, container=parsed.container,
        stripped_prefixes=parsed.stripped_prefixes, keys_in_file=len(parsed.state_dict), loaded=list(state),
        skipped={}, adapted={}, ignored_entries=parsed.ignored_entries, num_classes_in_file=c,
        class_names_in_file=class_names_for(c), output_activation=activation,
    )
    return model, report


def is_universal_model(model: nn.Module) -> bool:
    """True for the Universal Model (multi-label output: threshold each sigmoid channel)."""
    return isinstance(model, UniversalModel)
