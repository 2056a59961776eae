"""Training speed on a GPU (or, with ``--device cpu --quick``, a short CPU run that checks the script works).

For each backbone at its planned patch and batch, on the real CT cases (../shared/data/real_ct, planned and
preprocessed into a temporary root):

* ``step``: one training step (forward, Dice + CE/BCE loss, backward, AdamW) on a real batch already on the
  device, for every combination of float32 / bfloat16 autocast, channels_last_3d off / on and torch.compile off /
  on: iterations per second and peak GPU memory (torch.cuda.max_memory_allocated; on the CPU the process's peak
  RSS). This is the network's ceiling, data loading excluded.
* ``trainer``: suprem_train itself (``suprem_nn.training.train``: the data-loading workers with augmentation,
  the precision the trainer picks for the device, compile off / on) for a few epochs: iterations per second of
  the last epoch and the share of it spent waiting for data. A share near 0 means augmentation keeps up.
* ``nnunet``: nnU-Net v2's own nnUNetv2_train (the peer venv, .ci/install_nnunet_peer.sh) on the same cases with
  its 3d_fullres plan's patch and batch set to those of ``--nnunet-like`` (default unet): iterations per second
  from its "Epoch time" log lines (its epoch includes ``--nnunet-val`` validation iterations), workers
  nnUNet_n_proc_DA, nnUNet_compile off / on. Skipped with the reason when the peer venv is missing.

Data-loading workers default to the machine's cores minus one per process (at most 12), as nnU-Net sizes its own.

    python benchmarks/bench_train_gpu.py --device cuda [--backbones unet segresnet swinunetr] [--out R.json]
    python benchmarks/bench_train_gpu.py --device cpu --quick      # minutes on a laptop: 6 mm, 32^3, batch 2

``--quick`` plans at 6 mm with 32^3 patches and batch 2, takes only SegResNet unless ``--backbones`` says more
(the full-size SuPreM U-Net needs tens of seconds per CPU step), times 2 steps after 1 warm-up, trains 2 epochs
of 2 iterations, leaves torch.compile off unless ``--compile`` says otherwise, and shrinks nnU-Net's network to
3 stages; its figures say only that every path runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "nnunet_compat"))

from suprem_nn.networks.backbones import released_backbones  # noqa: E402

DATASET = "Dataset101_RealCT"
BACKBONES = tuple(released_backbones())  # planned at their SuPreM presets (suprem_<backbone>)


def _roots(base: Path, results: str = "results") -> None:
    for env, sub in (("SUPREM_RAW", "raw"), ("SUPREM_PREPROCESSED", "preprocessed"), ("SUPREM_RESULTS", results)):
        os.environ[env] = str(base / sub)


def prepare(base: Path, backbones, quick: bool, workers: int) -> dict:
    """Plan and preprocess the real cases once per backbone; return ``{backbone: (plan folder, Plan)}``."""
    from suprem_nn.planning import find_plan
    from suprem_nn.preprocessing.api import plan_and_preprocess
    from tests.conftest import make_nnunet_dataset

    make_nnunet_dataset(base / "raw")
    plans = {}
    for b in backbones:
        overrides = dict(target_spacing=[6.0] * 3, patch_size=[32] * 3, batch_size=2) if quick else {}
        plan_and_preprocess(DATASET, pretrained=b, num_processes=max(1, workers), progress=False, **overrides)
        plans[b] = find_plan(DATASET, f"suprem_{b}")  # (folder, Plan)
    return plans


def _real_batch(plan_folder: Path, plan, device):
    from suprem_nn.preprocessing.cache import PreprocessedCache
    from suprem_nn.training.data import PatchSampler

    cache = PreprocessedCache(plan_folder / "data")
    sampler = PatchSampler(cache, cache.case_ids(plan.cache_hash()), plan.patch_size, plan.batch_size, seed=0,
                           mirror_axes=plan.mirror_axes)
    import torch

    b = sampler.batch(0, 0)  # numpy arrays, as the data-loading workers hand them over
    return torch.as_tensor(b["data"]).to(device), torch.as_tensor(b["target"]).to(device)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(plan_folder: Path, plan, device, bf16: bool, channels_last: bool, compiled: bool, steps: int,
              warmup: int) -> dict:
    """Iterations per second and peak memory of the bare training step in one configuration."""
    import torch

    from suprem_nn.networks import build_network
    from suprem_nn.training.losses import make_loss

    torch.manual_seed(0)
    net = build_network(plan.network, plan.num_inputs, plan.num_outputs, **plan.network_kwargs).to(device)
    data, target = _real_batch(plan_folder, plan, device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        data = data.contiguous(memory_format=torch.channels_last_3d)
    model = torch.compile(net) if compiled else net
    loss_fn, opt = make_loss(plan.multilabel), torch.optim.AdamW(net.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(data), target)
        loss.backward()
        opt.step()

    for _ in range(warmup):  # compilation and cuDNN's algorithm search happen here
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - t0
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"iterations_per_second": round(steps / seconds, 3), "peak_memory_mb": round(memory / 2 ** 20),
            "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS"}


def trainer_rate(base: Path, backbone: str, device: str, compiled: bool, epochs: int, iters: int,
                 workers: int) -> dict:
    """suprem_train's own loop: iterations per second of the last epoch and its data-wait share."""
    import torch

    from suprem_nn.training import train

    results = f"results_{backbone}_{'compiled' if compiled else 'eager'}"
    _roots(base, results)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train(DATASET, 0, plan_name=f"suprem_{backbone}", from_scratch=True, epochs=epochs, iterations_per_epoch=iters,
          val_iterations=0, num_workers=workers, device=device, compile=compiled, final_validation=False,
          echo=False)
    fold = base / results / DATASET / f"suprem_{backbone}" / "fold_0"
    last = [json.loads(x) for x in (fold / "metrics.jsonl").read_text().splitlines()][-1]
    found = re.search(r"precision (.*)", (fold / "training_log.txt").read_text())  # the trainer's own choice
    precision = found.group(1).strip() if found else ""
    _roots(base)
    return {"iterations_per_second": round(iters / last["seconds"], 3),
            "data_wait_share": round(last["data_wait_seconds"] / last["seconds"], 3), "workers": workers,
            "precision": precision,
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20) if device.startswith("cuda") else None}


def nnunet_rate(base: Path, plan, device: str, compiled: bool, quick: bool, epochs: int, iters: int, val: int,
                workers: int) -> dict:
    """nnUNetv2_train in the peer venv with its patch and batch set to ``plan``'s; iterations per second."""
    from peer import _TRAINER, NnunetRoots, peer_available
    from tests.conftest import REAL_CASES, REAL_CT

    reason = peer_available()
    if reason:
        return {"skipped": reason}
    roots = NnunetRoots(base / f"nnunet_{'compiled' if compiled else 'eager'}")
    roots.make_dataset(951, "BenchRealCT", {c: (REAL_CT / c / "ct.nii.gz", REAL_CT / c / "seg_btcv13.nii.gz")
                                            for c in REAL_CASES})
    roots.run("nnUNetv2_plan_and_preprocess", "-d", 951, "-c", "3d_fullres", "-npfp", workers, "-np", workers,
              "--no_pp")
    plans_file = next(roots.pre.glob("Dataset951_*")) / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    c = plans["configurations"]["3d_fullres"]
    c["patch_size"], c["batch_size"] = list(plan.patch_size), int(plan.batch_size)
    if quick:  # the compat test's 3-stage network and a coarse grid: minutes, not hours, on a CPU
        c["spacing"] = [6.0, 6.0, 6.0]
        c["architecture"]["arch_kwargs"].update(
            n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1])
    plans_file.write_text(json.dumps(plans, indent=1))
    roots.run("nnUNetv2_preprocess", "-d", 951, "-c", "3d_fullres", "-np", workers)
    trainer = "nnUNetTrainer_bench"
    (roots.ext / f"{trainer}.py").write_text(_TRAINER.format(name=trainer, epochs=epochs, iters=iters, val=val))
    roots.run("nnUNetv2_train", 951, "3d_fullres", "all", "-tr", trainer, "-device", device.split(":")[0],
              extra_env={"nnUNet_n_proc_DA": str(workers), "nnUNet_compile": "t" if compiled else "f"})
    log = sorted((roots.results).rglob("training_log_*.txt"))[-1].read_text()
    times = [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", log)]
    return {"iterations_per_second": round(iters / times[-1], 3), "epoch_seconds": times,
            "patch": c["patch_size"], "batch": c["batch_size"], "workers": workers,
            "note": f"epoch time includes {val} validation iteration(s)"}


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks that every path runs")
    ap.add_argument("--backbones", nargs="+", default=None, choices=BACKBONES,
                    help="default: all three (segresnet only with --quick)")
    ap.add_argument("--compile", choices=["off", "on", "both"], default=None,
                    help="torch.compile settings to time (default: both; off with --quick)")
    ap.add_argument("--workers", type=int, default=None,
                    help="data-loading workers (default: cores - 1, at most 12)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 30; 2 quick)")
    ap.add_argument("--nnunet-like", default="unet", choices=BACKBONES,
                    help="whose planned patch and batch nnU-Net's run uses")
    ap.add_argument("--nnunet-val", type=int, default=1, help="validation iterations per nnU-Net epoch")
    ap.add_argument("--no-nnunet", action="store_true", help="skip nnU-Net's side")
    ap.add_argument("--out", help="also write the results here (JSON)")
    a = ap.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_train_gpu: no CUDA GPU here; use --device cpu --quick for the CPU path", file=sys.stderr)
        return 1
    device = torch.device(a.device)
    compiles = {"off": [False], "on": [True], "both": [False, True]}[a.compile or ("off" if a.quick else "both")]
    workers = a.workers if a.workers is not None else max(1, min(12, (os.cpu_count() or 2) - 1))
    steps, warmup = (a.steps or 2, 1) if a.quick else (a.steps or 30, 5)
    backbones = a.backbones or (["segresnet"] if a.quick else list(BACKBONES))
    epochs, iters = (2, 2) if a.quick else (3, 50)

    base = Path(tempfile.mkdtemp(prefix="bench_train_gpu_"))
    _roots(base)
    plans = prepare(base, backbones, a.quick, workers)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    result = {"device": machine, "torch": torch.__version__, "quick": a.quick, "workers": workers, "backbones": {}}
    for b, (folder, plan) in plans.items():
        rows = []
        for bf16 in (False, True):
            for cl in (False, True):
                for comp in compiles:
                    r = step_rate(folder, plan, device, bf16, cl, comp, steps, warmup)
                    rows.append({"bf16": bf16, "channels_last_3d": cl, "compile": comp, **r})
                    print(f"{b:9s} step bf16={bf16!s:5s} channels_last={cl!s:5s} compile={comp!s:5s} "
                          f"{r['iterations_per_second']:8.3f} it/s {r['peak_memory_mb']:7d} MB", flush=True)
        trainer = {}
        for comp in compiles:
            trainer["compiled" if comp else "eager"] = t = trainer_rate(base, b, a.device, comp, epochs, iters,
                                                                        workers)
            print(f"{b:9s} trainer compile={comp!s:5s} {t['iterations_per_second']:8.3f} it/s, data wait "
                  f"{t['data_wait_share']:.0%} ({t['precision']})", flush=True)
        result["backbones"][b] = {"patch": plan.patch_size, "batch": plan.batch_size, "step": rows,
                                  "trainer": trainer}
    if not a.no_nnunet:
        like = (plans.get(a.nnunet_like) or next(iter(plans.values())))[1]
        result["nnunet"] = {}
        for comp in compiles:
            n = nnunet_rate(base, like, a.device, comp, a.quick, epochs, iters, a.nnunet_val, workers)
            result["nnunet"]["compiled" if comp else "eager"] = n
            print(f"nnU-Net   trainer compile={comp!s:5s} "
                  + (f"{n['iterations_per_second']:8.3f} it/s at patch {n['patch']} batch {n['batch']}"
                     if "skipped" not in n else f"skipped: {n['skipped']}"), flush=True)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
