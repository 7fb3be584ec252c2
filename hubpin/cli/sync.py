"""``hubpin sync``: the stale-lock policy, the run or its dry-run plan, the report."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from hubpin import stamp
from hubpin.cli.common import (
    _count,
    _json_needs_dry_run,
    _known,
    _project,
    _register,
    _say,
    _select,
    _size,
    _sources,
    _syncer,
)
from hubpin.cli.lock import _lock
from hubpin.cli.stamps import _report_lines, _stamp
from hubpin.errors import StaleLockError
from hubpin.kinds import ArchivePin
from hubpin.lockfile import Lock, Pin, differences
from hubpin.locking import lock_plan
from hubpin.project import Project
from hubpin.sources import Bundle
from hubpin.sync import Outcome, Step, Syncer


def cmd_sync(args: argparse.Namespace) -> int:
    bundle = args.bundle
    if bundle is not None:
        args.offline = True  # archives come from the bundle alone: no upstream, no locking
    _json_needs_dry_run(args)
    project = _project(args, need_manifest=not args.frozen)
    at_start = stamp.inputs(args.argv, project)
    relock: dict[str, Any] | None = None  # --dry-run: the lock that would come first
    with _sources(project, bundle) as sources:
        if bundle is not None:
            Bundle(bundle).check(sources.transport)
        if args.frozen:
            lock = project.read_lock()
        else:
            lock = project.lock_or_none()
            manifest = project.manifest
            _known(args.aliases, manifest.models, project.manifest_path)
            problems = (
                differences(lock, manifest, project.settings)
                if lock
                else [f"{project.lock_path.name} does not exist"]
            )
            if problems and args.locked:
                raise StaleLockError(
                    f"{project.lock_path.name} does not match {project.manifest_path.name} "
                    f"and --locked was given: {'; '.join(problems)}; run: hubpin lock"
                )
            if problems and args.offline:
                raise StaleLockError(
                    f"{project.lock_path.name} is stale and --offline forbids locking: "
                    f"{'; '.join(problems)}; run: hubpin lock"
                )
            if problems and args.dry_run:
                relock = {"reasons": problems, "plan": lock_plan(project, set())}
            elif problems:
                lock, _ = _lock(args, project, sources, set(), fill=True, must_fill=True)
                if lock is None:
                    return 1
        pins = _select(lock, args.aliases, project.lock_path) if relock is None else {}
        if bundle is not None and lock is not None:
            Bundle(bundle).check_lock(sources.transport, lock, list(pins), project.lock_path.name)
        syncer = _syncer(project, sources, offline=args.offline, full_verify=args.verify)
        syncer.bundle = bundle
        if args.dry_run:
            return _print_sync_plan(args, project, syncer, lock, pins, relock)
        with _progress(args, project, pins) as bar:
            if bar is not None:
                syncer.on_bytes = bar.update
                syncer.on_done = lambda outcome: bar.set_postfix_str(
                    f"{outcome.alias} {outcome.status}", refresh=True
                )
            outcomes = syncer.run(pins, args.jobs or project.settings.jobs)
        _register(project, lock, outcomes)
    code = _report(args, outcomes, project)
    if code == 0:
        _stamp(args.argv, project, pins, outcomes, at_start)
    return code


_SYNC_ACTIONS = ("download", "replace", "adopt", "link", "lock", "keep", "check", "fail")


_SYNC_WORDS = {
    "download": "to download",
    "replace": "to replace",
    "adopt": "to adopt",
    "link": "to hard-link",
    "lock": "to pin and download while locking",
    "keep": "left as they are",
    "check": "checked in place",
    "fail": "that would fail",
}


def _print_sync_plan(
    args: argparse.Namespace,
    project: Project,
    syncer: Syncer,
    lock: Lock | None,
    pins: dict[str, Pin],
    relock: dict[str, Any] | None,
) -> int:
    """``sync --dry-run``: the plan per model from :meth:`Syncer.plan`, then the totals."""
    steps: list[Step] = []
    lock_first = None
    if relock is None:
        steps = [syncer.plan(alias, pin) for alias, pin in sorted(pins.items())]
    else:
        repin = {r["alias"]: r for r in relock["plan"] if r["action"] == "pin"}
        lock_first = {
            "reasons": relock["reasons"],
            "pin": sorted(repin),
            "drop": sorted(r["alias"] for r in relock["plan"] if r["action"] == "drop"),
        }
        for alias in sorted(args.aliases or project.manifest.models):
            if alias in repin:
                reason = f"pinned and downloaded while locking: {repin[alias]['reason']}"
                steps.append(Step(alias, "lock", None, None, reason))
            else:
                assert lock is not None
                steps.append(syncer.plan(alias, lock.models[alias]))
    rows = [
        {
            "alias": step.alias,
            "action": step.action,
            "size": step.size,
            "download_size": step.download,
            "reason": step.reason,
        }
        for step in steps
    ]
    totals: dict[str, int] = {"models": len(rows)}
    totals |= {action: sum(r["action"] == action for r in rows) for action in _SYNC_ACTIONS}
    totals["download_size"] = sum(r["download_size"] or 0 for r in rows)
    totals["write_size"] = sum(
        r["size"] or 0 for r in rows if r["action"] in ("download", "replace")
    )
    if args.json:
        doc = {
            "command": "sync",
            "dry_run": True,
            "lock": str(project.lock_path),
            "cache_dir": project.settings.cache_root,
            "lock_first": lock_first,
            "models": rows,
            "totals": totals,
        }
        print(json.dumps(doc, indent=2))
        return 0
    if lock_first is not None:
        pin = ", ".join(lock_first["pin"]) or "none"
        _say(
            args,
            f"would lock first ({'; '.join(lock_first['reasons'])}): would pin {pin} (network)"
            + (f", drop {', '.join(lock_first['drop'])}" if lock_first["drop"] else ""),
        )
    _say(args, f"{'ALIAS':<20} {'ACTION':<9} {'DOWNLOAD':>10} {'SIZE':>10}  REASON")
    for r in rows:
        download = (
            "?"
            if r["download_size"] is None
            else _size(r["download_size"])
            if r["download_size"]
            else "-"
        )
        size = "?" if r["size"] is None else _size(r["size"])
        _say(args, f"{r['alias']:<20} {r['action']:<9} {download:>10} {size:>10}  {r['reason']}")
    counts = [f"{totals[a]} {_SYNC_WORDS[a]}" for a in _SYNC_ACTIONS if totals[a]] or ["no models"]
    _say(
        args,
        f"dry run: {', '.join(counts)}; {_size(totals['download_size'])} to download, "
        f"{_size(totals['write_size'])} to unpack into {project.settings.cache_root}; nothing written",
    )
    return 0


def _report(args: argparse.Namespace, outcomes: list[Outcome], project: Project) -> int:
    for failed, line in _report_lines(outcomes, project):
        if failed:
            print(line, file=sys.stderr)
        else:
            _say(args, line)
    errors = [o.error for o in outcomes if o.error]
    return max((e.exit_code for e in errors), default=0)


@contextlib.contextmanager
def _progress(args: argparse.Namespace, project: Project, pins: dict[str, Pin]) -> Iterator[Any]:
    """A tqdm bar of the bytes still to fetch (on a terminal, or with --progress), else None."""
    show = getattr(args, "progress", None)
    if show is None:
        show = sys.stderr.isatty() and not getattr(args, "quiet", False)
    if not show:
        yield None
        return
    from tqdm import tqdm

    todo = [
        p
        for p in pins.values()
        if isinstance(p, ArchivePin) and project.cache.quick_check(p.cache_key, p.tree_digest)
    ]
    with tqdm(
        total=sum(p.archive_size for p in todo) or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"{_count(len(todo), 'model')} to fetch",
        file=sys.stderr,
        leave=False,
    ) as bar:
        yield bar
