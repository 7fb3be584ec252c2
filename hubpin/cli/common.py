"""What every command shares: the project, its sources, alias selection, output helpers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hubpin.errors import InputError
from hubpin.ops.common import known as _known
from hubpin.ops.common import open_sources as _sources
from hubpin.ops.common import register_use as _register
from hubpin.ops.common import select as _select
from hubpin.project import Project


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cache_dir": getattr(args, "cache_dir", None),
        "format": getattr(args, "load_format", None),
        "jobs": getattr(args, "jobs", None),
    }


def _project(args: argparse.Namespace, need_manifest: bool = True) -> Project:
    return Project.discover(
        getattr(args, "manifest", None),
        getattr(args, "lock", None),
        _overrides(args),
        need_manifest,
    )


def _json_needs_dry_run(args: argparse.Namespace) -> None:
    if args.json and not args.dry_run:
        raise InputError(f"--json goes with --dry-run; run: hubpin {args.command} --dry-run --json")


def _say(args: argparse.Namespace, message: str) -> None:
    """Progress and diagnostics: stderr, silenced by ``-q``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def _result(args: argparse.Namespace, message: str) -> None:
    """A command's result (what a script reads): stdout, silenced by ``-q``."""
    if not getattr(args, "quiet", False):
        print(message)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


__all__ = ["_known", "_register", "_select", "_sources"]
