"""Training throughput: iterations per second and the share of time spent waiting for data.

Plans and preprocesses the real CT cases (../shared/data/real_ct) into a temporary
root, then trains a few iterations of fold 0 and reads the per-epoch timings that
the trainer logs (``seconds`` and ``data_wait_seconds`` in metrics.jsonl).

    python benchmarks/bench_train.py [--network segresnet] [--patch 64] [--spacing 3.0]
                                     [--iterations 10] [--workers 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from suprem_nn.networks.backbones import released_backbones  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="segresnet", choices=released_backbones())
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--spacing", type=float, default=3.0)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2, help="the first epoch includes warm-up effects; the last is reported")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_train_"))
    for env, sub in (("SUPREM_RAW", "raw"), ("SUPREM_PREPROCESSED", "preprocessed"), ("SUPREM_RESULTS", "results")):
        os.environ[env] = str(base / sub)
    from tests.conftest import make_nnunet_dataset
    from suprem_nn.preprocessing.api import plan_and_preprocess
    from suprem_nn.training import train
    make_nnunet_dataset(base / "raw")
    plan_and_preprocess("Dataset101_RealCT", pretrained=a.network, target_spacing=[a.spacing] * 3,
                        patch_size=[a.patch] * 3, batch_size=a.batch, num_processes=2, progress=False)
    train("Dataset101_RealCT", 0, pretrained=None, from_scratch=True, plan_name=f"suprem_{a.network}",
          epochs=a.epochs, iterations_per_epoch=a.iterations, val_iterations=0, num_workers=a.workers,
          device=a.device, final_validation=False, echo=False)
    fold = base / "results" / "Dataset101_RealCT" / f"suprem_{a.network}" / "fold_0"
    last = [json.loads(x) for x in (fold / "metrics.jsonl").read_text().splitlines()][-1]
    import torch
    dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores, " \
                                                                             f"{torch.get_num_threads()} threads)"
    print(json.dumps({"device": dev, "network": a.network, "patch": [a.patch] * 3, "batch": a.batch,
                      "workers": a.workers, "iterations": a.iterations,
                      "iterations_per_second": round(a.iterations / last["seconds"], 3),
                      "data_wait_share": round(last["data_wait_seconds"] / last["seconds"], 3)}, indent=1))


if __name__ == "__main__":
    main()
