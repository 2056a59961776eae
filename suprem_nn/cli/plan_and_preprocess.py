"""``suprem_plan_and_preprocess``: inspect a raw dataset, write plans.json and the preprocessed cache."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..errors import SupremError
from ..networks.backbones import backbone_names, released_backbones
from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_plan_and_preprocess`` (plan datasets and write their preprocessed cache);
    ``--debug`` and ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_plan_and_preprocess",
        description="Verify a raw dataset, fingerprint it, plan training around a SuPreM backbone and write the "
                    "preprocessed cache. Roots: SUPREM_RAW, SUPREM_PREPROCESSED (optional; see README).")
    p.add_argument("-d", "--dataset", required=True, nargs="+",
                   help="dataset name (AbdomenAtlas, Dataset101_Liver), numeric id (101) or folder path")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretrained", choices=released_backbones(), default="unet",
                   help="plan for this SuPreM backbone's input convention (default: unet)")
    g.add_argument("--from-scratch", metavar="NETWORK", choices=backbone_names(),
                   help="plan this network from scratch (nnU-Net's rules unless --conventions suprem)")
    p.add_argument("--conventions", choices=["nnunet", "suprem"],
                   help="with --from-scratch: 'suprem' plans at the SuPreM preset's input conventions (1.5 mm, "
                        "HU window, 96^3 patch; supervised pretraining of a new SuPreM backbone), 'nnunet' "
                        "(default) with nnU-Net's rules")
    p.add_argument("-np", "--num-processes", type=int, default=2, help="parallel worker processes (default 2)")
    p.add_argument("--shard", default="0/1", help="process only shard i of n cases, e.g. 0/4 (default 0/1)")
    p.add_argument("--no-verify", action="store_true", help="skip the up-front dataset verification")
    ml = p.add_mutually_exclusive_group()
    ml.add_argument("--multilabel", action="store_true", default=None,
                    help="train one sigmoid channel per class (default for AbdomenAtlas masks)")
    ml.add_argument("--exclusive", action="store_true", help="train softmax over a label map")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="memory budget for patch/batch size (GB)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("I", "J", "K"), help="override target spacing (mm)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("I", "J", "K"), help="override patch size (voxels)")
    p.add_argument("--batch-size", type=int, help="override batch size")
    p.add_argument("--plan-only", action="store_true", help="write the fingerprint and plan, not the cache")
    add_common_arguments(p)
    return p


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SupremError(f"--shard must look like i/n (e.g. 0/4), got '{text}'") from None
    if n < 1 or not 0 <= i < n:
        raise SupremError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _run(args: argparse.Namespace) -> int:
    from ..planning.plans import describe_plan
    from ..preprocessing.api import plan_and_preprocess

    shard = _parse_shard(args.shard)
    if args.conventions and not args.from_scratch:
        raise SupremError("--conventions applies to --from-scratch plans; a --pretrained plan always follows the "
                          "SuPreM preset's input conventions")
    multilabel = False if args.exclusive else (True if args.multilabel else None)
    rc = 0
    for dataset in args.dataset:
        result = plan_and_preprocess(
            dataset, pretrained=None if args.from_scratch else args.pretrained, network=args.from_scratch,
            num_processes=args.num_processes, shard=shard, verify=not args.no_verify, multilabel=multilabel,
            gpu_memory_gb=args.gpu_memory_gb, target_spacing=args.spacing, patch_size=args.patch_size,
            batch_size=args.batch_size, plan_only=args.plan_only, progress=not args.quiet,
            conventions=args.conventions or "nnunet")
        print(f"{dataset}: {len(result.processed)} cases processed, {len(result.skipped)} already done")
        if result.plan is not None:
            print(describe_plan(result.plan))
            print(f"plans: {result.plan_folder / 'plans.json'}")
        if not result.complete and not args.plan_only:
            print("not complete yet: other shards or failed cases remain; re-run to finish", file=sys.stderr)
            rc = rc or (0 if shard[1] > 1 else 1)
    return rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_plan_and_preprocess`` (plan datasets and write their preprocessed cache) with ``argv`` (default
    ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead), or when a dataset is left
    incomplete without ``--shard`` (n = 1) and without ``--plan-only``; 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_plan_and_preprocess", build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
