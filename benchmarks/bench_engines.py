"""One 96^3 window per SuPreM backbone: torch (float32 contiguous and channels_last_3d, bfloat16 autocast with
channels_last_3d on CPUs with native bfloat16) against the OpenVINO engine (f32, and bf16 on such CPUs), with
conversion and cache-load times and the compiled model's size on disk.

Each backbone is initialised from a fabricated checkpoint in the released layout (32-class head, eval mode,
batch 1; SuPreM's U-Net normalises with the window's own batch statistics). The OpenVINO models are made by
:func:`suprem_nn.inference.engines.prepare_engine`, the code prediction uses, into a fresh cache folder, so the
first call measures conversion (+ the check against torch) and the second a cache load.

Usage:  python benchmarks/bench_engines.py [--networks unet,segresnet,swinunetr] [--size 96] [--repeats 2]
            [--warmup 1] [--json out.json]

A measurement script, not a test. Every figure is printed with the 1-minute load average read just before it:
on a shared machine the load inflates the times, so compare figures from one run only.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suprem_nn.inference.engines import prepare_engine  # noqa: E402
from suprem_nn.inference.precision import cpu_has_native_bf16  # noqa: E402
from suprem_nn.networks import build_network, init_from_pretrained  # noqa: E402
from tests.fabricated_weights import make_fake_released_checkpoint  # noqa: E402


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(fn, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times, loads = [], []
    for _ in range(repeats):
        loads.append(load())
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "times_s": [round(t, 3) for t in times],
            "load_1min": loads}


def released_network(name: str, folder: Path) -> torch.nn.Module:
    path = make_fake_released_checkpoint(name, folder / f"{name}.pth")
    model = build_network(name, 1, 32)
    init_from_pretrained(model, name, path)
    path.unlink()
    return model.eval()


def bench(name: str, size: int, repeats: int, warmup: int, work: Path) -> dict:
    model = released_network(name, work)
    torch.manual_seed(0)
    x = torch.rand(1, 1, size, size, size)  # intensities in [0, 1], as after SuPreM's CT window
    shape = tuple(x.shape)

    def run(net, autocast=None, channels_last=False):
        inp = x.to(memory_format=torch.channels_last_3d) if channels_last else x
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast is not None):
            return net(inp).float()

    result = {"network": name, "window": list(shape[2:]), "modes": {}}
    reference = run(model)
    result["modes"]["torch_fp32"] = timed(lambda: run(model), repeats, warmup)
    precisions = [("f32", None)] + ([("bf16", torch.bfloat16)] if cpu_has_native_bf16() else [])
    # The torch engine's other settings (documentation/prediction.md, Speed options): channels_last_3d, and
    # bfloat16 autocast on CPUs with native bfloat16. Measured on a copy, so the OpenVINO conversion below sees
    # the contiguous module.
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    result["modes"]["torch_fp32_channels_last"] = timed(lambda: run(cl_model, channels_last=True), repeats, warmup)
    if len(precisions) > 1:
        result["modes"]["torch_bf16_channels_last"] = timed(
            lambda: run(cl_model, torch.bfloat16, channels_last=True), repeats, warmup)
    del cl_model
    for label, dtype in precisions:
        os.environ["SUPREM_ENGINE_CACHE"] = str(work / f"cache_{name}_{label}")
        before = load()
        (ov_net,), report = prepare_engine([model], "openvino", torch.device("cpu"), shape, dtype)
        (_, again) = prepare_engine([model], "openvino", torch.device("cpu"), shape, dtype)
        entry = timed(lambda: run(ov_net), repeats, warmup)
        entry.update({"precision": report["precision"], "convert_s": report["convert_seconds"],
                      "convert_load_1min": before, "cache_load_s": again["load_seconds"],
                      "cache_status_second_call": again["cache"][0]["status"],
                      "cache_mb": report["cache"][0]["megabytes"],
                      "max_abs_diff_vs_torch_fp32": float(f"{float((run(ov_net) - reference).abs().max()):.3g}"),
                      "max_abs_logit": round(float(reference.abs().max()), 3)})
        entry["speedup_vs_torch_fp32"] = round(result["modes"]["torch_fp32"]["median_s"] / entry["median_s"], 2)
        same = ["torch_fp32", "torch_fp32_channels_last"] if label == "f32" else ["torch_bf16_channels_last"]
        best = min(result["modes"][m]["median_s"] for m in same)
        entry["speedup_vs_fastest_torch_same_precision"] = round(best / entry["median_s"], 2)
        result["modes"][f"openvino_{label}"] = entry
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", default="unet,segresnet,swinunetr")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = {"cpu_threads": torch.get_num_threads(), "cpu_has_native_bf16": cpu_has_native_bf16(),
           "torch": torch.__version__, "results": []}
    with tempfile.TemporaryDirectory(prefix="bench_engines_") as work:
        for name in a.networks.split(","):
            r = bench(name, a.size, a.repeats, a.warmup, Path(work))
            out["results"].append(r)
            print(json.dumps(r), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
