"""``suprem_evaluate``: Dice, IoU and normalised surface Dice of a prediction folder against references.

Wraps :func:`suprem_nn.evaluation.api.evaluate`; see documentation/evaluation.md.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..evaluation.api import evaluate
from ..evaluation.evaluate import CSV_FILE, SUMMARY_FILE, format_table
from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_evaluate`` (Dice, IoU and NSD of predictions against references); ``--debug`` and
    ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_evaluate",
        description="Compare predicted segmentations with reference segmentations (Dice, IoU, normalised surface "
                    "Dice at a tolerance in mm and at one voxel). Classes are matched by name using each side's "
                    f"label file. Writes {SUMMARY_FILE} and {CSV_FILE} (one row per case and class).")
    p.add_argument("-ref", "--reference", required=True, metavar="LABELS",
                   help="reference segmentations: a folder of <case>.nii.gz label maps, AbdomenAtlas "
                        "<case>/segmentations/<class>.nii.gz or <case>/combined_labels.nii.gz; or one case folder; "
                        "or one file (ref.nii.gz)")
    p.add_argument("-pred", "--prediction", required=True, metavar="PREDICTIONS",
                   help="predicted segmentations, same forms; cases are matched by name (two single files are "
                        "paired whatever their names)")
    p.add_argument("-l", "--labels", default=None,
                   help="classes of BOTH sides: 'liver=1,spleen=2' (name=1+2 for a region), or a dataset.json, "
                        "plans.json or run_report.json path. A label file found beside a side that contradicts it "
                        "is an error. Default: each side's own label file (run_report.json, plans.json, "
                        "dataset.json in or above its folder), classes matched by name")
    p.add_argument("--ref-labels", default=None, metavar="LABELS",
                   help="the reference's classes (same forms as -l), when it numbers them differently from the "
                        "prediction; overrides a label file found beside the reference (with a warning if they "
                        "disagree)")
    p.add_argument("--pred-labels", default=None, metavar="LABELS",
                   help="the prediction's classes (same forms as -l); classes are matched by name with the "
                        "reference's")
    p.add_argument("--nsd-tolerance-mm", type=float, default=1.0, metavar="MM",
                   help="surface distance tolerance of the normalised surface Dice, in mm (default: 1). NSD at one "
                        "voxel of the coarsest axis (nsd_1voxel) is reported as well: at 1 mm on 2.5 mm slices a "
                        "boundary one slice off counts as wrong")
    p.add_argument("-o", "--output-dir", default=None,
                   help=f"where {SUMMARY_FILE} and {CSV_FILE} go (default: the prediction folder; for one prediction "
                        f"file or case folder, <name>_{SUMMARY_FILE} and <name>_{CSV_FILE} beside it)")
    p.add_argument("-np", "--num-processes", type=int, default=1, metavar="N",
                   help="cases evaluated in parallel (default: 1)")
    add_common_arguments(p)
    return p


def _run(args: argparse.Namespace) -> int:
    summary = evaluate(args.reference, args.prediction, labels=args.labels, nsd_tolerance_mm=args.nsd_tolerance_mm,
                       output_dir=args.output_dir, num_processes=args.num_processes, ref_labels=args.ref_labels,
                       pred_labels=args.pred_labels)
    print(format_table(summary))
    # cases missing on either side were already reported by the library's warning log lines
    print(f"{summary['num_cases']} case(s) evaluated; wrote {summary['files']['summary']} and {summary['files']['csv']}")
    if summary.get("warnings"):  # logged on stderr as they arose; point at them where the results are read
        print(f"{len(summary['warnings'])} warning(s) on stderr, also under 'warnings' in {summary['files']['summary']}")
    failed = summary.get("failed_cases") or {}
    if failed:  # each failure once, here at the end where users look (the library only logs them at debug level)
        print(f"suprem_evaluate: {len(failed)} case(s) failed (listed under 'failed_cases' in "
              f"{summary['files']['summary']}):", file=sys.stderr)
        for message in failed.values():
            print(f"suprem_evaluate: failed: {message}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_evaluate`` (Dice, IoU and NSD of predictions against references) with ``argv`` (default
    ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead), or when any case failed to
    evaluate (each listed on stderr); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_evaluate", build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
