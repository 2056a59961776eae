"""Prediction speed on the real CT cases: seconds per case by stage and peak memory.

Runs ``suprem_nn.inference.predict`` with fabricated SuPreM release files (random weights with the
released layout, so the network cost is the real one) at the real 96^3 patch, with SuPreM's direct
recipe (1.5 mm, sigmoid, largest component), and optionally measures the bf16-autocast accuracy cost.

    PYTHONPATH=. python benchmarks/bench_predict.py [--backbones unet segresnet] [--cases ts_abdomen_sm_3mm]
        [--step-size 0.5] [--tta] [--bf16-check] [--device cpu]

Prints one line per (backbone, case) and a JSON summary. The side-by-side with nnUNetv2_predict on one
network is benchmarks/predict_bench.py; the GPU goal is benchmarks/bench_predict_gpu.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REAL_CT = Path(os.environ.get("SUPREM_SHARED", REPO.parent / "shared")) / "data" / "real_ct"


def bench_case(backbone: str, ckpt: Path, case: str, out: Path, args) -> dict:
    """Run one case in a fresh process so peak RSS is per run, and return its run_report."""
    code = (
        "import sys, json; sys.path.insert(0, %r)\n"
        "from suprem_nn.inference import predict\n"
        "s = predict(%r, %r, suprem=%r, checkpoint=%r, device=%r, step_size=%r, disable_tta=%r, bf16=%r,"
        " channels_last=%r, engine=%r, overwrite=True, progress=False)\n"
        "print(json.dumps(json.loads(open(s.report_path).read())))\n"
    ) % (str(REPO), str(REAL_CT / case / "ct.nii.gz"), str(out / f"{case}.nii.gz"), backbone, str(ckpt),
         args.device, args.step_size, not args.tta, args.bf16, args.channels_last, args.engine)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    report = json.loads(r.stdout.strip().splitlines()[-1])
    report["wall_seconds"] = round(time.perf_counter() - t0, 2)  # process start, model load, conversion included
    return report


def bf16_cost(backbone: str, ckpt: Path, case: str, args) -> dict:
    """Probability and label differences between float32 and bf16 autocast (+ channels_last_3d) on one case."""
    import torch

    from suprem_nn.inference import Predictor
    from suprem_nn.inference.models import load_suprem_released
    from suprem_nn.io.image_io import read_image

    plan, nets = load_suprem_released(backbone, ckpt)
    img, geo = read_image(REAL_CT / case / "ct.nii.gz")
    res = {}
    for name, kw in (("fp32", {}), ("bf16", {"autocast_dtype": torch.bfloat16, "channels_last": True})):
        p = Predictor(plan, nets, step_size=args.step_size, use_mirroring=False, classes=None, **kw)
        prep = p.prepare([img], geo, case)
        t0 = time.perf_counter()
        probs = p.network_pass(prep)
        res[name] = (probs, time.perf_counter() - t0)
    a, b = res["fp32"][0], res["bf16"][0]
    return {"max_abs_prob_diff": float((a - b).abs().max()), "mean_abs_prob_diff": float((a - b).abs().mean()),
            "mask_disagreement_fraction": float(((a > 0.5) != (b > 0.5)).float().mean()),
            "seconds_fp32": round(res["fp32"][1], 2), "seconds_bf16_channels_last": round(res["bf16"][1], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["unet", "segresnet"])
    ap.add_argument("--cases", nargs="+", default=["ts_abdomen_sm_3mm"])
    ap.add_argument("--step-size", type=float, default=0.5)
    ap.add_argument("--tta", action="store_true", help="mirroring TTA (SuPreM's recipe has none)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16-check", action="store_true", help="measure fp32 vs bf16 differences")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--engine", default="torch", choices=["torch", "openvino"],
                    help="what runs the network pass (OpenVINO converts once per run here: no shared cache)")
    ap.add_argument("--keep", default=None, help="copy the label files here (to compare step sizes)")
    args = ap.parse_args()

    from tests.fabricated_weights import make_fake_released_checkpoint

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for backbone in args.backbones:
            ckpt = make_fake_released_checkpoint(backbone, tmp / f"{backbone}.pth")
            for case in args.cases:
                rep = bench_case(backbone, ckpt, case, tmp / "out", args)
                t = rep["seconds_per_case"]["ct"]
                total = sum(t.get(k, 0) for k in ("read", "preprocess", "network", "export", "write"))
                row = {"backbone": backbone, "case": case, **{k: t.get(k) for k in
                       ("read", "preprocess", "network", "export", "write")}, "sum_stages": round(total, 2),
                       "export_share": round((t.get("export", 0) + t.get("write", 0)) / total, 3),
                       "peak_rss_mb": rep["peak_rss_mb"], "device": rep["device"], "settings": rep["settings"],
                       "wall_seconds": rep["wall_seconds"], "engine": rep.get("engine")}
                if args.keep:
                    Path(args.keep).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(tmp / "out" / f"{case}.nii.gz", Path(args.keep) / f"{backbone}_{case}.nii.gz")
                results.append(row)
                print(f"{backbone:10s} {case:28s} read {t.get('read'):6.2f}s  prep {t.get('preprocess'):6.2f}s  "
                      f"net {t.get('network'):7.2f}s  export {t.get('export'):6.2f}s  write {t.get('write'):5.2f}s  "
                      f"peak {rep['peak_rss_mb']:.0f} MB  wall {rep['wall_seconds']:.1f}s", flush=True)
                if args.bf16_check:
                    row["bf16_cost"] = bf16_cost(backbone, ckpt, case, args)
                    print("   bf16 cost:", row["bf16_cost"], flush=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
