"""``hubpin sync`` as a function: which lock to use (the stale-lock policy), locking first
when it is missing or stale, then the plan and its execution.

A plain sync locks first when the lock is missing or stale (like ``uv sync``);
``locked`` fails instead, naming what differs; ``frozen`` uses the lock without
reading the manifest; ``offline`` (and a bundle) never locks. How locking is
reported is the caller's: it passes ``relock``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hubpin.errors import NotSyncedError, StaleLockError
from hubpin.lockfile import Lock, Pin, mismatches
from hubpin.ops.common import known, register_use, select, syncer
from hubpin.plan import Action, LockFirst, Outcome, Plan, Step
from hubpin.project import Project
from hubpin.sources import Bundle, Sources
from hubpin.stamp import entries_of
from hubpin.sync import Syncer


@dataclass
class SyncRequest:
    """What ``hubpin sync`` was asked for (see its flags)."""

    aliases: Sequence[str] = ()
    locked: bool = False
    frozen: bool = False
    offline: bool = False
    verify: bool = False
    bundle: str | None = None
    jobs: int | None = None
    dry_run: bool = False


@dataclass
class SyncResult:
    """The plan, and (unless a dry run) one outcome per step; ``lock_failed``: nothing ran."""

    plan: Plan
    pins: dict[str, Pin] = field(default_factory=dict)
    outcomes: list[Outcome] | None = None
    lock_failed: bool = False

    @property
    def exit_code(self) -> int:
        if self.lock_failed:
            return 1
        errors = [o.error for o in self.outcomes or [] if o.error]
        return max((e.exit_code for e in errors), default=0)

    @property
    def clean(self) -> bool:
        """Every model ended in the cache (what the no-op stamp may replay)."""
        return self.outcomes is not None and all(
            o.status in ("fetched", "present", "adopted", "linked") for o in self.outcomes
        )


Relock = Callable[[Sources], "Lock | None"]  # lock the project (None: it failed, reported)
Watch = Callable[[Syncer, Plan], "contextlib.AbstractContextManager[object]"]


def sync(
    project: Project,
    sources: Sources,
    request: SyncRequest,
    relock: Relock,
    watch: Watch | None = None,
) -> SyncResult:
    """Choose the lock, plan the sync, and unless ``dry_run`` execute exactly that plan."""
    if request.bundle is not None:
        Bundle(request.bundle).check(sources.transport)
    offline = request.offline or request.bundle is not None
    lock_first: LockFirst | None = None
    lock: Lock | None
    if request.frozen:
        lock = project.read_lock()
    else:
        lock = project.lock_or_none(checked=False)  # one that does not hold is stale
        known(request.aliases, project.manifest.models, project.manifest_path)
        problems = stale(project, lock)
        if problems and request.locked:
            raise StaleLockError(
                f"{project.lock_path.name} does not match {project.manifest_path.name} "
                f"and --locked was given: {'; '.join(problems)}; run: hubpin lock"
            )
        if problems and offline:
            raise StaleLockError(
                f"{project.lock_path.name} is stale and --offline forbids locking: "
                f"{'; '.join(problems)}; run: hubpin lock"
            )
        if problems and request.dry_run:
            lock_first = _lock_first(project, problems)
        elif problems:
            old, lock = lock, relock(sources)
            if lock is None:
                return SyncResult(Plan([]), lock_failed=True)
            lock_first = _what_locking_did(problems, old, lock)
    runner = syncer(project, sources, offline=offline, full_verify=request.verify)
    runner.bundle = request.bundle
    if lock_first is not None and request.dry_run:
        return SyncResult(_plan_after_lock(project, runner, lock, lock_first, request.aliases))
    assert lock is not None
    pins = select(lock, request.aliases, project.lock_path)
    if request.bundle is not None:
        Bundle(request.bundle).check_lock(
            sources.transport, lock, list(pins), project.lock_path.name
        )
    plan = runner.plan(pins, request.jobs)
    plan.lock_first = lock_first
    if request.dry_run:
        return SyncResult(plan, pins)
    with watch(runner, plan) if watch else contextlib.nullcontext():
        outcomes = runner.execute(plan, request.jobs or project.settings.jobs)
    register_use(project, lock, outcomes)
    return SyncResult(plan, pins, _gone_meanwhile(project, pins, outcomes))


def _gone_meanwhile(
    project: Project, pins: dict[str, Pin], outcomes: list[Outcome]
) -> list[Outcome]:
    """The outcomes, with a model whose entry is gone now (after this lock was noted as
    using the cache) failed: another project's prune that planned before the note removed
    it (:class:`hubpin.owners.Recheck`), and its sync must not say it is present."""
    from hubpin.handlers import handler

    wanted = {o.alias: pins[o.alias].cache_keys() for o in outcomes if o.status != "failed"}
    keys = {key for found in wanted.values() for key in found}
    timeout = project.settings.lock_timeout
    present = project.cache.still_present(keys, timeout) if keys else set()
    checked = []
    for o in outcomes:
        gone = [project.cache.entry(k) for k in wanted.get(o.alias, ()) if k not in present]
        if o.alias in wanted and not gone:  # a cache of the kind's own (Hugging Face's)
            gone = [g for g in [handler(pins[o.alias]).gone(project, pins[o.alias], timeout)] if g]
        if gone:
            error = NotSyncedError(
                f"{gone[0]} was removed while this sync ran (by another project's hubpin "
                "prune, say); run: hubpin sync"
            )
            o = Outcome(o.alias, "failed", str(error), o.size, o.seconds, error)
        checked.append(o)
    return checked


def stale(project: Project, lock: Lock | None) -> list[str]:
    """Why the lock is not what ``hubpin lock`` makes of the manifest (empty: it is)."""
    if lock is None:
        return [f"{project.lock_path.name} does not exist"]
    return mismatches(lock, project.manifest, project.root, project.settings)


def _lock_first(project: Project, problems: list[str]) -> LockFirst:
    from hubpin.locking import lock_plan  # a dry run's stale lock only: the pinning path

    rows = lock_plan(project, set())
    return LockFirst(
        problems,
        sorted(r["alias"] for r in rows if r["action"] == "pin"),
        sorted(r["alias"] for r in rows if r["action"] == "drop"),
        {r["alias"]: r["reason"] for r in rows if r["action"] == "pin"},
    )


def _what_locking_did(problems: list[str], old: Lock | None, new: Lock) -> LockFirst:
    """A sync that locked first: why, and the aliases whose pins that changed or dropped."""
    before = old.models if old is not None else {}
    pinned = sorted(a for a, pin in new.models.items() if before.get(a) != pin)
    return LockFirst(problems, pinned, sorted(set(before) - set(new.models)))


def _plan_after_lock(
    project: Project,
    runner: Syncer,
    lock: Lock | None,
    lock_first: LockFirst,
    aliases: Sequence[str],
) -> Plan:
    """A dry run with a stale lock: the models locking would pin, then the plan for the rest."""
    every = sorted(aliases or project.manifest.models)
    rest = [a for a in every if a not in lock_first.why]
    assert lock is not None or not rest
    planned = (
        {s.alias: s for s in runner.plan({a: lock.models[a] for a in rest}).steps} if lock else {}
    )
    steps = [
        planned.get(alias)
        or Step(
            alias,
            Action.LOCK,
            None,
            None,
            f"pinned and downloaded while locking: {lock_first.why[alias]}",
        )
        for alias in every
    ]
    return Plan(steps, lock_first)


def stamp_entries(project: Project, result: SyncResult) -> list[tuple[str, str]] | None:
    """The entries a stamp of this sync stat-checks when replayed; None: leave no stamp
    (the stamp stat-checks local tensorflow_hub entries only, not kagglehub's cache)."""
    if not result.clean or project.cache.local_root is None:
        return None
    # By one serializer for every pin, the lock's (a dump per pin: 9 ms of 2,000, this one
    # 5 ms); the pins were validated when the lock was read.
    pins = Lock.model_construct(manifest_digest="", models=result.pins)
    return entries_of(pins.model_dump(mode="json", exclude_none=True)["models"])
