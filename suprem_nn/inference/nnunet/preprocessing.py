"""nnU-Net v2's preprocessing and export geometry for one 3D configuration, in suprem_nn's array convention.

Axis bookkeeping: suprem_nn reads images as ``[i, j, k]`` (file voxel order, see :mod:`suprem_nn.io.geometry`).
nnU-Net's readers (SimpleITKIO, NibabelIO) hand it the reverse, ``[k, j, i]``, and its plan then applies
``transpose_forward``. Both are one permutation here: network axis ``a`` is file axis ``2 - transpose_forward[a]``.

Steps (nnU-Net's ``DefaultPreprocessor.run_case_npy``): float32 -> transpose -> crop to the box of voxels
where any channel is non-zero -> normalise each channel with the plan's scheme -> resample to the
configuration's spacing (skimage-style spline, order 3, edge mode, output clipped to the input range; with the
anisotropic "separate z" rule: in-plane per slice, then order 0 along the coarse axis).
Export (``convert_predicted_logits_to_segmentation_with_correct_shape``): logits resampled back with order 1
and the same separate-z rule -> argmax (softmax) or > 0 per region (sigmoid > 0.5) -> paste into the crop box
-> transpose back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ...errors import SupremError
from ...io.geometry import Geometry
from ...io.cropping import foreground_box

__all__ = ["NnunetCaseProperties", "NnunetPreprocessor", "separate_z_axis", "resize_like_skimage"]

ANISO_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD


@dataclass
class NnunetCaseProperties:
    case_id: str
    permutation: list[int]            # network axis a <- file axis permutation[a]
    spacing_net: list[float]          # file spacing in network axis order (mm)
    shape_before_cropping: list[int]  # network axis order
    bbox: list[list[int]]             # [[lo, hi) x 3] in network axes
    shape_after_cropping: list[int]
    shape_after_resampling: list[int]

    def to_json(self) -> dict:
        """The fields as a dict (already JSON-ready lists)."""
        return dict(self.__dict__)


def separate_z_axis(force: Optional[bool], current: Sequence[float], new: Sequence[float],
                    threshold: float = ANISO_THRESHOLD) -> Optional[int]:
    """nnU-Net's ``determine_do_sep_z_and_axis``: the axis to resample with order_z, or None.

    Parameters
    ----------
    force : bool or None
        ``force_separate_z`` of the plan: True uses the coarsest axis of ``current``, False never separates,
        None decides by anisotropy.
    current, new : sequence of float
        Spacing (mm) before and after resampling, per network axis.
    threshold : float
        Largest / smallest spacing ratio above which a spacing counts as anisotropic.

    Returns
    -------
    int or None
        The coarsest axis of ``current`` (if anisotropic, else of ``new``), or None when none qualifies or several
        axes tie for coarsest.
    """
    def lowres_axes(sp):
        sp = np.asarray(sp, dtype=np.float64)
        return np.flatnonzero(max(sp) / sp == 1)

    def aniso(sp):
        return np.max(sp) / np.min(sp) > threshold

    if force is not None:
        axes = lowres_axes(current) if force else None
    elif aniso(current):
        axes = lowres_axes(current)
    elif aniso(new):
        axes = lowres_axes(new)
    else:
        axes = None
    return int(axes[0]) if axes is not None and len(axes) == 1 else None


def resize_like_skimage(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order, mode='edge', anti_aliasing=False)`` in float64.

    That is ``scipy.ndimage.zoom`` with grid_mode=True, edge extension, and the output clipped to the
    input's range (skimage's default ``clip=True``, which matters for order 3 overshoot).

    Parameters
    ----------
    image : np.ndarray
        Array of any number of axes (voxel values).
    shape : sequence of int
        Output shape in voxels, one size per axis of ``image``.
    order : int
        Spline order (0 nearest, 1 linear, 3 cubic).

    Returns
    -------
    np.ndarray
        float64 array of ``shape``.
    """
    image = np.asarray(image, dtype=np.float64)
    zoom = [1.0 / (i / o) for i, o in zip(image.shape, shape)]
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    if order > 1:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def resample_like_nnunet(data: np.ndarray, new_shape: Sequence[int], order: int, order_z: int,
                         axis: Optional[int]) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg`` for intensities: (C, a, b, c) -> (C, *new_shape) float32.

    Parameters
    ----------
    data : np.ndarray
        Channels-first ``(C, a, b, c)`` in network axis order; returned unchanged when already ``new_shape``.
    new_shape : sequence of int
        Output spatial shape in voxels.
    order : int
        Spline order in-plane (or in 3-D when ``axis`` is None).
    order_z : int
        Order along ``axis``; only 0 (nearest) is supported.
    axis : int or None
        Spatial axis (0..2) resampled separately (each slice in-plane, then nearest along it), or None for 3-D.

    Raises
    ------
    SupremError
        If ``axis`` must change size and ``order_z`` is not 0.
    """
    new_shape = [int(s) for s in new_shape]
    if list(data.shape[1:]) == new_shape:
        return data
    out = np.zeros((data.shape[0], *new_shape), dtype=np.float32)
    for c in range(data.shape[0]):
        if axis is None:
            out[c] = resize_like_skimage(data[c], new_shape, order)
            continue
        plane = [s for a, s in enumerate(new_shape) if a != axis]
        n = data.shape[axis + 1]
        tmp_shape = list(new_shape)
        tmp_shape[axis] = n
        here = np.zeros(tmp_shape, dtype=np.float64)
        for s in range(n):
            idx = [slice(None)] * 3
            idx[axis] = s
            here[tuple(idx)] = resize_like_skimage(data[c][tuple(idx)], plane, order)
        if n != new_shape[axis]:
            if order_z != 0:
                raise SupremError(f"order_z {order_z} for separate-z resampling is not supported (only 0)")
            # map_coordinates(order=0, mode='nearest') at row_scale * (o + 0.5) - 0.5, rounded half up.
            src = np.floor(n / new_shape[axis] * (np.arange(new_shape[axis]) + 0.5)).astype(np.int64)
            here = np.take(here, np.clip(src, 0, n - 1), axis=axis)
        out[c] = here
    return out


_SCHEMES = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
            "RGBTo01Normalization")
_CT_PROPERTIES = ("percentile_00_5", "percentile_99_5", "mean", "std")


class NnunetPreprocessor:
    """Preprocessing and export geometry of one nnU-Net configuration (plans.json entries).

    Args:
        plans: the parsed plans.json.
        configuration: its configuration, ``inherits_from`` resolved.
        num_inputs: image channels.
        source: plans.json, named in errors.

    Raises:
        SupremError: naming ``source`` and the entry, when an entry this preprocessing reads is missing, of the
            wrong type or out of range (checked here, before any case is read), or asks for what is not supported.
    """

    def __init__(self, plans: dict, configuration: dict, num_inputs: int, source=None):
        def fail(problem: str):
            raise SupremError(problem, source)

        transpose = plans.get("transpose_forward", [0, 1, 2])
        if not _int_list(transpose, 3) or sorted(transpose) != [0, 1, 2]:
            fail(f"transpose_forward must be a permutation of [0, 1, 2], got {transpose!r}")
        self.transpose_forward = [int(a) for a in transpose]
        self.permutation = [2 - a for a in self.transpose_forward]
        self.inverse = [int(i) for i in np.argsort(self.permutation)]
        spacing = configuration.get("spacing")
        if not _number_list(spacing, 3) or min(spacing) <= 0:
            fail(f"configuration 'spacing' must be 3 positive numbers (mm), got {spacing!r}")
        self.spacing = [float(s) for s in spacing]
        self.patch_size = [int(p) for p in configuration["patch_size"]]  # checked by load_nnunet_model
        schemes = configuration.get("normalization_schemes")
        if not isinstance(schemes, list) or len(schemes) != num_inputs:
            fail(f"configuration 'normalization_schemes' must list one scheme per channel ({num_inputs}), got "
                 f"{schemes!r}")
        use_mask = configuration.get("use_mask_for_norm", [False] * num_inputs)
        if not isinstance(use_mask, list) or len(use_mask) != num_inputs or \
                not all(isinstance(v, bool) for v in use_mask):
            fail(f"configuration 'use_mask_for_norm' must list one true/false per channel ({num_inputs}), got "
                 f"{use_mask!r}")
        self.schemes, self.use_mask = list(schemes), list(use_mask)
        self.intensity = plans.get("foreground_intensity_properties_per_channel", {})
        for c, scheme in enumerate(self.schemes):
            if scheme not in _SCHEMES:
                fail(f"normalization scheme {scheme!r} of channel {c} is not supported")
            if scheme == "CTNormalization":
                props = self.intensity.get(str(c)) if isinstance(self.intensity, dict) else None
                if not isinstance(props, dict) or not all(_number(props.get(k)) for k in _CT_PROPERTIES):
                    fail(f"CTNormalization of channel {c} needs foreground_intensity_properties_per_channel"
                         f"['{c}'] with numbers {', '.join(_CT_PROPERTIES)}, got {props!r}")
        self.data_kwargs = self._resampling(configuration, "data", {"order": 3, "order_z": 0}, fail)
        self.prob_kwargs = self._resampling(configuration, "probabilities", {"order": 1, "order_z": 0}, fail)

    @staticmethod
    def _resampling(conf: dict, kind: str, default: dict, fail) -> dict:
        fn = conf.get(f"resampling_fn_{kind}", "resample_data_or_seg_to_shape")
        if fn != "resample_data_or_seg_to_shape":
            fail(f"resampling function {fn!r} ({kind}) is not supported (only nnU-Net's default "
                 "resample_data_or_seg_to_shape)")
        given = conf.get(f"resampling_fn_{kind}_kwargs", {})
        if not isinstance(given, dict):
            fail(f"configuration 'resampling_fn_{kind}_kwargs' must be an object, got {given!r}")
        kw = {**default, **given}
        threshold = kw.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD)
        if not all(isinstance(kw[k], int) and not isinstance(kw[k], bool) and 0 <= kw[k] <= 5
                   for k in ("order", "order_z")) or not _number(threshold) or \
                kw.get("force_separate_z") not in (None, True, False):
            fail(f"configuration 'resampling_fn_{kind}_kwargs' must hold order and order_z 0..5, a number "
                 f"separate_z_anisotropy_threshold and force_separate_z true/false/null, got {given!r}")
        return {"order": kw["order"], "order_z": kw["order_z"], "force": kw.get("force_separate_z"),
                "threshold": float(threshold)}

    # ------------------------------------------------------------------ forward
    def preprocess(self, images: Sequence[np.ndarray], geometry: Geometry,
                   case_id: str = "") -> tuple[np.ndarray, NnunetCaseProperties]:
        """Raw ``(i, j, k)`` channel arrays -> ``(C, x, y, z)`` float32 in network space, and the properties.

        Transposes by ``transpose_forward``, crops to the nonzero box, normalises each channel by its scheme and
        resamples to the configuration's spacing, as nnU-Net v2 does.

        Parameters
        ----------
        images : sequence of np.ndarray
            One ``[i, j, k]`` array per channel, in file voxel order.
        geometry : Geometry
            Their grid; only the spacing (mm) is used.
        case_id : str
            Stored in the properties.

        Returns
        -------
        data : np.ndarray
            float32 ``(C, x, y, z)`` at the configuration's spacing.
        props : NnunetCaseProperties
            Permutation, spacing, crop box and shapes, to go back to the file's grid.
        """
        perm = self.permutation
        data = np.stack([np.asarray(im, dtype=np.float32) for im in images]).transpose(0, *[p + 1 for p in perm])
        spacing = [float(geometry.spacing[p]) for p in perm]
        shape_before = list(data.shape[1:])
        box = foreground_box(data, None)  # nnU-Net fills holes in the mask first; that never changes its box
        data = np.ascontiguousarray(data[(slice(None),) + tuple(slice(lo, hi) for lo, hi in box)])
        shape_crop = list(data.shape[1:])
        new_shape = [int(round(s / t * n)) for s, t, n in zip(spacing, self.spacing, shape_crop)]
        mask = None
        if any(self.use_mask):
            # nnU-Net's seg >= 0: the non-zero mask with holes filled, inside the crop box.
            mask = ndimage.binary_fill_holes(np.any(data != 0, axis=0))
        for c, scheme in enumerate(self.schemes):
            data[c] = self._normalize(data[c], scheme, c, mask if self.use_mask[c] else None)
        kw = self.data_kwargs
        axis = separate_z_axis(kw["force"], spacing, self.spacing, kw["threshold"])
        data = resample_like_nnunet(data, new_shape, kw["order"], kw["order_z"], axis)
        props = NnunetCaseProperties(case_id, list(perm), spacing, shape_before, box, shape_crop,
                                     list(data.shape[1:]))
        return data, props

    def _normalize(self, x: np.ndarray, scheme: str, c: int, mask: Optional[np.ndarray]) -> np.ndarray:
        """nnU-Net's default_normalization_schemes, float32, in place on ``x``."""
        if scheme == "CTNormalization":
            p = self.intensity[str(c)]
            np.clip(x, p["percentile_00_5"], p["percentile_99_5"], out=x)
            x -= p["mean"]
            x /= max(p["std"], 1e-8)
        elif scheme == "ZScoreNormalization":
            if mask is not None:
                mean, std = x[mask].mean(), x[mask].std()
                x[mask] = (x[mask] - mean) / max(std, 1e-8)
            else:
                mean, std = x.mean(), x.std()
                x -= mean
                x /= max(std, 1e-8)
        elif scheme == "RescaleTo01Normalization":
            x -= x.min()
            x /= np.clip(x.max(), a_min=1e-8, a_max=None)
        elif scheme == "RGBTo01Normalization":
            if x.min() < 0 or x.max() > 255:
                raise SupremError(f"channel {c} is normalised as RGB but has values outside 0..255")
            x /= 255.0
        return x

    # ------------------------------------------------------------------ backward
    def separate_axis_for_input_grid(self, props: NnunetCaseProperties) -> Optional[int]:
        """The network axis to resample separately (order_z) when taking probabilities back from the target spacing
        to the case's spacing, or None: :func:`separate_z_axis` with the configuration's probability-resampling
        settings.
        """
        kw = self.prob_kwargs
        return separate_z_axis(kw["force"], self.spacing, props.spacing_net, kw["threshold"])

    def to_file_order(self, array: np.ndarray) -> np.ndarray:
        """Network-axis ``(x, y, z)`` array on the uncropped grid -> the file's ``[i, j, k]`` order (a contiguous
        copy).
        """
        return np.ascontiguousarray(array.transpose(self.inverse))


def _number(value) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _number_list(value, length: int) -> bool:
    return isinstance(value, list) and len(value) == length and all(_number(v) for v in value)


def _int_list(value, length: int) -> bool:
    return _number_list(value, length) and all(isinstance(v, int) for v in value)
