"""``hubpin lock`` (and the locking a plain ``hubpin sync`` does first)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from hubpin import stamp
from hubpin.cli.common import (
    _count,
    _json_needs_dry_run,
    _known,
    _project,
    _register,
    _result,
    _say,
    _size,
    _sources,
)
from hubpin.cli.render import print_json, print_table
from hubpin.errors import (
    InputError,
    StaleLockError,
)
from hubpin.lockfile import Lock, Pin, mismatches
from hubpin.project import Project

# Locking fetches: its modules are imported when a lock is made, so `lock --check` (every
# CI run, the pre-commit hook) pays for reading the lock and the manifest only.
if TYPE_CHECKING:
    from hubpin.sources import Sources


def cmd_lock(args: argparse.Namespace) -> int:
    project = _project(args)
    manifest = project.manifest
    _known(args.aliases, manifest.models, project.manifest_path)
    _json_needs_dry_run(args)
    if args.dry_run:
        from hubpin.locking import lock_plan

        return _print_lock_plan(args, project, lock_plan(project, set(args.aliases)))
    if args.check:
        at_start = stamp.inputs(args.argv, project)
        lock = project.read_lock(checked=False)
        problems = mismatches(lock, manifest, project.root, project.settings)
        if problems:
            raise StaleLockError(
                f"{project.lock_path.name} is stale: {'; '.join(problems)}; run: hubpin lock"
            )
        said = f"{project.lock_path.name} is up to date ({_count(len(lock.models), 'model')})"
        _result(args, said)
        from hubpin.cli.stamps import _stamp_check

        _stamp_check(
            args.argv, project, lock, at_start, "" if getattr(args, "quiet", False) else f"{said}\n"
        )
        return 0
    fill = project.settings.lock_fills_cache if args.fill is None else args.fill
    at_start = stamp.sources_state(project)
    with _sources(project) as sources:
        lock, changed = _lock(
            args,
            project,
            sources,
            set(args.aliases),
            fill=fill,
            must_fill=False,
            upgrade=args.upgrade,
        )
    if lock is not None and fill:
        from hubpin.cli.stamps import _stamp_after_lock

        _register(project, lock)
        _stamp_after_lock(project, args.argv, lock, at_start)
    return 0 if changed is not None else 1


def _lock(
    args: argparse.Namespace,
    project: Project,
    sources: Sources,
    force: set[str],
    *,
    fill: bool,
    must_fill: bool,
    upgrade: bool = False,
) -> tuple[Lock | None, bool | None]:
    """Run :func:`hubpin.locking.lock_project`, saying what it pins; (lock, changed) or (None, None)."""
    from hubpin.locking import lock_project

    done = lock_project(
        project,
        sources,
        force,
        fill_cache=fill,
        must_fill=must_fill,
        upgrade=upgrade,
        on_pinned=lambda alias, pin: _say(args, f"pinned {alias} → {_describe(pin)}"),
        on_failed=lambda exc: None,  # said below, once each
    )
    name = project.lock_path.name
    if len(done.failures) == 1:  # one line: the model's own message and exit code
        raise done.failures[0]
    if done.failures:
        for failure in done.failures:
            print(f"hubpin: error: {failure}", file=sys.stderr)
        _say(args, f"{name} not written: {len(done.failures)} of {done.pinned} models failed")
        if max(f.exit_code for f in done.failures) == 2:
            raise InputError(
                f"{len(done.failures)} model(s) could not be pinned; fix the manifest and run: hubpin lock"
            )
        return None, None
    assert done.lock is not None
    _say(
        args,
        f"{'wrote' if done.changed else 'unchanged'} {name}: {_count(len(done.lock.models), 'model')} "
        f"({done.pinned} pinned, {done.kept} kept)",
    )
    return done.lock, done.changed


_LOCK_ACTIONS = ("pin", "keep", "drop")


def _print_lock_plan(args: argparse.Namespace, project: Project, rows: list[dict[str, Any]]) -> int:
    totals = {action: sum(r["action"] == action for r in rows) for action in _LOCK_ACTIONS}
    if args.json:
        doc = {
            "command": "lock",
            "dry_run": True,
            "lock": str(project.lock_path),
            "models": rows,
            "totals": totals,
        }
        print_json(doc)
        return 0
    cells = [
        (r["alias"], r["action"], "?" if r["size"] is None else _size(r["size"]), r["reason"])
        for r in rows
    ]
    print_table(_LOCK_PLAN, cells, lambda line: _result(args, line))
    _result(
        args,
        f"dry run: {totals['pin']} to pin, {totals['keep']} kept, {totals['drop']} dropped; "
        f"{project.lock_path.name} not written",
    )
    return 0


_LOCK_PLAN = (("ALIAS", "<20"), ("ACTION", "<8"), ("SIZE", ">10"), ("REASON", ""))


def _describe(pin: Pin) -> str:
    return f"{pin.describe()} ({_count(pin.file_count, 'file')}, {_size(pin.unpacked_size)})"
