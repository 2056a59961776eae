"""``suprem_ensemble -i FOLDER_A FOLDER_B ... -o OUT``: wraps :func:`suprem_nn.inference.ensemble.ensemble_folders`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_ensemble`` (average saved probabilities of several prediction folders);
    ``--debug`` and ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_ensemble",
        description="Average the saved probabilities (suprem_predict --save-probabilities) of several predictions "
                    "of the same cases and write label maps on each case's original grid. Softmax and sigmoid "
                    "predictions, or predictions of different classes, are refused.")
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="FOLDER",
                   help="prediction folders holding <case>.npz + <case>.json (one folder relabels one prediction)")
    p.add_argument("-o", "--output", required=True, help="output folder (or a .nii.gz file for a single case)")
    pp = p.add_mutually_exclusive_group()
    pp.add_argument("--postprocess-from", metavar="INSTRUCTIONS",
                    help="apply the per-class post-processing of an inference_instructions.json "
                         "(suprem_find_best_configuration)")
    pp.add_argument("--largest-component", nargs="+", metavar="CLASS",
                    help="keep the largest 26-connected component of these classes ('all': every class)")
    p.add_argument("--per-class", action="store_true", help="also write <out>/<case>/segmentations/<class>.nii.gz")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    add_common_arguments(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from ..inference.ensemble import ensemble_folders
    from ..inference.instructions import read_instructions

    classes = list(args.largest_component or [])
    if args.postprocess_from:
        instructions = read_instructions(args.postprocess_from)
        classes = instructions.largest_component
        print(f"suprem_ensemble: post-processing from {args.postprocess_from}: largest component for "
              f"{', '.join(classes) or 'no class'}", file=sys.stderr)
    summary = ensemble_folders(args.input, args.output, largest_component=classes, per_class=args.per_class,
                               overwrite=args.overwrite, progress=not args.quiet)
    print(f"suprem_ensemble: {len(summary.cases)} case(s) written, {len(summary.skipped)} already done; report: "
          f"{summary.report_path}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_ensemble`` (average saved probabilities of several prediction folders) with ``argv`` (default
    ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_ensemble", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
