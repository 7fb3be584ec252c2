"""``hubpin sync``: make the cache match the lock, publishing only what was verified.

:meth:`Syncer.plan` decides, per pinned archive: already present (hubpin's
record matches the lock and every file has its size) → keep; present without a
record (tensorflow_hub put it there) → hash it and adopt it when it matches;
the same model as another pin's entry → hard-link it; otherwise download.
:meth:`Syncer.execute` carries that plan out: it unpacks into a work folder under
the lock protocol, compares archive sha256 and tree digest with the lock, and
only then renames it into place (see :mod:`hubpin.plan`).
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

from hubpin import hfsync
from hubpin.cache import Cache, Record
from hubpin.cache.kagglehub import (
    in_kagglehub_cache,
    kagglehub_cache_root,
    link_tree,
    publish_to_kagglehub,
)
from hubpin.digests import Tree, hash_tree
from hubpin.errors import (
    CacheError,
    FetchError,
    HubpinError,
    IntegrityError,
    LimitError,
    NotSyncedError,
    TruncatedError,
    write_error,
)
from hubpin.kaggle import KaggleHandle, pinned
from hubpin.kinds import ArchivePin, FolderPin, GcsPin, HfPin, KagglePin, Pin
from hubpin.owners import refuse_replacing
from hubpin.plan import Action, Outcome, Plan, Step, Target
from hubpin.reader import HashingReader
from hubpin.settings import Settings
from hubpin.sources import Sources
from hubpin.unpack import Unpacked, ensure_space, too_many_members, unpack

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

        No network and no cache writes: the stat check (a re-hash with
        ``full_verify``), and for an entry without hubpin's record the hash that
        adoption makes (reads only). Pins that share a model share its work: a
        cache key or kagglehub version two pins name is filled by one step, and a
        pin whose archive another step downloads (or whose entry holds it) is
        hard-linked from that entry instead of downloaded again. The re-hashes of
        ``full_verify`` run ``jobs`` at a time; stat checks are too cheap for threads.
        """
        items = sorted(pins.items())
        archives = [(a, p) for a, p in items if isinstance(p, ArchivePin)]

        def damage_of(pin: ArchivePin) -> list[str] | HubpinError:
            try:
                return self._damage(pin)
            except HubpinError as exc:
                return exc

        workers = min(jobs or self.settings.jobs, len(archives)) if self.full_verify else 1
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                found = list(pool.map(damage_of, [p for _, p in archives]))
        else:
            found = [damage_of(p) for _, p in archives]
        damage = {alias: d for (alias, _), d in zip(archives, found, strict=True)}
        holders: dict[tuple[str, str], str] = {}  # the model → an alias whose entry holds it
        for alias, pin in archives:
            if damage[alias] == []:
                holders.setdefault(_content(pin), alias)
        claimed: dict[str, str] = {}  # cache key or kagglehub version → the step that fills it
        steps = [self._plan_one(a, p, damage.get(a, []), holders, claimed) for a, p in items]
        return Plan(steps)

    def _plan_one(
        self,
        alias: str,
        pin: Pin,
        damage: list[str] | HubpinError,
        holders: dict[tuple[str, str], str],
        claimed: dict[str, str],
    ) -> Step:
        size = pin.unpacked_size
        try:
            if isinstance(pin, HfPin):  # into Hugging Face's cache, not tensorflow_hub's
                offline = self.offline or self.from_bundle
                return hfsync.plan(alias, pin, offline=offline, full_verify=self.full_verify)
            if isinstance(pin, FolderPin):
                folder = self.root / pin.location
                if not folder.is_dir():
                    error = NotSyncedError(
                        f"{folder}: folder not found (the lock pins a local folder)"
                    )
                    return Step(
                        alias, Action.FAIL, size, 0, f"{folder}: folder not found", pin, error=error
                    )
                how = "re-hashed in place" if self.full_verify else "read in place"
                return Step(alias, Action.CHECK, size, 0, f"{folder}: local folder, {how}", pin)
            if isinstance(pin, GcsPin):
                how = "not checked (no network)" if self.offline or self.from_bundle else "checked"
                return Step(
                    alias, Action.CHECK, size, 0, f"{pin.location}: read from GCS, {how}", pin
                )
            assert isinstance(pin, ArchivePin)  # the kinds that are neither are read in place
            if isinstance(damage, HubpinError):
                raise damage
            mine: dict[str, str] = {}  # claims made if this step does not fail
            if pin.cache_key not in claimed:
                mine[pin.cache_key] = alias
            links = tuple(t for t in self._targets(pin) if t.claim not in claimed)
            mine |= {t.claim: alias for t in links}
            step = self._archive_step(alias, pin, damage, links, holders, claimed)
            if step.action is not Action.FAIL:
                claimed |= mine
                if step.source is None and step.action is not Action.KEEP:
                    holders.setdefault(_content(pin), alias)
            return step
        except HubpinError as exc:
            return Step(alias, Action.FAIL, size, 0, str(exc), pin, error=exc)

    def _archive_step(
        self,
        alias: str,
        pin: ArchivePin,
        damage: list[str],
        links: tuple[Target, ...],
        holders: dict[tuple[str, str], str],
        claimed: dict[str, str],
    ) -> Step:
        size = pin.unpacked_size
        if not damage:
            if links:
                missing = ", ".join(t.label for t in links)
                return Step(
                    alias, Action.LINK, size, 0, f"present; hard-linked for {missing}", pin, links
                )
            return Step(alias, Action.KEEP, size, 0, "already present", pin)
        owner = claimed.get(pin.cache_key)
        if owner is not None:  # another alias of the same handle fills this very entry
            why = f"the same cache entry as {owner}, which fills it"
            return Step(alias, Action.LINK, size, 0, why, pin, links, owner, shared=True)
        source = holders.get(_content(pin)) if self.cache.local_root is not None else None
        linked = f"not in the cache; hard-linked from {source}'s entry (the same archive)"
        if self.offline and not self.from_bundle:  # as a sync: refused before adoption
            if source is not None:  # no download: linking is allowed
                return Step(alias, Action.LINK, size, 0, linked, pin, links, source)
            refusal = _offline_refusal(damage)
            error = NotSyncedError(f"{refusal}; run: hubpin sync")
            return Step(alias, Action.FAIL, size, 0, refusal, pin, error=error)
        if self._adoptable(pin) is not None:
            why = "an entry without hubpin's record that matches the lock"
            return Step(alias, Action.ADOPT, size, 0, why, pin, links, damage=tuple(damage))
        if source is not None:
            return Step(alias, Action.LINK, size, 0, linked, pin, links, source)
        candidates = self.sources.candidates(self.sources.location_of(pin), pin.archive_sha256)
        first = candidates[0]
        if self.from_bundle and not self.sources.transport.exists(first.location):
            error = FetchError(first.missing or f"{first.location}: not found")
            return Step(alias, Action.FAIL, size, 0, str(error), pin, error=error)
        source_text = "from " + ", else ".join(c.label for c in candidates)
        download = pin.archive_size or 0
        if damage == ["not synced"]:
            why = f"not in the cache; {source_text}"
            return Step(
                alias, Action.DOWNLOAD, size, download, why, pin, links, damage=tuple(damage)
            )
        why = f"cache entry: {damage[0]}; {source_text}"
        return Step(alias, Action.REPLACE, size, download, why, pin, links, damage=tuple(damage))

    def _targets(self, pin: ArchivePin) -> list[Target]:
        """The other places this pin's model belongs (its other handles' keys, kagglehub's
        cache) that do not hold it yet."""
        found = [
            Target(h, key)
            for h, key in pin.keyed()[1:]
            if key != pin.cache_key and self.cache.quick_check(key, pin.tree_digest)
        ]
        if (
            isinstance(pin, KagglePin)
            and self.cache.local_root is not None
            and not self._in_kagglehub(pin)
        ):
            found.append(Target(str(self._kaggle_handle(pin))))
        return found

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

        waves: list[list[Step]] = [[], []]
        for step in plan.steps:
            if step.action in (Action.KEEP, Action.FAIL):
                done[step.alias] = one(step)
            else:
                waves[step.source is not None].append(step)
        for wave in waves:
            if not wave:
                continue
            pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(wave))))
            try:
                done |= {o.alias: o for o in pool.map(one, wave)}
            except BaseException:  # Ctrl-C: make the workers stop reading, not finish
                self.stop.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
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
            return Outcome(step.alias, "failed", str(exc), error=exc)
        return Outcome(step.alias, status, detail, pin.unpacked_size, time.monotonic() - start)

    def _do(
        self, step: Step, pin: Pin, steps: dict[str, Step], done: dict[str, Outcome]
    ) -> tuple[str, str]:
        if step.action is Action.FAIL:
            assert step.error is not None
            raise step.error
        if step.action is Action.KEEP:
            return "present", ""
        if step.action is Action.CHECK:
            return self._check(pin)
        if isinstance(pin, HfPin):
            return hfsync.sync(pin, self.sources, on_bytes=self.on_bytes)
        assert isinstance(pin, ArchivePin)  # the kinds that are neither are checked above
        if step.source is not None:
            status, detail = self._from_step(step, pin, steps[step.source], done[step.source])
        elif step.action is Action.LINK:
            status, detail = "present", ""
        else:
            status, detail = self._sync_archive(pin, list(step.damage))
        for target in step.links:
            if target.key is not None:
                self._link_entry(pin, pin.cache_key, target.handle, target.key)
            elif isinstance(pin, KagglePin):
                self._fill_kagglehub(pin)
        return status, detail

    def _check(self, pin: Pin) -> tuple[str, str]:
        if isinstance(pin, FolderPin):
            return self._check_folder(pin)
        assert isinstance(pin, GcsPin)
        if self.offline or self.from_bundle:
            why = "--from: no network" if self.from_bundle else "--offline"
            return "checked", f"gs:// location not checked ({why})"
        from hubpin.gcs.pins import check_folder

        check_folder(pin, self.settings)
        return "checked", f"{pin.location} unchanged ({pin.file_count} objects)"

    def _sync_archive(self, pin: ArchivePin, damage: list[str]) -> tuple[str, str]:
        """Make the entry match the lock under its lock: adopted if it can be, else fetched."""
        with self.cache.locked(pin.cache_key, self.settings.lock_timeout) as work:
            if not self._damage(pin):  # another process finished while we waited
                return "present", ""
            if self._adopt(pin):
                return "adopted", "verified the existing entry"
            refuse_replacing(self.cache, pin.cache_key, pin.tree_digest, pin.handle)
            result = self.fetch_into(pin, work)
            self.cache.publish(
                pin.cache_key, work, Record(pin.handle, pin.tree_digest, result.tree)
            )
        if damage == ["not synced"]:
            return "fetched", ""
        more = f" and {len(damage) - 3} more" if len(damage) > 3 else ""
        return "fetched", f"replaced an entry that had: {'; '.join(damage[:3])}{more}"

    def _from_step(
        self, step: Step, pin: ArchivePin, source: Step, outcome: Outcome
    ) -> tuple[str, str]:
        """A pin whose model another step put in the cache: its entry, or links from it."""
        assert isinstance(source.pin, ArchivePin)
        if outcome.status == "failed":
            raise NotSyncedError(
                f"{pin.handle}: not synced: it shares its archive with {source.alias}, "
                f"whose sync failed; run: hubpin sync"
            )
        if step.shared:
            if self.cache.quick_check(pin.cache_key, pin.tree_digest):
                raise NotSyncedError(
                    f"{pin.handle}: {source.alias} did not fill the entry; run: hubpin sync"
                )
            return "linked", f"the same cache entry as {source.alias}"
        self._link_entry(pin, source.pin.cache_key, pin.handle, pin.cache_key)
        return "linked", f"hard-linked from {source.alias}'s entry (the same archive)"

    def _link_entry(self, pin: ArchivePin, source: str, handle: str, key: str) -> None:
        """Give ``handle`` (another handle of the model, its Kaggle URL, say) the entry at
        key ``source``, hard-linked (copied where links fail): one download serves every
        handle tensorflow_hub might be asked for."""
        if not self.cache.quick_check(key, pin.tree_digest):
            return
        if self.cache.local_root is None:
            raise CacheError(
                f"also = [{handle!r}] is not supported with a gs:// cache yet; "
                "list that handle as its own model instead"
            )
        record = self.cache.read_record(source)
        assert record is not None
        with self.cache.locked(key, self.settings.lock_timeout) as work:
            if not self.cache.quick_check(key, pin.tree_digest):
                return
            try:
                link_tree(self.cache.local_root / source, work)
            except OSError as exc:
                raise write_error(exc, work) from None
            self.cache.publish(key, work, Record(handle, pin.tree_digest, record.tree))

    def _kaggle_handle(self, pin: KagglePin) -> KaggleHandle:
        return pinned(
            pin.handle, pin.kaggle_version, self.settings.kaggle_endpoint, pin.versioned_handle
        )

    def _in_kagglehub(self, pin: KagglePin) -> bool:
        return in_kagglehub_cache(kagglehub_cache_root(), self._kaggle_handle(pin))

    def _fill_kagglehub(self, pin: KagglePin) -> None:
        """Put a Kaggle model where unmodified ``kagglehub.model_download`` finds it offline.

        The verified entry is hard-linked into ``$KAGGLEHUB_CACHE`` under the pinned
        version (nothing is written when it already holds these files).
        """
        if self.cache.local_root is None:
            log.info("%s: kagglehub's cache is filled only from a local cache", pin.handle)
            return
        publish_to_kagglehub(
            self.cache.local_root / pin.cache_key, kagglehub_cache_root(), self._kaggle_handle(pin)
        )

    def _damage(self, pin: ArchivePin) -> list[str]:
        """Why the entry is not usable as is: the stat check, or a full re-hash with --verify."""
        problems = self.cache.quick_check(pin.cache_key, pin.tree_digest)
        if problems or not self.full_verify:
            return problems
        return self.verify_entry(pin)

    def verify_entry(self, pin: ArchivePin) -> list[str]:
        """Re-hash an entry against hubpin's record and the lock; one phrase per damaged path."""
        return self.cache.verify(pin.cache_key, pin.tree_digest)

    def _adopt(self, pin: ArchivePin) -> bool:
        """An entry tensorflow_hub (or an older hubpin) left: keep it if it is what we pin."""
        tree = self._adoptable(pin)
        if tree is None:
            return False
        self.cache.publish_record(pin.cache_key, Record(pin.handle, pin.tree_digest, tree))
        return True

    def _adoptable(self, pin: ArchivePin) -> Tree | None:
        """The files of an entry without hubpin's record, if they are what the lock pins."""
        key = pin.cache_key
        if not self.cache.has_entry(key) or self.cache.read_record(key) is not None:
            return None
        try:
            tree = self.cache.hash_entry(key)
        except OSError:
            return None
        return tree if tree.digest() == pin.tree_digest else None

    def fetch_into(self, pin: ArchivePin, work: Path) -> Unpacked:
        """Download and unpack a pinned archive into ``work``; raise unless it matches the lock."""
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

    def _check_folder(self, pin: FolderPin) -> tuple[str, str]:
        folder = self.root / pin.location
        if not folder.is_dir():
            raise NotSyncedError(f"{folder}: folder not found (the lock pins a local folder)")
        if not self.full_verify:
            return "checked", f"{folder} exists"
        digest = hash_tree(folder).digest()
        if digest != pin.tree_digest:
            raise IntegrityError(
                f"{folder}: tree digest is {digest}, the lock pins {pin.tree_digest}; "
                "run: hubpin lock"
            )
        return "checked", f"{folder} matches the lock"


def _content(pin: ArchivePin) -> tuple[str, str]:
    """What makes two pins one model: the archive and the tree it unpacks to."""
    return pin.archive_sha256, pin.tree_digest


def _offline_refusal(damage: list[str]) -> str:
    what = "not in the cache" if damage == ["not synced"] else f"cache entry: {damage[0]}"
    return f"{what}, and --offline forbids downloading"


def check_against_lock(pin: ArchivePin, result: Unpacked) -> None:
    if result.archive_size != pin.archive_size or result.archive_sha256 != pin.archive_sha256:
        raise IntegrityError(
            f"archive digest mismatch: expected sha256 {pin.archive_sha256} "
            f"({pin.archive_size} bytes), found {result.archive_sha256} ({result.archive_size} bytes)"
        )
    digest = result.tree.digest()
    if digest != pin.tree_digest:
        raise IntegrityError(f"unpacked tree mismatch: expected {pin.tree_digest}, found {digest}")
