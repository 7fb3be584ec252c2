"""A sync plan: what ``hubpin sync`` does per model, decided once, before anything is written.

:meth:`hubpin.sync.Syncer.plan` builds a :class:`Plan` from the lock and the
cache; ``sync --dry-run`` prints it; :meth:`hubpin.sync.Syncer.execute` carries
out exactly its steps and returns one :class:`Outcome` per step, which
``sync --json`` prints beside the plan. No other code decides what a sync does:
the no-op stamp (:mod:`hubpin.stamp`) only replays a clean sync whose every
entry still passes the stat check that makes a step ``keep``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hubpin.errors import HubpinError

if TYPE_CHECKING:
    from hubpin.kinds import Pin


class Action(str, enum.Enum):
    """What a step does; the order is the dry run's order of totals."""

    DOWNLOAD = "download"  # not in the cache: fetch, verify, publish
    REPLACE = "replace"  # a damaged entry: fetch, verify, swap in
    ADOPT = "adopt"  # an entry without hubpin's record that matches the lock: record it
    LINK = "link"  # present (or another step's entry): hard-link into the keys that lack it
    LOCK = "lock"  # (dry run with a stale lock) pinned and downloaded while locking
    KEEP = "keep"  # nothing to do
    CHECK = "check"  # a folder or gs:// model, read in place: checked
    FAIL = "fail"  # would fail: the step carries the error the sync reports


WORDS = {  # the dry run's summary, per action
    Action.DOWNLOAD: "to download",
    Action.REPLACE: "to replace",
    Action.ADOPT: "to adopt",
    Action.LINK: "to hard-link",
    Action.LOCK: "to pin and download while locking",
    Action.KEEP: "left as they are",
    Action.CHECK: "checked in place",
    Action.FAIL: "that would fail",
}


@dataclass(frozen=True)
class Target:
    """A place a step fills besides its pin's own entry, by hard links from that entry.

    ``key`` is a tensorflow_hub cache key (another handle of the same model), or
    None for kagglehub's cache (the pinned Kaggle version).
    """

    handle: str
    key: str | None = None

    @property
    def claim(self) -> str:
        """What two steps must not both fill: a cache key, or one kagglehub version."""
        return self.key if self.key is not None else f"kagglehub:{self.handle}"

    @property
    def label(self) -> str:
        return self.handle if self.key is not None else "kagglehub's cache"


@dataclass(frozen=True)
class Step:
    """What a sync does for one model, found without writing or downloading."""

    alias: str
    action: Action
    size: int | None  # unpacked bytes of the model (None: not known before locking)
    download: int | None = 0  # bytes the step downloads (None: not known)
    reason: str = ""
    pin: Pin | None = field(default=None, repr=False, compare=False)
    links: tuple[Target, ...] = ()  # filled from the entry once it is in place
    source: str | None = None  # LINK of a missing entry: the alias whose entry it links from
    shared: bool = False  # ...and that entry is this one's own key (same handle)
    damage: tuple[str, ...] = ()  # why the entry is not usable (REPLACE)
    error: HubpinError | None = field(default=None, repr=False, compare=False)  # FAIL
    found: Any = field(default=None, repr=False, compare=False)  # ADOPT: what planning hashed

    def row(self) -> dict[str, Any]:
        """The step as ``sync --dry-run --json`` prints it."""
        return {
            "alias": self.alias,
            "action": self.action.value,
            "size": self.size,
            "download_size": self.download,
            "reason": self.reason,
        }


@dataclass
class Outcome:
    """What executing one step did."""

    alias: str
    status: str  # fetched | present | adopted | linked | checked | failed
    detail: str = ""
    size: int = 0
    seconds: float = 0.0
    error: HubpinError | None = None

    def row(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "exit_code": self.error.exit_code if self.error else 0,
        }


@dataclass(frozen=True)
class LockFirst:
    """A stale lock: why, and what locking pins and drops before the sync (a dry run: would)."""

    reasons: list[str]
    pin: list[str]
    drop: list[str]
    why: dict[str, str] = field(default_factory=dict, compare=False)  # alias → why it is pinned

    def row(self) -> dict[str, Any]:
        return {"reasons": self.reasons, "pin": self.pin, "drop": self.drop}


@dataclass
class Plan:
    """Every step of one sync, by alias, in the order they are reported."""

    steps: list[Step]
    lock_first: LockFirst | None = None

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {"models": len(self.steps)}
        totals |= {a.value: sum(s.action is a for s in self.steps) for a in Action}
        totals["download_size"] = sum(s.download or 0 for s in self.steps)
        totals["write_size"] = sum(
            s.size or 0 for s in self.steps if s.action in (Action.DOWNLOAD, Action.REPLACE)
        )
        return totals

    @property
    def to_download(self) -> int:
        return sum(s.download or 0 for s in self.steps)
