"""``suprem_export_onnx MODEL_FOLDER -o model.onnx``: a trained network as ONNX plus the JSON record to use it."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..model_folder import BEST_CHECKPOINT, FINAL_CHECKPOINT
from ..networks.backbones import released_backbones
from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_export_onnx`` (a trained or released network as ONNX plus its JSON record);
    ``--debug`` and ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_export_onnx",
        description="Write one trained network as ONNX (one window in network space -> logits, static patch "
                    "shape) and MODEL.onnx.json beside it recording everything needed to use it: orientation, "
                    "spacing, intensity window, crop threshold, patch, step size, mirroring axes, classes with "
                    "label values and activation, input/output names and shapes, opset and code version. Runs in "
                    "ONNX Runtime or OpenVINO without suprem_nn (documentation/deploy_onnx.md).")
    p.add_argument("model", metavar="MODEL_FOLDER", nargs="?",
                   help="trained model folder <results>/<dataset>/<plan> (or a dataset name/id under SUPREM_RESULTS)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="ONNX file to write")
    p.add_argument("-f", "--fold", help="fold to export: 0-4 or 'all' (default: the only trained fold)")
    p.add_argument("-p", "--plan", dest="plan_name", help="plan name, when MODEL is a dataset with several plans")
    p.add_argument("-c", "--checkpoint-name", default=FINAL_CHECKPOINT,
                   help=f"checkpoint file of the fold (default {FINAL_CHECKPOINT}; or {BEST_CHECKPOINT})")
    p.add_argument("--suprem", choices=released_backbones(),
                   help="instead of a model folder: a released SuPreM network with its direct-inference recipe "
                        "(without --checkpoint: the released file from $SUPREM_WEIGHTS, downloaded on first use)")
    p.add_argument("--checkpoint", metavar="FILE", help="a SuPreM-layout .pth file (family read from the file)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the written file once in ONNX Runtime against torch")
    add_common_arguments(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from ..inference.onnx_export import export_onnx, onnx_record_path

    record = export_onnx(args.output, args.model, fold=args.fold, checkpoint_name=args.checkpoint_name,
                         plan_name=args.plan_name, suprem=args.suprem, checkpoint=args.checkpoint, opset=args.opset,
                         verify=not args.no_verify)
    io = record["onnx"]
    check = record["verification"]
    checked = (f"ONNX Runtime max abs logit difference to torch {check['max_abs_logit_diff']:.2g}"
               if "max_abs_logit_diff" in check else f"not verified: {check['skipped']}")
    print(f"wrote {args.output} ({record['network']['name']}, input {io['input']['name']} "
          f"{io['input']['shape']}, output {io['output']['name']} {io['output']['shape']}, opset {io['opset']}; "
          f"{checked}) and its record {onnx_record_path(args.output)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_export_onnx`` (a trained or released network as ONNX plus its JSON record) with ``argv`` (default
    ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_export_onnx", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
