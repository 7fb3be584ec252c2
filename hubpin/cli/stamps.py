"""What a stamp (see :mod:`hubpin.stamp`) replays: the report of a sync that found every
model present (which syncs leave one is :func:`hubpin.ops.sync.stamp_entries`'s), a passing
``lock --check``, a ``status`` report."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hubpin import stamp
from hubpin.cli.common import _count, _size
from hubpin.handles import local_path
from hubpin.kerashub import is_preset_handle

if TYPE_CHECKING:  # `status` and `lock --check` stamp too: they never import the syncer
    from hubpin.lockfile import Lock
    from hubpin.ops.status import StatusReport
    from hubpin.ops.sync import SyncResult
    from hubpin.plan import Outcome
    from hubpin.project import Project


def _stamp(argv: list[str], project: Project, result: SyncResult, at_start: str | None) -> None:
    """After a clean sync of local archives, let the next identical one skip pydantic."""
    from hubpin.ops.sync import stamp_entries
    from hubpin.plan import Outcome

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
    from hubpin.ops.sync import SyncResult
    from hubpin.plan import Outcome, Plan

    pins = dict(sorted(lock.models.items()))
    present = [Outcome(alias, "present", "", pin.unpacked_size) for alias, pin in pins.items()]
    result = SyncResult(Plan([]), pins, present)
    for sync_argv in stamp.after_lock(argv):
        _stamp(sync_argv, project, result, stamp.inputs(sync_argv, project))


def _stamp_check(
    argv: list[str], project: Project, lock: Lock, at_start: str | None, output: str
) -> None:
    """A passing ``lock --check`` answers the next identical one when it depended on nothing
    but the stamp's inputs: no handle read from this machine's files (a path, ``file://``:
    the kind and location are recomputed from what is there) and no ``keras-hub:`` preset
    (mapped by whichever keras_hub is installed)."""
    for pin in lock.models.values():
        for handle in pin.handles():
            if local_path(handle, project.root) is not None or is_preset_handle(handle):
                return
    stamp.write(at_start, argv, project, [], output)


_ARCHIVE_FIELDS = {"kind", "cache_key", "tree_digest", "kaggle_version"}


def _stamp_status(
    argv: list[str], project: Project, report: StatusReport, at_start: str | None
) -> None:
    """A ``status`` of archives in a local cache answers the next identical one: its report,
    whose states the replay checks again, entry by entry (:func:`hubpin.stamp.replay`)."""
    if report.pinned is None:
        return
    # What archives_of reads of each pin, by the lock's serializer (built when the lock was
    # read; a pin's own is built on first use, ~1.4 ms)
    fields = {"models": {"__all__": _ARCHIVE_FIELDS}}
    dumped = report.pinned.model_dump(mode="json", include=fields)["models"]
    pins, root = stamp.archives_of(dumped), stamp.cache_root(project)
    if pins is None or root is None or report.cache_dir != str(root):
        return
    if sorted(pins) != [m.alias for m in report.models]:
        return
    models = []
    for m in report.models:
        key, digest = pins[m.alias]
        if m.path != f"{root}{os.sep}{key}":
            return  # not the entry the replay would check
        row = {k: v for k, v in m.row().items() if k != "state"}
        models.append(row | {"cache_key": key, "tree_digest": digest})
    doc = report.head() | {"cache_chosen": report.cache_chosen, "models": models}
    stamp.write(at_start, argv, project, [], "", report=doc)


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
