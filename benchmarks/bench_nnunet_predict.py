"""nnUNetv2_predict vs ``suprem_predict --nnunet-model`` on the same real CT cases and the same trained model.

usage: python benchmarks/bench_nnunet_predict.py MODEL_FOLDER [--roots NNUNET_ROOTS] [--out RESULTS.json]

MODEL_FOLDER is a trained nnU-Net v2 folder (``Trainer__Plans__config`` with fold_all/); NNUNET_ROOTS the
folder holding its ext_trainers/ (for custom trainer classes). Both tools predict the three real CT cases
(shared/data/real_ct) with step 0.5, float32, with and without mirroring. For each: wall seconds per case,
peak memory of the whole process tree (PSS, benchmarks/_measure.py), our per-stage split (read /
preprocess / network / export+write from run_report.json), and label agreement with nnU-Net's output.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "nnunet_compat"))
from _measure import run_measured  # noqa: E402
from peer import NnunetRoots  # noqa: E402

CASES = ["ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm", "ts_upper_abdomen_ce_dicom"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_folder")
    ap.add_argument("--roots", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data" / "real_ct"))
    a = ap.parse_args()
    import SimpleITK as sitk

    work = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    roots = NnunetRoots(Path(a.roots) if a.roots else work / "roots")
    inp = work / "input"
    inp.mkdir()
    for c in CASES:
        shutil.copyfile(Path(a.shared) / c / "ct.nii.gz", inp / f"{c}_0000.nii.gz")
    results = {}
    for tta in (False, True):
        mode = "mirroring" if tta else "no-mirroring"
        ref_out, our_out = work / f"nnunet_{mode}", work / f"ours_{mode}"
        ref = run_measured(roots.predict_cmd(Path(a.model_folder), inp, ref_out, disable_tta=not tta,
                                             extra=["--disable_progress_bar"]), env=roots.env())
        ours = run_measured([sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(inp), "-o", str(our_out),
                             "--nnunet-model", a.model_folder, "-f", "all", "--quiet"]
                            + ([] if tta else ["--disable-tta"]), env={"PYTHONPATH": str(REPO)}, cwd=REPO)
        assert ref["returncode"] == 0, ref["output"][-2000:]
        assert ours["returncode"] == 0, ours["output"][-2000:]
        report = json.loads((our_out / "run_report.json").read_text())
        agree = {}
        for c in CASES:
            r = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_out / f"{c}.nii.gz")))
            o = sitk.GetArrayFromImage(sitk.ReadImage(str(our_out / f"{c}.nii.gz")))
            agree[c] = float((r == o).mean())
        results[mode] = {
            "nnunet_seconds": round(ref["seconds"], 2), "ours_seconds": round(ours["seconds"], 2),
            "speedup": round(ref["seconds"] / ours["seconds"], 2),
            "nnunet_peak_pss_mb": round(ref["peak_pss_bytes"] / 2 ** 20), "ours_peak_pss_mb":
                round(ours["peak_pss_bytes"] / 2 ** 20),
            "ours_stage_seconds_per_case": report["seconds_per_case"],
            "ours_model_load_seconds": report.get("model_load_seconds"), "label_agreement": agree}
        print(mode, json.dumps(results[mode], indent=1), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
