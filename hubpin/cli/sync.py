"""``hubpin sync``: the request from the flags, then the plan, its outcomes or the report."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from hubpin import stamp
from hubpin.cli.common import _count, _project, _result, _size, _sources
from hubpin.cli.render import print_json, print_table
from hubpin.cli.stamps import _report_lines, _stamp
from hubpin.ops.sync import SyncRequest, SyncResult, sync
from hubpin.plan import WORDS, Action, Outcome, Plan
from hubpin.project import Project
from hubpin.sources import Sources
from hubpin.sync import Syncer


def cmd_sync(args: argparse.Namespace) -> int:
    bundle = args.bundle
    if bundle is not None:
        args.offline = True  # archives come from the bundle alone: no upstream, no locking
    project = _project(args, need_manifest=not args.frozen)
    at_start = stamp.inputs(args.argv, project)
    request = SyncRequest(
        aliases=args.aliases,
        locked=args.locked,
        frozen=args.frozen,
        offline=args.offline,
        verify=args.verify,
        bundle=bundle,
        jobs=args.jobs,
        dry_run=args.dry_run,
    )

    def relock(sources: Sources) -> Any:
        from hubpin.cli.lock import _lock  # a stale lock only: the pinning path

        return _lock(args, project, sources, set(), fill=True, must_fill=True)[0]

    with _sources(project, bundle) as sources:
        result = sync(project, sources, request, relock, lambda s, p: _progress(args, s, p))
    if result.lock_failed:
        return 1
    if args.dry_run:
        return _print_sync_plan(args, project, result.plan)
    assert result.outcomes is not None
    if args.json:
        for failed, line in _report_lines(result.outcomes, project):
            if failed:
                print(line, file=sys.stderr)
        print_json(_plan_doc(project, result))
        code = result.exit_code
    else:
        code = _report(args, result.outcomes, project)
    if code == 0:
        _stamp(args.argv, project, result, at_start)
    return code


def _plan_doc(project: Project, result: SyncResult) -> dict[str, Any]:
    """The plan (and each step's outcome) as ``sync --dry-run --json`` / ``sync --json`` print it."""
    plan = result.plan
    rows = [step.row() for step in plan.steps]
    totals: dict[str, Any] = plan.totals()
    if result.outcomes is not None:
        for row, outcome in zip(rows, result.outcomes, strict=True):
            row["outcome"] = outcome.row()
        totals["outcomes"] = {
            status: sum(o.status == status for o in result.outcomes)
            for status in ("fetched", "present", "adopted", "linked", "checked", "failed")
        }
    return {
        "command": "sync",
        "dry_run": result.outcomes is None,
        "lock": str(project.lock_path),
        "cache_dir": project.settings.cache_root,
        "lock_first": plan.lock_first.row() if plan.lock_first else None,
        "models": rows,
        "totals": totals,
    }


_PLAN = (
    ("ALIAS", "<20"),
    ("ACTION", "<9"),
    ("DOWNLOAD", ">10"),
    ("SIZE", ">10"),
    ("REASON", ""),
)


def _print_sync_plan(args: argparse.Namespace, project: Project, plan: Plan) -> int:
    """``sync --dry-run``: the plan per model from :meth:`Syncer.plan`, then the totals."""
    if args.json:
        print_json(_plan_doc(project, SyncResult(plan)))
        return 0
    lock_first = plan.lock_first
    if lock_first is not None:
        pin = ", ".join(lock_first.pin) or "none"
        _result(
            args,
            f"would lock first ({'; '.join(lock_first.reasons)}): would pin {pin} (network)"
            + (f", drop {', '.join(lock_first.drop)}" if lock_first.drop else ""),
        )
    cells = [
        (
            step.alias,
            step.action.value,
            "?" if step.download is None else _size(step.download) if step.download else "-",
            "?" if step.size is None else _size(step.size),
            step.reason,
        )
        for step in plan.steps
    ]
    print_table(_PLAN, cells, lambda line: _result(args, line))
    totals = plan.totals()
    counts = [f"{totals[a.value]} {WORDS[a]}" for a in Action if totals[a.value]] or ["no models"]
    _result(
        args,
        f"dry run: {', '.join(counts)}; {_size(totals['download_size'])} to download, "
        f"{_size(totals['write_size'])} to unpack into {project.settings.cache_root}; nothing written",
    )
    return 0


def _report(args: argparse.Namespace, outcomes: list[Outcome], project: Project) -> int:
    """Each model's outcome and the summary are the result (stdout); a model that failed is an
    error, said on stderr (with its reason) whatever ``-q`` says."""
    for failed, line in _report_lines(outcomes, project):
        if failed:
            print(line, file=sys.stderr)
        else:
            _result(args, line)
    errors = [o.error for o in outcomes if o.error]
    return max((e.exit_code for e in errors), default=0)


@contextlib.contextmanager
def _progress(args: argparse.Namespace, syncer: Syncer, plan: Plan) -> Iterator[Any]:
    """A tqdm bar of the bytes the plan downloads (on a terminal, or with --progress)."""
    show = getattr(args, "progress", None)
    if show is None:
        show = sys.stderr.isatty() and not getattr(args, "quiet", False)
    if not show:
        yield None
        return
    from tqdm import tqdm

    todo = [s for s in plan.steps if s.action in (Action.DOWNLOAD, Action.REPLACE)]
    with tqdm(
        total=plan.to_download or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"{_count(len(todo), 'model')} to fetch",
        file=sys.stderr,
        leave=False,
    ) as bar:
        syncer.on_bytes = bar.update
        syncer.on_done = lambda outcome: bar.set_postfix_str(
            f"{outcome.alias} {outcome.status}", refresh=True
        )
        yield bar
