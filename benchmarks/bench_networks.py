"""CPU forward-time benchmark of every backbone on one 96^3 window.

For each backbone of ``suprem_nn.networks.BACKBONES`` (initialised from a
fabricated checkpoint in the released layout, or with seeded random weights
when no SuPreM weights exist, e.g. MedNeXt; 32-class fresh head, eval mode,
batch 1) it reports the median time of one forward pass in

* fp32 (default memory format),
* fp32 with ``torch.channels_last_3d`` weights and input,
* bf16 ``torch.autocast`` (CPU),

the achieved GFLOP/s (convolution / linear / matmul FLOPs counted with
``torch.utils.flop_counter``), and the maximum |bf16 - fp32| logit difference.
It also measures the machine's plain ``Conv3d`` ceiling (GFLOP/s of a
64->64 3x3x3 convolution on a 48^3 map), the number the networks should be
compared to.

Usage:  python benchmarks/bench_networks.py [--repeats 2] [--warmup 1]
            [--networks unet,segresnet,swinunetr,mednext] [--size 96] [--modes fp32,cl3d,bf16] [--json out.json]

This is a measurement script, not a test.  On a shared machine the load
average (printed) inflates the times; compare figures from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suprem_nn.networks import BACKBONES, build_network, init_from_pretrained  # noqa: E402
from tests.fabricated_weights import make_fake_released_checkpoint  # noqa: E402

MODES = ("fp32", "cl3d", "bf16")


def timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def conv3d_ceiling(repeats: int, warmup: int) -> dict:
    """GFLOP/s of one plain 64->64 3x3x3 Conv3d on a 48^3 map, per memory format and dtype (best of the runs)."""
    conv = torch.nn.Conv3d(64, 64, 3, padding=1).eval()
    x = torch.randn(1, 64, 48, 48, 48)
    flops = 2 * 64 * 64 * 27 * 48 ** 3
    out = {"shape": "Conv3d(64->64, k3) on 1x64x48^3", "gflop": flops / 1e9}
    for mode in MODES:
        fmt = torch.channels_last_3d if mode != "fp32" else torch.contiguous_format
        c, xin = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            times = timed(lambda: c(xin), max(repeats, 3), max(warmup, 1))
        out[mode] = flops / min(times) / 1e9
    # bf16 here uses channels_last_3d too: the fastest bf16 layout, and what autocast sees in the network runs.
    out["gflops_per_s"] = max(out[m] for m in MODES)
    return out


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def bench_network(name: str, ckpt_dir: Path, size: int, modes: list[str], repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build_network(name, 1, 32)
    if BACKBONES[name].suprem_weights:  # else the seeded random initialisation: the same cost per forward
        path = make_fake_released_checkpoint(name, ckpt_dir / f"{name}.pth")
        init_from_pretrained(model, name, path)
        path.unlink()
    model.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 1, size, size, size)  # intensities already scaled to [0, 1], as after preprocessing
    flops = count_flops(model, x)
    result = {"network": name, "gflop_per_forward": flops / 1e9, "modes": {}}
    outputs = {}
    for mode in modes:
        if mode == "cl3d":
            m = model.to(memory_format=torch.channels_last_3d)
            xin = x.contiguous(memory_format=torch.channels_last_3d)
        else:
            m = model.to(memory_format=torch.contiguous_format)
            xin = x

        def run(m=m, xin=xin, mode=mode):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "bf16")):
                outputs[mode] = m(xin).float()

        times = timed(run, repeats, warmup)
        med = statistics.median(times)
        result["modes"][mode] = {"times_s": times, "median_s": med, "gflops_per_s": flops / med / 1e9}
        print(f"  {name:9s} {mode:5s} median {med:7.2f} s  ({flops / med / 1e9:6.1f} GFLOP/s)", flush=True)
    model.to(memory_format=torch.contiguous_format)
    if "fp32" in outputs:
        ref = outputs["fp32"]
        result["max_abs_fp32_logit"] = ref.abs().max().item()
        for mode in ("cl3d", "bf16"):
            if mode in outputs:
                result[f"max_abs_diff_{mode}_vs_fp32"] = (outputs[mode] - ref).abs().max().item()
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", default=",".join(BACKBONES), help="comma-separated backbone names")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--size", type=int, default=96, help="cubic window edge in voxels")
    ap.add_argument("--repeats", type=int, default=2, help="timed forward passes per mode")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forward passes per mode")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        ap.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")

    info = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(), "size": args.size,
        "repeats": args.repeats, "warmup": args.warmup,
    }
    print(f"torch {info['torch']}, {info['threads']} threads, load average {info['loadavg_start']}", flush=True)
    info["conv3d_ceiling"] = ceiling = conv3d_ceiling(args.repeats, args.warmup)
    print(f"  conv3d ceiling ({ceiling['shape']}): " + ", ".join(f"{m} {ceiling[m]:.1f}" for m in MODES)
          + " GFLOP/s", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in args.networks.split(",") if n]:
            results.append(bench_network(name, Path(tmp), args.size, modes, args.repeats, args.warmup))
    info["loadavg_end"] = os.getloadavg()
    info["results"] = results

    print("\n| network | GFLOP/fwd | " + " | ".join(f"{m} s (GFLOP/s)" for m in modes) + " | max abs bf16-fp32 (max abs fp32 logit) |")
    print("|---|---|" + "---|" * len(modes) + "---|")
    for r in results:
        cells = [f"{r['modes'][m]['median_s']:.2f} ({r['modes'][m]['gflops_per_s']:.0f})" for m in modes]
        diff = r.get("max_abs_diff_bf16_vs_fp32")
        diff_cell = f"{diff:.3g} ({r['max_abs_fp32_logit']:.3g})" if diff is not None else "n/a"
        print(f"| {r['network']} | {r['gflop_per_forward']:.0f} | " + " | ".join(cells) + f" | {diff_cell} |")
    print("\nconv3d ceiling GFLOP/s: " + ", ".join(f"{m} {ceiling[m]:.0f}" for m in MODES)
          + f"; load average at end {info['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    main()
