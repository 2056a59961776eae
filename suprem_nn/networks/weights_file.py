"""Reading one SuPreM weights file safely: load, unwrap, strip prefixes, detect the family, check the key set.

Accepted layouts (reference §2): ``{'net': sd, ...}`` (the released files),
``{'state_dict': sd}``, ``{'model': sd}`` or a bare state dict; keys may carry
``module.`` (DDP) and ``backbone.`` prefixes; the state dict may be a whole
Universal Model (U-Net / Swin UNETR), a plain network with its task head
(SegResNet release, fine-tuned models) or a backbone alone.

Files are always read with ``torch.load(weights_only=True)`` unless the caller
opts in with ``allow_unsafe=True``; every failure a user can cause is raised
as :class:`CheckpointError` naming the file and the problem. Putting the
tensors into a network is :mod:`suprem_nn.networks.load_weights`' job.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .backbones import BACKBONES
from .registry import build_network, build_universal_model

__all__ = ["CheckpointError", "ParsedCheckpoint", "read_checkpoint", "load_checkpoint_file"]

CONTAINER_KEYS = ("net", "state_dict", "model")
UNIVERSAL_HEAD_KEYS = 13  # organ_embedding + precls_conv(4) + GAP(4) + controller(2) + text_to_vision(2)
# Only backbones with released SuPreM weights have a file layout the reader recognises.
_RELEASED = {name: b for name, b in BACKBONES.items() if b.release is not None}


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
        spec = BACKBONES[self.family]
        heads = [v for k, v in self.state_dict.items() if k.startswith(spec.head_prefixes) and k.endswith("weight")]
        return int(heads[0].shape[0]) if heads else None

    @property
    def in_channels(self) -> int:
        """Image channels of the stored network: dimension 1 of its input convolution's weight."""
        key = BACKBONES[self.family].input_conv_keys[0]
        return int(self.network_state[key].shape[1])


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
    except Exception as err:  # noqa: BLE001 - the safe unpickler runs no code; on foreign bytes it raises anything
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
    """Load ``path`` safely, unwrap it, strip prefixes and detect the network family.

    Parameters
    ----------
    path : str or Path
        A SuPreM ``.pth`` file (or one in the same layout).
    allow_unsafe : bool
        Fall back to full unpickling, which can execute code, when the ``weights_only`` loader refuses the file.

    Returns
    -------
    ParsedCheckpoint
        The tensors with ``module.`` (and, outside the Universal Model, ``backbone.``) prefixes removed, and the
        detected family.

    Raises
    ------
    CheckpointError
        If the file is missing, empty, refused by the safe loader (without ``allow_unsafe``) or unreadable, holds
        non-tensor entries, matches no single released family, or its tensor names differ from that family's
        released layout.
    """
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
    found = [fam for fam, b in _RELEASED.items() if any(k.startswith(b.release.marker) for k in body)]
    if len(found) != 1:
        families = ", ".join(b.display for b in _RELEASED.values())
        raise CheckpointError(
            f"{path}: does not look like a SuPreM checkpoint of one of {families} "
            f"(families recognised: {found or 'none'}; first keys: {list(sd)[:4]})"
        )
    parsed.family = found[0]
    if universal and not _RELEASED[parsed.family].release.universal:
        raise CheckpointError(f"{path}: a Universal-Model text embedding next to a "
                              f"{_RELEASED[parsed.family].display} is not a SuPreM layout")
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
        sd = {k: v for k, v in sd.items() if not k.startswith(BACKBONES[family].head_prefixes)}
    return tuple(sd)


def _describe_keys(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _check_key_set(parsed: ParsedCheckpoint) -> None:
    """Reject files whose tensor names differ from the released layout of their family."""
    spec = BACKBONES[parsed.family]
    sd = parsed.state_dict
    body = parsed.network_state
    has_head = any(k.startswith(spec.head_prefixes) for k in body)
    expected = set(_reference_keys(parsed.family, parsed.universal, with_head=has_head and not parsed.universal))
    if parsed.universal:
        present = set(sd)
        what = f"{spec.display} Universal Model: {len(expected)} tensors ({spec.release.backbone_keys} backbone + " \
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
