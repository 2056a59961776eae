"""Whole-run peak memory of the torch and OpenVINO engines, repeated: SuPreM's direct recipe on one real CT.

    python benchmarks/bench_engine_peaks.py --backbone segresnet [--case ts_abdomen_pelvis_3mm] [--repeats 3]
        [--step-size 0.5] [--fp32] [--channels-last] [--checkpoint FILE]

Each run is a fresh ``suprem_predict --suprem BACKBONE`` process on the same CT with the same settings (bfloat16
unless ``--fp32``). First one OpenVINO run with an empty engine cache (the run that converts), then
``--repeats`` pairs of an OpenVINO run (compiled model from the cache) and a torch run, alternating so that a
drift of the machine hits both engines. ``--channels-last`` applies to the torch runs (the faster torch setting
for the U-Net).

Per run, four peaks:

* **RSS**: the process's high-water mark (``peak_rss_mb`` of run_report.json, the kernel's VmHWM), exact.
* **private**: the largest anonymous memory (``RssAnon`` of /proc/PID/status), sampled every 20 ms; what this
  process alone holds: arrays, activations, the heap.
* **PSS**, sampled every 200 ms as in the other benchmarks (benchmarks/_measure.py).
* **tree RSS**: the largest sum of RSS over the process and its children, sampled every 20 ms: a converting
  OpenVINO run of the U-Net or SegResNet converts in a helper process (suprem_nn/inference/engine_conversion.py),
  whose memory RSS does not show. It counts the library pages the two share twice, so it overstates. Private
  and PSS are sums over the tree as well.

RSS minus private is file-backed: library code and the memory-mapped engine-cache entry, clean pages that other
processes share and that the kernel can drop under pressure and read back. From run to run the peaks of one engine
vary by tens of MB (heap layout, when the accumulators' pages are touched), so the script prints min / median /
max per engine, not one run. Random weights in the released layout (tests/fabricated_weights.py) unless
``--checkpoint`` is given: the memory and time are the real network's, the labels are not meaningful.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
REAL_CT = Path(os.environ.get("SUPREM_SHARED", REPO.parent / "shared")) / "data" / "real_ct"

from _measure import run_measured  # noqa: E402

MEASURES = ("rss", "private", "pss", "tree_rss")


def one_run(engine: str, args, ckpt: Path, out: Path, cache: Path) -> dict:
    """One ``suprem_predict`` process; its three peaks in MB and what its engine report says."""
    cmd = [sys.executable, "-m", "suprem_nn.cli.predict", "-i", str(REAL_CT / args.case / "ct.nii.gz"),
           "-o", str(out / "ct.nii.gz"), "--suprem", args.backbone, "--checkpoint", str(ckpt),
           "--step-size", str(args.step_size), "--engine", engine, "--overwrite", "--quiet",
           "--fp32" if args.fp32 else "--bf16"]
    if engine == "torch" and args.channels_last:
        cmd.append("--channels-last")
    r = run_measured(cmd, env={"PYTHONPATH": str(REPO), "SUPREM_ENGINE_CACHE": str(cache)}, interval=0.02,
                     pss_every=10, cwd=REPO)
    if r["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r['output'][-2000:]}")
    report = json.loads((out / "run_report.json").read_text())
    entries = report["engine"].get("cache", [])
    return {"engine": engine, "cache": entries[0]["status"] if entries else "-",
            "rss": report["peak_rss_mb"], "private": round(r["peak_anon_bytes"] / 2 ** 20, 1),
            "pss": round(r["peak_pss_bytes"] / 2 ** 20, 1), "tree_rss": round(r["peak_rss_bytes"] / 2 ** 20, 1),
            "network_seconds": report["seconds_total_by_stage"]["network"], "wall_seconds": round(r["seconds"], 1),
            "convert_seconds": report["engine"].get("convert_seconds", 0.0)}


def summary(rows: list[dict]) -> dict:
    """min / median / max of each peak over ``rows``."""
    return {m: [min(r[m] for r in rows), round(statistics.median(r[m] for r in rows), 1), max(r[m] for r in rows)]
            for m in MEASURES}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="segresnet", choices=["unet", "segresnet", "swinunetr"])
    ap.add_argument("--case", default="ts_abdomen_pelvis_3mm")
    ap.add_argument("--repeats", type=int, default=3, help="pairs of cached-OpenVINO and torch runs")
    ap.add_argument("--step-size", type=float, default=0.5)
    ap.add_argument("--fp32", action="store_true", help="float32 instead of bfloat16")
    ap.add_argument("--channels-last", action="store_true", help="torch runs with channels_last_3d")
    ap.add_argument("--checkpoint", type=Path, help="a release-layout checkpoint (default: fabricated)")
    ap.add_argument("--json", type=Path, help="also write the rows and the summary here")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            from tests.fabricated_weights import make_fake_released_checkpoint
            ckpt = make_fake_released_checkpoint(args.backbone, tmp / f"{args.backbone}.pth")
        # the first OpenVINO run converts (empty cache); the later ones load the stored model
        for engine in ["openvino"] + ["openvino", "torch"] * args.repeats:
            row = one_run(engine, args, ckpt, tmp / "out", tmp / "engine_cache")
            rows.append(row)
            print(f"{row['engine']:8s} {row['cache']:9s} RSS {row['rss']:7.1f} MB  private {row['private']:7.1f} MB"
                  f"  PSS {row['pss']:7.1f} MB  tree RSS {row['tree_rss']:7.1f} MB"
                  f"  network {row['network_seconds']:6.1f} s"
                  + (f"  converted in {row['convert_seconds']:.1f} s" if row["convert_seconds"] else ""), flush=True)
    groups = {"openvino, converting": [r for r in rows if r["engine"] == "openvino" and r["cache"] != "hit"],
              "openvino, cache hit": [r for r in rows if r["engine"] == "openvino" and r["cache"] == "hit"],
              "torch": [r for r in rows if r["engine"] == "torch"]}
    result = {name: summary(g) for name, g in groups.items() if g}
    print(f"\n{args.backbone}, {args.case}, {'f32' if args.fp32 else 'bf16'}, step {args.step_size}: "
          "peak MB as min / median / max")
    for name, s in result.items():
        print(f"  {name:22s} " + "   ".join(f"{m} {s[m][0]:.0f} / {s[m][1]:.0f} / {s[m][2]:.0f}" for m in MEASURES))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
