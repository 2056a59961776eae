"""``suprem_download_weights [BACKBONE ... | all] [--to DIR] [--register FILE]``: wraps
:mod:`suprem_nn.networks.weights` (fetch the released SuPreM files ahead of offline use, or place one obtained
elsewhere after the same checks)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..errors import SupremError
from ..networks.backbones import released_backbones
from .common import add_common_arguments, run_command

BACKBONES = tuple(released_backbones())  # the backbones with released SuPreM weights


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``suprem_download_weights`` (download or register the released SuPreM weights);
    ``--debug`` and ``--quiet`` included.
    """
    p = argparse.ArgumentParser(
        prog="suprem_download_weights",
        description="Download the released SuPreM weights into the weights folder (default $SUPREM_WEIGHTS or "
                    "~/suprem_nn_data/weights), checking each file before it gets its final name; or register a "
                    "file obtained elsewhere. Mirrors: SUPREM_WEIGHTS_URL (base URL) or HF_ENDPOINT.")
    p.add_argument("backbones", nargs="*", metavar="BACKBONE",
                   help=f"{', '.join(BACKBONES)} or all (with --register: the family the file must be)")
    p.add_argument("--to", metavar="DIR", help="put the files here instead of the weights folder")
    p.add_argument("--register", metavar="FILE",
                   help="check FILE (a released SuPreM .pth copied by hand) and place it under its released name")
    add_common_arguments(p)
    return p


def _run(args: argparse.Namespace) -> int:
    from ..networks.weights import download_weights, register_weights, weights_folder

    unknown = [b for b in args.backbones if b not in (*BACKBONES, "all")]
    if unknown:
        raise SupremError(f"unknown backbone {unknown[0]!r}; choose from {', '.join(BACKBONES)} or all")
    names = list(BACKBONES) if "all" in args.backbones else list(dict.fromkeys(args.backbones))
    if args.register:
        if len(names) > 1:
            raise SupremError("--register takes one file: name at most one backbone (the family it must be)")
        path = register_weights(args.register, names[0] if names else None, folder=args.to)
        print(f"registered: {path}")
        return 0
    if not names:
        raise SupremError(f"name the backbones to download ({', '.join(BACKBONES)} or all), or --register FILE")
    for name in names:
        path = download_weights(name, args.to, progress=not args.quiet, verify_existing=True)
        print(f"{name}: {path} (verified)")
    if args.to:
        print(f"copy them into the weights folder of the machine that uses them ($SUPREM_WEIGHTS, default "
              f"~/suprem_nn_data/weights; here {weights_folder()}), or place each there with "
              f"`suprem_download_weights --register FILE`")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``suprem_download_weights`` (download or register the released SuPreM weights) with ``argv`` (default
    ``sys.argv[1:]``).

    Exit codes: 0 on success; 1 on a user error (:class:`~suprem_nn.errors.SupremError`) or ``OSError``,
    reported as one line on stderr (with ``--debug`` the exception propagates instead); 130 when interrupted with
    Ctrl-C. Bad arguments make argparse exit with code 2 (``SystemExit``) before anything runs.
    """
    return run_command("suprem_download_weights", build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
