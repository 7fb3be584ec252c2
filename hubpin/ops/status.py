"""``hubpin status`` and ``hubpin resolve`` as functions: where each pinned model is read
from, and whether the cache holds it as the lock pins it (stat checks, no network)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubpin.errors import NotSyncedError
from hubpin.kinds import ArchivePin, FolderPin, GcsPin, HfPin
from hubpin.lockfile import Pin, differences
from hubpin.ops.common import select
from hubpin.project import Project


@dataclass
class ModelStatus:
    alias: str
    format: str
    kind: str
    size: int
    state: str  # "synced", "local folder", or the first problem found
    path: str


@dataclass
class StatusReport:
    lock: Path
    lock_state: str  # "up to date", "stale: …", "missing manifest"
    cache_dir: str
    models: list[ModelStatus] = field(default_factory=list)
    cache_chosen: bool = (
        False  # set on purpose (flag, TFHUB_CACHE_DIR, hubpin.toml), not the default
    )

    @property
    def cache_under_temp(self) -> bool:
        """Whether the default cache sits where temp cleaners may empty it (one chosen on
        purpose, say a tmpfs for a throw-away job, is the user's call)."""
        if self.cache_chosen or "://" in self.cache_dir:
            return False
        try:
            tmp = Path(tempfile.gettempdir()).resolve()
            return Path(self.cache_dir).resolve().is_relative_to(tmp)
        except (OSError, ValueError):
            return False

    def doc(self) -> dict[str, Any]:
        return {
            "lock": str(self.lock),
            "lock_state": self.lock_state,
            "cache_dir": self.cache_dir,
            "models": [asdict(m) for m in self.models],
        }


def status(project: Project) -> StatusReport:
    lock = project.read_lock()
    lock_state = "missing manifest"
    if project.manifest_path.exists():
        problems = differences(lock, project.manifest, project.settings)
        lock_state = "up to date" if not problems else "stale: " + "; ".join(problems)
    report = StatusReport(project.lock_path, lock_state, project.settings.cache_root)
    report.cache_chosen = project.settings.cache_dir is not None
    for alias, pin in sorted(lock.models.items()):
        report.models.append(
            ModelStatus(
                alias,
                pin.format.value,
                pin.kind.value,
                pin.unpacked_size,
                state(project, pin),
                where(project, pin),
            )
        )
    return report


def resolve(project: Project, alias: str) -> str:
    """The path (or gs:// location) of a pinned model; NotSyncedError when not synced."""
    pin = select(project.read_lock(), [alias], project.lock_path)[alias]
    from hubpin import hfsync  # (it imports the fetchers; status reads the cache only)

    if isinstance(pin, HfPin) and hfsync.state(pin) != "synced":
        raise NotSyncedError(f"{alias}: {hfsync.state(pin)}; run: hubpin sync")
    if isinstance(pin, ArchivePin):
        problems = project.cache.quick_check(pin.cache_key, pin.tree_digest)
        if problems:
            raise NotSyncedError(
                f"{alias}: {problems[0]} in {project.cache.location}; run: hubpin sync"
            )
    return where(project, pin)


def state(project: Project, pin: Pin) -> str:
    if isinstance(pin, HfPin):
        from hubpin import hfsync

        return hfsync.state(pin)
    if isinstance(pin, GcsPin):
        return "remote (gs://, read in place)"
    if isinstance(pin, FolderPin):
        return "local folder" if pin.folder(project.root).is_dir() else "folder missing"
    assert isinstance(pin, ArchivePin)  # the kinds that are neither are read in place
    problems = project.cache.quick_check(pin.cache_key, pin.tree_digest)
    return "synced" if not problems else problems[0]


def where(project: Project, pin: Pin) -> str:
    """Where a pinned model is read: its cache entry, its folder, or its gs:// location."""
    if isinstance(pin, ArchivePin):
        return project.cache.entry(pin.cache_key)
    if isinstance(pin, FolderPin):
        return str(pin.folder(project.root))
    if isinstance(pin, HfPin):
        from hubpin import hfsync

        return hfsync.where(pin)
    assert isinstance(pin, GcsPin)
    return pin.location
