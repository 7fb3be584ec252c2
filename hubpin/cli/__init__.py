"""The ``hubpin`` command. It never imports TensorFlow.

A command's result goes to stdout, where a script reads it: ``verify``'s findings,
``status``, ``sync``'s outcome per model and summary, a dry run's plan, ``lock
--check``'s verdict, ``resolve``, ``env``, ``outdated``, every ``--json`` document.
Progress (bars, what ``lock`` pins), warnings, hints and errors (a model that failed to
sync or repair) go to stderr. ``-q`` silences progress, warnings and the lines ``sync``,
``verify`` and a dry run print per model (the exit code still tells). Every HubpinError ends in one
line and its exit code: 1 for a failed check or operation, 2 for bad input.
The package only parses arguments and renders results; one module per group of
commands, ``common`` for what they share.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

from hubpin.cli.parser import _versions, build_parser, parser_for
from hubpin.errors import INTERRUPTED, HubpinError, reader_gone

log = logging.getLogger("hubpin")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = parser_for(words)
    args = parser.parse_args(words)
    args.argv = words
    _setup_logging(args)
    if args.version:
        print("\n".join(_versions(getattr(args, "verbose", False))))
        return 0
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    if not gc.isenabled() and not _reads_only(args):  # turned off by hubpin.__main__
        gc.freeze()  # what start-up made lives to the end: collections need not traverse it
        gc.enable()
    try:
        return int(args.func(args) or 0)
    except HubpinError as exc:
        for line in str(exc).splitlines() or [""]:  # a file's mistakes, one line each
            print(f"hubpin: error: {line}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and reader_gone():
            raise  # stdout's reader left: hubpin.__main__ ends quietly
        print(f"hubpin: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _reads_only(args: argparse.Namespace) -> bool:
    """A command that reads files and the cache and exits, allocating little that could
    become garbage: it runs with the cyclic collector off."""
    return args.command in ("status", "resolve", "env") or (
        args.command == "lock" and getattr(args, "check", False)
    )


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
