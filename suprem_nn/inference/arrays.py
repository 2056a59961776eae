"""In-memory images for :class:`~suprem_nn.inference.Predictor`: numpy arrays with their geometry, SimpleITK images.

Arrays follow the package's one axis convention (:mod:`suprem_nn.io.geometry`): ``arr[i, j, k]`` with ``i`` the
axis that varies fastest on disk (ITK ``x``), spacing in mm per array axis, LPS world coordinates. SimpleITK's
``GetArrayFromImage`` returns the reverse order ``[k, j, i]``; the conversions here transpose it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import SupremError
from ..io.geometry import Geometry

__all__ = ["array_case", "from_sitk", "to_sitk"]

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def array_case(image: np.ndarray, spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0),
               direction: Optional[Sequence[float]] = None, num_inputs: int = 1) -> tuple[list[np.ndarray], Geometry]:
    """``(one (i, j, k) array per channel, geometry)`` from an ``(i, j, k)`` or ``(C, i, j, k)`` array.

    Parameters
    ----------
    image : np.ndarray
        ``[i, j, k]`` in file voxel order, or channels first ``(C, i, j, k)``.
    spacing : sequence of float
        Voxel size along i, j, k in mm.
    origin : sequence of float
        LPS world position of voxel (0, 0, 0) in mm.
    direction : sequence of float, optional
        9 values of the 3x3 direction matrix, row-major (column a: LPS unit vector of axis a); default identity.
    num_inputs : int
        Channels the model expects.

    Returns
    -------
    channels : list of np.ndarray
        One ``(i, j, k)`` array per channel (views of ``image`` when it is already an ndarray).
    geometry : Geometry

    Raises
    ------
    SupremError
        For a wrong number of axes or channels, a spacing that is not 3 positive finite sizes, a wrong number of
        origin or direction values, or a direction matrix that is not orthonormal.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        channels = [image]
    elif image.ndim == 4:
        channels = list(image)
    else:
        raise SupremError(f"expected an (i, j, k) or (C, i, j, k) array, got shape {image.shape}")
    if len(channels) != num_inputs:
        raise SupremError(f"the image has {len(channels)} channel(s), the model expects {num_inputs}")
    spacing = tuple(float(v) for v in spacing)
    origin = tuple(float(v) for v in origin)
    direction = tuple(float(v) for v in (IDENTITY if direction is None else np.ravel(direction)))
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise SupremError(f"spacing must be 3 positive sizes in mm, got {spacing}")
    if len(origin) != 3 or len(direction) != 9:
        raise SupremError(f"origin needs 3 values and direction 9 (row-major 3x3), got {len(origin)} and "
                          f"{len(direction)}")
    d = np.asarray(direction).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise SupremError("direction matrix is not orthonormal (sheared or scaled axes)")
    return channels, Geometry(tuple(int(s) for s in channels[0].shape), spacing, origin, direction)


def from_sitk(image) -> tuple[list[np.ndarray], Geometry]:
    """``(one (i, j, k) array per channel, geometry)`` of a 3D SimpleITK image, or a list of them (channels)."""
    import SimpleITK as sitk

    images = list(image) if isinstance(image, (list, tuple)) else [image]
    arrays, geometry = [], None
    for img in images:
        if not isinstance(img, sitk.Image) or img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise SupremError("expected a scalar 3D SimpleITK image (or a list of them, one per channel)")
        geo = Geometry(tuple(int(s) for s in img.GetSize()), tuple(float(v) for v in img.GetSpacing()),
                       tuple(float(v) for v in img.GetOrigin()), tuple(float(v) for v in img.GetDirection()))
        if geometry is not None and not geo.same_grid(geometry):
            raise SupremError(f"channel grid {geo.shape} differs from the first channel's {geometry.shape}")
        arrays.append(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)))
        geometry = geometry or geo
    return arrays, geometry


def to_sitk(array: np.ndarray, geometry: Geometry):
    """A SimpleITK image of an ``(i, j, k)`` array on ``geometry``.

    Parameters
    ----------
    array : np.ndarray
        ``[i, j, k]`` in file voxel order (SimpleITK's own array order is ``(k, j, i)``; transposed here).
    geometry : Geometry
        Spacing (mm), LPS origin (mm) and direction written to the image.

    Returns
    -------
    SimpleITK.Image
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing([float(v) for v in geometry.spacing])
    image.SetOrigin([float(v) for v in geometry.origin])
    image.SetDirection([float(v) for v in geometry.direction])
    return image
