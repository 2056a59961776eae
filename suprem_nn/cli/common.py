"""Shared command-line behaviour: one clear line for user errors, a traceback only with ``--debug``."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence

from ..errors import SupremError


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--debug`` (full tracebacks) and ``--quiet`` (warnings and errors only) flags every command takes."""
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--quiet", action="store_true", help="only print warnings and errors")


def run_command(name: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], Optional[int]],
                argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, run ``body(args)`` and turn user errors into one line on stderr and exit code 1.

    Parameters
    ----------
    name : str
        Command name, the prefix of the error lines (``"<name>: error: ..."``).
    parser : argparse.ArgumentParser
        The command's parser; its ``--quiet`` sets the log level to WARNING, ``--debug`` logs ``suprem_nn`` at DEBUG.
    body : callable
        ``body(args) -> int | None``; ``None`` counts as 0.
    argv : sequence of str, optional
        Arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        ``body``'s exit code; 1 after a :class:`~suprem_nn.errors.SupremError` or ``OSError``; 130 after Ctrl-C.

    Raises
    ------
    SupremError, OSError
        Only with ``--debug``, which lets them propagate with their traceback.
    SystemExit
        From argparse on bad arguments (code 2) or ``--help`` (code 0).
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    logging.getLogger("numexpr").setLevel(logging.WARNING)
    if getattr(args, "debug", False):  # our own debug records (e.g. the traceback of each failed case)
        logging.getLogger("suprem_nn").setLevel(logging.DEBUG)
    try:
        rc = body(args)
        return int(rc or 0)
    except SupremError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted; finished outputs are kept, re-run to continue", file=sys.stderr)
        return 130
    except OSError as exc:
        if getattr(args, "debug", False):
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{name}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
