"""``hubpin status`` and ``hubpin resolve`` as functions: where each pinned model is read
from, and whether the cache holds it as the lock pins it (stat checks, no network)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubpin.ops.common import select

if TYPE_CHECKING:  # the report serves the stamp's replay (hubpin.stamp), without pydantic
    from hubpin.lockfile import Lock, Pin
    from hubpin.project import Project


@dataclass
class ModelStatus:
    alias: str
    format: str
    kind: str
    size: int
    state: str  # "synced", "local folder", or the first problem found
    path: str

    def row(self) -> dict[str, Any]:
        """Its fields (``asdict`` copies each deeply: a tenth of a 2,000-model status, profiled)."""
        return {name: getattr(self, name) for name in _ROW}


_ROW = tuple(f.name for f in fields(ModelStatus))  # ``fields()`` per row: 2,000 calls


@dataclass
class StatusReport:
    lock: Path
    lock_state: str  # "up to date", "stale: …", "missing manifest"
    cache_dir: str
    models: list[ModelStatus] = field(default_factory=list)
    cache_chosen: bool = (
        False  # set on purpose (flag, TFHUB_CACHE_DIR, hubpin.toml), not the default
    )
    pinned: Lock | None = None  # what it was made from (for a stamp)

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

    def head(self) -> dict[str, Any]:
        """:meth:`doc` but the models."""
        return {"lock": str(self.lock), "lock_state": self.lock_state, "cache_dir": self.cache_dir}

    def doc(self) -> dict[str, Any]:
        return self.head() | {"models": [m.row() for m in self.models]}


def status(project: Project) -> StatusReport:
    from hubpin.lockfile import differences

    lock = project.read_lock()
    lock_state = "missing manifest"
    if project.manifest_path.exists():
        problems = differences(lock, project.manifest, project.settings)
        lock_state = "up to date" if not problems else "stale: " + "; ".join(problems)
    report = StatusReport(project.lock_path, lock_state, project.settings.cache_root)
    report.cache_chosen = project.settings.cache_dir is not None
    report.pinned = lock
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


def resolve(project: Project, alias: str, *, verify: bool = False) -> str:
    """The path (or gs:// location) of a pinned model, checked (re-hashed with ``verify``):
    what ``hubpin resolve`` prints and ``hubpin.resolve`` returns. NotSyncedError or
    DamagedEntryError naming the alias when it is not there as the lock pins it."""
    pin = select(project.read_lock(), [alias], project.lock_path, project)[alias]
    return resolve_pin(project, alias, pin, verify)


def resolve_pin(project: Project, alias: str, pin: Pin, verify: bool = False) -> str:
    """:func:`resolve` for a pin already read (the runtime holds its lock)."""
    from hubpin.handlers import handler

    return handler(pin).resolve(project, alias, pin, verify)


def state(project: Project, pin: Pin) -> str:
    from hubpin.handlers import handler

    return handler(pin).state(project, pin)


def where(project: Project, pin: Pin) -> str:
    """Where a pinned model is read: its cache entry, its folder, or its gs:// location."""
    from hubpin.handlers import handler

    return handler(pin).where(project, pin)
