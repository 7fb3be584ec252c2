"""What every command shares: the project, its sources, alias selection, output helpers."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hubpin.errors import (
    InputError,
    unknown_alias,
)
from hubpin.lockfile import Lock, Pin
from hubpin.owners import register
from hubpin.project import Project
from hubpin.sources import Sources
from hubpin.sync import Outcome, Syncer
from hubpin.transport import Transport


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cache_dir": getattr(args, "cache_dir", None),
        "format": getattr(args, "load_format", None),
        "jobs": getattr(args, "jobs", None),
    }


def _register(project: Project, lock: Lock, outcomes: list[Outcome] | None = None) -> None:
    """Note in the cache that this lock uses it, so other projects' prune keeps its entries
    (once something of it is there: a sync that failed throughout leaves the cache as it was)."""
    if outcomes is not None and all(o.status == "failed" for o in outcomes):
        return
    keys = {k for p in lock.models.values() for k in p.cache_keys()}
    if keys:
        register(project.cache, project.lock_path, keys)


def _project(args: argparse.Namespace, need_manifest: bool = True) -> Project:
    return Project.discover(
        getattr(args, "manifest", None),
        getattr(args, "lock", None),
        _overrides(args),
        need_manifest,
    )


@contextlib.contextmanager
def _sources(project: Project, bundle: str | None = None) -> Iterator[Sources]:
    """Where this command reads archives from (a bundle, else mirrors and hosts)."""
    transport = Transport(project.settings)
    try:
        yield Sources(project.settings, transport, project.root, bundle)
    finally:
        transport.close()


def _syncer(project: Project, sources: Sources, offline: bool, full_verify: bool) -> Syncer:
    return Syncer(project.cache, project.settings, sources, project.root, offline, full_verify)


def _select(lock: Lock, aliases: Sequence[str], lock_path: Path) -> dict[str, Pin]:
    _known(aliases, lock.models, lock_path)
    return {a: lock.models[a] for a in aliases} if aliases else dict(lock.models)


def _known(aliases: Sequence[str], models: Iterable[str], where: Path) -> None:
    for alias in aliases:
        if alias not in models:
            error = unknown_alias(
                f"{where}: no model with alias {alias!r}",
                alias,
                models,
                f"known: {', '.join(sorted(models)) or 'none'}",
            )
            error.exit_code = 2  # on the command line, an unknown alias is bad usage
            raise error


def _json_needs_dry_run(args: argparse.Namespace) -> None:
    if args.json and not args.dry_run:
        raise InputError(f"--json goes with --dry-run; run: hubpin {args.command} --dry-run --json")


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
