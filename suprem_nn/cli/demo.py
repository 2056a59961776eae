"""``suprem_demo``: generate a small synthetic CT dataset and run plan -> train -> predict -> evaluate on it."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .common import add_common_arguments, run_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_demo`` (the whole pipeline on generated phantom CTs); ``--debug`` and ``--quiet``
    included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_demo",
        description="The whole pipeline offline on generated abdominal CTs: suprem_plan_and_preprocess, "
                    "suprem_train (fold 0, a few minutes on a CPU), suprem_predict --preview and suprem_evaluate. "
                    "Prints a Dice table and where the preview and progress images are.")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ~/suprem_nn_data/demo); the demo sets "
                                                "SUPREM_RAW/PREPROCESSED/RESULTS to folders inside it")
    p.add_argument("--quick", action="store_true",
                   help="tiny phantoms and one short epoch: checks the installation in about a minute "
                        "(the Dice is meaningless)")
    p.add_argument("--minutes", type=float, metavar="N",
                   help="training budget in minutes (default 7); epochs are sized to it from a measured step "
                        "time. More minutes, higher Dice")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add_common_arguments(p)
    return p


def _body(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo
    from ..demo.run import report
    result = run_demo(args.out, quick=args.quick, minutes=args.minutes, device=args.device, quiet=args.quiet,
                      echo=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)))
    if args.quiet:
        print(report(result))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_demo`` (the whole pipeline on generated phantom CTs) with ``argv`` (default ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_demo", build_parser(), _body, argv)


if __name__ == "__main__":
    sys.exit(main())
