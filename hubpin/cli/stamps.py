"""What a no-op sync stamp (see :mod:`hubpin.stamp`) replays: the report of a sync that
found every model present. Which syncs leave one is :func:`hubpin.ops.sync.stamp_entries`'s."""

from __future__ import annotations

from hubpin import stamp
from hubpin.cli.common import _count, _size
from hubpin.lockfile import Lock
from hubpin.ops.sync import SyncResult, stamp_entries
from hubpin.plan import Outcome, Plan
from hubpin.project import Project


def _stamp(argv: list[str], project: Project, result: SyncResult, at_start: str | None) -> None:
    """After a clean sync of local archives, let the next identical one skip pydantic."""
    entries = stamp_entries(project, result)
    if entries is None or result.outcomes is None:
        return
    as_noop = [Outcome(o.alias, "present", "", o.size) for o in result.outcomes]
    output = (
        ""
        if "-q" in argv or "--quiet" in argv
        else "".join(f"{line}\n" for _, line in _report_lines(as_noop, project))
    )
    stamp.write(at_start, argv, project, entries, output)


def _stamp_after_lock(project: Project, argv: list[str], lock: Lock, at_start: str | None) -> None:
    """A lock that filled the cache answers the plain syncs that follow it, as a sync would.

    Each stamp holds every entry of the lock, so its replay stat-checks them all:
    a model the lock could not publish sends that sync down the full path.
    """
    if at_start is None or stamp.sources_state(project) != at_start:
        return  # the manifest or settings changed while locking: the lock may be stale
    pins = dict(sorted(lock.models.items()))
    present = [Outcome(alias, "present", "", pin.unpacked_size) for alias, pin in pins.items()]
    result = SyncResult(Plan([]), pins, present)
    for sync_argv in stamp.after_lock(argv):
        _stamp(sync_argv, project, result, stamp.inputs(sync_argv, project))


_WORDS = {
    "fetched": "fetched",
    "present": "already present",
    "adopted": "adopted (verified)",
    "linked": "hard-linked",
    "checked": "checked",
    "failed": "FAILED",
}


def _report_lines(outcomes: list[Outcome], project: Project) -> list[tuple[bool, str]]:
    """A line per model and a summary, each with whether it reports a failure."""
    lines = []
    for o in outcomes:
        extra = f" {_size(o.size)} in {o.seconds:.1f}s" if o.status == "fetched" else ""
        detail = f": {o.detail}" if o.detail else ""
        lines.append((o.status == "failed", f"{o.alias:<20} {_WORDS[o.status]}{extra}{detail}"))
    counts = {s: sum(o.status == s for o in outcomes) for s in _WORDS}
    linked = f", {counts['linked']} hard-linked" if counts["linked"] else ""
    summary = (
        f"synced {_count(len(outcomes), 'model')} into {project.settings.cache_root}: "
        f"{counts['fetched']} fetched{linked}, "
        f"{counts['present'] + counts['adopted']} already present, "
        f"{counts['checked']} checked in place, {counts['failed']} failed"
    )
    return [*lines, (False, summary)]
