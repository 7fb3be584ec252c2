"""``hubpin completion bash|zsh|fish``: a completion script generated from the parser itself.

Generated (by shtab) rather than written by hand, so every command and flag the parser
knows is completed, and a new one needs no second edit.
"""

from __future__ import annotations

import argparse
import sys

SHELLS = ("bash", "zsh", "fish")


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    sys.stdout.write(shtab.complete(args.parser, shell=args.shell))
    return 0
