"""``suprem_find_best_configuration DATASET``: wraps :func:`suprem_nn.evaluation.selection.find_best_configuration`.

See documentation/choosing_a_configuration.md.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_find_best_configuration`` (choose the best plan or ensemble by cross-validation
    Dice); ``--debug`` and ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_find_best_configuration",
        description="Compare the dataset's trained plans (and ensembles of pairs) by cross-validation Dice on their "
                    "out-of-fold predictions, choose the best, decide per class whether keeping the largest "
                    "connected component helps, and write <results>/<dataset>/inference_instructions.json with a "
                    "report (cv_report.md, cv_report.csv, cv_dice_by_configuration.png). suprem_predict -d DATASET "
                    "then uses the choice.")
    p.add_argument("dataset", help="dataset name (Dataset101_X) or numeric id, under SUPREM_RESULTS")
    p.add_argument("-p", "--plans", nargs="+", metavar="PLAN",
                   help="plans to compare (default: every trained plan of the dataset)")
    p.add_argument("-f", "--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], metavar="K",
                   help="folds whose validation cases are pooled (default: 0 1 2 3 4)")
    add_common_arguments(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from ..evaluation.selection import find_best_configuration
    from ..evaluation.selection_report import columns, write_selection

    sel = find_best_configuration(args.dataset, args.plans, args.folds, progress=not args.quiet)
    paths = write_selection(sel)
    width = max(len(c[0]) for c in columns(sel))
    print(f"CV Dice (mean over {len(sel.class_names)} classes, {len(sel.plans[0].cases)} out-of-fold cases, "
          f"folds {','.join(map(str, sel.folds))}):")
    for name, _, mean in columns(sel):
        print(f"  {name.ljust(width)}  {mean:.4f}")
    for s in sel.skipped:
        print(f"  {s['members'][0]} + {s['members'][1]}: {s['reason']}")
    lcc = sel.largest_component
    print(f"chosen: {sel.chosen.name}; keep the largest component for: {', '.join(lcc) if lcc else 'no class'}")
    print(f"wrote {paths['instructions']}")
    print(f"report: {paths['markdown']} (table), {paths['csv']}, {paths['chart']}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_find_best_configuration`` (choose the best plan or ensemble by cross-validation Dice) with ``argv``
    (default ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_find_best_configuration", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
