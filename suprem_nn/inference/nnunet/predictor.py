"""Predict with a trained nnU-Net v2 model through suprem_nn's sliding window and files API.

:class:`NnunetPredictor` offers the stage methods :func:`suprem_nn.inference.run.run_prediction` drives
(``prepare`` / ``network_pass`` / ``export``), so reading, overlapped preprocessing/export, atomic writing,
resuming and the run report are the same as for suprem_nn's own models.

Settings that equal nnU-Net's defaults: step size 0.5, Gaussian weighting (sigma = patch / 8), windows padded
with 0 (nnU-Net pads the normalised image with 0), mirroring over the checkpoint's
``inference_allowed_mirroring_axes``, logits averaged over windows, mirrors and folds, export by resampling
the logits. nnU-Net's own Gaussian map (:func:`nnunet_gaussian`). Known numeric differences (see
documentation/nnunet_models.md): nnU-Net accumulates windows in float16 and resamples float16 logits; we
accumulate and resample in float32. Window starts come from :func:`suprem_nn.inference.compute_steps`, which
equals nnU-Net's except when it adds one window to keep the starts mirror-symmetric (odd count, odd span).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ...errors import SupremError
from ...io.geometry import Geometry
from ...model_folder import FINAL_CHECKPOINT  # nnU-Net v2 names its final checkpoint the same
from ...preprocessing.resampling import resample_image
from ..components import keep_largest_component_per_label
from ..predictor import PredictionResult, PreparedCase, StagedPrediction, _check_device
from ..sliding_window import sliding_window_predict
from .model import NnunetModel, load_nnunet_model
from .preprocessing import NnunetPreprocessor

__all__ = ["NnunetPredictor", "NnunetPlanInfo"]

def nnunet_gaussian(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """nnU-Net's ``compute_gaussian``: a delta at ``patch // 2`` blurred with sigma = patch / 8, max 10,
    rounded to float16 as nnU-Net stores it, zeros replaced by the smallest non-zero weight. Float32 out.

    Its centre is half a voxel off the patch centre for even patches, unlike our symmetric default map;
    with a barely trained network that alone moves about 5 % of argmax labels, so we use nnU-Net's map.
    """
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros([int(p) for p in patch_size])
    tmp[tuple(int(p) // 2 for p in patch_size)] = 1
    g = gaussian_filter(tmp, [p * sigma_scale for p in patch_size], 0, mode="constant", cval=0)
    g /= np.max(g) / 10
    g = torch.from_numpy(g).to(torch.float16)
    g[g == 0] = torch.min(g[g != 0])
    return g.float()


def nnunet_steps(size: int, patch: int, step_size: float) -> list[int]:
    """nnU-Net's ``compute_steps_for_sliding_window`` along one axis: ``ceil((size - patch) / (patch * step)) + 1``
    windows at ``round(i * (size - patch) / (n - 1))`` (numpy's round half to even). Our own rule places the
    windows mirror-symmetrically instead; on near-tie voxels of a weakly trained model the placement alone
    moves about 0.1 % of the labels."""
    n = int(np.ceil((size - patch) / (patch * step_size))) + 1
    if n == 1:
        return [0]
    step = (size - patch) / (n - 1)
    return [int(np.round(step * i)) for i in range(n)]


CHUNK_CHANNELS = 4  # logit channels resampled together at export (bounds memory, keeps a running argmax)


@dataclass
class NnunetPlanInfo:
    """What the run report shows about the model (the fields it reads from a suprem_nn Plan)."""

    dataset_name: str
    plan_name: str
    network: str
    target_spacing: list[float]
    patch_size: list[int]
    class_names: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)   # the run report's class -> label value map


class NnunetPredictor(StagedPrediction):
    """Predict cases with an nnU-Net v2 model (one network per fold, logits averaged over folds).

    Args mirror :class:`suprem_nn.inference.Predictor`; ``use_mirroring`` mirrors over the axes the
    checkpoint allows. ``autocast_dtype``/``channels_last`` change the numerics and are off by default.
    """

    def __init__(self, model: NnunetModel, device: str = "cpu", step_size: float = 0.5, use_mirroring: bool = True,
                 windows_per_batch: int = 1, autocast_dtype: Optional[torch.dtype] = None,
                 channels_last: bool = False, postprocess: Optional[str] = None, keep_probabilities: bool = False,
                 progress: bool = False):
        if postprocess not in (None, "largest-component"):
            raise SupremError(f"unknown postprocessing '{postprocess}' (choose: largest-component)")
        self.model = model
        self.device = _check_device(device)
        self.prep = NnunetPreprocessor(model.plans, model.configuration, model.num_inputs,
                                       model.folder / "plans.json")
        self.networks = [n.to(self.device).eval() for n in model.networks]
        if channels_last:
            self.networks = [n.to(memory_format=torch.channels_last_3d) for n in self.networks]
        self.step_size = float(step_size)
        self.importance_map = nnunet_gaussian(self.prep.patch_size)
        self.mirror_axes = tuple(model.mirror_axes) if use_mirroring else ()
        self.windows_per_batch = int(windows_per_batch)
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.postprocess = postprocess
        self.keep_probabilities = keep_probabilities
        self.progress = progress
        arch = model.configuration.get("architecture", {}).get("network_class_name", "?")
        self.plan = NnunetPlanInfo(model.plans.get("dataset_name", ""), model.folder.name, arch.rpartition(".")[2],
                                   self.prep.spacing, self.prep.patch_size, list(model.labels.names),
                                   list(model.labels.values))

    @classmethod
    def from_folder(cls, folder: str | Path, folds: Sequence = (0, 1, 2, 3, 4),
                    checkpoint_name: str = FINAL_CHECKPOINT, **kw) -> "NnunetPredictor":
        """A predictor for an nnU-Net v2 model folder (:func:`load_nnunet_model`); ``kw`` go to the constructor.

        Parameters
        ----------
        folder : str or Path
            ``<trainer>__<plans>__<configuration>`` folder of nnU-Net results.
        folds : sequence
            Folds to average; empty: every ``fold_*`` holding ``checkpoint_name``.
        checkpoint_name : str
            Checkpoint file name inside each fold folder.

        Raises
        ------
        NnunetModelError
            If the folder, its JSON files or a fold's checkpoint cannot be read as an nnU-Net model.
        """
        return cls(load_nnunet_model(folder, folds, checkpoint_name), **kw)

    # ------------------------------------------------------------------ stages
    def prepare(self, images: Sequence[np.ndarray], geometry: Geometry, case_id: str = "") -> PreparedCase:
        """Preprocess one case as nnU-Net does (transpose, crop, resample, normalise).

        Parameters
        ----------
        images : sequence of np.ndarray
            One ``[i, j, k]`` array per image channel, in file voxel order.
        geometry : Geometry
            The images' geometry (spacing in mm).
        case_id : str
            For messages and the case's properties.

        Returns
        -------
        PreparedCase
            ``data`` float32 (C, x, y, z) in network space, the properties to go back, and ``timings["preprocess"]`` in
            seconds.

        Raises
        ------
        SupremError
            If the number of images differs from the model's input channels.
        """
        if len(images) != self.model.num_inputs:
            raise SupremError(f"case '{case_id}' has {len(images)} image channel(s), the model expects "
                              f"{self.model.num_inputs}")
        t0 = time.perf_counter()
        data, props = self.prep.preprocess(images, geometry, case_id)
        return PreparedCase(case_id, data, props, list(images), geometry, {"preprocess": time.perf_counter() - t0})

    def release_networks(self) -> None:
        """As :meth:`StagedPrediction.release_networks`, the model's own list of fold networks included."""
        super().release_networks()
        self.model.networks = []

    def network_pass(self, case: PreparedCase) -> torch.Tensor:
        """Logits ``(K, x, y, z)`` on the CPU, averaged over windows, mirrors and folds in float16 as nnU-Net
        does (its sums are float16; reproducing that keeps near-tie voxels on nnU-Net's side)."""
        data = torch.from_numpy(np.ascontiguousarray(case.data))
        total = None
        for net in self._networks_or_raise():
            logits = sliding_window_predict(
                net, data, self.prep.patch_size, self.step_size, self.mirror_axes,
                windows_per_batch=self.windows_per_batch, device=self.device, activation=None, pad_value=0.0,
                skip_constant_windows=True, autocast_dtype=self.autocast_dtype, channels_last=self.channels_last,
                progress=self.progress, importance_map=self.importance_map, step_rule=nnunet_steps,
                accumulate_dtype=torch.float16)
            total = logits if total is None else total.add_(logits)
        if len(self.networks) > 1:
            total /= len(self.networks)
        return total

    def to_input_grid(self, case: PreparedCase, logits: torch.Tensor, keep_masks: bool = True) -> PredictionResult:
        """Logits in network space -> label map on the file's grid (nnU-Net's export rules). nnU-Net's outputs
        are one exclusive label map (regions included), so there are no separate masks to keep.

        Parameters
        ----------
        case : PreparedCase
            The case from :meth:`prepare`.
        logits : torch.Tensor
            CPU ``(K, x, y, z)`` logits from :meth:`network_pass`.
        keep_masks : bool
            Ignored (kept for the :class:`StagedPrediction` signature).

        Returns
        -------
        PredictionResult
            ``label_map`` ``[i, j, k]`` on ``case.geometry``: the argmax of the resampled logits (ties keep the lower
            label), or for region models each region where its logit > 0 in ``regions_class_order``; 0 outside the
            crop box. With ``keep_probabilities``, float16 softmax (sigmoid for regions) in network space.
        """
        t0 = time.perf_counter()
        props, labels = case.props, self.model.labels
        axis = self.prep.separate_axis_for_input_grid(props)
        crop_shape = tuple(props.shape_after_cropping)
        dtype = labels.dtype
        if labels.has_regions:
            seg = np.zeros(crop_shape, dtype=dtype)
            for start in range(0, logits.shape[0], CHUNK_CHANNELS):
                chunk = self._resample(logits[start:start + CHUNK_CHANNELS], crop_shape, axis)
                for i in range(chunk.shape[0]):
                    seg[chunk[i] > 0] = labels.regions_class_order[start + i]  # sigmoid > 0.5
        else:
            best = index = None
            for start in range(0, logits.shape[0], CHUNK_CHANNELS):
                chunk = self._resample(logits[start:start + CHUNK_CHANNELS], crop_shape, axis)
                for i in range(chunk.shape[0]):
                    if best is None:
                        best, index = chunk[i].copy(), np.zeros(crop_shape, dtype=dtype)
                        continue
                    better = chunk[i] > best  # strict: ties keep the lower label, like argmax
                    np.copyto(best, chunk[i], where=better)
                    index[better] = start + i
            seg = index
        full = np.zeros(props.shape_before_cropping, dtype=dtype)
        full[tuple(slice(lo, hi) for lo, hi in props.bbox)] = seg
        label_map = self.prep.to_file_order(full)
        if self.postprocess == "largest-component":
            keep_largest_component_per_label(label_map, labels.values)
        result = PredictionResult(case.case_id, case.geometry, label_map, list(labels.names), list(labels.values),
                                  None, None, props, dict(case.timings))
        if self.keep_probabilities:
            act = torch.sigmoid(logits.float()) if labels.has_regions else torch.softmax(logits.float(), 0)
            result.probabilities = act.numpy().astype(np.float16)
        result.timings["export"] = time.perf_counter() - t0
        return result

    @staticmethod
    def _resample(logits: torch.Tensor, shape: tuple, axis: Optional[int]) -> np.ndarray:
        """Order 1 (linear) back to the cropped original grid; order 0 along ``axis`` (separate z).

        Rounded to float16 afterwards like nnU-Net's resampling (which returns its input's dtype): its argmax
        then sees the same ties, which it breaks towards the lower label as ours does."""
        return resample_image(logits.float().numpy(), shape, order=1, sep_axis=axis).astype(np.float16)
