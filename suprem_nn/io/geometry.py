"""Image geometry and the one axis convention used everywhere in suprem_nn.

Axis convention (read this once)
--------------------------------
An image array is indexed ``arr[i, j, k]``: ``i`` is the axis that varies
fastest on disk (the NIfTI/ITK "x" voxel axis), then ``j``, then ``k``. This is
the order nibabel and MONAI use, and therefore the order the SuPreM weights were
trained on. Multi-channel arrays put channels first: ``(C, i, j, k)``.

World coordinates follow ITK/DICOM: LPS (x grows to the patient's Left, y to
Posterior, z to Superior), in millimetres. ``direction`` is a 3x3 matrix whose
column ``a`` is the unit world vector along array axis ``a``; ``spacing[a]`` is
the voxel size along array axis ``a`` in mm; ``origin`` is the world position of
voxel ``(0, 0, 0)``. So voxel ``v`` sits at ``origin + direction @ (spacing * v)``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# Unit LPS world vectors of the anatomical directions an orientation code can name.
_LPS_VECTORS = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}
# The world axis (0 L/R, 1 P/A, 2 S/I) each letter points along.
_AXIS_OF = {c: int(np.flatnonzero(v)[0]) for c, v in _LPS_VECTORS.items()}


def is_orientation_code(code) -> bool:
    """Whether ``code`` names three anatomical directions, one per body axis (``"RAS"``, ``"LPS"``, ``"SAR"``...;
    case-insensitive): one of L/R, one of A/P and one of S/I."""
    return isinstance(code, str) and len(code) == 3 and \
        sorted(_AXIS_OF[c] for c in code.upper() if c in _AXIS_OF) == [0, 1, 2]


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels sit in the world (see the module docstring for axes)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major 3x3

    @property
    def direction_matrix(self) -> np.ndarray:
        """The direction as a 3x3 float64 matrix; column ``a`` is the unit LPS world vector of array axis ``a``."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def to_json(self) -> dict:
        """``{"shape", "spacing" (mm), "origin" (mm, LPS), "direction" (9 values, row-major)}`` as lists."""
        return {"shape": list(self.shape), "spacing": list(self.spacing),
                "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_json(cls, d: dict) -> "Geometry":
        """The geometry stored by :meth:`to_json`; ValueError when its numbers cannot be one."""
        g = cls(tuple(int(v) for v in d["shape"]), tuple(float(v) for v in d["spacing"]),
                tuple(float(v) for v in d["origin"]), tuple(float(v) for v in d["direction"]))
        if not (len(g.shape) == len(g.spacing) == len(g.origin) == 3 and len(g.direction) == 9 and min(g.shape) > 0
                and all(np.isfinite(g.spacing + g.origin + g.direction)) and min(g.spacing) > 0):
            raise ValueError(f"not a 3D geometry (3 positive sizes and spacings, 3 origin and 9 direction values): "
                             f"{d!r}")
        return g

    def orientation_code(self) -> str:
        """Three-letter code (e.g. ``"RAS"``, ``"LPS"``) that each array axis points towards."""
        d = self.direction_matrix
        code = ""
        for a in range(3):
            w = int(np.argmax(np.abs(d[:, a])))
            code += ("LPS" if d[w, a] > 0 else "RAI")[w]
        return code

    def same_grid(self, other: "Geometry", atol: float = 1e-4) -> bool:
        """Whether two geometries describe the same voxel grid.

    Parameters
    ----------
    other : Geometry
        The other grid.
    atol : float
        Absolute tolerance on spacing (mm), origin (mm) and direction cosines.

    Returns
    -------
    bool
        True when shapes are equal and the rest agrees within ``atol``.
    """
        return (tuple(self.shape) == tuple(other.shape)
                and np.allclose(self.spacing, other.spacing, atol=atol)
                and np.allclose(self.origin, other.origin, atol=atol)
                and np.allclose(self.direction, other.direction, atol=atol))


@dataclass(frozen=True)
class Reorientation:
    """How an array was permuted and flipped; :func:`undo_reorientation` inverts it exactly."""

    permutation: tuple[int, int, int]  # new axis t takes old axis permutation[t]
    flips: tuple[bool, bool, bool]     # new axis t was reversed

    @property
    def is_identity(self) -> bool:
        """True when the arrays keep their axis order and direction (nothing to undo)."""
        return self.permutation == (0, 1, 2) and not any(self.flips)

    def to_json(self) -> dict:
        """``{"permutation": [3 ints], "flips": [3 bools]}``."""
        return {"permutation": list(self.permutation), "flips": list(self.flips)}

    @classmethod
    def from_json(cls, d: dict) -> "Reorientation":
        """The reorientation stored by :meth:`to_json`; ValueError when it is not a permutation of 3 axes."""
        permutation, flips = tuple(int(v) for v in d["permutation"]), tuple(d["flips"])
        if sorted(permutation) != [0, 1, 2] or len(flips) != 3 or not all(isinstance(f, bool) for f in flips):
            raise ValueError(f"not a reorientation (a permutation of 0, 1, 2 and 3 true/false flips): {d!r}")
        return cls(permutation, flips)


def plan_reorientation(geometry: Geometry, code: str) -> Reorientation:
    """Axis permutation and flips that make array axes point along ``code``.

    For oblique images the closest axis-aligned orientation is used, as nibabel
    and MONAI do; the permutation maximises the summed alignment.

    Parameters
    ----------
    geometry : Geometry
        The image's grid (its direction matrix decides).
    code : str
        Three letters, the direction each new array axis points towards (``"RAS"``: i to the Right, j to
        Anterior, k to Superior).

    Returns
    -------
    Reorientation
        For :func:`apply_reorientation` and :func:`undo_reorientation`.
    """
    if not is_orientation_code(code):
        raise ValueError(f"orientation {code!r} must name one of L/R, one of A/P and one of S/I (e.g. 'RAS')")
    code = code.upper()
    targets = np.array([_LPS_VECTORS[c] for c in code])  # (3 target axes, 3 world)
    d = geometry.direction_matrix
    align = targets @ d  # [t, a] = cosine between target t and array axis a
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(align[t, p[t]]) for t in range(3)))
    flips = tuple(bool(align[t, best[t]] < 0) for t in range(3))
    return Reorientation(tuple(best), flips)


def apply_reorientation(array: np.ndarray, r: Reorientation) -> np.ndarray:
    """Reorient the last three axes of ``array``.

    Parameters
    ----------
    array : numpy.ndarray
        Shape ``(..., i, j, k)``; leading axes (channels) stay first and unchanged.
    r : Reorientation
        From :func:`plan_reorientation`.

    Returns
    -------
    numpy.ndarray
        A view with the last three axes permuted and flipped.
    """
    lead = array.ndim - 3
    out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in r.permutation))
    for t, f in enumerate(r.flips):
        if f:
            out = np.flip(out, axis=lead + t)
    return out


def undo_reorientation(array, r: Reorientation):
    """Exact inverse of :func:`apply_reorientation`.

    Parameters
    ----------
    array : numpy.ndarray or torch.Tensor
        Shape ``(..., x, y, z)`` in the reoriented axis order; a tensor stays on its device.
    r : Reorientation
        The reorientation that was applied.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Shape ``(..., i, j, k)`` in the file's axis order (a view where possible).
    """
    lead = array.ndim - 3
    flip_axes = [lead + t for t, f in enumerate(r.flips) if f]
    order = tuple(range(lead)) + tuple(lead + int(p) for p in np.argsort(r.permutation))
    if isinstance(array, np.ndarray):
        return np.transpose(np.flip(array, axis=tuple(flip_axes)) if flip_axes else array, order)
    return (array.flip(flip_axes) if flip_axes else array).permute(order)


def reoriented_geometry(geometry: Geometry, r: Reorientation) -> Geometry:
    """Geometry of the array produced by :func:`apply_reorientation`.

    Parameters
    ----------
    geometry : Geometry
        The original grid.
    r : Reorientation
        The reorientation applied to its arrays.

    Returns
    -------
    Geometry
        Shape and spacing (mm) permuted to the new axis order, direction and origin (mm) changed so every voxel
        keeps its world position.
    """
    d = geometry.direction_matrix
    sp = np.asarray(geometry.spacing, dtype=np.float64)
    shape = np.asarray(geometry.shape)
    origin = np.asarray(geometry.origin, dtype=np.float64).copy()
    new_dir = np.zeros((3, 3))
    for t, (a, f) in enumerate(zip(r.permutation, r.flips)):
        new_dir[:, t] = -d[:, a] if f else d[:, a]
        if f:
            origin += d[:, a] * sp[a] * (shape[a] - 1)
    return Geometry(tuple(int(shape[a]) for a in r.permutation), tuple(float(sp[a]) for a in r.permutation),
                    tuple(float(v) for v in origin), tuple(float(v) for v in new_dir.reshape(-1)))
