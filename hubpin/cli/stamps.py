"""When a command leaves a no-op sync stamp (see :mod:`hubpin.stamp`), and what it replays."""

from __future__ import annotations

from hubpin import stamp
from hubpin.cli.common import (
    _count,
    _size,
)
from hubpin.kinds import ArchivePin, KagglePin
from hubpin.lockfile import Lock, Pin
from hubpin.project import Project
from hubpin.sync import Outcome


def _stamp(
    argv: list[str],
    project: Project,
    pins: dict[str, Pin],
    outcomes: list[Outcome],
    at_start: str | None,
) -> None:
    """After a clean sync of local archives, let the next identical one skip pydantic."""
    if project.cache.local_root is None or any(
        not isinstance(p, ArchivePin) or isinstance(p, KagglePin) for p in pins.values()
    ):
        return  # the stamp stat-checks local tensorflow_hub entries only (not kagglehub's cache)
    if any(o.status not in ("fetched", "present", "adopted") for o in outcomes):
        return
    entries = [(key, pin.tree_digest) for pin in pins.values() for key in pin.cache_keys()]
    as_noop = [Outcome(o.alias, "present", "", o.size) for o in outcomes]
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
    for sync_argv in stamp.after_lock(argv):
        _stamp(sync_argv, project, pins, present, stamp.inputs(sync_argv, project))


def _report_lines(outcomes: list[Outcome], project: Project) -> list[tuple[bool, str]]:
    """A line per model and a summary, each with whether it reports a failure."""
    words = {
        "fetched": "fetched",
        "present": "already present",
        "adopted": "adopted (verified)",
        "checked": "checked",
        "failed": "FAILED",
    }
    lines = []
    for o in outcomes:
        extra = f" {_size(o.size)} in {o.seconds:.1f}s" if o.status == "fetched" else ""
        detail = f": {o.detail}" if o.detail else ""
        lines.append((o.status == "failed", f"{o.alias:<20} {words[o.status]}{extra}{detail}"))
    counts = {s: sum(o.status == s for o in outcomes) for s in words}
    summary = (
        f"synced {_count(len(outcomes), 'model')} into {project.settings.cache_root}: "
        f"{counts['fetched']} fetched, {counts['present'] + counts['adopted']} already present, "
        f"{counts['checked']} checked in place, {counts['failed']} failed"
    )
    return [*lines, (False, summary)]
