"""This CPU's convolution ceiling: GFLOP/s of one large Conv3d, the figure issue 14 compares network passes with.

One ``Conv3d(C -> C, 3x3x3, padding 1)`` on a ``1 x C x S^3`` float input (default C = 64, S = 96: 196 GFLOP per
call, 2 * C_in * C_out * 27 * S^3 multiply-adds counted as two FLOPs each), timed as the best of ``--repeats``
calls after ``--warmup`` calls, in

* torch float32, default (contiguous) memory format and ``channels_last_3d``;
* torch bfloat16 (``torch.autocast`` on the CPU, as ``suprem_predict`` runs it), both memory formats;
* OpenVINO (when installed) f32 and bf16 inference precision, latency hint, the same weights.

Best-of-N, not the median: the ceiling is what the hardware reaches when nothing else runs, and on a shared
machine other processes only ever slow a call down. The load average before and after is printed beside the
figures; figures taken at a load above the core count are lower bounds, rerun them on a quiet machine.

Usage:  python benchmarks/bench_conv_ceiling.py [--channels 64] [--size 96] [--repeats 5] [--warmup 1]
            [--no-openvino] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def _best_seconds(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def torch_ceiling(conv: torch.nn.Conv3d, x: torch.Tensor, repeats: int, warmup: int) -> dict:
    """GFLOP/s of ``conv(x)`` per (precision, memory format); a key per mode."""
    out = {}
    for precision in ("fp32", "bf16"):
        for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last_3d", torch.channels_last_3d)):
            c, xin = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out[f"torch {precision} {layout}"] = _best_seconds(lambda: c(xin), repeats, warmup)
    return out


def openvino_ceiling(conv: torch.nn.Conv3d, x: torch.Tensor, repeats: int, warmup: int) -> dict:
    """Seconds per call of the same convolution compiled by OpenVINO, per inference precision."""
    import openvino as ov

    core = ov.Core()
    model = ov.convert_model(conv, example_input=x)
    data = x.numpy()
    out = {}
    for precision in ("f32", "bf16"):
        try:
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                         "PERFORMANCE_HINT": "LATENCY"})
        except RuntimeError as exc:  # a CPU without bf16 support refuses the hint: report, do not fail the run
            out[f"openvino {precision}"] = f"not available: {str(exc).splitlines()[0][:120]}"
            continue
        request = compiled.create_infer_request()
        out[f"openvino {precision}"] = _best_seconds(lambda: request.infer({0: data}), repeats, warmup)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, default=64, help="input and output channels C (default 64)")
    p.add_argument("--size", type=int, default=96, help="spatial size S of the S^3 input (default 96)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-openvino", action="store_true", help="torch only")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    c, s = args.channels, args.size
    conv = torch.nn.Conv3d(c, c, 3, padding=1).eval()
    x = torch.randn(1, c, s, s, s)
    gflop = 2 * c * c * 27 * s ** 3 / 1e9
    info = {"conv": f"Conv3d({c}->{c}, 3x3x3, padding 1) on 1x{c}x{s}^3", "gflop_per_call": gflop,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()]}
    print(f"{info['conv']}: {gflop:.1f} GFLOP per call; {info['cores']} cores, torch {torch.__version__} with "
          f"{info['torch_threads']} threads; load average {info['loadavg_start']}", flush=True)
    seconds = torch_ceiling(conv, x, args.repeats, args.warmup)
    if not args.no_openvino:
        try:
            seconds.update(openvino_ceiling(conv, x, args.repeats, args.warmup))
        except ImportError:
            seconds["openvino"] = "not installed"
    info["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    info["results"] = {}
    print("\n| mode | best s per call | GFLOP/s |\n|---|---|---|")
    for mode, sec in seconds.items():
        if isinstance(sec, str):
            print(f"| {mode} | {sec} | |")
            info["results"][mode] = sec
            continue
        rate = gflop / sec
        info["results"][mode] = {"best_seconds": sec, "gflops_per_s": rate}
        print(f"| {mode} | {sec:.3f} | {rate:.0f} |")
    print(f"\nload average at the end {info['loadavg_end']}"
          + ("  (above the core count: other processes shared the CPU; these are lower bounds)"
             if max(info["loadavg_start"][0], info["loadavg_end"][0]) > (os.cpu_count() or 1) - 0.5 else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
