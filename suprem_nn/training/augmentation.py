"""Training-time augmentation with batchgenerators (nnU-Net's default set, no elastic deformation).

Arrays are ``(B, C, X, Y, Z)`` in network space (array axes of the plan). The
parameters live in one JSON-serialisable dict (:data:`DEFAULT_AUGMENTATION`)
that is recorded in the fold's ``config.json`` and may be overridden from a
config file. Angles are in degrees, probabilities per sample.
"""
from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import numpy as np

DEFAULT_AUGMENTATION = {
    "enabled": True,
    "rotation_degrees": 30.0, "p_rotation": 0.2,
    "scale_range": [0.7, 1.4], "p_scale": 0.2,
    "order_data": 3,
    "noise_variance": [0.0, 0.1], "p_noise": 0.1,
    "blur_sigma": [0.5, 1.0], "p_blur": 0.2,
    "brightness_range": [0.75, 1.25], "p_brightness": 0.15,
    "contrast_range": [0.75, 1.25], "p_contrast": 0.15,
    "lowres_zoom_range": [0.5, 1.0], "p_lowres": 0.25,
    "gamma_range": [0.7, 1.5], "p_gamma_inverted": 0.1, "p_gamma": 0.3,
    "mirror": True,                       # over plan.mirror_axes, each axis with p 0.5
}


def enlarged_patch_size(patch_size: Sequence[int], params: dict) -> list[int]:
    """Size to crop before rotating/scaling so the final centre crop has no empty corners.

    As nnU-Net's ``get_patch_size``: the patch's corners are rotated by ±``rotation_degrees``
    about each axis in turn, the largest extent kept, and divided by the smallest scale factor.
    """
    patch = np.asarray(patch_size, dtype=float)
    if not params.get("enabled", True) or (params["p_rotation"] <= 0 and params["p_scale"] <= 0):
        return [int(v) for v in patch_size]
    a = math.radians(params["rotation_degrees"]) if params["p_rotation"] > 0 else 0.0
    corners = np.array(list(itertools.product(*[(-s / 2, s / 2) for s in patch])))
    extent = patch.copy()
    for axis in range(3):
        for angle in (-a, a):
            pts = corners @ _rot(axis, angle).T
            extent = np.maximum(extent, pts.max(0) - pts.min(0))
    scale_min = min(params["scale_range"]) if params["p_scale"] > 0 else 1.0
    return [int(math.ceil(v)) for v in extent / min(1.0, scale_min)]


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def build_transforms(patch_size: Sequence[int], mirror_axes: Sequence[int], params: dict):
    """A batchgenerators ``Compose`` taking ``{"data", "seg"}`` of the enlarged patch to ``patch_size``.

    Segmentation borders are filled with -1 by the spatial transform and must be
    mapped back to background by the caller.
    """
    from batchgenerators.transforms.abstract_transforms import Compose
    from batchgenerators.transforms.color_transforms import (BrightnessMultiplicativeTransform,
                                                             ContrastAugmentationTransform, GammaTransform)
    from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
    from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

    p = params
    a = math.radians(p["rotation_degrees"])
    transforms = [
        SpatialTransform(list(patch_size), patch_center_dist_from_border=None, do_elastic_deform=False,
                         do_rotation=p["p_rotation"] > 0, angle_x=(-a, a), angle_y=(-a, a), angle_z=(-a, a),
                         do_scale=p["p_scale"] > 0, scale=tuple(p["scale_range"]), border_mode_data="constant",
                         border_cval_data=0, order_data=int(p["order_data"]), border_mode_seg="constant",
                         border_cval_seg=-1, order_seg=1, random_crop=False, p_el_per_sample=0,
                         p_scale_per_sample=p["p_scale"], p_rot_per_sample=p["p_rotation"],
                         independent_scale_for_each_axis=False),
        GaussianNoiseTransform(tuple(p["noise_variance"]), p_per_sample=p["p_noise"]),
        GaussianBlurTransform(tuple(p["blur_sigma"]), different_sigma_per_channel=True, p_per_sample=p["p_blur"],
                              p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=tuple(p["brightness_range"]),
                                          p_per_sample=p["p_brightness"]),
        ContrastAugmentationTransform(tuple(p["contrast_range"]), p_per_sample=p["p_contrast"]),
        SimulateLowResolutionTransform(zoom_range=tuple(p["lowres_zoom_range"]), per_channel=True, p_per_channel=0.5,
                                       order_downsample=0, order_upsample=3, p_per_sample=p["p_lowres"]),
        GammaTransform(tuple(p["gamma_range"]), True, True, retain_stats=True, p_per_sample=p["p_gamma_inverted"]),
        GammaTransform(tuple(p["gamma_range"]), False, True, retain_stats=True, p_per_sample=p["p_gamma"]),
    ]
    if p.get("mirror", True) and len(mirror_axes):
        transforms.append(MirrorTransform(tuple(mirror_axes)))
    return Compose(transforms)


def merged_params(overrides: Optional[dict]) -> dict:
    """Defaults updated with a user's overrides; unknown keys are an error (a typo would be silently ignored)."""
    from ..errors import SupremError
    params = dict(DEFAULT_AUGMENTATION)
    for k, v in (overrides or {}).items():
        if k not in params:
            raise SupremError(f"unknown augmentation setting {k!r}; known: {sorted(params)}")
        params[k] = v
    return params
