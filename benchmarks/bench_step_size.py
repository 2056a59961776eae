"""What the window step costs in labels: one trained model, the real CTs, ``--step-size`` 0.25 against 0.5.

usage: python benchmarks/bench_step_size.py MODEL_FLAGS... [--steps 0.25 0.5] [--cases ...] [--json OUT]
e.g.   python benchmarks/bench_step_size.py --nnunet-model RESULTS/Trainer__Plans__3d_fullres -f all
       python benchmarks/bench_step_size.py -m results/Dataset101_RealCT/suprem_segresnet -f 0

Every step runs ``suprem_predict`` once on the cases of shared/data/real_ct (a fresh process, default engine and
precision, no mirroring unless ``--tta``), so the figures are what a user gets. Prints, per step: wall seconds
(process start and model loading included) and the network seconds from run_report.json; per case, against the
smallest step: the fraction of voxels whose label differs and the Dice of each class between the two label maps
(the worst class is printed). Step 0.5 places about an eighth of the windows of step 0.25 on a large CT, so the
question is whether its labels move enough to matter.
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
sys.path.insert(0, str(REPO / "benchmarks"))
from _measure import run_measured  # noqa: E402

CASES = ["ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm", "ts_upper_abdomen_ce_dicom"]


def compare(ref: np.ndarray, other: np.ndarray) -> dict:
    """Voxel disagreement and per-class Dice of ``other`` against ``ref`` (two label maps of one grid)."""
    dice = {}
    for c in sorted(set(np.unique(ref)) | set(np.unique(other))):
        if c == 0:
            continue
        a, b = ref == c, other == c
        dice[int(c)] = round(float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1)), 5)
    return {"differing_fraction": float((ref != other).mean()), "differing_voxels": int((ref != other).sum()),
            "dice_per_class": dice, "worst_class_dice": min(dice.values()) if dice else 1.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--cases", nargs="+", default=CASES)
    ap.add_argument("--tta", action="store_true", help="mirroring on (off by default: the step is the question)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data" / "real_ct"))
    a, model_flags = ap.parse_known_args()
    if not model_flags:
        ap.error("give the model, e.g. --nnunet-model FOLDER -f all, or -m MODEL_FOLDER -f 0")
    import SimpleITK as sitk

    work = Path(tempfile.mkdtemp(prefix="bench_step_"))
    inp = work / "input"
    inp.mkdir()
    for c in a.cases:
        shutil.copyfile(Path(a.shared) / c / "ct.nii.gz", inp / f"{c}_0000.nii.gz")
    env = {"PYTHONPATH": str(REPO), "SUPREM_ENGINE_CACHE": os.environ.get("SUPREM_ENGINE_CACHE",
                                                                        str(work / "engine_cache"))}
    results, labels = {"model_flags": model_flags, "steps": {}}, {}
    for step in sorted(a.steps):
        out = work / f"step_{step}"
        cmd = [sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o", str(out), "--quiet",
               "--step-size", str(step), *model_flags] + ([] if a.tta else ["--disable-tta"])
        run = run_measured(cmd, env=env, cwd=REPO)
        if run["returncode"] != 0:
            print(run["output"][-3000:])
            return 1
        report = json.loads((out / "run_report.json").read_text())
        network = sum(t.get("network", 0.0) for t in report["seconds_per_case"].values())
        results["steps"][step] = {"wall_seconds": round(run["seconds"], 1), "network_seconds": round(network, 1),
                                  "peak_pss_mb": round(run["peak_pss_bytes"] / 2 ** 20),
                                  "engine": report.get("engine", {}).get("name"), "cases": {}}
        labels[step] = {c: sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{c}.nii.gz"))) for c in a.cases}
        print(f"step {step}: wall {run['seconds']:.1f} s, network {network:.1f} s, "
              f"peak {run['peak_pss_bytes'] / 2 ** 20:.0f} MB", flush=True)
    ref_step = min(labels)
    for step in sorted(labels):
        if step == ref_step:
            continue
        for c in a.cases:
            cmp = compare(labels[ref_step][c], labels[step][c])
            results["steps"][step]["cases"][c] = cmp
            print(f"  step {step} vs {ref_step}, {c}: {cmp['differing_fraction'] * 100:.3f} % of voxels differ "
                  f"({cmp['differing_voxels']}), worst class Dice {cmp['worst_class_dice']:.4f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
