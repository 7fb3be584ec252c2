"""An archive pin (``ArchivePin``, and a Kaggle version, ``KagglePin``): a tar(.gz) unpacked
into tensorflow_hub's cache at ``<cache>/<key>/``, for each handle it claims.

Planning, per pin: already present (hubpin's record matches the lock and every
file has its size) → keep; present without a record (tensorflow_hub put it there)
→ hash it and adopt it when it matches; the same model as another pin's entry →
hard-link it; otherwise download. Executing: unpack into a work folder under the
cache's lock protocol (:meth:`hubpin.sync.Syncer.fetch_into`), compare archive
sha256 and tree digest with the lock, and only then rename it into place. What a
Kaggle version adds (kagglehub's own cache, its host's current version) is
:mod:`hubpin.handlers.kaggle`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from hubpin.cache import ABSENT, Hashed, Problem, Record, code_of
from hubpin.errors import (
    ArchiveError,
    CacheError,
    DamagedEntryError,
    FetchError,
    InputError,
    IntegrityError,
    LimitError,
    NotSyncedError,
    write_error,
)
from hubpin.handlers import SHA_NOTE, Bundled, Handler, PinRequest, Run, Shared
from hubpin.handles import Format, Kind, archive_key, local_path, relative_posix
from hubpin.kaggle.handle import configured
from hubpin.kinds import ArchivePin, KagglePin, Pin
from hubpin.storage.schemes import is_url

if TYPE_CHECKING:  # the plan is a sync's: `status` and `resolve` ask state and where only
    from hubpin.cache import Cache
    from hubpin.digests import Tree
    from hubpin.plan import Outcome, Step, Target
    from hubpin.project import Project
    from hubpin.sources import Sources
    from hubpin.unpack import Unpacked

log = logging.getLogger("hubpin")


class ArchiveHandler(Handler):
    prechecks = True
    repairs = True

    # -- plan ---------------------------------------------------------------------------

    def damage(self, run: Run, pin: ArchivePin) -> list[str]:
        """The stat check, or a full re-hash with ``--verify``."""
        problems = run.cache.quick_check(pin.cache_key, pin.tree_digest)
        if problems or not run.full_verify:
            return problems
        return run.cache.verify(pin.cache_key, pin.tree_digest)

    def seen(self, shared: Shared, alias: str, pin: ArchivePin, damage: list[str]) -> None:
        if damage == []:
            shared.holders.setdefault(_content(pin), alias)

    def plan(
        self, run: Run, alias: str, pin: ArchivePin, damage: list[str], shared: Shared
    ) -> Step:
        from hubpin.plan import Action

        claimed = shared.claimed
        mine: dict[str, str] = {}  # claims made if this step does not fail
        if pin.cache_key not in claimed:
            mine[pin.cache_key] = alias
        links = tuple(t for t in self.targets(run, pin, damage) if t.claim not in claimed)
        mine |= {t.claim: alias for t in links}
        step = self._step(run, alias, pin, damage, links, shared)
        if step.action is not Action.FAIL:
            claimed |= mine
            if step.source is None and step.action is not Action.KEEP:
                shared.holders.setdefault(_content(pin), alias)
        return step

    def _step(
        self,
        run: Run,
        alias: str,
        pin: ArchivePin,
        damage: list[str],
        links: tuple[Target, ...],
        shared: Shared,
    ) -> Step:
        from hubpin.plan import Action, Step

        size = pin.unpacked_size
        if not damage:
            if links:
                missing = ", ".join(t.label for t in links)
                return Step(
                    alias, Action.LINK, size, 0, f"present; hard-linked for {missing}", pin, links
                )
            return Step(alias, Action.KEEP, size, 0, "already present", pin)
        owner = shared.claimed.get(pin.cache_key)
        if owner is not None:  # another alias of the same handle fills this very entry
            why = f"the same cache entry as {owner}, which fills it"
            return Step(alias, Action.LINK, size, 0, why, pin, links, owner, shared=True)
        source = shared.holders.get(_content(pin)) if run.cache.local_root is not None else None
        linked = f"not in the cache; hard-linked from {source}'s entry (the same archive)"
        if run.offline and not run.from_bundle:  # as a sync: refused before adoption
            if source is not None:  # no download: linking is allowed
                return Step(alias, Action.LINK, size, 0, linked, pin, links, source)
            refusal = _offline_refusal(damage)
            error = NotSyncedError(f"{refusal}; run: hubpin sync")
            return Step(alias, Action.FAIL, size, 0, refusal, pin, error=error)
        hashed = _adoptable(run.cache, pin)
        if hashed is not None:
            why = "an entry without hubpin's record that matches the lock"
            return Step(
                alias, Action.ADOPT, size, 0, why, pin, links, damage=tuple(damage), found=hashed
            )
        if source is not None:
            return Step(alias, Action.LINK, size, 0, linked, pin, links, source)
        sources = run.sources
        candidates = sources.candidates(sources.location_of(pin), pin.archive_sha256)
        first = candidates[0]
        if run.from_bundle and not sources.transport.exists(first.location):
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

    def targets(self, run: Run, pin: ArchivePin, damage: list[str]) -> list[Target]:
        """The other places this pin's model belongs (its other handles' keys) that do not
        hold it yet; ``damage`` is what the pin's own entry lacks (empty: it is intact)."""
        from hubpin.plan import Target

        check = run.cache.verify if run.full_verify else run.cache.quick_check
        return [
            Target(h, key)
            for h, key in pin.keyed()[1:]
            if key != pin.cache_key and check(key, pin.tree_digest)
        ]

    # -- execute ------------------------------------------------------------------------

    def execute(
        self,
        run: Run,
        step: Step,
        pin: ArchivePin,
        steps: dict[str, Step],
        done: dict[str, Outcome],
    ) -> tuple[str, str]:
        from hubpin.plan import Action

        if step.source is not None:
            status, detail = _from_step(run, step, pin, steps[step.source], done[step.source])
        elif step.action is Action.LINK:
            status, detail = "present", ""
        else:
            status, detail = self._sync(run, pin, list(step.damage), step.found)
        for target in step.links:
            self.fill(run, pin, target)
        return status, detail

    def fill(self, run: Run, pin: ArchivePin, target: Target) -> None:
        """Fill one of :meth:`targets` from the pin's entry, now in place."""
        assert target.key is not None
        _link_entry(run, pin, pin.cache_key, target.handle, target.key)

    def _sync(
        self, run: Run, pin: ArchivePin, damage: list[str], found: Hashed | None = None
    ) -> tuple[str, str]:
        """Make the entry match the lock under its lock: adopted if it can be, else fetched.

        ``found``: what planning hashed of an entry to adopt, trusted here only if the
        cache vouches that nothing of it changed since (:meth:`Cache.unchanged`); else
        it is hashed again, now that the lock keeps other syncs out."""
        from hubpin.owners import refuse_replacing

        cache = run.cache
        with cache.locked(pin.cache_key, run.settings.lock_timeout) as work:
            if not self.damage(run, pin):  # another process finished while we waited
                return "present", ""
            hashed = _adoptable(cache, pin, found)
            if hashed is not None:
                record = Record(pin.handle, pin.tree_digest, hashed.tree)
                cache.publish_record(pin.cache_key, record)
                return "adopted", "verified the existing entry"
            refuse_replacing(cache, pin.cache_key, pin.tree_digest, pin.handle)
            result = run.fetch_into(pin, work)
            self.check_tree(pin.handle, result.tree)
            cache.publish(pin.cache_key, work, Record(pin.handle, pin.tree_digest, result.tree))
        if damage == ["not synced"]:
            return "fetched", ""
        more = f" and {len(damage) - 3} more" if len(damage) > 3 else ""
        return "fetched", f"replaced an entry that had: {'; '.join(damage[:3])}{more}"

    def check_tree(self, handle: str, tree: Tree) -> None:
        """Refuse a tree, already unpacked into a work folder, that this kind's caches
        cannot hold (every tree an archive pin's own cache entry can: nothing to refuse)."""

    # -- verify, status, resolve ----------------------------------------------------------

    def verify(self, run: Run, alias: str, pin: ArchivePin) -> list[str]:
        """The entry re-hashed, and each entry its other handles fill (what unmodified
        ``hub.load`` of those handles reads), named by its folder; one not made yet is no
        damage (sync makes it)."""
        problems = run.cache.verify(pin.cache_key, pin.tree_digest)
        for key in pin.cache_keys()[1:]:
            found = run.cache.verify(key, pin.tree_digest)
            if found and code_of(found[0]) != Problem.NOT_SYNCED:
                problems += [f"{run.cache.entry(key)}: {p}" for p in found]
        return problems

    def state(self, project: Project, pin: ArchivePin) -> str:
        return project.cache.entry_state(pin.cache_key, pin.tree_digest)

    def where(self, project: Project, pin: ArchivePin) -> str:
        return project.cache.entry(pin.cache_key)

    def resolve(self, project: Project, alias: str, pin: ArchivePin, verify: bool) -> str:
        """The cache entry, checked against hubpin's record (every file present at its
        recorded size; with ``verify``, re-hashed), so a half-deleted model fails here, by
        name, rather than deep inside TensorFlow. A cache TensorFlow cannot read (s3://)
        gives a verified local copy, made once and reused."""
        cache = project.cache
        if not cache.tensorflow_reads:
            from hubpin.cache.staging import staging_cache

            staged = staging_cache(cache, project.settings.stage_dir)
            check = staged.verify if verify else staged.quick_check
            if not check(pin.cache_key, pin.tree_digest):
                return staged.entry(pin.cache_key)
        problems = (
            cache.verify(pin.cache_key, pin.tree_digest)
            if verify
            else cache.quick_check(pin.cache_key, pin.tree_digest)
        )
        entry = cache.entry(pin.cache_key)
        if problems:
            first = problems[0]
            if code_of(first) in ABSENT:
                why = "" if code_of(first) == "not-synced" else f" ({first})"
                raise NotSyncedError(
                    f"{alias} ({pin.handle}) is not synced into {cache.location}{why}; run: hubpin sync"
                )
            raise DamagedEntryError(
                f"{alias}: cache entry {entry} is damaged: {'; '.join(problems[:5])}; "
                "run: hubpin verify --repair"
            )
        if not cache.tensorflow_reads:
            return _stage(project, alias, pin, cache)
        return entry

    def bundled(self, pin: ArchivePin, sources: Sources) -> list[Bundled]:
        from hubpin.sources import ARCHIVES

        sha = pin.archive_sha256
        return [
            Bundled(
                f"{ARCHIVES}/{sha}",
                pin.archive_size,
                {SHA_NOTE: sha},
                lambda fh, also: copy_verified(sources, pin, fh, also),
                sha,
                pin,
            )
        ]

    # -- lock -----------------------------------------------------------------------------

    def pin(self, request: PinRequest) -> tuple[ArchivePin, Tree | None]:
        """Stream the archive once: its sha256 and size, and the tree it unpacks to (into
        ``request.work`` when given); a Kaggle handle is fetched as exactly one version."""
        from hubpin.reader import HashingReader
        from hubpin.unpack import unpack

        spec, settings, root = request.spec, request.settings, request.root
        kaggle = _kaggle_fields(request)
        location = kaggle.pop("location", request.source.location)
        download = request.sources.open(location)
        reader = HashingReader.of(download, on_bytes=request.on_bytes)
        try:
            result = unpack(
                reader,
                request.work,
                max_unpacked=settings.max_unpacked_size,
                max_ratio=settings.max_compression_ratio,
                max_members=settings.max_members,
            )
        except ArchiveError as exc:
            if isinstance(exc, LimitError):
                raise  # it names the setting to raise; a re-lock would not help
            raise ArchiveError(
                f"{exc}; refused, nothing was published. Check that the handle points at "
                "the intended model archive, then run: hubpin lock"
            ) from None
        check_expected(spec.sha256, result)
        self.check_tree(spec.handle, result.tree)
        local = local_path(spec.handle, root)
        url = relative_posix(local, root) if local else download.final_url
        if local and is_url(spec.handle):  # a file:// URL is recorded as written
            url = spec.handle
        kind = KagglePin if kaggle else ArchivePin
        made = kind(
            **request.common(),
            kind=Kind.ARCHIVE,
            cache_key=archive_key(spec.handle, result.archive_sha256),
            url=url,
            archive_sha256=result.archive_sha256,
            archive_size=result.archive_size,
            tree_digest=result.tree.digest(),
            unpacked_size=result.tree.size,
            file_count=result.tree.file_count,
            **kaggle,
        )
        return made, result.tree if request.work is not None else None

    def pin_into(
        self, alias: str, request: PinRequest, cache: Cache | None, required: bool
    ) -> ArchivePin:
        from hubpin.owners import refuse_replacing

        spec, settings = request.spec, request.settings
        if cache is None or request.source.kind is not Kind.ARCHIVE:
            return self.pin(request)[0]
        key = key_before_reading(spec.handle, request.root)
        if key is None:  # a local archive that cannot be read: pin says why
            return self.pin(request)[0]
        made: ArchivePin | None = None
        try:
            with cache.locked(key, settings.lock_timeout) as work:
                found = _published(cache, key, request) if request.adopt else None
                if found is not None:
                    log.info("%s: adopted %s, which an interrupted lock published", alias, key)
                    return found
                made, tree = self.pin(dataclasses.replace(request, work=work, commit=None))
                if made.cache_key != key:
                    raise FetchError(
                        f"{spec.handle} changed while it was read (its sha256 is not the one it "
                        "had a moment before); nothing was published. Run again: hubpin lock"
                    )
                record = cache.read_record(key)
                refuse_replacing(cache, key, made.tree_digest, spec.handle)
                if tree is not None and (record is None or record.tree_digest != made.tree_digest):
                    pinned = made.model_dump(mode="json", exclude_none=True)  # for _published
                    cache.publish(
                        key, work, Record(spec.handle, made.tree_digest, tree, pin=pinned)
                    )
        except CacheError as exc:
            if required:
                raise
            if made is None:  # failed before or while unpacking: hash it without the cache
                log.info(
                    "%s: not filling the cache (%s); pinned without it, hubpin sync will fetch it",
                    alias,
                    exc,
                )
                return self.pin(dataclasses.replace(request, commit=None))[0]
            log.info(
                "%s: pinned, but not published into the cache (%s); hubpin sync will fetch it",
                alias,
                exc,
            )
        assert made is not None
        return made


def _published(cache: Cache, key: str, request: PinRequest) -> ArchivePin | None:
    """The pin an earlier ``lock`` of this project recorded when it published ``key`` for
    this manifest entry, if the entry still holds exactly that tree; else None (pin anew).

    Only an entry this lock created counts (never another project's, nor one hubpin only
    adopted), made from the same manifest fields (and Kaggle version, when one is asked for).
    """
    from pydantic import TypeAdapter, ValidationError

    from hubpin.lockfile import input_changes
    from hubpin.owners import created_here

    record = cache.read_record(key)
    if record is None or record.pin is None or not cache.owner:
        return None
    if not created_here(cache, record, cache.owner):
        return None
    try:
        pin: Pin = TypeAdapter(Pin).validate_python(record.pin)
    except ValidationError:
        return None
    if (
        not isinstance(pin, ArchivePin)
        or pin.cache_key != key
        or pin.tree_digest != record.tree_digest
        or input_changes(request.spec, pin, request.settings)
        or pin.derived_problems(request.root, request.settings)
        or (isinstance(pin, KagglePin) and request.version not in (None, pin.kaggle_version))
    ):
        return None
    problems = cache.verify(key, pin.tree_digest)
    if problems:
        log.info("%s: not adopting the published entry (%s); fetching it", key, problems[0])
        return None
    return pin


def copy_verified(
    sources: Sources, pin: ArchivePin, fh: IO[bytes], also: Callable[[bytes], None] | None = None
) -> None:
    """Stream the pinned archive into ``fh`` (and ``also``); raise unless it is what the lock pins."""
    from hubpin.reader import HashingReader

    download = sources.open_pin(pin)
    reader = HashingReader.of(download, expected_size=pin.archive_size)
    while chunk := reader.read(1 << 20):
        fh.write(chunk)
        if also is not None:
            also(chunk)
    found = reader.hexdigest()  # raises for a corrupt download (the host's checksums)
    if found != pin.archive_sha256 or reader.size != pin.archive_size:
        raise IntegrityError(
            f"{download.final_url}: got {reader.size} bytes with sha256 {found}, the lock pins "
            f"{pin.archive_size} bytes with sha256 {pin.archive_sha256}; nothing was written. "
            "If the model changed upstream on purpose, run: hubpin lock"
        )


def _content(pin: ArchivePin) -> tuple[str, str]:
    """What makes two pins one model: the archive and the tree it unpacks to."""
    return pin.archive_sha256, pin.tree_digest


def _offline_refusal(damage: list[str]) -> str:
    what = "not in the cache" if damage == ["not synced"] else f"cache entry: {damage[0]}"
    return f"{what}, and --offline forbids downloading"


def _adoptable(cache: Cache, pin: ArchivePin, found: Hashed | None = None) -> Hashed | None:
    """The files of an entry without hubpin's record (tensorflow_hub's, or an older
    hubpin's), hashed, if they are what the lock pins: ``found`` (hashed earlier) if
    the cache vouches they did not change since, else hashed now."""
    key = pin.cache_key
    if not cache.has_entry(key) or cache.read_record(key) is not None:
        return None
    if found is not None and cache.unchanged(key, found):
        return found
    try:
        hashed = cache.hash_stamped(key)
    except OSError:
        return None
    return hashed if hashed.tree.digest() == pin.tree_digest else None


def _from_step(
    run: Run, step: Step, pin: ArchivePin, source: Step, outcome: Outcome
) -> tuple[str, str]:
    """A pin whose model another step put in the cache: its entry, or links from it."""
    assert isinstance(source.pin, ArchivePin)  # planned by this handler
    if outcome.status == "failed":
        raise NotSyncedError(
            f"{pin.handle}: not synced: it shares its archive with {source.alias}, "
            f"whose sync failed; run: hubpin sync"
        )
    if step.shared:
        if run.cache.quick_check(pin.cache_key, pin.tree_digest):
            raise NotSyncedError(
                f"{pin.handle}: {source.alias} did not fill the entry; run: hubpin sync"
            )
        return "linked", f"the same cache entry as {source.alias}"
    _link_entry(run, pin, source.pin.cache_key, pin.handle, pin.cache_key)
    return "linked", f"hard-linked from {source.alias}'s entry (the same archive)"


def _link_entry(run: Run, pin: ArchivePin, source: str, handle: str, key: str) -> None:
    """Give ``handle`` (another handle of the model, its Kaggle URL, say) the entry at key
    ``source``, hard-linked (copied where links fail): one download serves every handle
    tensorflow_hub might be asked for."""
    from hubpin.cache.kagglehub import link_tree

    cache = run.cache
    check = cache.verify if run.full_verify else cache.quick_check  # a repair re-hashes
    if not check(key, pin.tree_digest):
        return
    if cache.local_root is None:
        raise CacheError(
            f"also = [{handle!r}] is not supported with a gs:// cache yet; "
            "list that handle as its own model instead"
        )
    record = cache.read_record(source)
    assert record is not None
    with cache.locked(key, run.settings.lock_timeout) as work:
        if not check(key, pin.tree_digest):
            return
        try:
            link_tree(cache.local_root / source, work)
        except OSError as exc:
            raise write_error(exc, work) from None
        cache.publish(key, work, Record(handle, pin.tree_digest, record.tree))


def _stage(project: Project, alias: str, pin: ArchivePin, cache: Cache) -> str:
    """Stage a committed entry of a cache TensorFlow cannot read (hubpin.cache.staging)."""
    from hubpin.cache.staging import stage, staging_cache

    record = cache.read_record(pin.cache_key)
    if record is None:  # revoked since it was checked
        raise NotSyncedError(
            f"{alias} ({pin.handle}) is not synced into {cache.location}; run: hubpin sync"
        )
    settings = project.settings
    local = staging_cache(cache, settings.stage_dir)
    try:
        return stage(cache, local, pin.cache_key, record, settings.lock_timeout)
    except DamagedEntryError as exc:
        raise DamagedEntryError(f"{alias}: {exc}") from None


def _kaggle_fields(request: PinRequest) -> dict[str, object]:
    """For a Kaggle model: the exact version to fetch (as written, kept, or the current one
    Kaggle's API names) and the lock fields that pin it; empty for any other handle."""
    handle = configured(request.spec.handle, request.settings.kaggle_endpoint)
    if handle is None:
        return {}
    if request.format is Format.UNCOMPRESSED:
        raise InputError(
            "Kaggle models are served as archives, not read from gs:// in place; "
            'set format = "COMPRESSED" for this model'
        )
    version = handle.version or request.version
    exact = handle.with_version(version or request.sources.kaggle.current_version(handle))
    return {
        "location": str(exact),
        "kaggle_version": exact.version,
        "versioned_handle": exact.model_url,
    }


def check_expected(expected: str | None, result: Unpacked) -> None:
    if expected and expected != result.archive_sha256:
        raise IntegrityError(
            f"archive sha256 is {result.archive_sha256}, the manifest expects {expected}; "
            "check the handle, or update sha256 in the manifest"
        )


def key_before_reading(handle: str, root: Path) -> str | None:
    """The cache key to lock and fill for an archive handle, before it is read.

    A local archive is keyed by its sha256 (:func:`hubpin.handles.archive_key`), so its
    file is hashed first: one extra read of a local file, where the unpacking it saves
    (``lock`` then ``sync``) costs far more. None when that file cannot be read.
    """
    from hubpin.handles import cache_key

    local = local_path(handle, root)
    if local is None:
        return cache_key(handle)
    try:
        with open(local, "rb") as fh:
            sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    return archive_key(handle, sha256)
