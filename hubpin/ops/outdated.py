"""``hubpin outdated`` as a function: each pin's locked version beside the one its host
calls current (Kaggle), or the commit its revision names now (Hugging Face); nothing is
downloaded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hubpin import hfsync
from hubpin.errors import HubpinError
from hubpin.kaggle import configured
from hubpin.kinds import HfPin, KagglePin
from hubpin.ops.common import open_sources
from hubpin.project import Project
from hubpin.sources import Sources


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
    """Ask Kaggle for each pinned model's current version."""
    lock = project.read_lock()
    report = OutdatedReport(str(project.lock_path))
    with open_sources(project) as sources:
        for alias, pin in sorted(lock.models.items()):
            row = Version(alias, pin.handle)
            report.models.append(row)
            if isinstance(pin, HfPin):
                _hf_row(row, pin, sources)
                continue
            if not isinstance(pin, KagglePin):
                row.note = "not hosted on Kaggle: its host cannot tell"
                continue
            handle = configured(pin.handle, project.settings.kaggle_endpoint)
            assert handle is not None  # a Kaggle pin's handle (else sources.location_of raises)
            row.locked = pin.kaggle_version
            try:
                row.current = sources.kaggle.current_version(handle)
            except HubpinError as exc:
                row.state, row.note = "failed", str(exc)
                continue
            if row.current <= pin.kaggle_version:  # type: ignore[operator]
                row.state = "current"
            elif handle.version is None:
                row.state, row.note = "behind", f"run: hubpin lock --upgrade {alias}"
            else:
                row.state = "behind"
                row.note = f"the manifest pins version {handle.version}; edit its handle"
    return report


def _hf_row(row: Version, pin: HfPin, sources: Sources) -> None:
    """The commit the pinned revision (a branch that moves, or a tag) names now."""
    locked = pin.huggingface.commit
    row.locked = locked[:12]
    try:
        current = hfsync.current_commit(pin, sources)
    except HubpinError as exc:
        row.state, row.note = "failed", str(exc)
        return
    row.current = current[:12]
    if current == locked:
        row.state = "current"
    else:
        row.state = "behind"
        row.note = f"{pin.huggingface.revision} moved; run: hubpin lock --upgrade {row.alias}"
