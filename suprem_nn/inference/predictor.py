"""Predict one case: preprocess, sliding window over every fold, average, export to the original grid.

Output rules (the user-visible contract):

* Exclusive plans (softmax): probabilities of background + K classes are averaged over folds,
  resampled back to the original grid linearly one class at a time, keeping a running argmax, and
  the argmax becomes the label map with the plan's ``label_values``. Resampling happens on the
  prediction device (the GPU when there is one) and only inside the crop box: everything outside
  it was air below the crop threshold and is background, so no full-size float array is allocated.
* Multi-label plans (sigmoid): each class is resampled the same way and thresholded at 0.5,
  giving one mask per class (masks may overlap). The combined label map writes class ``k``'s
  ``label_values[k]`` in class order, so **where masks overlap the higher class index wins**
  (SuPreM's ``combined_labels`` rule).
* ``postprocess="largest-component"`` keeps the largest 26-connected component of every class
  (on the original grid, so the written files hold exactly one component per class).

All arrays returned are on the original file's grid and axis order (``[i, j, k]``, see
:mod:`suprem_nn.io.geometry`); label maps are uint8 when the largest value is < 256, else uint16.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SupremError
from ..io.geometry import Geometry
from ..model_folder import FINAL_CHECKPOINT
from ..planning.plans import Plan
from .components import keep_largest_component, keep_largest_component_per_label
from .sliding_window import sliding_window_predict

__all__ = ["PredictionResult", "Predictor", "PreparedCase", "StagedPrediction"]

@dataclass
class PreparedCase:
    """A case in network space, ready for the network pass."""

    case_id: str
    data: np.ndarray           # (C, x, y, z) float32, network space
    props: object              # suprem_nn.preprocessing.CaseProperties
    images: list[np.ndarray]   # original arrays (for statistics / previews)
    geometry: Geometry
    timings: dict = field(default_factory=dict)


@dataclass
class PredictionResult:
    """A case's prediction on the original grid."""

    case_id: str
    geometry: Geometry
    label_map: np.ndarray                             # (i, j, k) uint8/uint16 values = plan label values
    class_names: list[str]                            # the classes present in label_map / masks
    class_values: list[int]                           # label value of each class in label_map
    masks: Optional[np.ndarray] = None                # (K, i, j, k) uint8, multi-label plans only
    probabilities: Optional[np.ndarray] = None        # network-space (K, x, y, z) float16, if requested
    props: object = None
    timings: dict = field(default_factory=dict)
    plan: object = None                               # the suprem_nn Plan that made it (None: nnU-Net models)


class StagedPrediction:
    """What a predictor does with its three stages (``prepare`` -> ``network_pass`` -> ``to_input_grid``), which
    :func:`~suprem_nn.inference.run_prediction` also calls one by one to overlap cases."""

    def predict_case(self, images: Sequence[np.ndarray], geometry: Geometry, case_id: str = "") -> PredictionResult:
        """One case from raw arrays to the original-grid prediction: ``prepare``, ``network_pass``, ``to_input_grid``.

        Parameters
        ----------
        images : sequence of np.ndarray
            One ``[i, j, k]`` array per image channel, in file voxel order (CT in HU).
        geometry : Geometry
            The images' grid: spacing in mm, LPS origin and direction.
        case_id : str
            For messages.

        Returns
        -------
        PredictionResult
            Label map on the input's grid; ``timings["network"]`` holds the network pass in seconds.
        """
        case = self.prepare(images, geometry, case_id)
        t0 = time.perf_counter()
        values = self.network_pass(case)
        case.timings["network"] = time.perf_counter() - t0
        return self.to_input_grid(case, values)

    def release_networks(self) -> None:
        """Free the networks once no more network passes will run; cases already passed can still be exported.

        A files run that owns its predictor calls this after the last case's network pass, so the last export
        does not carry the weights (an OpenVINO compiled model also keeps the CPU plugin's repacked copy of them;
        its activation buffers are already given back at the end of each pass, see
        :meth:`~suprem_nn.inference.openvino_engine.OpenVINONetwork.release_buffers`). ``network_pass`` raises
        afterwards.
        """
        self.networks = []

    def _networks_or_raise(self) -> list:
        if not self.networks:
            raise RuntimeError("this predictor's networks were released (release_networks()); load the model "
                               "again to predict more cases")
        return self.networks


class Predictor(StagedPrediction):
    """Run a plan's networks (one per fold) on cases and map the result back to their original grid.

    Load a model once with :meth:`from_model_folder` or :meth:`from_suprem` (the same set-up as
    :func:`suprem_nn.predict`), then predict many in-memory images with :meth:`predict_array` or
    :meth:`predict_image`. The constructor takes already-loaded networks and resolved numerics.

    Args:
        plan: the plan the networks were trained with (preprocessing, patch, classes).
        networks: one network per fold; probabilities are averaged over them.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        step_size: window spacing as a fraction of the patch.
        use_mirroring: mirror TTA over ``mirror_axes``.
        mirror_axes: network-space axes to mirror over (default ``plan.mirror_axes``; a model folder's are
            those its folds were trained with, :func:`suprem_nn.model_folder.load_trained_model`).
        windows_per_batch: windows per forward call (forced to 1 for batch-statistics networks).
        autocast_dtype: ``torch.bfloat16`` to run the network under autocast, None for float32.
        channels_last: channels_last_3d memory format for the network (CPU convolutions).
        postprocess: None or ``"largest-component"``.
        classes: restrict outputs to these class names (default: all of the plan's classes).
        spacing_factor: multiply the plan's target spacing (2.0 = ``--fast`` preview quality).
        keep_probabilities: keep the network-space probabilities (float16) in the result.
        progress: show progress over the sliding windows (a bar on a terminal, lines in a log).
    """

    def __init__(self, plan: Plan, networks: Sequence[nn.Module], device: str = "cpu", step_size: float = 0.5,
                 use_mirroring: bool = True, windows_per_batch: int = 2, autocast_dtype: Optional[torch.dtype] = None,
                 channels_last: bool = False, postprocess: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None, spacing_factor: float = 1.0,
                 keep_probabilities: bool = False, progress: bool = False,
                 mirror_axes: Optional[Sequence[int]] = None):
        if not networks:
            raise ValueError("Predictor needs at least one network")
        if postprocess not in (None, "largest-component"):
            raise SupremError(f"unknown postprocessing '{postprocess}' (choose: largest-component)")
        self.device = _check_device(device)
        # The grid prediction runs on; --fast makes it coarser in a new Plan, so the model's own is not changed.
        self.plan = plan if spacing_factor == 1.0 else dataclasses.replace(
            plan, target_spacing=[s * spacing_factor for s in plan.target_spacing])
        if self.device.type == "cuda":
            # Every window has the same shape, so cuDNN's per-shape algorithm search pays for itself at once.
            torch.backends.cudnn.benchmark = True
        self.networks = [n.to(self.device).eval() for n in networks]
        if channels_last:
            self.networks = [n.to(memory_format=torch.channels_last_3d) for n in self.networks]
        self.step_size = float(step_size)
        self.mirror_axes = tuple(plan.mirror_axes if mirror_axes is None else mirror_axes) if use_mirroring else ()
        self.windows_per_batch = int(windows_per_batch)
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.postprocess = postprocess
        self.keep_probabilities = keep_probabilities
        self.progress = progress
        self.class_indices = class_indices(plan, classes)
        self.output_channels = kept_output_channels(plan, classes)  # what the network pass accumulates
        # Set by from_model_folder / from_suprem: what ran the network pass and which released file was loaded.
        self.engine_report: dict = {"name": "torch"}
        self.checkpoint = None

    @classmethod
    def from_settings(cls, plan: Plan, runtime, settings, mirror_axes: Optional[Sequence[int]] = None,
                      step_size: float = 0.5) -> "Predictor":
        """A predictor for networks set up by :func:`~suprem_nn.inference.runtime.prepare_runtime` and
        :class:`~suprem_nn.inference.settings.PredictionSettings`; ``step_size`` when the settings leave it None."""
        return cls(plan, runtime.networks, device=settings.device,
                   step_size=step_size if settings.step_size is None else settings.step_size,
                   use_mirroring=settings.mirroring, mirror_axes=mirror_axes,
                   windows_per_batch=runtime.windows_per_batch, autocast_dtype=runtime.autocast_dtype,
                   channels_last=runtime.channels_last, postprocess=settings.postprocess, classes=settings.classes,
                   spacing_factor=2.0 if settings.fast else 1.0, keep_probabilities=settings.save_probabilities,
                   progress=settings.progress)

    @classmethod
    def from_model_folder(cls, folder, folds: Optional[Sequence] = (0,), checkpoint_name: str = FINAL_CHECKPOINT,
                          settings=None, **options) -> "Predictor":
        """Load the folds of a trained model folder once (``folds`` None or empty: every finished fold).

        ``settings``: a :class:`~suprem_nn.inference.settings.PredictionSettings` (default: ``suprem_predict``'s
        defaults, without progress output); ``options`` (its field names) override its fields. The predictor
        runs exactly as :func:`suprem_nn.predict` runs this model (precision, memory layout, engine).
        """
        from ..model_folder import load_trained_model
        from .runtime import prepare_runtime

        settings = _settings(settings, options)
        model = load_trained_model(folder, folds, checkpoint_name)
        plan = model.plan
        runtime = prepare_runtime(model.networks, plan.network, [1, plan.num_inputs, *plan.patch_size], settings,
                                  output_channels=kept_output_channels(plan, settings.classes))
        predictor = cls.from_settings(plan, runtime, settings, model.mirror_axes)
        predictor.engine_report = runtime.engine_report
        return predictor

    @classmethod
    def from_suprem(cls, backbone: Optional[str] = None, checkpoint=None, settings=None, **options) -> "Predictor":
        """Load a released SuPreM file once, run with SuPreM's direct-inference recipe (see :func:`suprem_nn.predict`).

        ``backbone`` ``"unet"``, ``"segresnet"`` or ``"swinunetr"``; ``checkpoint`` the file (None: the released
        one, downloaded on first use); either may be left out when the other is given. Settings left None take
        the recipe's: step size 0.25, largest component per organ, the 9 AbdomenAtlas-1.0 organs.
        """
        from .models import load_suprem_released, suprem_direct_defaults
        from .runtime import prepare_runtime

        settings = _settings(settings, options)
        if backbone is None and checkpoint is None:
            raise SupremError("give the SuPreM backbone, the checkpoint file, or both")
        if checkpoint is None:
            from ..networks.weights import ensure_weights
            checkpoint = ensure_weights(backbone, progress=settings.progress, use_flag="--checkpoint FILE")
        plan, networks = load_suprem_released(backbone, checkpoint)
        defaults = suprem_direct_defaults(plan.pretrained)
        settings = settings.replace(classes=settings.classes or tuple(defaults["classes"]),
                                    postprocess=settings.postprocess or defaults["postprocess"])
        runtime = prepare_runtime(networks, plan.network, [1, plan.num_inputs, *plan.patch_size], settings,
                                  output_channels=kept_output_channels(plan, settings.classes))
        predictor = cls.from_settings(plan, runtime, settings, step_size=defaults["step_size"])
        predictor.engine_report = runtime.engine_report
        predictor.checkpoint = checkpoint
        return predictor

    # ------------------------------------------------------------------ in-memory images
    def predict_array(self, image, spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0),
                      direction: Optional[Sequence[float]] = None) -> np.ndarray:
        """Label map of one CT held in memory, on the input's own grid.

        Parameters
        ----------
        image : numpy.ndarray
            ``(i, j, k)`` intensities in HU (axis ``i`` varies fastest on disk: NIfTI/ITK ``x``; see
            :mod:`suprem_nn.io.geometry`), or ``(C, i, j, k)`` for a model with C input channels.
        spacing : sequence of 3 floats
            Voxel size along ``i, j, k`` in mm.
        origin : sequence of 3 floats
            World (LPS, mm) position of voxel ``(0, 0, 0)``.
        direction : sequence of 9 floats, optional
            Row-major 3x3 matrix whose column ``a`` is the world direction of axis ``a`` (default identity).

        Returns
        -------
        numpy.ndarray
            ``(i, j, k)`` label map (uint8, uint16 when a label value exceeds 255) holding the plan's label values.
        """
        from .arrays import array_case

        images, geometry = array_case(image, spacing, origin, direction, self.plan.num_inputs)
        return self.predict_case(images, geometry).label_map

    def predict_image(self, image):
        """Label map of a SimpleITK image (or list of images, one per input channel) as a SimpleITK image with
        the input's geometry (size, spacing, origin, direction)."""
        from .arrays import from_sitk, to_sitk

        images, geometry = from_sitk(image)
        return to_sitk(self.predict_case(images, geometry).label_map, geometry)

    # ------------------------------------------------------------------ stages
    def prepare(self, images: Sequence[np.ndarray], geometry: Geometry, case_id: str = "") -> PreparedCase:
        """Preprocess one case into network space (CPU; safe to run in a background thread).

        Parameters
        ----------
        images : sequence of np.ndarray
            One ``[i, j, k]`` array per image channel, in file voxel order (CT in HU).
        geometry : Geometry
            The images' grid (spacing in mm, LPS origin and direction).
        case_id : str
            For messages.

        Returns
        -------
        PreparedCase
            float32 ``(C, x, y, z)`` network-space data, the properties to go back, ``timings["preprocess"]`` in
            seconds.

        Raises
        ------
        SupremError
            If the number of images differs from the plan's input channels.
        """
        from ..preprocessing import preprocess_images

        if len(images) != self.plan.num_inputs:
            raise SupremError(f"case '{case_id}' has {len(images)} image channel(s), the model expects "
                              f"{self.plan.num_inputs} ({', '.join(self.plan.channel_names)})")
        t0 = time.perf_counter()
        data, props = preprocess_images(list(images), geometry, self.plan, case_id)
        return PreparedCase(case_id, data, props, list(images), geometry,
                            {"preprocess": time.perf_counter() - t0})

    def network_pass(self, case: PreparedCase) -> torch.Tensor:
        """Fold-averaged probabilities ``(K', x, y, z)`` float32 on the prediction device (K' = kept channels)."""
        sigmoid = self.plan.multilabel
        data = torch.from_numpy(np.ascontiguousarray(case.data))
        total = None
        for net in self._networks_or_raise():
            probs = sliding_window_predict(
                net, data, self.plan.patch_size, self.step_size, self.mirror_axes,
                windows_per_batch=self.windows_per_batch, device=self.device,
                activation="sigmoid" if sigmoid else "softmax", pad_value=self._pad_value(),
                skip_constant_windows=True, keep_channels=self.output_channels, autocast_dtype=self.autocast_dtype,
                channels_last=self.channels_last, progress=self.progress, result_device=self.device)
            total = probs if total is None else total.add_(probs)
        if len(self.networks) > 1:
            total /= len(self.networks)
        return total

    def to_input_grid(self, case: PreparedCase, probs: torch.Tensor, keep_masks: bool = True) -> PredictionResult:
        """Probabilities in network space (on any device) -> label map (and masks) on the original grid.

        ``keep_masks`` False skips multi-label plans' full-size per-class masks (K x the original grid, needed
        for per-class files and statistics, where overlaps count) and returns only the combined label map.

        Parameters
        ----------
        case : PreparedCase
            The case from :meth:`prepare`.
        probs : torch.Tensor
            ``(K', x, y, z)`` from :meth:`network_pass`: softmax with background first, or sigmoid per class (only the
            selected classes when a subset was kept).
        keep_masks : bool
            Return the multi-label masks (uint8 ``(K, i, j, k)``).

        Returns
        -------
        PredictionResult
            ``label_map`` ``[i, j, k]`` (uint8, or uint16 for label values from 256) on ``case.geometry``; exclusive
            plans take the argmax (ties go to the lower class), multi-label plans threshold at 0.5 and the highest
            class index wins where masks overlap. ``timings["export"]`` in seconds.
        """
        t0 = time.perf_counter()
        plan = self.plan
        shape = tuple(case.geometry.shape)
        names = [plan.class_names[k] for k in self.class_indices]
        values = [plan.label_values[k] for k in self.class_indices]
        dtype = np.uint8 if max(values + [0]) < 256 else np.uint16
        masks = None
        box = None
        if plan.multilabel:
            # probs holds only the kept channels when a subset was requested, else all classes.
            rows = list(range(len(self.class_indices))) if probs.shape[0] == len(self.class_indices) \
                else self.class_indices
            # Full-size masks cost one pass over a K x original-size array: only when someone will read them.
            keep = keep_masks or self.postprocess == "largest-component"
            masks = np.zeros((len(rows),) + shape, dtype=np.uint8) if keep else None
            index = None  # 1 + the highest class whose mask holds the voxel (0: none), built on the device
            for i, row in enumerate(rows):
                block, box = self._restore(probs[row:row + 1], case.props)
                mask = block[0] > 0.5
                if keep:
                    masks[(i,) + box] = mask.cpu().numpy()
                if index is None:
                    index = torch.zeros(mask.shape, dtype=torch.int16, device=mask.device)
                index[mask] = i + 1  # later (higher-index) classes overwrite earlier ones
            index = index.cpu().numpy()
            if self.postprocess == "largest-component":
                index[:] = 0
                for c in range(len(masks)):
                    masks[(c,) + box] = keep_largest_component(masks[(c,) + box])
                    index[masks[(c,) + box] > 0] = c + 1
            label_map = np.zeros(shape, dtype=dtype)
            label_map[box] = np.asarray([0] + values, dtype=dtype)[index]
            if not keep_masks:
                masks = None
        else:
            best = index = None
            for c in range(probs.shape[0]):
                block, box = self._restore(probs[c:c + 1], case.props)
                if best is None:
                    best, index = block[0], torch.zeros(block.shape[1:], dtype=torch.int16, device=block.device)
                    continue
                better = block[0] > best  # strict: on ties the lower class index wins, like argmax
                best = torch.where(better, block[0], best)
                index[better] = c
            lut = np.zeros(len(plan.class_names) + 1, dtype=dtype)
            for k in self.class_indices:
                lut[k + 1] = plan.label_values[k]
            label_map = np.zeros(shape, dtype=dtype)
            label_map[box] = lut[index.cpu().numpy()]
            if self.postprocess == "largest-component":
                keep_largest_component_per_label(label_map[box], values)
        result = PredictionResult(case.case_id, case.geometry, label_map, names, values, masks, None, case.props,
                                  dict(case.timings))
        result.plan = plan
        if self.keep_probabilities:
            result.probabilities = probs.cpu().numpy().astype(np.float16)
        result.timings["export"] = time.perf_counter() - t0
        return result

    # ------------------------------------------------------------------ helpers
    def _pad_value(self) -> float:
        """Network-space value of air/background: what padding and constant windows hold."""
        n = self.plan.normalization[0]
        if n.scheme == "ct_window":
            return 0.0
        if n.scheme == "ct_clip_zscore" and n.lower is not None and n.mean is not None and n.std:
            return float((n.lower - n.mean) / n.std)
        return 0.0

    def _restore(self, values: torch.Tensor, props):
        from ..preprocessing import restore_block

        return restore_block(values.float(), props, self.plan)


def class_indices(plan: Plan, classes: Optional[Sequence[str]]) -> list[int]:
    """Plan indices of ``classes`` in plan order (None or empty: every class), so the documented overlap rule
    (higher index wins) holds; raises SupremError naming unknown classes."""
    if not classes:
        return list(range(len(plan.class_names)))
    unknown = [c for c in classes if c not in plan.class_names]
    if unknown:
        raise SupremError(f"unknown classes {unknown}; the model predicts: {', '.join(plan.class_names)}")
    return sorted(plan.class_names.index(c) for c in classes)


def kept_output_channels(plan: Plan, classes: Optional[Sequence[str]]) -> Optional[list[int]]:
    """The network output channels a prediction of ``classes`` needs, or None for all of them.

    Only multi-label (sigmoid) plans can drop channels: a softmax needs every channel to normalise.
    """
    indices = class_indices(plan, classes)
    return indices if plan.multilabel and len(indices) < len(plan.class_names) else None


def _settings(settings, options: dict):
    """``settings`` (default: no progress output, a library call's) with ``options`` applied."""
    from .settings import PredictionSettings

    return (settings or PredictionSettings(progress=False)).replace(**options)


def _check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SupremError(f"unknown device '{device}' (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SupremError(f"device '{device}' requested but no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SupremError(f"device '{device}' does not exist ({torch.cuda.device_count()} GPU(s) found)")
    return dev
