"""Synthetic abdominal CT phantoms for the offline demo and for tests.

Everything here is pure numpy/scipy and deterministic per ``seed``.

Conventions
-----------
* Arrays are indexed ``[i, j, k]`` (file voxel order, see :mod:`suprem_nn.io.geometry`).
* The geometry is RAS-like: array axis ``i`` points to the patient's Right, ``j`` to Anterior,
  ``k`` to Superior (``Geometry.orientation_code() == "RAS"``), as NIfTI files from most
  converters are. Anatomy is placed in a patient frame in millimetres centred on the volume:
  ``x`` grows towards the patient's right, ``y`` anterior, ``z`` superior.
* Intensities are Hounsfield units (HU), stored as int16; labels are uint8.

The phantom: air (-1000 HU) outside an elliptic body with subcutaneous fat (about -100 HU), an
abdominal muscle wall (about 50 HU), visceral fat with soft-tissue texture inside, a vertebra with
paraspinal muscles (not labelled), and five labelled organs with portal-venous-phase CT values:
liver (~105 HU), spleen (~120 HU), kidneys (cortex ~170 HU, medulla ~130 HU) and the aorta (~200 HU).
(One consistent contrast phase: with unenhanced liver and spleen values next to muscle, the spleen was
indistinguishable from the abdominal wall and the demo's network labelled the wall as spleen.)
Every case draws its own body size, organ sizes, positions, rotations and a smooth deformation of
each organ, then the image is blurred slightly (partial volume) and Gaussian noise is added.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import ndimage

from ..io.geometry import Geometry

# Label values of the phantom's classes (names as in AbdomenAtlas / the SuPreM class map).
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4, "aorta": 5}
CLASS_NAMES = [n for n in LABELS if n != "background"]

# Mean HU of each tissue; each case jitters them by a few HU.
HU = {"air": -1000.0, "subcutaneous_fat": -100.0, "muscle": 50.0, "visceral_fat": -80.0, "bowel": 25.0,
      "bone_cortex": 700.0, "bone_marrow": 250.0, "spinal_canal": 15.0, "liver": 105.0, "spleen": 120.0,
      "kidney_cortex": 170.0, "kidney_medulla": 130.0, "aorta": 200.0}

# RAS axes expressed in ITK's LPS world: column a of the direction matrix is array axis a.
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)

# Default voxel grid of the demo: 1.5 x 1.5 x 2.5 mm (anisotropic, like a thick-slice clinical CT),
# a 360 x 282 x 160 mm field of view.
DEFAULT_SHAPE = (240, 188, 64)
DEFAULT_SPACING = (1.5, 1.5, 2.5)


@dataclass
class Phantom:
    """One generated case: ``ct`` int16 HU and ``label`` uint8 (values of :data:`LABELS`), both ``[i, j, k]``."""

    ct: np.ndarray
    label: np.ndarray
    geometry: Geometry
    noise_sd_hu: float


def phantom_geometry(shape: Sequence[int] = DEFAULT_SHAPE, spacing: Sequence[float] = DEFAULT_SPACING) -> Geometry:
    """RAS geometry of a ``shape`` grid with ``spacing`` (mm) whose centre voxel sits at the world origin.

    Parameters
    ----------
    shape : sequence of int
        Voxels along i, j, k.
    spacing : sequence of float
        Voxel size along i, j, k in mm.

    Returns
    -------
    Geometry
        Axes i, j, k point to patient right, anterior, superior (direction ``RAS``); origin in LPS mm.
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    half = [(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    # voxel 0 lies half a field of view to the patient's left, posterior and inferior; in LPS that is
    # x = +half (left), y = +half (posterior), z = -half (inferior).
    origin = (half[0], half[1], -half[2])
    return Geometry(shape, spacing, origin, RAS_DIRECTION)


def patient_coordinates(shape: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable patient-frame coordinates in mm: ``x`` (i, right+), ``y`` (j, anterior+), ``z`` (k, superior+).

    Shapes ``(n_i, 1, 1)``, ``(1, n_j, 1)``, ``(1, 1, n_k)``; the volume centre is 0.
    """
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def make_phantom(seed: int, shape: Sequence[int] = DEFAULT_SHAPE,
                 spacing: Sequence[float] = DEFAULT_SPACING) -> Phantom:
    """Generate one case. Same ``seed``, ``shape`` and ``spacing`` -> the same arrays, bit for bit.

    ``shape`` (voxels) and ``spacing`` (mm) set the grid; the anatomy has a fixed physical size
    (a body about 300 x 220 mm across), so a coarse spacing with a small shape gives the same
    anatomy at low resolution (the demo's ``--quick`` mode does this).
    """
    rng = np.random.default_rng(int(seed))
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    x, y, z = patient_coordinates(shape, spacing)
    hu = {k: v + (rng.normal(0.0, 4.0) if k not in ("air",) else 0.0) for k, v in HU.items()}
    scale = rng.uniform(0.9, 1.08)   # overall patient size

    img = np.full(shape, hu["air"], dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    # Body: an elliptic cylinder along z whose radii change slowly with z.
    ax = 150.0 * scale * rng.uniform(0.93, 1.07)
    ay = 110.0 * scale * rng.uniform(0.93, 1.07)
    wobble = 1.0 + 0.03 * np.sin(z / 40.0 + rng.uniform(0, 2 * np.pi))
    body_r = np.sqrt((x / (ax * wobble)) ** 2 + ((y - 5.0) / (ay * wobble)) ** 2)
    fat = rng.uniform(12.0, 26.0)
    wall = rng.uniform(8.0, 13.0)
    r_muscle_out = 1.0 - fat / ay
    r_cavity = r_muscle_out - wall / ay
    img[np.broadcast_to(body_r <= 1.0, shape)] = hu["subcutaneous_fat"]
    img[np.broadcast_to(body_r <= r_muscle_out, shape)] = hu["muscle"]
    cavity = np.broadcast_to(body_r <= r_cavity, shape)
    # Visceral fat with soft-tissue (bowel-like) blobs: low-frequency texture, so the space between
    # organs is not a flat colour the network could use as a shortcut.
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                      sigma=[12.0 / s for s in spacing])
    texture /= max(float(np.abs(texture).max()), 1e-6)
    visceral = np.where(texture > 0.15, hu["bowel"], hu["visceral_fat"]).astype(np.float32)
    img[cavity] = visceral[cavity]

    # Spine (not labelled): vertebral body, cortex, canal, paraspinal muscles, at the back.
    spine_y = 5.0 - ay * r_cavity + 28.0
    spine_x = rng.normal(0.0, 3.0)
    ver = np.broadcast_to((x - spine_x) ** 2 + (y - spine_y) ** 2 <= 17.0 ** 2, shape)
    for side in (-1, 1):
        para = ((x - spine_x - side * 35.0) / 22.0) ** 2 + ((y - spine_y + 18.0) / 20.0) ** 2 <= 1.0
        img[np.broadcast_to(para, shape) & cavity] = hu["muscle"]
    img[ver] = hu["bone_cortex"]
    img[np.broadcast_to((x - spine_x) ** 2 + (y - spine_y) ** 2 <= 13.0 ** 2, shape)] = hu["bone_marrow"]
    canal = (x - spine_x) ** 2 + (y - spine_y + 26.0) ** 2 <= 8.0 ** 2
    img[np.broadcast_to(canal, shape)] = hu["spinal_canal"]
    occupied = ver | np.broadcast_to(canal, shape)

    def organ(name: str, centre, radii, angles, deform: float) -> np.ndarray:
        return _deformed_ellipsoid(x, y, z, shape, np.asarray(centre) * scale, np.asarray(radii) * scale,
                                   angles, deform, rng) & cavity & ~occupied

    # Liver: the patient's right, upper abdomen, large.
    liver = organ("liver", (rng.uniform(45, 65), rng.uniform(0, 20), rng.uniform(30, 55)),
                  (rng.uniform(80, 95), rng.uniform(65, 80), rng.uniform(60, 75)),
                  rng.normal(0, [0.12, 0.12, 0.25]), 0.10)
    img[liver], label[liver] = hu["liver"], LABELS["liver"]
    # Spleen: the patient's left, posterior, upper.
    spleen = organ("spleen", (rng.uniform(-88, -72), rng.uniform(-35, -18), rng.uniform(25, 50)),
                   (rng.uniform(26, 34), rng.uniform(45, 58), rng.uniform(40, 52)),
                   rng.normal(0, [0.15, 0.15, 0.35]), 0.12)
    img[spleen], label[spleen] = hu["spleen"], LABELS["spleen"]
    # Kidneys: beside the spine, the right one a little lower; cortex shell around a darker medulla.
    for name, side, dz in (("kidney_right", 1, -10.0), ("kidney_left", -1, 5.0)):
        centre = (side * rng.uniform(62, 78), spine_y / scale + rng.uniform(5, 18), dz + rng.uniform(-25, -5))
        radii = (rng.uniform(24, 30), rng.uniform(24, 30), rng.uniform(48, 60))
        kidney = organ(name, centre, radii, (rng.normal(0, 0.15), side * rng.uniform(0.1, 0.3), rng.normal(0, 0.2)),
                       0.08)
        inner = ndimage.binary_erosion(kidney, iterations=max(1, int(round(7.0 / min(spacing)))))
        img[kidney] = hu["kidney_cortex"]
        img[inner] = hu["kidney_medulla"]
        label[kidney] = LABELS[name]
    # Aorta: a contrast-filled tube in front of the spine, slightly left, meandering gently with z.
    phase = rng.uniform(0, 2 * np.pi)
    ao_x = spine_x - rng.uniform(10, 20) + 4.0 * np.sin(z / 35.0 + phase)
    ao_y = spine_y + rng.uniform(26, 34) + 3.0 * np.cos(z / 45.0 + phase)
    ao_r = rng.uniform(10, 13) * scale
    aorta = np.broadcast_to((x - ao_x) ** 2 + (y - ao_y) ** 2 <= ao_r ** 2, shape) & cavity
    img[aorta], label[aorta] = hu["aorta"], LABELS["aorta"]

    # Partial volume (a slight blur, about 1 mm) and quantum noise.
    img = ndimage.gaussian_filter(img, sigma=[0.8 / s for s in spacing])
    noise_sd = float(rng.uniform(10.0, 20.0))
    img += rng.normal(0.0, noise_sd, size=shape).astype(np.float32)
    ct = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    return Phantom(ct, label, phantom_geometry(shape, spacing), noise_sd)


def _rotation(angles) -> np.ndarray:
    """Rotation matrix from three angles (radians) about x, y and z."""
    a, b, c = (float(v) for v in angles)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _deformed_ellipsoid(x, y, z, shape, centre, radii, angles, deform, rng) -> np.ndarray:
    """Boolean mask of a rotated ellipsoid whose surface is bent by smooth random sinusoids.

    ``centre`` and ``radii`` in mm in the patient frame; ``deform`` is the relative amplitude of the
    deformation. Only the ellipsoid's bounding box is evaluated (the rest of the volume is False).
    """
    out = np.zeros(shape, dtype=bool)
    reach = float(np.max(radii)) * (1.0 + 2 * deform)
    box = []
    for axis_coords, c in zip((x.ravel(), y.ravel(), z.ravel()), centre):
        idx = np.nonzero(np.abs(axis_coords - c) <= reach)[0]
        if idx.size == 0:
            return out
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    px = x[box[0], :, :] - centre[0]
    py = y[:, box[1], :] - centre[1]
    pz = z[:, :, box[2]] - centre[2]
    r = _rotation(angles).T  # world -> organ frame
    u = (r[0, 0] * px + r[0, 1] * py + r[0, 2] * pz) / radii[0]
    v = (r[1, 0] * px + r[1, 1] * py + r[1, 2] * pz) / radii[1]
    w = (r[2, 0] * px + r[2, 1] * py + r[2, 2] * pz) / radii[2]
    dist = u * u + v * v + w * w
    # Three low-frequency bumps, each a sinusoid of a different organ-frame axis.
    for a, b in ((u, v), (v, w), (w, u)):
        freq, ph = rng.uniform(1.5, 3.0), rng.uniform(0, 2 * np.pi)
        dist = dist + deform * np.sin(freq * a + ph) * (1.0 + 0.5 * b)
    out[box[0], box[1], box[2]] = dist <= 1.0
    return out


def write_phantom_dataset(folder: str | Path, num_train: int = 10, num_test: int = 3,
                          shape: Sequence[int] = DEFAULT_SHAPE, spacing: Sequence[float] = DEFAULT_SPACING,
                          seed: int = 0, on_case: Optional[Callable[[str], None]] = None) -> Path:
    """Write an nnU-Net v2 raw dataset of phantoms to ``folder`` and return it.

    Layout: ``dataset.json``, ``imagesTr/phantom_XXX_0000.nii.gz`` (int16 HU), ``labelsTr/phantom_XXX.nii.gz``
    (uint8), and the held-out cases in ``imagesTs/`` and ``labelsTs/``. Case ``n`` uses seed ``seed + n``,
    so the dataset is reproducible. Files that already exist with the same settings are kept (a rerun
    after an interruption only writes what is missing). ``on_case(case_id)`` is called after each case.
    """
    from ..io.image_io import write_image
    from ..utils.atomic import atomic_write_json

    folder = Path(folder)
    settings = {"num_train": num_train, "num_test": num_test, "shape": [int(s) for s in shape],
                "spacing": [float(s) for s in spacing], "seed": int(seed)}
    marker = folder / "phantom_settings.json"
    subs = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
    if marker.is_file() and json.loads(marker.read_text()) != settings:
        # Other settings: start the case folders over, so no case of the old dataset lingers.
        for sub in subs:
            shutil.rmtree(folder / sub, ignore_errors=True)
    for sub in subs:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, settings)
    for n in range(num_train + num_test):
        case_id = f"phantom_{n:03d}"
        split = "Tr" if n < num_train else "Ts"
        image_path = folder / f"images{split}" / f"{case_id}_0000.nii.gz"
        label_path = folder / f"labels{split}" / f"{case_id}.nii.gz"
        if not (image_path.is_file() and label_path.is_file()):
            p = make_phantom(seed + n, shape, spacing)
            write_image(p.label, p.geometry, label_path)
            write_image(p.ct, p.geometry, image_path)
        if on_case is not None:
            on_case(case_id)
    atomic_write_json(folder / "dataset.json", {
        "name": folder.name, "description": "synthetic abdominal CT phantoms (suprem_nn.demo.phantom)",
        "channel_names": {"0": "CT"}, "labels": dict(LABELS), "numTraining": int(num_train),
        "file_ending": ".nii.gz", "licence": "generated data, no restrictions"})
    return folder
