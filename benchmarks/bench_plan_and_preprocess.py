"""Fingerprint + plan + preprocess throughput and peak memory, side by side with nnU-Net v2.

Builds an nnU-Net raw dataset from the real CTs in ../shared/data/real_ct (each case
copied ``--copies`` times under new ids, so per-case figures are not dominated by
start-up), then times on this machine, one after the other:

* ``nnUNetv2_plan_and_preprocess -c 3d_fullres --verify_dataset_integrity`` (peer venv),
* ``suprem_plan_and_preprocess --pretrained unet`` (our default: SuPreM's 1.5 mm convention),
* ``suprem_plan_and_preprocess --from-scratch unet`` (nnU-Net's rules: median spacing, cubic resampling),

all with verification and ``-np`` worker processes. Prints seconds per case, peak
PSS of the process tree, and the ratios against nnU-Net.

    python benchmarks/bench_plan_and_preprocess.py [--copies 4] [--np 2] [--peer-venv ~/peer/nnunet-venv]

The peer venv is made by ../shared/peer/run_nnunet_baseline.sh (torch==2.13.0, then nnunetv2).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real_ct"
CASES = ["ts_abdomen_sm_3mm", "ts_abdomen_pelvis_3mm", "ts_upper_abdomen_ce_dicom"]
LABELS = ["spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus", "liver", "stomach", "aorta",
          "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right",
          "adrenal_gland_left"]


def make_dataset(raw: Path, copies: int) -> tuple[Path, int]:
    folder = raw / "Dataset201_RealCTBench"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    n = 0
    for k in range(copies):
        for c in CASES:
            cid = f"{c}_{k:02d}"
            shutil.copyfile(REAL / c / "ct.nii.gz", folder / "imagesTr" / f"{cid}_0000.nii.gz")
            shutil.copyfile(REAL / c / "seg_btcv13.nii.gz", folder / "labelsTr" / f"{cid}.nii.gz")
            n += 1
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, **{l: i + 1 for i, l in enumerate(LABELS)}},
        "numTraining": n, "file_ending": ".nii.gz"}))
    return folder, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--peer-venv", default=os.path.expanduser("~/peer/nnunet-venv"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pp_"))
    raw = work / "raw"
    _, n = make_dataset(raw, args.copies)
    rows = []
    peer = Path(args.peer_venv) / "bin" / "nnUNetv2_plan_and_preprocess"
    if peer.exists():
        env = {"nnUNet_raw": str(raw), "nnUNet_preprocessed": str(work / "nnunet_prep"),
               "nnUNet_results": str(work / "nnunet_results")}
        r = run_measured([str(peer), "-d", "201", "-c", "3d_fullres", "--verify_dataset_integrity",
                          "-np", str(args.np), "-npfp", str(args.np)], env=env)
        rows.append(("nnU-Net v2 plan_and_preprocess 3d_fullres", r))
    else:
        print(f"peer not installed at {args.peer_venv}: nnU-Net column skipped")
    ours = [sys.executable, "-m", "suprem_nn.cli.plan_and_preprocess", "-d", "201", "-np", str(args.np), "--quiet"]
    for label, extra, prep in [("suprem --pretrained unet (1.5 mm)", [], "prep_pre"),
                               ("suprem --from-scratch unet (nnU-Net rules)", ["--from-scratch", "unet"], "prep_scr")]:
        env = {"SUPREM_RAW": str(raw), "SUPREM_PREPROCESSED": str(work / prep), "PYTHONPATH": str(REPO)}
        rows.append((label, run_measured(ours + extra, env=env)))
    print(f"\n{n} cases ({args.copies} copies of {len(CASES)} real CTs), -np {args.np}, {os.cpu_count()} CPUs")
    print(f"{'run':48s} {'s/case':>8s} {'total s':>8s} {'peak PSS GB':>12s} {'exit':>5s}")
    for label, r in rows:
        print(f"{label:48s} {r['seconds'] / n:8.2f} {r['seconds']:8.1f} {r['peak_pss_bytes'] / 1e9:12.2f} "
              f"{r['returncode']:5d}")
        if r["returncode"]:
            print(r["output"][-3000:])
    if rows and rows[0][0].startswith("nnU-Net"):
        base = rows[0][1]
        for label, r in rows[1:]:
            print(f"{label}: throughput x{base['seconds'] / r['seconds']:.2f} of nnU-Net, "
                  f"peak memory {r['peak_pss_bytes'] / max(base['peak_pss_bytes'], 1):.2f} of nnU-Net's")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
