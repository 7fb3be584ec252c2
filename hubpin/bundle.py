"""Bundles: the locked archives, named by sha256, plus the lock, for machines that
should not (or cannot) download from the model hosts.

``hubpin bundle OUT`` writes::

    OUT/archives/<sha256>      each locked archive, verified against the lock
    OUT/models.lock            the lock the archives belong to, written last

OUT is a folder, a ``.tar`` file (carried to an air-gapped machine), or a
``gs://bucket/prefix`` that a fleet syncs from. ``hubpin sync --from OUT`` reads
archives from there and verifies each against that machine's lock exactly as a
download, so a bundle cannot change a model, and never writes to it.

The lock is written after every archive is in place, so a bundle that has one is
complete and an interrupted run leaves none. Running ``bundle`` again finishes
the job without writing twice what is already there: in a folder, an archive
of the pinned size; on GCS, an object of the pinned size whose crc32c is the one
hubpin computed (google-crc32c) from the verified bytes when it uploaded them
(kept in the object's metadata), which needs no download at all. An object
without that note is downloaded from the usual sources, verified, and uploaded
only if its size or crc32c differ.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from hubpin.atomic import write_atomic
from hubpin.errors import FetchError, HubpinError, InputError, IntegrityError, write_error
from hubpin.kinds import ArchivePin
from hubpin.lockfile import Lock, dumps
from hubpin.reader import HashingReader
from hubpin.sources import ARCHIVES, BUNDLE_LOCK, Sources, bundle_archive, bundle_lock
from hubpin.storage import Storage
from hubpin.storage.local import path_of
from hubpin.storage.schemes import known, scheme

log = logging.getLogger("hubpin")
_SHA_KEY = "hubpin-sha256"  # object metadata: the verified sha256; beside it the store's checksum


@dataclass
class Written:
    """What a bundle run left in the bundle, by alias."""

    archives: list[str] = field(default_factory=list)  # every archive the bundle now holds
    kept: list[str] = field(default_factory=list)  # of those, already there before this run
    reference: str | None = None  # an OCI artifact's ``oci://…@sha256:<manifest digest>``


class _Target(Protocol):
    def where(self, pin: ArchivePin) -> str: ...  # the archive's path or gs:// URL in the bundle

    def has(self, pin: ArchivePin) -> bool: ...  # already there, complete, without reading upstream

    def put(self, pin: ArchivePin, sources: Sources) -> bool: ...  # False: found there after all

    def finish(self, lock_text: str) -> str | None: ...  # the lock, last; an OCI digest


def write_bundle(lock: Lock, aliases: list[str], out: str, sources: Sources) -> Written:
    """Put each pinned archive of ``aliases`` into ``out``, verified, then the lock.

    Archives are copied ``jobs`` at a time (the setting; ``bundle --jobs``): each is a
    download, a verification and an upload that wait on the network more than on the CPU.
    Aliases pinning one archive share one copy. The lock is written only once every copy
    succeeded; on a failure the first failing alias (in the order given) is reported."""
    written = Written()
    first: dict[str, str] = {}  # archive sha256 -> the first alias pinning it
    pins: dict[str, ArchivePin] = {}
    for alias in aliases:
        pin = lock.models[alias]
        if isinstance(pin, ArchivePin):
            pins[alias] = pin
            first.setdefault(pin.archive_sha256, alias)
    with _target(out, sources) as target:

        def copy(alias: str) -> bool:
            """Whether the archive was already there."""
            pin = pins[alias]
            try:
                return target.has(pin) or not target.put(pin, sources)
            except HubpinError as exc:
                raise type(exc)(
                    f"{alias} ({pin.handle}): {exc}; the bundle's {BUNDLE_LOCK} was not written"
                ) from None

        leaders = list(first.values())
        jobs = max(1, min(sources.transport.settings.jobs, len(leaders)))
        with ThreadPoolExecutor(jobs, thread_name_prefix="hubpin-bundle") as pool:
            futures = {alias: pool.submit(copy, alias) for alias in leaders}
            for future in as_completed(futures.values()):
                if future.exception() is not None:
                    for other in futures.values():
                        other.cancel()  # those not started yet; the running ones finish
                    break
        failed = [f for f in futures.values() if not f.cancelled() and f.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        for alias, pin in pins.items():
            leader = first[pin.archive_sha256]
            if leader != alias or futures[leader].result():
                log.info("%s: %s is already there; not written again", alias, target.where(pin))
                written.kept.append(alias)
            written.archives.append(alias)
        written.reference = target.finish(dumps(lock))
    return written


@contextlib.contextmanager
def _target(out: str, sources: Sources) -> Iterator[_Target]:
    """The bundle ``out`` names: a folder or ``.tar``, or a store prefix laid out as the module
    docstring says (an OCI registry's back-end maps that layout onto an artifact)."""
    spec = scheme(out)
    if spec is None or not spec.bundles:
        stores = ", ".join(s.example for s in known("bundles") if s.remote)
        raise InputError(f"{out}: a bundle is a folder, a .tar file or a store prefix ({stores})")
    if spec.remote:
        yield _StoreBundle(out, sources.transport.storage(out))
        return
    path = path_of(out)
    try:
        if path.suffix != ".tar":
            yield _Folder(path)
            return
        scratch = Path(tempfile.mkdtemp(prefix=".hubpin-bundle-", dir=path.parent))
        try:
            yield _Tar(scratch, path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except OSError as exc:
        raise write_error(exc, path) from None


def _copy_verified(
    sources: Sources, pin: ArchivePin, fh: IO[bytes], also: Callable[[bytes], None] | None = None
) -> None:
    """Stream the pinned archive into ``fh`` (and ``also``); raise unless it is what the lock pins."""
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


class _Folder:
    """A bundle folder; each archive is written to a temp file and renamed into place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / ARCHIVES).mkdir(parents=True, exist_ok=True)

    def where(self, pin: ArchivePin) -> str:
        return bundle_archive(str(self.folder), pin.archive_sha256)

    def _path(self, pin: ArchivePin) -> Path:
        return Path(self.where(pin))

    def has(self, pin: ArchivePin) -> bool:
        path = self._path(pin)
        return path.is_file() and path.stat().st_size == pin.archive_size

    def put(self, pin: ArchivePin, sources: Sources) -> bool:
        write_atomic(self._path(pin), lambda fh: _copy_verified(sources, pin, fh))
        return True

    def finish(self, lock_text: str) -> None:
        write_atomic(Path(bundle_lock(str(self.folder))), lock_text)


class _Tar(_Folder):
    """A folder built in scratch space, then packed into one ``.tar`` file."""

    def __init__(self, scratch: Path, out: Path) -> None:
        super().__init__(scratch)
        self.out = out

    def finish(self, lock_text: str) -> None:
        super().finish(lock_text)

        def pack(fh: IO[bytes]) -> None:
            with tarfile.open(fileobj=fh, mode="w") as tar:
                tar.add(self.folder, arcname=".")

        write_atomic(self.out, pack)


class _StoreBundle:
    """A bundle under a store prefix such as ``gs://bucket/prefix`` (see the module docstring).

    Each archive is noted with its sha256 and the store's own checksum of the bytes
    hubpin verified (for GCS, crc32c), so a rerun trusts one ``stat`` per archive.
    """

    def __init__(self, url: str, storage: Storage) -> None:
        self.url = url.rstrip("/")
        self.storage = storage
        problem = storage.root_problem(self.url)  # before downloading anything
        if problem is not None:
            raise FetchError(f"{self.url}: {problem} or fix the bundle's URL")
        self.note = f"hubpin-{storage.checksum_name}"

    def where(self, pin: ArchivePin) -> str:
        return bundle_archive(self.url, pin.archive_sha256)

    def has(self, pin: ArchivePin) -> bool:
        where = self.where(pin)
        found = self.storage.stat(where) or self.storage.adopt(where, pin.archive_sha256)
        if found is None or found.size != pin.archive_size or not found.checksum:
            return False
        direct = self.storage.sha256_checksum(pin.archive_sha256)
        if direct is not None:  # the store's own checksum is a sha256: it vouches alone
            return found.checksum == direct
        return (
            found.metadata.get(_SHA_KEY) == pin.archive_sha256
            and found.metadata.get(self.note) == found.checksum
        )

    def put(self, pin: ArchivePin, sources: Sources) -> bool:
        url = self.where(pin)
        # Where the store's checksum is a sha256, the lock's is it (the bytes are checked
        # against the lock before anything is uploaded): no second hash while streaming.
        direct = self.storage.sha256_checksum(pin.archive_sha256)
        checksum = None if direct else self.storage.new_checksum()
        with tempfile.NamedTemporaryFile(prefix="hubpin-bundle-") as fh:
            _copy_verified(sources, pin, fh, checksum.update if checksum else None)
            fh.flush()
            value = direct or (checksum.value() if checksum else None)
            found = self.storage.stat(url)
            if found is not None and found.size == pin.archive_size and found.checksum == value:
                return False  # the same bytes, uploaded without hubpin's note
            notes = {_SHA_KEY: pin.archive_sha256}
            if value and direct is None:
                notes[self.note] = value
            self.storage.put(url, Path(fh.name), checksum=value, metadata=notes)
        log.info("uploaded %s (%d bytes, %s %s)", url, pin.archive_size, self.note[7:], value)
        return True

    def finish(self, lock_text: str) -> str | None:
        self.storage.put(bundle_lock(self.url), lock_text.encode("utf-8"))
        return self.storage.pinned(self.url)
