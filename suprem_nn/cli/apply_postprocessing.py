"""``suprem_apply_postprocessing -i FOLDER -o OUT``: wraps :func:`suprem_nn.inference.apply_postprocessing.postprocess_folder`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_apply_postprocessing`` (keep the largest component of chosen labels in a folder
    of label maps); ``--debug`` and ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_apply_postprocessing",
        description="Keep only the largest 26-connected component of chosen labels in finished label maps "
                    "(<case>.nii.gz or <CASE>/combined_labels.nii.gz), as decided by suprem_find_best_configuration "
                    "or by hand. Outputs keep each input's header.")
    p.add_argument("-i", "--input", required=True, help="folder of predicted label maps")
    p.add_argument("-o", "--output", required=True, help="output folder (never the input folder)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--postprocess-from", metavar="INSTRUCTIONS",
                       help="inference_instructions.json: its classes that keep their largest component")
    which.add_argument("--label-values", nargs="+", type=int, metavar="V",
                       help="label values that keep their largest component")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    add_common_arguments(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from ..inference.apply_postprocessing import postprocess_folder, values_for_classes
    from ..inference.instructions import read_instructions

    if args.postprocess_from:
        instr = read_instructions(args.postprocess_from)
        values = values_for_classes(instr.largest_component, instr.class_names, instr.label_values, instr.path)
        print(f"suprem_apply_postprocessing: largest component for {', '.join(instr.largest_component) or 'no class'}"
              f" (label values {', '.join(map(str, values)) or 'none'}) from {args.postprocess_from}", file=sys.stderr)
    else:
        values = args.label_values
    summary = postprocess_folder(args.input, args.output, values, overwrite=args.overwrite, progress=not args.quiet)
    print(f"suprem_apply_postprocessing: {len(summary.cases)} case(s) written, {len(summary.skipped)} already done",
          file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_apply_postprocessing`` (keep the largest component of chosen labels in a folder of label maps) with
    ``argv`` (default ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_apply_postprocessing", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
