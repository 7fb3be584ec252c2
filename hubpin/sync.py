"""``hubpin sync``: make the cache match the lock, publishing only what was verified.

For each pinned archive the plan is: already present (hubpin's record matches
the lock and every file has its size) → nothing to do; present without a
record (tensorflow_hub put it there) → hash it and adopt it when it matches;
otherwise download, unpack into a work folder under the lock protocol, compare
archive sha256 and tree digest with the lock, and only then rename it into place.
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
    HubpinError,
    IntegrityError,
    LimitError,
    NotSyncedError,
    TruncatedError,
    write_error,
)
from hubpin.handles import cache_key
from hubpin.kaggle import KaggleHandle, pinned
from hubpin.kinds import ArchivePin, FolderPin, GcsPin, KagglePin, Pin
from hubpin.settings import Settings
from hubpin.sources import Sources
from hubpin.unpack import HashingReader, Unpacked, ensure_space, too_many_members, unpack

log = logging.getLogger("hubpin")


@dataclass
class Outcome:
    alias: str
    status: str  # fetched | present | adopted | checked | failed
    detail: str = ""
    size: int = 0
    seconds: float = 0.0
    error: HubpinError | None = None


@dataclass
class Step:
    """What a sync would do for one model, found without writing or downloading (``--dry-run``)."""

    alias: str
    action: str  # download | replace | adopt | link | keep | check | fail
    size: int | None  # unpacked bytes of the model (None: not known before locking)
    download: int | None = 0  # bytes the sync would download (None: not known)
    reason: str = ""


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

    def run(self, pins: dict[str, Pin], jobs: int) -> list[Outcome]:
        def one(item: tuple[str, Pin]) -> Outcome:
            outcome = self.sync_one(*item)
            if self.on_done:
                self.on_done(outcome)
            return outcome

        # Entries already in place cost a few stats each: check them here, and start
        # threads only for real work, so a no-op sync stays instant.
        present = {
            alias: Outcome(alias, "present", "", pin.unpacked_size)
            for alias, pin in pins.items()
            if isinstance(pin, ArchivePin)
            and not isinstance(pin, KagglePin)
            and not self.full_verify
            and pin.handles() == [pin.handle]
            and self._intact(pin)
        }
        for outcome in present.values():
            if self.on_done:
                self.on_done(outcome)
        todo = sorted((a, p) for a, p in pins.items() if a not in present)
        pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo))))
        try:
            done = {o.alias: o for o in pool.map(one, todo)}
        except BaseException:  # Ctrl-C: make the workers stop reading, not finish
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [present.get(alias) or done[alias] for alias in sorted(pins)]

    def _intact(self, pin: ArchivePin) -> bool:
        """The stat check alone; any trouble is left to :meth:`sync_one`, which reports it."""
        try:
            return not self._damage(pin)
        except HubpinError:
            return False

    def sync_one(self, alias: str, pin: Pin) -> Outcome:
        start = time.monotonic()
        try:
            status, detail = self._sync(pin)
        except HubpinError as exc:
            return Outcome(alias, "failed", str(exc), error=exc)
        return Outcome(alias, status, detail, pin.unpacked_size, time.monotonic() - start)

    def _sync(self, pin: Pin) -> tuple[str, str]:
        if isinstance(pin, FolderPin):
            return self._check_folder(pin)
        if isinstance(pin, GcsPin):
            if self.offline or self.from_bundle:
                why = "--from: no network" if self.from_bundle else "--offline"
                return "checked", f"gs:// location not checked ({why})"
            from hubpin.gcs.pins import check_folder

            check_folder(pin, self.settings)
            return "checked", f"{pin.location} unchanged ({pin.file_count} objects)"
        assert isinstance(pin, ArchivePin)  # the kinds that are neither are read in place
        status, detail = self._sync_archive(pin)
        for handle in pin.handles()[1:]:
            self._fill_also(pin, handle)
        if isinstance(pin, KagglePin):
            self._fill_kagglehub(pin)
        return status, detail

    def _sync_archive(self, pin: ArchivePin) -> tuple[str, str]:
        damage = self._damage(pin)
        if not damage:
            return "present", ""
        if self.offline and not self.from_bundle:
            raise NotSyncedError(f"{_offline_refusal(damage)}; run: hubpin sync")
        with self.cache.locked(pin.cache_key, self.settings.lock_timeout) as work:
            if not self._damage(pin):  # another process finished while we waited
                return "present", ""
            if self._adopt(pin):
                return "adopted", "verified the existing entry"
            result = self.fetch_into(pin, work)
            self.cache.publish(
                pin.cache_key, work, Record(pin.handle, pin.tree_digest, result.tree)
            )
        if damage == ["not synced"]:
            return "fetched", ""
        more = f" and {len(damage) - 3} more" if len(damage) > 3 else ""
        return "fetched", f"replaced an entry that had: {'; '.join(damage[:3])}{more}"

    def plan(self, alias: str, pin: Pin) -> Step:
        """What :meth:`sync_one` would do, by the checks it makes, writing nothing.

        No network and no cache writes: the stat check (a re-hash with
        ``full_verify``), and for an entry without hubpin's record the hash that
        adoption makes (reads only). A model whose sync would fail is ``fail``.
        """
        size = pin.unpacked_size
        try:
            if isinstance(pin, FolderPin):
                folder = self.root / pin.location
                if not folder.is_dir():
                    return Step(alias, "fail", size, 0, f"{folder}: folder not found")
                how = "re-hashed in place" if self.full_verify else "read in place"
                return Step(alias, "check", size, 0, f"{folder}: local folder, {how}")
            if isinstance(pin, GcsPin):
                how = "not checked (no network)" if self.offline or self.from_bundle else "checked"
                return Step(alias, "check", size, 0, f"{pin.location}: read from GCS, {how}")
            assert isinstance(pin, ArchivePin)  # the kinds that are neither are read in place
            damage = self._damage(pin)
            if not damage:
                missing = [
                    h
                    for h in pin.handles()[1:]
                    if self.cache.quick_check(cache_key(h), pin.tree_digest)
                ]
                if isinstance(pin, KagglePin) and not self._in_kagglehub(pin):
                    missing.append("kagglehub's cache")
                if missing:
                    return Step(
                        alias, "link", size, 0, f"present; hard-linked for {', '.join(missing)}"
                    )
                return Step(alias, "keep", size, 0, "already present")
            if self.offline and not self.from_bundle:  # as _sync_archive: before adoption
                return Step(alias, "fail", size, 0, _offline_refusal(damage))
            if self._adoptable(pin) is not None:
                return Step(
                    alias,
                    "adopt",
                    size,
                    0,
                    "an entry without hubpin's record that matches the lock",
                )
            candidates = self.sources.candidates(self.sources.location_of(pin), pin.archive_sha256)
            first = candidates[0]
            if self.from_bundle and not self.sources.transport.exists(first.location):
                return Step(alias, "fail", size, 0, first.missing or f"{first.location}: not found")
            source = "from " + ", else ".join(c.label for c in candidates)
            if damage == ["not synced"]:
                return Step(
                    alias, "download", size, pin.archive_size, f"not in the cache; {source}"
                )
            return Step(
                alias, "replace", size, pin.archive_size, f"cache entry: {damage[0]}; {source}"
            )
        except HubpinError as exc:
            return Step(alias, "fail", size, 0, str(exc))

    def _fill_also(self, pin: ArchivePin, handle: str) -> None:
        """Give another handle of the same model (its Kaggle URL, say) its own cache key.

        Files are hard-linked from the verified entry (copied where links fail), so
        one download serves every handle tensorflow_hub might be asked for.
        """
        key = cache_key(handle)
        if not self.cache.quick_check(key, pin.tree_digest):
            return
        if self.cache.local_root is None:
            raise CacheError(
                f"also = [{handle!r}] is not supported with a gs:// cache yet; "
                "list that handle as its own model instead"
            )
        record = self.cache.read_record(pin.cache_key)
        assert record is not None
        with self.cache.locked(key, self.settings.lock_timeout) as work:
            if not self.cache.quick_check(key, pin.tree_digest):
                return
            try:
                link_tree(self.cache.local_root / pin.cache_key, work)
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
