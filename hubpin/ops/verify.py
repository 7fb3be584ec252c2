"""``hubpin verify [--repair]`` as a function: re-hash what the lock pins, re-fetch the damaged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hubpin.handlers import handler
from hubpin.ops.common import open_sources, register_use, select, syncer
from hubpin.plan import Outcome
from hubpin.project import Project


@dataclass
class Verified:
    """One model: what is damaged (empty: ok), and how its repair went when one was asked."""

    alias: str
    problems: list[str]
    repair: Outcome | None = None
    repairable: bool = True  # a sync can fetch it again (a model read in place it cannot)


@dataclass
class VerifyReport:
    cache_dir: str
    models: list[Verified] = field(default_factory=list)
    repair: bool = False  # a repair was asked for

    @property
    def damaged(self) -> list[Verified]:
        return [m for m in self.models if m.problems]

    @property
    def exit_code(self) -> int:
        if self.damaged and not self.repair:
            return 1
        failed = [m for m in self.models if m.repair is not None and m.repair.status == "failed"]
        return 1 if failed else 0


def verify(project: Project, aliases: Sequence[str] = (), repair: bool = False) -> VerifyReport:
    """Re-hash each cached model against hubpin's record and the lock (folders against the
    lock); with ``repair``, sync the damaged ones again (fetched and verified before
    publishing). Never touches the network unless repairing."""
    lock = project.read_lock()
    pins = select(lock, aliases, project.lock_path, project)
    report = VerifyReport(project.cache.location, repair=repair)
    with open_sources(project) as sources:
        runner = syncer(project, sources, offline=True, full_verify=True)
        for alias, pin in sorted(pins.items()):
            kind = handler(pin)
            report.models.append(
                Verified(alias, kind.verify(runner, alias, pin), None, kind.repairs)
            )
        damaged = {m.alias: m for m in report.damaged}
        if repair and damaged:
            runner.offline = False
            outcomes = runner.run({a: pins[a] for a in damaged}, project.settings.jobs)
            for outcome in outcomes:
                damaged[outcome.alias].repair = outcome
            register_use(project, lock, outcomes)
    return report
