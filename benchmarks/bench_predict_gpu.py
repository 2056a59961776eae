"""A 512 x 512 x 300 CT predicted file to file on a GPU, with mirroring (the GPU goal: under 10 s).

usage: python benchmarks/bench_predict_gpu.py [--backbones segresnet unet swinunetr] [--device cuda]
           [--mirror-axes 0 1 2] [--step-size 0.5] [--channels-last] [--out RESULTS.json]

Writes a phantom abdominal CT of 512 x 512 x 300 voxels at 0.8 x 0.8 x 1.5 mm (int16 .nii.gz, from
suprem_nn.demo.phantom: a body about 300 x 220 mm across, like a real abdominal scan in a 410 mm field of view).
For each backbone it builds a model folder with the fine-tuning conventions of plans/<backbone>.json (1.5 mm,
96^3 windows, sigmoid over SuPreM's 32 classes) and random weights (the network's cost is the real one), then
runs ``suprem_nn.inference.predict`` on a folder holding two copies of the case, with mirroring over
``--mirror-axes`` and step 0.5. The first copy pays for CUDA start-up and cuDNN autotuning; the second is what
every further case costs. Prints, per backbone and copy, the seconds of read / preprocess / network / export /
write from run_report.json, and the wall time of the whole call (model loading included).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._models import write_model_folder  # noqa: E402

SHAPE, SPACING = (512, 512, 300), (0.8, 0.8, 1.5)


def make_model_folder(root: Path, backbone: str, mirror_axes) -> Path:
    from suprem_nn.inference.models import suprem_direct_plan

    plan = suprem_direct_plan(backbone)
    plan.dataset_name, plan.plan_name, plan.mirror_axes = "Dataset990_GpuBench", f"bench_{backbone}", list(mirror_axes)
    return write_model_folder(root / plan.plan_name, plan)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["segresnet", "unet", "swinunetr"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--mirror-axes", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--step-size", type=float, default=0.5)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--windows-per-batch", type=int, default=None, help="default: predict()'s (4 on CUDA)")
    ap.add_argument("--shape", nargs=3, type=int, default=list(SHAPE), help="voxels (a smaller one for a smoke test)")
    ap.add_argument("--spacing", nargs=3, type=float, default=list(SPACING), help="mm")
    ap.add_argument("--phantom", default=None, help="keep the generated CT here and reuse it on later runs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    shape, spacing = tuple(args.shape), tuple(args.spacing)
    import torch

    from suprem_nn.demo.phantom import make_phantom
    from suprem_nn.inference import predict
    from suprem_nn.io.image_io import write_image

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    t0 = time.perf_counter()
    inp = work / "input"
    inp.mkdir()
    if args.phantom and Path(args.phantom).is_file():
        shutil.copyfile(args.phantom, inp / "ct_a.nii.gz")
    else:
        ph = make_phantom(0, shape, spacing)
        write_image(ph.ct, ph.geometry, inp / "ct_a.nii.gz")
        if args.phantom:
            shutil.copyfile(inp / "ct_a.nii.gz", args.phantom)
    shutil.copyfile(inp / "ct_a.nii.gz", inp / "ct_b.nii.gz")
    print(f"phantom {shape} at {spacing} mm ready in {time.perf_counter() - t0:.1f} s; device {device_name}",
          flush=True)
    results = {"device": device_name, "shape": shape, "spacing": spacing, "mirror_axes": args.mirror_axes,
               "step_size": args.step_size, "runs": []}
    for backbone in args.backbones:
        folder = make_model_folder(work / "models", backbone, args.mirror_axes)
        out = work / f"out_{backbone}"
        t0 = time.perf_counter()
        summary = predict(inp, out, folder, folds=(0,), device=args.device, step_size=args.step_size,
                          channels_last=args.channels_last, windows_per_batch=args.windows_per_batch,
                          progress=False, overwrite=True)
        wall = time.perf_counter() - t0
        assert summary.ok, summary.failures
        report = json.loads(summary.report_path.read_text())
        for case, t in report["seconds_per_case"].items():
            total = sum(t.get(k, 0.0) for k in ("read", "preprocess", "network", "export", "write"))
            row = {"backbone": backbone, "case": case, **t, "sum_stages": round(total, 2),
                   "export_share": round(t.get("export", 0.0) / total, 3)}
            results["runs"].append(row)
            print(f"{backbone:10s} {case}: read {t.get('read', 0):5.2f}  prep {t.get('preprocess', 0):5.2f}  "
                  f"net {t.get('network', 0):6.2f}  export {t.get('export', 0):5.2f}  write {t.get('write', 0):5.2f}"
                  f"  = {total:6.2f} s", flush=True)
        print(f"{backbone:10s} whole call (2 cases, model load included): {wall:.1f} s; peak GPU memory "
              f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if torch.cuda.is_available() else "", flush=True)
        results["runs"].append({"backbone": backbone, "whole_call_seconds": round(wall, 2),
                                "report_settings": report.get("settings")})
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
