"""``hubpin sync``: make the cache match the lock, publishing only what was verified.

:meth:`Syncer.plan` asks each pin's handler (:mod:`hubpin.handlers`, by its kind)
for the step a sync takes for it, and :meth:`Syncer.execute` has the handler carry
out exactly that step (see :mod:`hubpin.plan`). What the steps share lives here: the
run's cache, settings and sources, its threads and Ctrl-C, and the archive pipeline
(:meth:`Syncer.fetch_into`: download and unpack into a work folder, compare archive
sha256 and tree digest with the lock; only then is it renamed into place).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hubpin.cache import Cache
from hubpin.errors import HubpinError, IntegrityError, LimitError, TruncatedError, unwritable_cache
from hubpin.handlers import Shared, failed, handler
from hubpin.kinds import ArchivePin, Pin
from hubpin.plan import Action, Outcome, Plan, Step
from hubpin.settings import Settings
from hubpin.sources import Sources

if TYPE_CHECKING:  # the download and unpack path: imported by the sync that fetches
    from hubpin.unpack import Unpacked

log = logging.getLogger("hubpin")


@dataclass
class Syncer:
    """Everything one sync run shares across models."""

    cache: Cache
    settings: Settings
    sources: Sources
    root: Path
    offline: bool = False
    full_verify: bool = False
    on_bytes: Callable[[int], None] | None = None
    bundle: str | None = None  # sources read this `hubpin bundle`, never upstream
    on_done: Callable[[Outcome], None] | None = None  # after each model (progress bars)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)  # set on Ctrl-C
    _unpacking: int = field(default=0, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def from_bundle(self) -> bool:
        return self.bundle is not None

    @contextlib.contextmanager
    def _alone(self) -> Iterator[bool]:
        """Whether no other archive is being unpacked now (then one may use a second core).

        Measured on 2 cores: a background inflater made 1×200 MB 1.6× faster but
        8×50 MB 10% slower, where parallel models already keep both cores busy.
        """
        with self._guard:
            alone = self._unpacking == 0
            self._unpacking += 1
        try:
            yield alone
        finally:
            with self._guard:
                self._unpacking -= 1

    # ------------------------------------------------------------ plan

    def plan(self, pins: dict[str, Pin], jobs: int | None = None) -> Plan:
        """What :meth:`execute` will do for each model, by the checks it makes, writing nothing.

        No network and no cache writes: each pin's handler plans its step
        (:mod:`hubpin.handlers`). The kinds that check their entries first (an
        archive: the stat check, a re-hash with ``full_verify``) do so before any
        step is planned, the re-hashes ``jobs`` at a time (stat checks are too cheap
        for threads), so that pins sharing a model share its work: a cache key or
        kagglehub version two pins name is filled by one step, and a pin whose model
        another step downloads (or whose entry holds it) is hard-linked from there.
        """
        items = sorted(pins.items())
        kinds = {alias: handler(pin) for alias, pin in items}
        checked = [(a, p) for a, p in items if kinds[a].prechecks]

        def damage_of(item: tuple[str, Pin]) -> list[str] | HubpinError:
            try:
                return kinds[item[0]].damage(self, item[1])
            except HubpinError as exc:
                return exc

        workers = min(jobs or self.settings.jobs, len(checked)) if self.full_verify else 1
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                found = list(pool.map(damage_of, checked))
        else:
            found = [damage_of(item) for item in checked]
        damage = {alias: d for (alias, _), d in zip(checked, found, strict=True)}
        shared = Shared()
        for alias, pin in checked:
            if not isinstance(damage[alias], HubpinError):
                kinds[alias].seen(shared, alias, pin, damage[alias])  # type: ignore[arg-type]
        steps = []
        for alias, pin in items:
            try:
                problems = damage.get(alias, [])
                if isinstance(problems, HubpinError):
                    raise problems
                steps.append(kinds[alias].plan(self, alias, pin, problems, shared))
            except HubpinError as exc:
                steps.append(failed(alias, pin, exc))
        return Plan(steps)

    # ------------------------------------------------------------ execute

    def run(self, pins: dict[str, Pin], jobs: int) -> list[Outcome]:
        """Plan, then execute: one outcome per pin, by alias."""
        return self.execute(self.plan(pins, jobs), jobs)

    def execute(self, plan: Plan, jobs: int) -> list[Outcome]:
        """Carry out the plan's steps; one outcome per step, in the plan's order.

        Steps with nothing to do (keep) or doomed (fail) end here, without a
        thread, so a no-op sync stays instant; the rest run ``jobs`` at a time,
        and the steps that link from another step's entry run after it.
        """
        assert not any(s.action is Action.LOCK for s in plan.steps), "a dry run's plan"
        by_alias = {s.alias: s for s in plan.steps}
        done: dict[str, Outcome] = {}

        def one(step: Step) -> Outcome:
            outcome = self._execute_step(step, by_alias, done)
            if self.on_done:
                self.on_done(outcome)
            return outcome

        waves: dict[int, list[Step]] = {}
        for step in plan.steps:
            if step.action in (Action.KEEP, Action.FAIL):
                done[step.alias] = one(step)
            else:
                waves.setdefault(_depth(step, by_alias), []).append(step)
        for _, wave in sorted(waves.items()):
            if not wave:
                continue
            pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(wave))))
            try:
                done |= {o.alias: o for o in pool.map(one, wave)}
            except BaseException:
                # Ctrl-C: make the workers stop reading, and leave without waiting for one
                # stalled on a host (for read_timeout). The CLI then releases the locks they
                # hold (hubpin.cache.lock.release_held); nothing they did is committed.
                self.stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
        return [done[s.alias] for s in plan.steps]

    def _execute_step(
        self, step: Step, steps: dict[str, Step], done: dict[str, Outcome]
    ) -> Outcome:
        pin = step.pin
        assert pin is not None
        start = time.monotonic()
        try:
            status, detail = self._do(step, pin, steps, done)
        except HubpinError as exc:
            why = unwritable_cache(str(exc), self.settings.cache_root)
            return Outcome(step.alias, "failed", why, error=exc)
        return Outcome(step.alias, status, detail, pin.unpacked_size, time.monotonic() - start)

    def _do(
        self, step: Step, pin: Pin, steps: dict[str, Step], done: dict[str, Outcome]
    ) -> tuple[str, str]:
        if step.action is Action.FAIL:
            assert step.error is not None
            raise step.error
        if step.action is Action.KEEP:
            return "present", ""
        return handler(pin).execute(self, step, pin, steps, done)

    def fetch_into(self, pin: ArchivePin, work: Path) -> Unpacked:
        """Download and unpack a pinned archive into ``work``; raise unless it matches the lock."""
        from hubpin.reader import HashingReader
        from hubpin.unpack import ensure_space, too_many_members, unpack

        if pin.file_count > self.settings.max_members:
            raise too_many_members(
                self.settings.max_members,
                f": the lock pins {pin.file_count} files, so it was not downloaded",
            )
        ensure_space(work, pin.unpacked_size, f"{pin.handle} (unpacked_size in the lock)")
        download = self.sources.open_pin(pin)
        reader = HashingReader.of(
            download, on_bytes=self.on_bytes, expected_size=pin.archive_size, stop=self.stop
        )
        try:
            with self._alone() as alone:
                result = unpack(
                    reader,
                    work,
                    max_unpacked=pin.unpacked_size,
                    max_ratio=self.settings.max_compression_ratio,
                    max_members=self.settings.max_members,
                    background=alone,
                )
            check_against_lock(pin, result)
        except LimitError as exc:  # the archive may well match the lock; a setting refuses it
            raise LimitError(f"{download.final_url}: {exc}") from None
        except TruncatedError as exc:
            fix = (
                f"The bundle's copy is cut short; make it again with: hubpin bundle {self.bundle}"
                if self.bundle
                else "The server or mirror sent a short file; retry with: hubpin sync"
            )
            raise TruncatedError(
                f"{download.final_url}: {exc}; nothing was published. {fix}"
            ) from None
        except IntegrityError as exc:
            fix = (
                f"The bundle's copy was damaged or replaced; make it again with: hubpin bundle {self.bundle}"
                if self.bundle
                else "If the model changed upstream on purpose, run: hubpin lock"
            )
            raise IntegrityError(
                f"{download.final_url} does not match the lock: {exc}; nothing was published. {fix}"
            ) from None
        return result


def check_against_lock(pin: ArchivePin, result: Unpacked) -> None:
    if result.archive_size != pin.archive_size or result.archive_sha256 != pin.archive_sha256:
        raise IntegrityError(
            f"archive digest mismatch: expected sha256 {pin.archive_sha256} "
            f"({pin.archive_size} bytes), found {result.archive_sha256} ({result.archive_size} bytes)"
        )
    digest = result.tree.digest()
    if digest != pin.tree_digest:
        raise IntegrityError(f"unpacked tree mismatch: expected {pin.tree_digest}, found {digest}")
    found = (result.tree.file_count, result.tree.size)
    if found != (pin.file_count, pin.unpacked_size):  # the pinned tree's own: the lock was edited
        raise IntegrityError(
            f"the pinned tree has {found[0]} files of {found[1]} bytes, the lock says "
            f"{pin.file_count} files (file_count) of {pin.unpacked_size} bytes (unpacked_size)"
        )


def _depth(step: Step, steps: dict[str, Step]) -> int:
    """How many steps must finish before ``step`` can: its source's, and theirs (an alias of
    the same handle as another that is hard-linked from a third's entry waits for both)."""
    depth = 0
    while step.source is not None and depth <= len(steps):
        step = steps[step.source]
        depth += 1
    return depth
