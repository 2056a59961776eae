"""Read a trained nnU-Net v2 model folder: plans.json, dataset.json, fold checkpoints, and the network.

The folder is what ``nnUNetv2_train`` writes: ``<folder>/plans.json``, ``<folder>/dataset.json`` and
``<folder>/fold_<k>/checkpoint_final.pth``; its name is ``<Trainer>__<Plans>__<configuration>``.

Checkpoints are pickles. They are loaded with ``torch.load(weights_only=True)``; nnU-Net's checkpoints also
hold a few numpy scalars in their training log, so exactly those numpy reconstruction globals are
allow-listed for the load (see :data:`NUMPY_SAFE_GLOBALS`), never ``weights_only=False``.

The network is rebuilt from the plan's ``architecture`` entry with ``dynamic_network_architectures``
(an optional dependency). Class and layer names from plans.json are imported only from
``dynamic_network_architectures`` and ``torch.nn``, so a plans file cannot make us import arbitrary code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ...errors import SupremError
from ...model_folder import FINAL_CHECKPOINT  # nnU-Net v2 names its final checkpoint the same
from ...utils.json_file import read_json

__all__ = ["NnunetModel", "LabelInfo", "load_nnunet_model", "is_nnunet_model_folder", "NUMPY_SAFE_GLOBALS",
           "numpy_safe_globals"]

_SCALAR_NAMES = ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")


def numpy_safe_globals(numpy=np) -> list:
    """The numpy objects a checkpoint written by nnU-Net v2 pickles besides tensors, for ``torch.load``'s allowlist.

    They are numpy float scalars in ``checkpoint["logging"]`` (np.mean of losses / Dice) and their dtypes: plain
    numbers, nothing executable. NumPy 2 keeps the scalar rebuilder in ``numpy._core``, NumPy 1.x in
    ``numpy.core``, and a checkpoint names the one of the NumPy that wrote it, so the rebuilder is allowed under
    both names and a checkpoint loads whichever NumPy wrote it. The dtype classes are taken from dtype instances
    (``numpy.dtypes`` only exists from NumPy 1.25; setup.py allows 1.24).
    """
    core = getattr(numpy, "_core", None)
    multiarray = getattr(core, "multiarray", None) or numpy.core.multiarray  # NumPy 2, else 1.x
    dtype_classes = [type(numpy.dtype(t)) for t in (numpy.float64, numpy.float32, numpy.int64)]
    return [*((multiarray.scalar, name) for name in _SCALAR_NAMES), numpy.dtype, *dtype_classes]


NUMPY_SAFE_GLOBALS = numpy_safe_globals()
_IMPORTABLE_PREFIXES = ("dynamic_network_architectures.", "torch.nn.")
SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO")


class NnunetModelError(SupremError):
    """An nnU-Net model folder, plan or checkpoint is missing or unusable."""


@dataclass
class LabelInfo:
    """nnU-Net's label handling (``LabelManager``) as far as prediction needs it."""

    names: list[str]                     # foreground label / region names, in output order
    values: list[int]                    # label value written for each output
    has_regions: bool                    # sigmoid per region (True) or softmax over labels (False)
    num_heads: int                       # network output channels
    regions_class_order: list[int] = field(default_factory=list)

    @property
    def dtype(self):
        """Output dtype rule of nnU-Net's export: uint8 below 255 foreground labels, else uint16."""
        return np.uint8 if len(self.values) < 255 else np.uint16


@dataclass
class NnunetModel:
    folder: Path
    plans: dict
    dataset_json: dict
    configuration_name: str
    configuration: dict                  # the configuration's entries, inheritance resolved
    labels: LabelInfo
    networks: list[nn.Module]            # one per fold, eval mode, CPU
    mirror_axes: tuple[int, ...]         # inference_allowed_mirroring_axes of the checkpoint
    folds: list[str]
    trainer_name: str

    @property
    def num_inputs(self) -> int:
        """Image channels the model expects: entries of dataset.json's ``channel_names`` (or ``modality``)."""
        names = self.dataset_json.get("channel_names", self.dataset_json.get("modality", {}))
        return len(names)


def is_nnunet_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds nnU-Net's ``plans.json`` and ``dataset.json``."""
    folder = Path(folder)
    return (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()


def _read_json(path: Path) -> dict:
    content = read_json(path, NnunetModelError,
                        "missing (an nnU-Net model folder holds plans.json, dataset.json and fold_<k>/)")
    if not isinstance(content, dict):
        raise NnunetModelError(f"expected a JSON object, found {type(content).__name__}", path)
    return content


def resolve_configuration(plans: dict, name: str, path: Path) -> dict:
    """The configuration ``name`` with ``inherits_from`` chains merged (as nnU-Net's PlansManager does).

    Parameters
    ----------
    plans : dict
        The parsed ``plans.json``.
    name : str
        Configuration name, e.g. ``"3d_fullres"``.
    path : Path
        ``plans.json``, named in errors.

    Returns
    -------
    dict
        The configuration's entries; a child's entries override its parent's; ``inherits_from`` removed.

    Raises
    ------
    NnunetModelError
        If the configuration is missing or inherits from an unknown or circular parent.
    """
    configs = plans.get("configurations", {})
    if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
        raise NnunetModelError("plans.json 'configurations' must map each name to an object", path)
    if name not in configs:
        raise NnunetModelError(f"plans.json has no configuration '{name}' (has: {', '.join(configs)})", path)
    conf = dict(configs[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if not isinstance(parent, str) or parent in seen or parent not in configs:
            raise NnunetModelError(f"configuration '{name}' inherits from unknown or circular '{parent}'", path)
        seen.add(parent)
        merged = dict(configs[parent])
        merged.update(conf)
        conf = merged
    return conf


def label_info(dataset_json: dict, path: Path) -> LabelInfo:
    """Outputs and label values from dataset.json's ``labels`` (and ``regions_class_order``).

    Parameters
    ----------
    dataset_json : dict
        The parsed ``dataset.json``.
    path : Path
        ``dataset.json``, named in errors.

    Returns
    -------
    LabelInfo
        Region models: one sigmoid output per region, written with its ``regions_class_order`` value. Label
        models: softmax over labels 0..K; the foreground names and values in label order. ``ignore`` is never an
        output.

    Raises
    ------
    NnunetModelError
        If ``labels`` is missing or empty, regions lack a ``regions_class_order`` of one value per region, or the
        label values are not integers 0..K without gaps.
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise NnunetModelError("dataset.json has no 'labels' mapping", path)
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    ignore = labels.get("ignore")
    if has_regions:
        order = dataset_json.get("regions_class_order")
        fg = [(k, v) for k, v in labels.items() if k not in ("background", "ignore")]
        if not isinstance(order, list) or len(order) != len(fg):
            raise NnunetModelError("region-based dataset.json needs 'regions_class_order' with one value per "
                                   "region", path)
        return LabelInfo([k for k, _ in fg], [int(v) for v in order], True, len(fg), [int(v) for v in order])
    try:
        items = sorted(((int(v if not isinstance(v, (list, tuple)) else v[0]), k) for k, v in labels.items()
                        if k != "ignore"))
    except (TypeError, ValueError, IndexError):
        raise NnunetModelError("dataset.json 'labels' values must be integers (or lists for regions)", path) from None
    values = [v for v, _ in items]
    if values != list(range(len(values))):
        raise NnunetModelError(f"dataset.json labels must be consecutive 0..K, got {values}", path)
    del ignore  # the ignore label has no output head; it is never predicted
    return LabelInfo([k for v, k in items if v != 0], [v for v in values if v != 0], False, len(values))


def _import_allowed(dotted: str, what: str, path: Path):
    if not isinstance(dotted, str) or not dotted.startswith(_IMPORTABLE_PREFIXES):
        raise NnunetModelError(f"{what} '{dotted}' is not from dynamic_network_architectures or torch.nn; "
                               "refusing to import it", path)
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dynamic_network_architectures"):
            raise NnunetModelError("nnU-Net models need the optional package dynamic-network-architectures: "
                                   "pip install --no-deps dynamic-network-architectures einops") from None
        raise NnunetModelError(f"cannot import {what} '{dotted}' ({exc})", path) from None
    except AttributeError:
        raise NnunetModelError(f"{what} '{dotted}' does not exist in the installed package", path) from None


def build_network(architecture: dict, num_inputs: int, num_outputs: int, path: Path) -> nn.Module:
    """The plan's network (``network_class_name`` + ``arch_kwargs``), deep supervision off, as nnU-Net predicts.

    Only classes from ``dynamic_network_architectures`` or ``torch.nn`` are imported.

    Parameters
    ----------
    architecture : dict
        The configuration's ``architecture`` entry.
    num_inputs : int
        Image channels.
    num_outputs : int
        Output channels (``LabelInfo.num_heads``).
    path : Path
        ``plans.json``, named in errors.

    Returns
    -------
    torch.nn.Module
        Untrained network, as constructed (train mode, CPU).

    Raises
    ------
    NnunetModelError
        If the entry is unusable, names a class outside the allowed packages or one that does not exist, the optional
        ``dynamic-network-architectures`` package is missing, or the class rejects the arguments.
    """
    try:
        cls_name = architecture["network_class_name"]
        kwargs = dict(architecture["arch_kwargs"])
        needs_import = list(architecture.get("_kw_requires_import", []))
        if not all(isinstance(k, str) for k in needs_import):
            raise TypeError("_kw_requires_import must list argument names")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise NnunetModelError("plans.json configuration has no usable 'architecture' entry (network_class_name, "
                               "arch_kwargs)", path) from None
    for key in needs_import:
        if kwargs.get(key) is not None:
            kwargs[key] = _import_allowed(kwargs[key], f"arch_kwargs.{key}", path)
    cls = _import_allowed(cls_name, "network class", path)
    try:
        net = cls(input_channels=num_inputs, num_classes=num_outputs, deep_supervision=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the class is third-party; it checks its arguments with asserts too
        raise NnunetModelError(f"cannot build {cls_name} from the plan ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200] if str(exc) else ''})", path) from None
    return net


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)``, with only :data:`NUMPY_SAFE_GLOBALS` allowed beyond torch's defaults.

    Parameters
    ----------
    path : Path
        A fold's ``.pth`` file, loaded onto the CPU.

    Returns
    -------
    dict
        The checkpoint, which holds ``network_weights``.

    Raises
    ------
    NnunetModelError
        If the file is missing, cannot be loaded safely, or has no ``network_weights``.
    """
    if not path.is_file():
        raise NnunetModelError("checkpoint missing", path)
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files or unknown globals: one line, no pickle traceback
        raise NnunetModelError(f"cannot load checkpoint safely ({str(exc).splitlines()[0][:240]})", path) from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise NnunetModelError("not an nnU-Net checkpoint (no 'network_weights')", path)
    return ckpt


def load_nnunet_model(folder: str | Path, folds: Sequence[str | int] = (0, 1, 2, 3, 4),
                      checkpoint_name: str = FINAL_CHECKPOINT) -> NnunetModel:
    """Plans, labels and one eval-mode CPU network per fold of an nnU-Net v2 model folder.

    ``folds`` empty: every ``fold_*`` holding ``checkpoint_name`` (nnU-Net's behaviour without ``-f``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NnunetModelError("nnU-Net model folder not found", folder)
    plans = _read_json(folder / "plans.json")
    dataset_json = _read_json(folder / "dataset.json")
    parts = folder.name.split("__")
    if len(parts) != 3:
        raise NnunetModelError("folder name must be <Trainer>__<Plans>__<configuration> as nnUNetv2_train "
                               "writes it", folder)
    trainer_name, _plans_name, configuration_name = parts
    configuration = resolve_configuration(plans, configuration_name, folder / "plans.json")
    if configuration.get("previous_stage"):
        raise NnunetModelError(f"configuration '{configuration_name}' is a cascade stage (needs the previous "
                               "stage's predictions); not supported", folder / "plans.json")
    patch = configuration.get("patch_size", [])
    if not isinstance(patch, list) or len(patch) != 3 or not all(isinstance(v, int) and v > 0 for v in patch):
        raise NnunetModelError(f"configuration '{configuration_name}' is not 3D (patch "
                               f"{configuration.get('patch_size')}); only 3D configurations are supported", folder / "plans.json")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in SUPPORTED_READERS:
        raise NnunetModelError(f"image_reader_writer '{reader}' is not supported (supported: "
                               f"{', '.join(SUPPORTED_READERS)})", folder / "plans.json")
    labels = label_info(dataset_json, folder / "dataset.json")
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    num_inputs = len(channels) if isinstance(channels, (dict, list)) else 0
    if num_inputs < 1:
        raise NnunetModelError("dataset.json has no channel_names", folder / "dataset.json")
    if not folds:
        folds = sorted(p.name[5:] for p in folder.glob("fold_*") if (p / checkpoint_name).is_file())
        if not folds:
            raise NnunetModelError(f"no fold_*/{checkpoint_name} in the model folder", folder)
    networks, mirror_axes = [], None
    for fold in [str(f) for f in folds]:
        path = folder / f"fold_{fold}" / checkpoint_name
        if not path.is_file():
            have = sorted(p.name for p in folder.glob("fold_*"))
            raise NnunetModelError(f"checkpoint missing (folds present: {', '.join(have) or 'none'})", path)
        ckpt = load_checkpoint(path)
        net = build_network(configuration.get("architecture"), num_inputs, labels.num_heads, folder / "plans.json")
        weights = ckpt["network_weights"]
        # torch.compile'd training saves keys with an '_orig_mod.' prefix; nnU-Net strips it the same way.
        weights = {k[len("_orig_mod."):] if k.startswith("_orig_mod.") else k: v for k, v in weights.items()}
        try:
            net.load_state_dict(weights)
        except RuntimeError as exc:
            raise NnunetModelError(f"weights do not fit the planned network ({str(exc).splitlines()[0][:200]})",
                                   path) from None
        if mirror_axes is None:
            axes = ckpt.get("inference_allowed_mirroring_axes")
            mirror_axes = tuple(int(a) for a in axes) if axes else ()
        networks.append(net.eval())
    return NnunetModel(folder, plans, dataset_json, configuration_name, configuration, labels, networks,
                       mirror_axes or (), [str(f) for f in folds], trainer_name)
