"""``hubpin outdated`` as a function: each pin's locked version beside the one its host
calls current (Kaggle), or the commit its revision names now (Hugging Face); nothing is
downloaded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hubpin.handlers import handler
from hubpin.ops.common import open_sources
from hubpin.project import Project


@dataclass
class Version:
    alias: str
    handle: str
    locked: int | str | None = None  # a Kaggle version, or a Hugging Face commit (12 digits)
    current: int | str | None = None
    state: str = "unknown"  # current | behind | failed | unknown
    note: str | None = None

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        if self.note is None:
            del row["note"]
        return row


@dataclass
class OutdatedReport:
    lock: str
    models: list[Version] = field(default_factory=list)

    @property
    def behind(self) -> int:
        return sum(m.state == "behind" for m in self.models)

    @property
    def failed(self) -> int:
        return sum(m.state == "failed" for m in self.models)

    @property
    def exit_code(self) -> int:
        return 1 if self.behind or self.failed else 0

    def doc(self) -> dict[str, Any]:
        return {"lock": self.lock, "models": [m.row() for m in self.models]}


def outdated(project: Project) -> OutdatedReport:
    """Ask each pinned model's host for its current version (or commit)."""
    lock = project.read_lock()
    report = OutdatedReport(str(project.lock_path))
    with open_sources(project) as sources:
        for alias, pin in sorted(lock.models.items()):
            found = handler(pin).outdated(project, alias, pin, sources)
            report.models.append(Version(alias, pin.handle, **asdict(found)))
    return report
