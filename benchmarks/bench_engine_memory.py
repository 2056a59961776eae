"""Where each engine's resident memory goes for one network: load, first window, steady state.

Answers "why does the OpenVINO engine peak higher than torch on a small network?" with figures. Each engine runs
in a fresh process (so nothing is shared between them) that records its resident set size (RSS, /proc/self/statm)
after each step:

* torch: ``import`` (torch and suprem_nn), ``network`` (model loaded), ``window 1`` and ``window 2`` (one
  forward pass each, float32, inference mode; what torch keeps afterwards is glibc's, not the network's);
* openvino: ``import`` (torch, suprem_nn and OpenVINO), ``network`` (the torch model, needed for the cache key),
  ``compiled`` (the compiled model loaded from the engine cache, which a first process filled), ``torch freed``
  (the torch network dropped, as prediction does), ``window 1``, ``window 2``;
* both: ``pass ended`` (what the end of a volume's pass does: OpenVINO releases its activation buffers,
  ``release_buffers``, and freed heap memory goes back to the OS, ``suprem_nn.utils.heap``), and the peak RSS
  of the process (VmHWM), which includes what a pass holds only while it runs.

The model is an nnU-Net v2 model folder (``--nnunet-model FOLDER``, fold ``all`` or ``--fold``) or a SuPreM
backbone with fabricated release-layout weights (``--backbone unet|segresnet|swinunetr``, 32 classes, 96^3).

    python benchmarks/bench_engine_memory.py --nnunet-model MODEL_FOLDER [--fold all] [--precision f32|bf16]
    python benchmarks/bench_engine_memory.py --backbone segresnet [--channels 9]

``--channels N`` keeps only the first N output channels, as a prediction that keeps a class subset does (SuPreM's
direct recipe keeps 9 organs of 32): OpenVINO is converted for those channels only, torch computes all of them and
selects those, as the sliding window does.

Prints one JSON line per engine (MB after each step) and the differences that matter.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: argv = engine, model spec (JSON), precision, kept channels (0 = all).
_CHILD = r'''
import json, os, sys
steps = {}
def rss_mb():
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20)
engine, spec, precision, channels = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import torch
import suprem_nn.inference
if engine == "openvino":
    from suprem_nn.inference.openvino_engine import import_openvino
    import_openvino()
steps["import"] = rss_mb()
if spec["kind"] == "nnunet":
    from suprem_nn.inference.nnunet_model import load_nnunet_model
    model = load_nnunet_model(spec["folder"], [spec["fold"]])
    nets, shape = model.networks, [1, model.num_inputs, *model.configuration["patch_size"]]
    del model
else:
    from suprem_nn.networks import build_network, init_from_pretrained
    torch.manual_seed(0)  # layers the fabricated file leaves out start the same in every process (one cache key)
    net = build_network(spec["backbone"], 1, 32)
    init_from_pretrained(net, spec["backbone"], spec["checkpoint"])
    nets, shape = [net.eval()], [1, 1, 96, 96, 96]
    del net
steps["network"] = rss_mb()
x = torch.rand(shape)
autocast = torch.bfloat16 if precision == "bf16" else None
if engine == "openvino":
    from suprem_nn.inference.engines import prepare_engine
    runs, report = prepare_engine(nets, "openvino", torch.device("cpu"), shape, autocast,
                                  output_channels=list(range(channels)) if channels else None)
    steps["compiled"] = rss_mb()
    del nets
    import gc; gc.collect()
    steps["torch freed"] = rss_mb()
    status = report["cache"][0]["status"]
else:
    runs, status = nets, None
keep = torch.arange(channels) if channels else None
for k in (1, 2):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast is not None):
        if engine == "openvino":
            y = runs[0](x, keep_channels=keep)
        else:  # what sliding_window._tta_logits does with a torch network: all channels, then the kept ones
            y = runs[0](x)
            y = y if keep is None else y.index_select(1, keep)
        y = y.float()
    del y
    steps[f"window {k}"] = rss_mb()
# what the end of a volume's pass does: OpenVINO gives its buffers back, both return freed heap memory
if engine == "openvino":
    runs[0].release_buffers()
from suprem_nn.utils.heap import release_free_heap
release_free_heap()
steps["pass ended"] = rss_mb()
with open("/proc/self/status") as f:  # VmHWM: the largest RSS so far, transient buffers inside a pass included
    hwm = [round(int(l.split()[1]) / 1024) for l in f if l.startswith("VmHWM:")][0]
print(json.dumps({"engine": engine, "precision": precision, "channels": channels or "all", "cache": status,
                  "rss_mb": steps, "peak_rss_mb": hwm}))
'''


def run_child(engine: str, spec: dict, precision: str, channels: int, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, engine, json.dumps(spec), precision, str(channels)], env=env,
                         capture_output=True, text=True, cwd=str(REPO))
    if out.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--nnunet-model", type=Path)
    src.add_argument("--backbone", choices=["unet", "segresnet", "swinunetr"])
    ap.add_argument("--fold", default="all")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--channels", type=int, default=0, help="keep only the first N output channels (0: all)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_engine_memory_"))
    if args.nnunet_model:
        spec = {"kind": "nnunet", "folder": str(args.nnunet_model), "fold": args.fold}
    else:
        sys.path.insert(0, str(REPO))
        from tests.fabricated_weights import make_fake_released_checkpoint

        path = make_fake_released_checkpoint(args.backbone, work / f"{args.backbone}.pth")
        spec = {"kind": "released", "backbone": args.backbone, "checkpoint": str(path)}
    env = {**os.environ, "SUPREM_ENGINE_CACHE": str(work / "engine_cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # the first run fills the cache: the measured runs are cache hits
    first = run_child("openvino", spec, args.precision, args.channels, env)
    results = {"model": spec, "conversion_run": first,
               "torch": run_child("torch", spec, args.precision, args.channels, env),
               "openvino": run_child("openvino", spec, args.precision, args.channels, env)}
    t, o = results["torch"]["rss_mb"], results["openvino"]["rss_mb"]
    results["summary_mb"] = {
        "torch: window 2 - import": t["window 2"] - t["import"],
        "openvino: window 2 - import": o["window 2"] - o["import"],
        "openvino: compiled model loaded": o["compiled"] - o["network"],
        "openvino: first window (kept)": o["window 1"] - o["torch freed"],
        "openvino - torch after 2 windows": o["window 2"] - t["window 2"],
        "openvino: given back at the end of a pass": o["window 2"] - o["pass ended"],
        "openvino - torch after a pass ended": o["pass ended"] - t["pass ended"],
        "openvino - torch, peak RSS": results["openvino"]["peak_rss_mb"] - results["torch"]["peak_rss_mb"],
    }
    for name in ("torch", "openvino"):
        print(json.dumps(results[name]))
    print(json.dumps(results["summary_mb"]))
    return results


if __name__ == "__main__":
    main()
