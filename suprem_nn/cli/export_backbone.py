"""``suprem_export_backbone MODEL -o FILE.pth``: a trained fold's backbone as a SuPreM-style starting point."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..model_folder import BEST_CHECKPOINT, FINAL_CHECKPOINT
from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_export_backbone`` (a trained fold's backbone as a SuPreM-style .pth); ``--debug``
    and ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_export_backbone",
        description="Write the backbone of a trained model in the key layout of the released SuPreM file of its "
                    "family ({'net': ...}, 'module.' keys, plain tensors), with FILE.json beside it recording the "
                    "classes, input conventions, training data and code version. Start another dataset from it "
                    "with suprem_train DATASET FOLD --pretrained-checkpoint FILE.pth.")
    p.add_argument("model", metavar="MODEL_FOLDER",
                   help="trained model folder <results>/<dataset>/<plan> (or a dataset name/id under SUPREM_RESULTS)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.pth", help="weights file to write")
    p.add_argument("-f", "--fold", help="fold to export: 0-4 or 'all' (default: the only trained fold)")
    p.add_argument("-p", "--plan", dest="plan_name", help="plan name, when MODEL is a dataset with several plans")
    p.add_argument("-c", "--checkpoint", default=FINAL_CHECKPOINT,
                   help=f"checkpoint file of the fold (default {FINAL_CHECKPOINT}; or {BEST_CHECKPOINT})")
    add_common_arguments(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from ..inference.backbone_export import export_backbone
    from ..networks.export_record import sidecar_path

    report, record = export_backbone(args.model, args.output, fold=args.fold, checkpoint_name=args.checkpoint,
                                     plan_name=args.plan_name)
    if not args.quiet:
        print(report)
    train = record["training"]
    print(f"wrote {args.output} ({record['tensors']} {record['family']} backbone tensors from {train['dataset']} "
          f"fold {train['fold']}, {train['epochs_completed']} epochs) and its record {sidecar_path(args.output)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_export_backbone`` (a trained fold's backbone as a SuPreM-style .pth) with ``argv`` (default
    ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_export_backbone", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
