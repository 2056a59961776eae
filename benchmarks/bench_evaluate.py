"""Time the evaluation of one 512 x 512 x 300 case with 25 organ-like classes.

Usage: ``python benchmarks/bench_evaluate.py [--with-io]``

The reference holds 25 ellipsoidal blobs with bumpy (noise-deformed) surfaces, from liver-sized
(~190 x 150 x 110 voxels) down to adrenal-sized (~12 voxels across), on a 0.8 x 0.8 x 1.5 mm grid. The
prediction shifts some organs by a voxel, dilates some, erodes some and drops one, so every code path
(Dice counts, boxes, surfaces, distance transforms, one-side-empty) runs. Prints seconds for
:func:`suprem_nn.evaluation.metrics.evaluate_label_maps`; with ``--with-io`` also for
:func:`suprem_nn.evaluation.evaluate.evaluate_folder` on NIfTI files (reading included).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suprem_nn.evaluation.evaluate import evaluate_folder  # noqa: E402
from suprem_nn.evaluation.metrics import evaluate_label_maps  # noqa: E402
from suprem_nn.io.geometry import Geometry  # noqa: E402
from suprem_nn.io.image_io import read_image, write_image  # noqa: E402

SHAPE = (512, 512, 300)
SPACING = (0.8, 0.8, 1.5)
NUM_CLASSES = 25


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = np.zeros(SHAPE, dtype=np.uint8)
    pred = np.zeros(SHAPE, dtype=np.uint8)
    # radii in voxels from large (liver-like) to small (adrenal-like)
    radii = np.geomspace(1.0, 0.06, NUM_CLASSES)[:, None] * np.array([95.0, 75.0, 55.0])[None, :]
    radii = np.maximum(radii, 5.0)
    for c in range(NUM_CLASSES):
        r = radii[c] * rng.uniform(0.85, 1.15, 3)
        centre = [rng.uniform(r[a] + 4, SHAPE[a] - r[a] - 4) for a in range(3)]
        lo = [max(0, int(centre[a] - r[a] - 3)) for a in range(3)]
        hi = [min(SHAPE[a], int(centre[a] + r[a] + 4)) for a in range(3)]
        grid = np.ogrid[tuple(slice(lo[a], hi[a]) for a in range(3))]
        dist = sum(((grid[a] - centre[a]) / r[a]) ** 2 for a in range(3))
        bumps = ndimage.zoom(rng.normal(0, 0.15, (6, 6, 6)), [(hi[a] - lo[a]) / 6 for a in range(3)], order=1)
        blob = dist + bumps[: hi[0] - lo[0], : hi[1] - lo[1], : hi[2] - lo[2]] < 1.0
        box = tuple(slice(lo[a], hi[a]) for a in range(3))
        ref[box][blob] = c + 1
        kind = c % 4
        if c == NUM_CLASSES - 1:
            continue  # missed organ: prediction empty
        if kind == 1:
            blob = np.roll(blob, 1, axis=c % 3)
        elif kind == 2:
            blob = ndimage.binary_dilation(blob)
        elif kind == 3:
            blob = ndimage.binary_erosion(blob)
        pred[box][blob] = c + 1
    return ref, pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-io", action="store_true", help="also time evaluate_folder on NIfTI files")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    t = time.perf_counter()
    ref, pred = make_case()
    print(f"built synthetic case {SHAPE} with {len(np.unique(ref)) - 1} classes in {time.perf_counter() - t:.1f} s")
    classes = {f"organ_{c}": c for c in range(1, NUM_CLASSES + 1)}
    best = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = evaluate_label_maps(ref, pred, classes, SPACING, 1.0)
        best = min(best, time.perf_counter() - t)
    dices = [r["dice"] for r in res.values()]
    nsds = [r["nsd"] for r in res.values()]
    print(f"evaluate_label_maps: {best:.2f} s (best of {args.repeats}); mean Dice {np.mean(dices):.4f}, "
          f"mean NSD@1mm {np.mean(nsds):.4f}")
    # what suprem_evaluate runs: NSD at 1 mm and at one voxel of the coarsest axis, sharing the surfaces
    voxel = {"nsd_1voxel": max(SPACING)}
    best2 = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = evaluate_label_maps(ref, pred, classes, SPACING, 1.0, extra_tolerances_mm=voxel)
        best2 = min(best2, time.perf_counter() - t)
    print(f"evaluate_label_maps with NSD at one voxel ({max(SPACING):g} mm) too: {best2:.2f} s (best of "
          f"{args.repeats}); mean NSD@1vox {np.mean([r['nsd_1voxel'] for r in res.values()]):.4f}")
    if args.with_io:
        geo = Geometry(SHAPE, SPACING, (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "ref").mkdir()
            (Path(tmp) / "pred").mkdir()
            write_image(ref, geo, Path(tmp) / "ref" / "case.nii.gz")
            write_image(pred, geo, Path(tmp) / "pred" / "case.nii.gz")
            t = time.perf_counter()
            for side in ("ref", "pred"):
                read_image(Path(tmp) / side / "case.nii.gz")
            print(f"reading the two .nii.gz label maps alone: {time.perf_counter() - t:.2f} s")
            t = time.perf_counter()
            evaluate_folder(Path(tmp) / "ref", Path(tmp) / "pred", classes, 1.0)
            print(f"evaluate_folder (NIfTI read + metrics + summary): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
