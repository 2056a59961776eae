"""Convergence check: fine-tune from SuPreM-layout weights vs. train from scratch, same small CPU budget.

Plans the real CT cases (../shared/data/real_ct, TotalSegmentator pseudo-labels,
btcv13 classes) with the SuPreM preset, trains fold 0 twice with identical
settings and seeds, once ``--pretrained`` and once ``--from-scratch``, and
reports the final sliding-window validation Dice of the held-out case (original
geometry, ``fold_0/validation/summary.json``).

Without ``--weights`` the "pretrained" file is fabricated with
``make_fake_released_checkpoint`` (right layout, random values): the run then
shows that the pipeline and loader work, not that SuPreM helps. Pass the real
released file (e.g. supervised_suprem_segresnet_2100.pth) for a meaningful comparison.

    python benchmarks/convergence.py [--network segresnet] [--weights FILE] [--epochs 10] [--iterations 10]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from suprem_nn.networks.backbones import released_backbones  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="segresnet", choices=released_backbones())
    p.add_argument("--weights", help="a real SuPreM weights file for --network (default: a fabricated one)")
    p.add_argument("--spacing", type=float, default=4.5)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="convergence_"))
    for env, sub in (("SUPREM_RAW", "raw"), ("SUPREM_PREPROCESSED", "preprocessed")):
        os.environ[env] = str(base / sub)
    from tests.conftest import make_nnunet_dataset
    from tests.fabricated_weights import make_fake_released_checkpoint
    from suprem_nn.preprocessing.api import plan_and_preprocess
    from suprem_nn.training import train
    make_nnunet_dataset(base / "raw")
    plan_and_preprocess("Dataset101_RealCT", pretrained=a.network, target_spacing=[a.spacing] * 3,
                        patch_size=[a.patch] * 3, batch_size=2, num_processes=2, progress=False)
    weights = a.weights or str(make_fake_released_checkpoint(a.network, base / "fake_suprem.pth"))
    results = {}
    for mode in ("pretrained", "scratch"):
        os.environ["SUPREM_RESULTS"] = str(base / f"results_{mode}")
        init = {"pretrained": a.network, "pretrained_checkpoint": weights} if mode == "pretrained" \
            else {"from_scratch": True, "plan_name": f"suprem_{a.network}"}
        t0 = time.time()
        train("Dataset101_RealCT", 0, epochs=a.epochs, iterations_per_epoch=a.iterations, val_iterations=2,
              warmup_epochs=1, lr=a.lr, num_workers=2, device=a.device, seed=1, echo=False, **init)
        summary = json.loads((base / f"results_{mode}" / "Dataset101_RealCT" / f"suprem_{a.network}" / "fold_0" /
                              "validation" / "summary.json").read_text())
        results[mode] = {"mean_dice": summary["mean_dice"], "minutes": round((time.time() - t0) / 60, 1),
                         "per_class": {k: v for k, v in summary["mean_dice_per_class"].items() if v is not None}}
    print(json.dumps({"network": a.network, "weights": "real file " + a.weights if a.weights else
                      "fabricated (random values, SuPreM layout)", "budget": f"{a.epochs} epochs x {a.iterations} "
                      f"iterations, patch {a.patch}^3 at {a.spacing} mm, lr {a.lr}", **results}, indent=1))


if __name__ == "__main__":
    main()
