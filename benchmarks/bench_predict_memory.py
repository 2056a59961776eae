"""Peak memory of ``suprem_predict`` on a large CT on the CPU (issue: stay under 8 GB for 512x512x800).

Makes a synthetic 512x512x800 int16 CT (an elliptical body of soft tissue with a brighter "organ" and noise, at
0.8 x 0.8 x 1.0 mm, so cropping keeps most of the volume), a model folder holding a small SegResNet with random
weights for a 13-class plan, and runs the real command in a subprocess, measuring the PSS of its process tree
(benchmarks/_measure.py). Network cost is not the point here; the export to the original grid is, because that
is where every class's probabilities meet the full-resolution grid.

    PYTHONPATH=. python benchmarks/bench_predict_memory.py [--shape 512 512 800] [--classes 13] [--multilabel]
        [--spacing 3] [--keep DIR]

Prints one JSON line: shape, classes, seconds, peak_pss_gb, returncode.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._measure import run_measured  # noqa: E402
from benchmarks._models import write_model_folder  # noqa: E402


def make_ct(path: Path, shape, spacing=(0.8, 0.8, 1.0)) -> None:
    from suprem_nn.io import Geometry, write_image

    rng = np.random.default_rng(0)
    x, y = np.ogrid[:shape[0], :shape[1]]
    body = ((x - shape[0] / 2) / (shape[0] * 0.42)) ** 2 + ((y - shape[1] / 2) / (shape[1] * 0.33)) ** 2 <= 1
    organ = ((x - shape[0] * 0.4) / (shape[0] * 0.12)) ** 2 + ((y - shape[1] * 0.45) / (shape[1] * 0.1)) ** 2 <= 1
    ct = np.full(shape, -1000, np.int16)
    for k in range(shape[2]):  # slice by slice keeps this script's own memory low
        sl = np.where(body, 40, -1000).astype(np.int16)
        sl[organ] = 120
        sl += rng.integers(-20, 21, size=sl.shape, dtype=np.int16)
        ct[:, :, k] = sl
    geometry = Geometry(tuple(shape), tuple(spacing), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_image(ct, geometry, path)


def make_model(root: Path, classes: int, multilabel: bool, spacing: float) -> Path:
    from suprem_nn.planning.plans import Normalization, Plan

    names = [f"class_{i + 1}" for i in range(classes)]
    plan = Plan(dataset_name="Dataset998_Memory", plan_name="memory_segresnet", network="segresnet", pretrained=None,
                channel_names=["CT"], class_names=names, label_values=list(range(1, classes + 1)),
                multilabel=multilabel, orientation="RAS", target_spacing=[spacing] * 3,
                normalization=[Normalization("ct_window", -175.0, 250.0)], crop_threshold=-175.0,
                patch_size=[64, 64, 64], batch_size=1, divisibility=8, median_shape=[64, 64, 64],
                network_kwargs={"init_filters": 8}, mirror_axes=[])
    return write_model_folder(root / plan.dataset_name / plan.plan_name, plan)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=3, type=int, default=[512, 512, 800])
    ap.add_argument("--classes", type=int, default=13)
    ap.add_argument("--multilabel", action="store_true")
    ap.add_argument("--spacing", type=float, default=3.0, help="the plan's target spacing in mm")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more suprem_predict arguments")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_predict_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ct = work / f"ct_{'x'.join(map(str, args.shape))}.nii.gz"
        if not ct.exists():
            make_ct(ct, args.shape)
        model = make_model(work / f"models_{os.getpid()}", args.classes, args.multilabel, args.spacing)
        out = work / f"out_{os.getpid()}"
        predict_args = ["-i", str(ct), "-o", str(out), "-m", str(model), "--disable-tta", "-np", "0", "--quiet",
                        *args.extra]
        cmd = [sys.executable, "-m", "suprem_nn.cli.predict", *predict_args]
        r = run_measured(cmd, env={"PYTHONPATH": str(REPO)}, cwd=REPO)
        print(json.dumps({"shape": args.shape, "classes": args.classes, "multilabel": args.multilabel,
                          "spacing_mm": args.spacing, "extra": args.extra, "seconds": round(r["seconds"], 1),
                          "peak_pss_gb": round(r["peak_pss_bytes"] / 2**30, 2), "returncode": r["returncode"]}))
        if r["returncode"] != 0:
            print(r["output"][-3000:], file=sys.stderr)
        return r["returncode"]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
