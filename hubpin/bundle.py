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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from hubpin.atomic import write_atomic
from hubpin.errors import FetchError, HubpinError, InputError, write_error
from hubpin.handlers import Bundled, handler
from hubpin.lockfile import Lock, dumps
from hubpin.sources import ARCHIVES, BUNDLE_LOCK, Sources, bundle_lock
from hubpin.storage import Storage
from hubpin.storage.local import path_of
from hubpin.storage.schemes import known, scheme

log = logging.getLogger("hubpin")


@dataclass
class Written:
    """What a bundle run left in the bundle, by alias."""

    archives: list[str] = field(default_factory=list)  # every archive the bundle now holds
    kept: list[str] = field(default_factory=list)  # of those, already there before this run
    reference: str | None = None  # an OCI artifact's ``oci://…@sha256:<manifest digest>``
    files: list[str] = field(default_factory=list)  # the other files (a Hugging Face repo's)


class _Target(Protocol):
    def where(self, item: Bundled) -> str: ...  # the file's path or store URL in the bundle

    def has(self, item: Bundled) -> bool: ...  # already there, complete, without reading upstream

    def put(self, item: Bundled) -> bool: ...  # False: found there after all

    def finish(self, lock_text: str) -> str | None: ...  # the lock, last; an OCI digest


def write_bundle(lock: Lock, aliases: list[str], out: str, sources: Sources) -> Written:
    """Put what each pin of ``aliases`` needs into ``out`` (its handler says what:
    :meth:`hubpin.handlers.Handler.bundled`), verified, then the lock.

    Files are copied ``jobs`` at a time (the setting; ``bundle --jobs``): each is a
    download, a verification and an upload that wait on the network more than on the CPU.
    Aliases pinning one file share one copy. The lock is written only once every copy
    succeeded; on a failure the first failing alias (in the order given) is reported."""
    written = Written()
    first: dict[str, tuple[str, Bundled]] = {}  # a file's name -> the first alias, the file
    needs: dict[str, list[str]] = {}  # alias -> the names of its files
    for alias in aliases:
        pin = lock.models[alias]
        items = handler(pin).bundled(pin, sources)
        needs[alias] = [item.name for item in items]
        for item in items:
            first.setdefault(item.name, (alias, item))
    with _target(out, sources) as target:

        def copy(name: str) -> bool:
            """Whether the file was already there."""
            alias, item = first[name]
            try:
                return target.has(item) or not target.put(item)
            except HubpinError as exc:
                handle = lock.models[alias].handle
                raise type(exc)(
                    f"{alias} ({handle}): {exc}; the bundle's {BUNDLE_LOCK} was not written"
                ) from None

        jobs = max(1, min(sources.transport.settings.jobs, len(first)))
        with ThreadPoolExecutor(jobs, thread_name_prefix="hubpin-bundle") as pool:
            futures = {name: pool.submit(copy, name) for name in first}
            for future in as_completed(futures.values()):
                if future.exception() is not None:
                    for other in futures.values():
                        other.cancel()  # those not started yet; the running ones finish
                    break
        failed = [f for f in futures.values() if not f.cancelled() and f.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        for alias, names in needs.items():
            archives = [n for n in names if first[n][1].pin is not None]
            if archives:
                written.archives.append(alias)
                if all(first[n][0] != alias or futures[n].result() for n in archives):
                    where = ", ".join(target.where(first[n][1]) for n in archives)
                    log.info("%s: %s is already there; not written again", alias, where)
                    written.kept.append(alias)
            written.files += [n for n in names if first[n][0] == alias and first[n][1].pin is None]
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


class _Folder:
    """A bundle folder; each file is written to a temp file and renamed into place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / ARCHIVES).mkdir(parents=True, exist_ok=True)

    def where(self, item: Bundled) -> str:
        return str(self.folder / item.name)

    def has(self, item: Bundled) -> bool:
        path = Path(self.where(item))
        return path.is_file() and path.stat().st_size == item.size

    def put(self, item: Bundled) -> bool:
        path = Path(self.where(item))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda fh: item.copy(fh, None))
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

    def where(self, item: Bundled) -> str:
        return f"{self.url}/{item.name}"

    def has(self, item: Bundled) -> bool:
        where = self.where(item)
        found = self.storage.stat(where)
        if found is None and item.sha256 is not None:
            found = self.storage.adopt(where, item.sha256)
        if found is None or found.size != item.size or not found.checksum:
            return False
        direct = self.storage.sha256_checksum(item.sha256) if item.sha256 else None
        if direct is not None:  # the store's own checksum is a sha256: it vouches alone
            return found.checksum == direct
        return (
            all(found.metadata.get(k) == v for k, v in item.notes.items())
            and found.metadata.get(self.note) == found.checksum
        )

    def put(self, item: Bundled) -> bool:
        url = self.where(item)
        # Where the store's checksum is a sha256, the lock's is it (the bytes are checked
        # against the lock before anything is uploaded): no second hash while streaming.
        direct = self.storage.sha256_checksum(item.sha256) if item.sha256 else None
        checksum = None if direct else self.storage.new_checksum()
        with tempfile.NamedTemporaryFile(prefix="hubpin-bundle-") as fh:
            item.copy(fh, checksum.update if checksum else None)
            fh.flush()
            value = direct or (checksum.value() if checksum else None)
            found = self.storage.stat(url)
            if found is not None and found.size == item.size and found.checksum == value:
                return False  # the same bytes, uploaded without hubpin's note
            notes = dict(item.notes)
            if value and direct is None:
                notes[self.note] = value
            self.storage.put(url, Path(fh.name), checksum=value, metadata=notes)
        log.info("uploaded %s (%d bytes, %s %s)", url, item.size, self.note[7:], value)
        return True

    def finish(self, lock_text: str) -> str | None:
        self.storage.put(bundle_lock(self.url), lock_text.encode("utf-8"))
        return self.storage.pinned(self.url)
