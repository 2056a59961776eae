"""The settings of a prediction run, in one object that every stage of prediction reads.

:func:`suprem_nn.inference.predict` takes them as keyword arguments (as ``suprem_predict`` takes flags) and
builds one :class:`PredictionSettings`; the model sources, the predictors and the files loop receive that
object rather than the arguments one by one. A plan describes the model and is never changed to carry them.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import SupremError
from .parts import parse_part

__all__ = ["PredictionSettings"]

POSTPROCESSING = ("largest-component",)


@dataclass(frozen=True)
class PredictionSettings:
    """How to predict: numerics, outputs and the run itself. Every field has the default ``suprem_predict`` uses.

    Attributes
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    step_size : float or None
        Window spacing as a fraction of the patch; None: 0.5, or the released recipe's 0.25 for SuPreM files.
    mirroring : bool
        Test-time augmentation by mirroring over the axes the model was trained mirrored over
        (``--disable-tta`` sets False; up to 8x faster).
    precision : {None, "bf16", "fp32"}
        None: bfloat16 autocast on CUDA and on CPUs with native bfloat16, float32 elsewhere (nnU-Net models:
        float32 on every CPU); ``"bf16"`` / ``"fp32"`` force one (:mod:`suprem_nn.inference.precision`).
    channels_last : bool or None
        channels_last_3d memory format for the network; None picks the measured faster layout.
    engine : {None, "torch", "openvino"}
        What runs the network pass; None: OpenVINO on the CPU when installed, else torch
        (:mod:`suprem_nn.inference.engines`).
    windows_per_batch : int or None
        Windows per network call; None: 4 on CUDA, 1 on the CPU.
    classes : tuple of str or None
        Output only these class names (None: all; SuPreM files: the 9 AbdomenAtlas-1.0 organs).
    postprocess : {None, "largest-component"}
        Keep the largest 26-connected component per class (the default for SuPreM files).
    fast : bool
        Predict at twice the planned spacing (preview quality).
    save_probabilities : bool
        Also write ``<case>.npz`` (float16 probabilities in network space) and ``<case>.json``.
    per_class : bool
        Also write ``<case>/segmentations/<class>.nii.gz``.
    statistics : bool
        Write ``statistics.json`` (volume in ml and mean HU per class).
    preview : bool
        Write ``<case>_preview.png``.
    num_workers : int
        Background threads that read/preprocess the next cases and write the previous one (0: in sequence).
    overwrite : bool
        Predict cases whose output exists again (default: skip them, so a re-run continues).
    part : (int, int) or None
        ``(K, N)``: only the K-th of N shares of the cases (:mod:`suprem_nn.inference.parts`).
    progress : bool
        Show progress (a bar on a terminal, lines in a log).
    """

    device: str = "cpu"
    step_size: Optional[float] = None
    mirroring: bool = True
    precision: Optional[str] = None
    channels_last: Optional[bool] = None
    engine: Optional[str] = None
    windows_per_batch: Optional[int] = None
    classes: Optional[tuple[str, ...]] = None
    postprocess: Optional[str] = None
    fast: bool = False
    save_probabilities: bool = False
    per_class: bool = False
    statistics: bool = False
    preview: bool = False
    num_workers: int = 1
    overwrite: bool = False
    part: Optional[tuple[int, int]] = None
    progress: bool = True

    def __post_init__(self):
        if self.precision not in (None, "bf16", "fp32"):
            raise SupremError(f"unknown precision '{self.precision}' (choose: bf16, fp32, or None for automatic)")
        if self.postprocess not in (None,) + POSTPROCESSING:
            raise SupremError(f"unknown postprocessing '{self.postprocess}' (choose: {', '.join(POSTPROCESSING)})")
        # Checked here, before a model is loaded or a case read; the sliding window would refuse each case alone.
        step = self.step_size
        if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Real) or not 0 < step <= 1):
            raise SupremError(f"step size must be a fraction of the patch in (0, 1], got {step!r}")
        for name, least in (("windows_per_batch", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least):
                raise SupremError(f"{name.replace('_', ' ')} must be an integer >= {least}, got {value!r}")
        if self.classes is not None and not isinstance(self.classes, tuple):
            object.__setattr__(self, "classes", tuple(self.classes))
        if isinstance(self.part, str):
            object.__setattr__(self, "part", parse_part(self.part))

    @classmethod
    def from_options(cls, *, disable_tta: bool = False, bf16: bool = False, fp32: bool = False,
                     classes: Optional[Sequence[str]] = None, **fields) -> "PredictionSettings":
        """Settings from :func:`~suprem_nn.inference.predict`'s keyword arguments (the command's flag names).

        ``disable_tta`` is ``mirroring=False``; ``bf16`` / ``fp32`` are ``precision``; ``part`` may be ``"K/N"``.
        """
        if bf16 and fp32:
            raise ValueError("bf16 and fp32 exclude each other")
        return cls(mirroring=not disable_tta, precision="bf16" if bf16 else "fp32" if fp32 else None,
                   classes=tuple(classes) if classes else None, **fields)

    def replace(self, **changes) -> "PredictionSettings":
        """A copy with ``changes`` applied (the settings object itself never changes)."""
        return dataclasses.replace(self, **changes)
