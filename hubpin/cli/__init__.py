"""The ``hubpin`` command. It never imports TensorFlow.

Reports go to stderr (like uv and Cargo); what a script asks for (``status``,
``resolve``, ``env``, ``--json``) goes to stdout. Every HubpinError ends in one
line and its exit code: 1 for a failed check or operation, 2 for bad input.
The package only parses arguments and renders results; one module per group of
commands, ``common`` for what they share.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hubpin.cli.parser import _versions, build_parser
from hubpin.errors import INTERRUPTED, HubpinError

log = logging.getLogger("hubpin")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args)
    if args.version:
        print("\n".join(_versions(getattr(args, "verbose", False))))
        return 0
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except HubpinError as exc:
        for line in str(exc).splitlines() or [""]:  # a file's mistakes, one line each
            print(f"hubpin: error: {line}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"hubpin: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hubpin: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(
        logging.ERROR
        if getattr(args, "quiet", False)
        else logging.DEBUG
        if getattr(args, "verbose", False)
        else logging.WARNING
    )


__all__ = ["build_parser", "main"]
