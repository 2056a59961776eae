"""The plan: the typed contract (``plans.json``) that every stage after planning reads.

Axis-dependent fields (``target_spacing``, ``patch_size``, ``median_shape``)
are per array axis ``(i, j, k)`` *after* reorientation to ``orientation``
(see :mod:`suprem_nn.io.geometry`). Spacings are in mm.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import PlanError
from ..io.geometry import is_orientation_code
from ..utils.atomic import atomic_write_json
from ..utils.json_file import read_json

PLAN_FORMAT_VERSION = 1


# Normalization schemes (Normalization's docstring) and the numbers each needs from the plan.
NORMALIZATION_SCHEMES = {"ct_window": ("lower", "upper"), "ct_clip_zscore": ("lower", "upper", "mean", "std"),
                         "zscore": (), "none": ()}


@dataclass
class Normalization:
    """How one input channel is mapped to network input values.

    ``scheme``:
      - ``"ct_window"``: clip to ``[lower, upper]`` (HU) and scale linearly to ``[0, 1]`` (SuPreM's convention);
      - ``"ct_clip_zscore"``: clip to ``[lower, upper]`` (dataset foreground percentiles 0.5/99.5),
        then ``(x - mean) / std`` with dataset foreground statistics (nnU-Net's CT scheme);
      - ``"zscore"``: per-image ``(x - mean) / std``;
      - ``"none"``: unchanged.
    """

    scheme: str
    lower: Optional[float] = None
    upper: Optional[float] = None
    mean: Optional[float] = None
    std: Optional[float] = None


@dataclass
class Plan:
    dataset_name: str
    plan_name: str
    network: str                      # a key of suprem_nn.networks.backbones.BACKBONES, e.g. "unet"
    pretrained: Optional[str]         # preset name the plan follows, None when planned from scratch
    channel_names: list[str]
    class_names: list[str]            # foreground classes; output channel c <-> class_names[c] (see below)
    label_values: list[int]           # exclusive plans: label-map value of each class; multi-label: 1..K
    multilabel: bool                  # True: one sigmoid channel per class (masks may overlap);
                                      # False: softmax over background + classes (channel 0 = background)
    orientation: Optional[str]        # e.g. "RAS": arrays are reoriented before everything else; None keeps the file's
    target_spacing: list[float]
    normalization: list[Normalization]
    crop_threshold: Optional[float]   # crop to the box of voxels with channel 0 > this raw value; None: nonzero crop
    patch_size: list[int]
    batch_size: int
    divisibility: int
    median_shape: list[int]           # median case shape after cropping and resampling
    image_order: int = 3              # spline order for image resampling
    label_order: int = 1              # linear interpolation of per-class masks
    anisotropy_threshold: float = 3.0  # spacing ratio above which the coarse axis is resampled separately (order 0)
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)    # recipe defaults (optimiser, lr, schedule, loss)
    checkpoint: dict[str, Any] = field(default_factory=dict)  # pretrained file name / address from the preset
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    notes: list[str] = field(default_factory=list)            # why the planner decided what it decided
    format_version: int = PLAN_FORMAT_VERSION

    @property
    def num_outputs(self) -> int:
        """Network output channels: K sigmoid channels, or background + K softmax channels."""
        return len(self.class_names) if self.multilabel else len(self.class_names) + 1

    @property
    def num_inputs(self) -> int:
        """Network input channels: one per image channel."""
        return len(self.channel_names)

    def cache_hash(self) -> str:
        """Hash of every field that shapes the preprocessed cache; a change invalidates cached cases."""
        shaping = {k: v for k, v in self.to_json().items() if k in _CACHE_FIELDS}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        """The plan as the JSON object of ``plans.json`` (every field, normalisations as objects)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Any, source: str | os.PathLike | None = None) -> "Plan":
        """Validate the types of a ``plans.json`` object and build the Plan.

        Parameters
        ----------
        d : object
            The parsed JSON.
        source : str or os.PathLike, optional
            The file it came from, named in errors.

        Returns
        -------
        Plan

        Raises
        ------
        PlanError
            Naming the field: a missing or mistyped field, a spacing or patch that is not 3 positive numbers, an
            unsupported format version, or lists whose lengths disagree.
        """
        if not isinstance(d, dict):
            raise PlanError(f"expected a JSON object, got {type(d).__name__}", source)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise PlanError(f"missing field '{f.name}'", source)
                continue
            kwargs[f.name] = _check_field(f.name, d[f.name], source)
        if kwargs.get("format_version", PLAN_FORMAT_VERSION) != PLAN_FORMAT_VERSION:
            raise PlanError(f"plan format version {kwargs['format_version']} is not supported "
                            f"(this suprem_nn reads version {PLAN_FORMAT_VERSION}); re-run planning", source)
        kwargs["normalization"] = [Normalization(**n) for n in kwargs["normalization"]]
        plan = cls(**kwargs)
        if len(plan.normalization) != len(plan.channel_names):
            raise PlanError("'normalization' needs one entry per channel", source)
        if len(plan.label_values) != len(plan.class_names):
            raise PlanError("'label_values' needs one entry per class", source)
        return plan

    def save(self, path: str | os.PathLike) -> None:
        """Write the plan to ``path`` (``plans.json``) atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; a reader never sees a half-written file.
        """
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        """Read and validate a ``plans.json``.

        Parameters
        ----------
        path : str or os.PathLike
            The plan file.

        Returns
        -------
        Plan

        Raises
        ------
        PlanError
            The file is missing, not JSON, or a field has a wrong type; the message names the file and field.
        """
        data = read_json(path, PlanError, "plans file not found; run suprem_plan_and_preprocess first")
        return cls.from_json(data, path)


def describe_plan(plan: Plan) -> str:
    """Readable summary of what the planner decided and why.

    Parameters
    ----------
    plan : Plan
        The plan.

    Returns
    -------
    str
        Several lines: network, classes, training mode, orientation, spacing (mm), normalisation, patch
        (voxels, axes ``i x j x k``), batch, median image, and the planner's notes.
    """
    lines = [f"plan '{plan.plan_name}' for {plan.dataset_name}",
             f"  network        {plan.network}" + (f" (SuPreM {plan.pretrained} weights)" if plan.pretrained else ""),
             f"  classes        {len(plan.class_names)}: {', '.join(plan.class_names)}",
             f"  training       {'multi-label (sigmoid per class)' if plan.multilabel else 'exclusive (softmax)'}",
             f"  orientation    {plan.orientation}",
             f"  spacing        {' x '.join(f'{s:g}' for s in plan.target_spacing)} mm",
             f"  normalisation  " + "; ".join(_norm_text(n) for n in plan.normalization),
             f"  patch          {' x '.join(map(str, plan.patch_size))}   batch {plan.batch_size}",
             f"  median image   {' x '.join(map(str, plan.median_shape))} voxels after resampling"]
    lines += [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)


def _norm_text(n: Normalization) -> str:
    if n.scheme == "ct_window":
        return f"HU window [{n.lower:g}, {n.upper:g}] -> [0, 1]"
    if n.scheme == "ct_clip_zscore":
        return f"clip [{n.lower:.1f}, {n.upper:.1f}] then (x - {n.mean:.1f}) / {n.std:.1f}"
    return n.scheme


_CACHE_FIELDS = {"channel_names", "class_names", "label_values", "multilabel", "orientation", "target_spacing",
                 "normalization", "crop_threshold", "image_order", "label_order", "anisotropy_threshold",
                 "format_version"}

_NUM = (int, float)
_TYPES: dict[str, Any] = {
    "dataset_name": str, "plan_name": str, "network": str, "pretrained": (str, type(None)),
    "channel_names": ("list", str), "class_names": ("list", str), "label_values": ("list", int),
    "multilabel": bool, "orientation": (str, type(None)), "target_spacing": ("list", _NUM),
    "normalization": ("list", dict), "crop_threshold": (int, float, type(None)),
    "patch_size": ("list", int), "batch_size": int, "divisibility": int, "median_shape": ("list", int),
    "image_order": int, "label_order": int, "anisotropy_threshold": _NUM, "network_kwargs": dict,
    "training": dict, "checkpoint": dict, "mirror_axes": ("list", int), "notes": ("list", str),
    "format_version": int,
}
_NORMALIZATION_KEYS = {f.name for f in dataclasses.fields(Normalization)}


def _check_field(name: str, value: Any, source) -> Any:
    expected = _TYPES[name]
    if isinstance(expected, tuple) and expected and expected[0] == "list":
        item_type = expected[1]
        if not isinstance(value, list) or not all(isinstance(v, item_type) and not _is_bool_for_num(v, item_type)
                                                  for v in value):
            raise PlanError(f"field '{name}' must be a list of {_type_name(item_type)}, got {value!r}", source)
        if name in ("target_spacing", "patch_size", "median_shape") and len(value) != 3:
            raise PlanError(f"field '{name}' must have 3 values (one per axis), got {value!r}", source)
        if name in ("target_spacing", "patch_size") and not all(math.isfinite(v) and v > 0 for v in value):
            # a spacing or patch of 0 or below would resample to nothing or loop forever, far from this file
            raise PlanError(f"field '{name}' must hold positive numbers, got {value!r}", source)
        if name == "normalization":
            for n in value:
                if "scheme" not in n or set(n) - _NORMALIZATION_KEYS:
                    raise PlanError(f"field 'normalization' entries need 'scheme' and only "
                                    f"{sorted(_NORMALIZATION_KEYS)}, got {n!r}", source)
                _check_normalization(n, source)
        return value
    if name == "orientation" and value is not None and not is_orientation_code(value):
        raise PlanError(f"field 'orientation' must name one of L/R, one of A/P and one of S/I (e.g. \"RAS\"), "
                        f"got {value!r}", source)
    if not isinstance(value, expected) or _is_bool_for_num(value, expected):
        raise PlanError(f"field '{name}' must be {_type_name(expected)}, got {value!r}", source)
    return value


def _check_normalization(n: dict, source) -> None:
    scheme = n["scheme"]
    if not isinstance(scheme, str) or scheme not in NORMALIZATION_SCHEMES:
        raise PlanError(f"field 'normalization': unknown scheme {scheme!r} (known: "
                        f"{', '.join(NORMALIZATION_SCHEMES)})", source)
    needs = NORMALIZATION_SCHEMES[scheme]
    if not all(isinstance(n.get(k), (int, float)) and not isinstance(n.get(k), bool) and math.isfinite(n[k])
               for k in needs):
        raise PlanError(f"field 'normalization': scheme {scheme!r} needs numbers {', '.join(needs)}, got {n!r}",
                        source)
    if scheme == "ct_window" and not n["lower"] < n["upper"]:  # the window is scaled by 1 / (upper - lower)
        raise PlanError(f"field 'normalization': 'lower' must be below 'upper', got {n!r}", source)
    if scheme == "ct_clip_zscore" and not n["lower"] <= n["upper"]:
        raise PlanError(f"field 'normalization': 'lower' must not be above 'upper', got {n!r}", source)
    if scheme == "ct_clip_zscore" and not n["std"] >= 0:
        raise PlanError(f"field 'normalization': 'std' must not be negative, got {n!r}", source)


def _is_bool_for_num(value, expected) -> bool:
    return isinstance(value, bool) and expected is not bool and bool not in (expected if isinstance(expected, tuple)
                                                                             else (expected,))


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {type(None): "null"}.get(t, t.__name__)
