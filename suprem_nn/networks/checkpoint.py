"""Safe, strict loader for SuPreM checkpoints.

Accepted layouts (reference §2): ``{'net': sd, ...}`` (the released files),
``{'state_dict': sd}``, ``{'model': sd}`` or a bare state dict; keys may carry
``module.`` (DDP) and ``backbone.`` prefixes; the state dict may be a whole
Universal Model (U-Net / Swin UNETR), a plain network with its task head
(SegResNet release, fine-tuned models) or a backbone alone.

Two uses:

* :func:`init_from_pretrained` copies the backbone into a model built by
  ``build_network`` and leaves its fresh task head untouched (fine-tuning).
* :func:`load_universal_model` rebuilds the complete network stored in the
  file (Universal Model with C sigmoid outputs, or SegResNet with its head)
  for direct inference.

Files are always read with ``torch.load(weights_only=True)`` unless the caller
opts in with ``allow_unsafe=True``; every failure a user can cause is raised
as :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .class_maps import class_names_for
from .registry import NETWORK_SPECS, build_network, build_universal_model
from .universal import UNIVERSAL_HEAD_PREFIXES, UniversalModel

__all__ = [
    "CheckpointError",
    "LoadReport",
    "ParsedCheckpoint",
    "load_checkpoint_file",
    "read_checkpoint",
    "init_from_pretrained",
    "load_universal_model",
]

CONTAINER_KEYS = ("net", "state_dict", "model")
UNIVERSAL_HEAD_KEYS = 13  # organ_embedding + precls_conv(4) + GAP(4) + controller(2) + text_to_vision(2)
_FAMILY_MARKERS = (("down_tr64.", "unet"), ("swinViT.", "swinunetr"), ("convInit.", "segresnet"))
_UNIVERSAL_SKIP_REASONS = {
    "organ_embedding": "CLIP text embedding of the file's classes, used only by the Universal Model's dynamic heads",
    "text_to_vision.": "Universal-Model text projection (feeds the dynamic heads), not part of the backbone",
    "controller.": "Universal-Model dynamic-head generator, not part of the backbone",
    "GAP.": "Universal-Model global-pooling branch (feeds the dynamic heads), not part of the backbone",
    "precls_conv.": "Universal-Model 8-channel pre-classifier (feeds the dynamic heads), not part of the backbone",
}


class CheckpointError(ValueError):
    """A checkpoint file cannot be used as asked; the message names the file and the problem."""


@dataclass
class ParsedCheckpoint:
    """A checkpoint file reduced to a flat state dict plus what was learnt while unwrapping it.

    ``state_dict`` keys have ``module.`` removed (and a lone ``backbone.`` prefix
    of a backbone-only export); Universal files keep ``backbone.`` on backbone keys.
    """

    path: str
    state_dict: dict[str, torch.Tensor]
    container: str | None
    stripped_prefixes: list[str]
    ignored_entries: list[str]
    family: str | None = None
    universal: bool = False

    @property
    def network_state(self) -> dict[str, torch.Tensor]:
        """Backbone + plain task head tensors, without the Universal ``backbone.`` prefix."""
        if not self.universal:
            return {k: v for k, v in self.state_dict.items()}
        return {k[len("backbone."):]: v for k, v in self.state_dict.items() if k.startswith("backbone.")}

    @property
    def num_classes(self) -> int | None:
        """Output classes C of the stored head (Universal embedding rows or plain head width)."""
        if self.universal:
            return int(self.state_dict["organ_embedding"].shape[0])
        spec = NETWORK_SPECS[self.family]
        heads = [v for k, v in self.state_dict.items() if k.startswith(spec.head_prefixes) and k.endswith("weight")]
        return int(heads[0].shape[0]) if heads else None

    @property
    def in_channels(self) -> int:
        key = NETWORK_SPECS[self.family].input_conv_keys[0]
        return int(self.network_state[key].shape[1])


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

    def __str__(self) -> str:
        spec = NETWORK_SPECS[self.family]
        where = f"'{self.container}' entry" if self.container else "top level (bare state dict)"
        lines = [
            f"Checkpoint {self.path}",
            f"  contents: {spec.display}, {self.layout}, {self.keys_in_file} tensors read from the {where}"
            + (f"; removed key prefixes {', '.join(repr(p) for p in self.stripped_prefixes)}"
               if self.stripped_prefixes else ""),
        ]
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


# --------------------------------------------------------------------------- reading


def _unsafe_global_detail(message: str) -> str | None:
    for line in message.splitlines():
        if "GLOBAL" in line:
            return line.strip().replace("WeightsUnpickler error: ", "")
    return None


def _torch_load(path: Path, allow_unsafe: bool) -> object:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unsafe_global_detail(str(err))
        if not allow_unsafe:
            if detail is not None:
                raise CheckpointError(
                    f"{path}: refused to load: the file needs arbitrary Python objects to be unpickled "
                    f"({detail}), which can execute code. Pass allow_unsafe=True only if you trust "
                    f"where the file came from."
                ) from None
            raise CheckpointError(
                f"{path}: cannot be read as a PyTorch checkpoint with the safe loader (corrupt, truncated, "
                f"or not written by torch.save): {_first_line(err)}"
            ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError) as err:
        raise CheckpointError(
            f"{path}: the file is truncated or corrupt and cannot be read as a PyTorch checkpoint "
            f"({type(err).__name__}: {_first_line(err)})"
        ) from None
    # Reached only with allow_unsafe=True after the safe loader refused the file.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any failure of the unrestricted unpickler is a broken file
        raise CheckpointError(
            f"{path}: cannot be read even with allow_unsafe=True ({type(err).__name__}: {_first_line(err)})"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _unwrap(path: Path, obj: object) -> tuple[dict, str | None, list[str]]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (state dict or {{'net': ...}}), found {type(obj).__name__}")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None, []
    for name in CONTAINER_KEYS:
        inner = obj.get(name)
        if isinstance(inner, dict) and inner:
            return inner, name, sorted(str(k) for k in obj if k != name)
    raise CheckpointError(
        f"{path}: no state dict found: expected a 'net', 'state_dict' or 'model' entry or a bare "
        f"name->tensor dict; top-level keys are {sorted(map(str, obj))[:8]}"
    )


def _strip_prefix(sd: dict, prefix: str) -> tuple[dict, bool]:
    if sd and all(isinstance(k, str) and k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}, True
    return sd, False


def read_checkpoint(path, allow_unsafe: bool = False) -> ParsedCheckpoint:
    """Load ``path`` safely, unwrap it, strip prefixes and detect the network family."""
    path = Path(path)
    sd, container, ignored = _unwrap(path, _torch_load(path, allow_unsafe))
    bad = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: the state dict holds non-tensor entries, e.g. {bad[:3]}")
    stripped: list[str] = []
    while True:  # nested DDP wrappers produce module.module.
        sd, did = _strip_prefix(sd, "module.")
        if not did:
            break
        stripped.append("module.")
    universal = "organ_embedding" in sd
    if not universal:
        sd, did = _strip_prefix(sd, "backbone.")
        if did:
            stripped.append("backbone.")
    parsed = ParsedCheckpoint(str(path), dict(sd), container, stripped, ignored, universal=universal)
    body = parsed.network_state
    found = [fam for marker, fam in _FAMILY_MARKERS if any(k.startswith(marker) for k in body)]
    if len(found) != 1:
        raise CheckpointError(
            f"{path}: does not look like a SuPreM U-Net, SegResNet or Swin UNETR checkpoint "
            f"(families recognised: {found or 'none'}; first keys: {list(sd)[:4]})"
        )
    parsed.family = found[0]
    if universal and parsed.family == "segresnet":
        raise CheckpointError(f"{path}: a Universal-Model text embedding next to a SegResNet is not a SuPreM layout")
    _check_key_set(parsed)
    return parsed


def load_checkpoint_file(path, allow_unsafe: bool = False) -> dict[str, torch.Tensor]:
    """Safely load a checkpoint and return its flat state dict (``module.`` removed).

    Universal-Model files keep their ``backbone.`` / head key names so the dict
    loads straight into :class:`UniversalModel`.
    """
    return read_checkpoint(path, allow_unsafe).state_dict


# --------------------------------------------------------------------------- validation


@lru_cache(maxsize=None)
def _reference_keys(family: str, universal: bool, with_head: bool) -> tuple[str, ...]:
    """State-dict keys of a freshly built reference model (built once per process; key names do not
    depend on channel or class counts)."""
    # MONAI's Swin UNETR cannot be built on the meta device (it calls .item()), so build on the CPU.
    model = build_universal_model(family, 1) if universal else build_network(family, 1, 1)
    sd = model.state_dict()
    if not universal and not with_head:
        sd = {k: v for k, v in sd.items() if not k.startswith(NETWORK_SPECS[family].head_prefixes)}
    return tuple(sd)


def _describe_keys(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _check_key_set(parsed: ParsedCheckpoint) -> None:
    """Reject files whose tensor names differ from the released layout of their family."""
    spec = NETWORK_SPECS[parsed.family]
    sd = parsed.state_dict
    body = parsed.network_state
    has_head = any(k.startswith(spec.head_prefixes) for k in body)
    expected = set(_reference_keys(parsed.family, parsed.universal, with_head=has_head and not parsed.universal))
    if parsed.universal:
        present = set(sd)
        what = f"{spec.display} Universal Model: {len(expected)} tensors ({spec.backbone_keys} backbone + " \
               f"{UNIVERSAL_HEAD_KEYS} head)"
    else:
        present = set(body)
        what = f"{spec.display}: {len(expected)} tensors"
    missing, extra = expected - present, present - expected
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({_describe_keys(missing)})")
        if extra:
            parts.append(f"unexpected {len(extra)} ({_describe_keys(extra)})")
        raise CheckpointError(
            f"{parsed.path}: expected the {what}, found {len(present)}; {'; '.join(parts)}. "
            f"The file is not a complete SuPreM {parsed.family} checkpoint of the released architecture."
        )


def _model_in_channels(model: nn.Module, family: str) -> int:
    return int(model.state_dict()[NETWORK_SPECS[family].input_conv_keys[0]].shape[1])


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
    if network_name not in NETWORK_SPECS:
        raise ValueError(f"unknown network {network_name!r}; choose one of {sorted(NETWORK_SPECS)}")
    spec = NETWORK_SPECS[network_name]
    parsed = read_checkpoint(path, allow_unsafe)
    if parsed.family != network_name:
        raise CheckpointError(
            f"{parsed.path}: this file holds a {NETWORK_SPECS[parsed.family].display} checkpoint, but the model "
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
        output_activation=None,
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
            f"{parsed.path}: holds a {NETWORK_SPECS[parsed.family].display} checkpoint, not '{backbone}'"
        )
    family, c = parsed.family, parsed.num_classes
    if c is None:
        raise CheckpointError(
            f"{parsed.path}: holds only a {NETWORK_SPECS[family].display} backbone without an output head, so it "
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
