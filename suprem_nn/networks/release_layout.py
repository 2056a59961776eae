"""A trained network's backbone written in the key layout of the SuPreM release files, plus its JSON record.

The released files (documentation/pretrained_weights.md) are ``{'net': state_dict}`` with every key under
``module.``; the U-Net and Swin UNETR files hold the whole Universal Model, backbone under
``module.backbone.``; the SegResNet file is a plain SegResNet under ``module.``.  An export holds the backbone
tensors only, under those same names (104 U-Net, 157 Swin UNETR, 81 SegResNet tensors): the task head of the
trained model is specific to its dataset, and the Universal-Model head (text embeddings, dynamic heads) was
never trained here.  The loader reads such a file as a "backbone only" file of its family, exactly as it
would read the backbone of a released file.

Beside ``FILE.pth`` lies ``FILE.json``: what the backbone was trained on (classes, input conventions,
training data, code version) and the SHA-256 of the weights, so the record cannot be mistaken for another
file's.  Both are written atomically; the ``.pth`` appears under its name only after it has been read back
with the safe loader and loaded into a fresh network of its family.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..utils.atomic import atomic_path, atomic_write_json
from .backbones import Backbone, backbone
from .export_record import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, describe_export, file_sha256, sidecar_path
from .load_weights import LoadReport, init_from_pretrained
from .registry import build_network
from .weights_file import CheckpointError

__all__ = ["release_state_dict", "check_released_architecture", "write_backbone_export"]


def _family(family: str) -> Backbone:
    spec = backbone(family)
    if spec.release is None:
        raise CheckpointError(f"{spec.display} has no released SuPreM weights, so there is no released layout to "
                              f"export its backbone in")
    return spec


def release_state_dict(family: str, model_state: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The backbone tensors of ``model_state`` (keys of ``build_network(family, ...)``) under released key names.

    The task head (``out_tr.*``, ``out.*`` or ``conv_final.2.*``) is left out; tensors are detached,
    contiguous CPU copies, so the saved file holds plain tensors only (loadable with ``weights_only=True``).
    """
    spec = _family(family)
    prefix = spec.release.key_prefix
    return OrderedDict((prefix + k, v.detach().to("cpu").contiguous().clone())
                       for k, v in model_state.items() if not k.startswith(spec.head_prefixes))


def check_released_architecture(family: str, model_state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Raise :class:`CheckpointError` unless the backbone of ``model_state`` has the released architecture.

    Names and shapes must be those of ``build_network(family)`` with default sizes (any number of input
    channels).  Returns that reference network (1 output channel), which the writer reuses to verify the file.
    """
    spec = _family(family)
    key = spec.input_conv_keys[0]
    if key not in model_state:
        raise CheckpointError(f"{source}: not a {spec.display} state (no '{key}')")
    reference = build_network(family, int(model_state[key].shape[1]), 1)
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items() if not k.startswith(spec.head_prefixes)}
    have = {k: tuple(v.shape) for k, v in model_state.items() if not k.startswith(spec.head_prefixes)}
    differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if differ:
        shown = "; ".join(f"{k}: model {have.get(k, 'absent')} vs released {want.get(k, 'absent')}"
                          for k in differ[:3])
        raise CheckpointError(
            f"{source}: the trained {spec.display} is not the released SuPreM architecture ({len(differ)} backbone "
            f"tensors differ in name or shape, e.g. {shown}); only networks of the released size (default "
            f"network_kwargs) can be exported as a SuPreM-style backbone")
    return reference


def write_backbone_export(path, family: str, model_state: dict[str, torch.Tensor], record: dict,
                          source: str = "model") -> tuple[LoadReport, dict]:
    """Write the backbone of ``model_state`` to ``path`` in the released layout and ``record`` beside it.

    ``record`` (JSON-serialisable) describes the training: classes, input conventions, data, code
    version; the format, family, tensor count, file name and SHA-256 are added here.  The file is
    verified before it takes its final name: it is read back with the safe loader and its backbone
    loaded into a fresh network of the family.  Returns that load report and the written record.
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    if sidecar == path:
        raise CheckpointError(f"{path}: the weights file must not end in .json (its record is written to FILE.json)")
    reference = check_released_architecture(family, model_state, source)
    prefix = _family(family).release.key_prefix
    state = release_state_dict(family, model_state)
    wrote_sidecar = False
    try:
        with atomic_path(path, suffix=".pth") as tmp:
            torch.save({"net": state}, tmp)
            report = init_from_pretrained(reference, family, tmp)
            if len(report.loaded) != len(state):
                raise CheckpointError(f"{path}: internal: {len(report.loaded)} of {len(state)} exported tensors "
                                      f"loaded back")
            report.path = str(path)
            full = {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "family": family,
                    "layout": f"{{'net': state_dict}}, backbone only, keys under '{prefix}'",
                    "tensors": len(state), "weights_file": path.name, "weights_sha256": file_sha256(tmp), **record}
            atomic_write_json(sidecar, full)
            wrote_sidecar = True
    except BaseException:
        if wrote_sidecar:  # the weights did not reach their name: a record without them would mislead
            sidecar.unlink(missing_ok=True)
        raise
    report.origin = describe_export(path)
    return report, full
