"""Storage back-ends: what hubpin needs of a place that keeps bytes under names.

A cache root, a bundle, a ``[[mirrors]]`` target and an archive handle are all
*locations*: a path, ``file://…``, ``gs://bucket/name`` and whatever else is
registered. :mod:`hubpin.storage.schemes` is the one table that says what each
scheme is and which back-end serves it; :func:`storage_for` gives that back-end
for a location. Callers never compare schemes themselves.

The interface is small on purpose, so that a store with conditional writes is
easy to add, and the cache's lock protocol (:mod:`hubpin.cache.lease`) is written
once over it:

``open(location, start=0, end=None, version=None) -> Download``
    The bytes ``[start, end)`` (all when ``end`` is None), with the size and the
    checksums the store declares (checked by the reader as they stream). With
    ``version``, exactly that version of the object, or an error if it was replaced.
``stat(location) -> Stat | None``
    Size, version, the store's own checksum and metadata; None when absent.
``read(location) -> (bytes, Stat) | None``
    A small object (a lock, a record) and the version those bytes are.
``put(location, data, *, if_absent=False, if_version=None, checksum=None, metadata=None) -> Stat``
    Write an object whole (bytes, or a local file). ``if_absent``: only if nothing
    is there; ``if_version``: only if the object is still that version. A failed
    condition raises :class:`Conflict`. ``checksum`` (this store's kind, see
    ``checksum_name``) is checked by the store or right after the write; a mismatch
    leaves no object and raises.
``list(prefix) -> list[Stat]``
    Every object whose location starts with ``prefix`` (a folder prefix ends in ``/``).
    :class:`NoRoot` when the container itself (the bucket) does not exist.
``children(folder) -> (list[Stat], list[str])``
    The objects directly in a folder (ending in ``/``), and its sub-folders' locations.
``copy(source, target) -> Stat``
    A copy within the store, made by the store (GCS rewrite, S3 CopyObject).
``delete(location, if_version=None) -> bool``
    False when already gone; :class:`Conflict` when ``if_version`` no longer holds.
``remove_tree(prefix)``
    Everything below a folder prefix.
``new_checksum() -> Checksum | None``
    A running checksum of the kind ``Stat.checksum`` carries, so a writer can
    compute it while streaming and later trust a ``stat`` alone.
``sha256_checksum(sha256) -> str | None``
    Where the store's checksum *is* a sha256 (S3, OCI digests): the value a ``stat``
    shows for bytes of that sha256, so a lock's ``archive_sha256`` is checked by the
    store itself with no note kept beside the object.
``root_problem(location) -> str | None``
    Why nothing can live there (no such bucket, and how to create it), or None;
    asked by a writer before it reads anything upstream.
``adopt(location, sha256) -> Stat | None``
    The bytes of that sha256 made to appear at ``location`` from what the store holds
    elsewhere, sending none (an OCI registry mounting a blob from another
    repository); None where it cannot (the default).
``check_bundle(base, lock, aliases, lock_name)``
    Where a bundle is one object published whole (an OCI artifact), refuse one whose
    lock differs from the worker's before any archive is read; elsewhere nothing
    (each archive is verified against the worker's lock anyway).
``pinned(location) -> str | None``
    A name for what ``location`` holds that never changes (an OCI manifest's
    ``…@sha256:`` reference), or None: what ``bundle`` prints as its result.
``remove_hint(location) -> str``
    How a user deletes one object by hand ("delete the lock file", ``gcloud storage rm``).

Versions are opaque strings: GCS's generation, S3's ETag, a local file's inode,
mtime and size. A back-end raises ``self.error`` (FetchError, or CacheError when
the cache asked for it) with one line naming the location for anything else.

Adding a store (``s3://``: ``If-None-Match: *`` for ``if_absent``, ``If-Match`` on
the ETag for ``if_version``, ``x-amz-checksum-sha256`` as its checksum; ``oci://``:
a bundle's archives as blobs by digest, its lock as the manifest a tag names, see
:mod:`hubpin.storage.oci`) is one module with a :class:`Storage` subclass and one
:func:`hubpin.storage.schemes.register` line naming it, and the cache kind for a
``cache_dir`` of that scheme if it can hold one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from hubpin.errors import FetchError, HubpinError, InputError
from hubpin.storage.schemes import known, load, scheme, scheme_of

if TYPE_CHECKING:
    from hubpin.download import Download
    from hubpin.lockfile import Lock
    from hubpin.settings import Settings

__all__ = [
    "Checksum",
    "Conflict",
    "NoRoot",
    "Stat",
    "Storage",
    "scheme",
    "scheme_of",
    "storage_for",
]


@dataclass(frozen=True)
class Stat:
    """One object as the store describes it, without reading it."""

    location: str
    size: int
    version: str  # changes whenever the object is replaced
    checksum: str | None = None  # the store's own checksum of the bytes (see checksum_name)
    metadata: Mapping[str, str] = field(default_factory=dict)


class Conflict(Exception):
    """A conditional put or delete whose condition did not hold (HTTP 412, a file in the way)."""


class NoRoot(Exception):
    """The container a location needs does not exist; the message says how to create it."""


class Checksum(Protocol):
    def update(self, data: bytes) -> None: ...

    def value(self) -> str: ...


class Storage(ABC):
    """One back-end, shared by the threads of a command (see the module docstring)."""

    checksum_name: ClassVar[str | None] = None  # what Stat.checksum is ("crc32c", "sha256")
    shared: ClassVar[bool] = False  # other machines may hold its locks
    # Whether a listing's Stat carries the checksum (GCS's crc32c); else (S3) only the
    # version, which the store cache then records to notice a file's bytes changing.
    lists_checksums: ClassVar[bool] = True

    def __init__(self, settings: Settings | None, error: type[HubpinError] = FetchError) -> None:
        self.settings = settings  # None only for back-ends that need no settings (files)
        self.error = error

    @abstractmethod
    def open(
        self, location: str, start: int = 0, end: int | None = None, version: str | None = None
    ) -> Download: ...

    @abstractmethod
    def stat(self, location: str) -> Stat | None: ...

    def read(self, location: str) -> tuple[bytes, Stat] | None:
        """A small object's bytes and the version they are; None when absent."""
        for _ in range(5):  # replaced between stat and read: look again
            found = self.stat(location)
            if found is None:
                return None
            try:
                download = self.open(location, version=found.version)
                return b"".join(download.chunks), found
            except FileNotFoundError:
                continue
        return None

    @abstractmethod
    def put(
        self,
        location: str,
        data: bytes | Path,
        *,
        if_absent: bool = False,
        if_version: str | None = None,
        checksum: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Stat: ...

    @abstractmethod
    def list(self, prefix: str) -> list[Stat]: ...

    @abstractmethod
    def delete(self, location: str, if_version: str | None = None) -> bool: ...

    def children(self, folder: str) -> tuple[list[Stat], list[str]]:
        """Objects directly in ``folder`` (ending in ``/``) and its sub-folders (each ending in
        ``/``), from a full listing; stores that list by delimiter do it in one request."""
        objects, folders = [], set()
        for item in self.list(folder):
            head, slash, _ = item.location[len(folder) :].partition("/")
            if slash:
                folders.add(f"{folder}{head}/")
            else:
                objects.append(item)
        return objects, sorted(folders)

    @abstractmethod
    def copy(self, source: str, target: str) -> Stat: ...

    def remove_tree(self, prefix: str) -> None:
        """Delete everything below a folder prefix (ending in ``/``); nothing there is fine."""
        for item in self.list(prefix):
            self.delete(item.location)

    def new_checksum(self) -> Checksum | None:
        return None

    def sha256_checksum(self, sha256: str) -> str | None:
        """``Stat.checksum`` of bytes with this sha256 (hex), when the store's checksum is a
        sha256 (S3's ``x-amz-checksum-sha256``, an OCI digest); None when it is not."""
        return None

    def root_problem(self, location: str) -> str | None:
        return None

    def adopt(self, location: str, sha256: str) -> Stat | None:
        """Bytes of this sha256 placed at ``location`` from elsewhere in the store without
        sending them (an OCI mount); None where the store cannot."""
        return None

    def check_bundle(self, base: str, lock: Lock, aliases: list[str], lock_name: str) -> None:
        """Refuse a bundle published whole whose lock differs from ``lock`` for ``aliases``."""
        return None  # a folder or bucket bundle: each archive is verified as it is read

    def pinned(self, location: str) -> str | None:
        """An immutable name for what ``location`` holds now (an OCI digest reference)."""
        return None

    def remove_hint(self, location: str) -> str:
        """How a user deletes one object by hand (named in the message about a stuck lock)."""
        return f"delete {location}"

    def exists(self, location: str) -> bool:
        return self.stat(location) is not None


def storage_for(
    location: str, settings: Settings, error: type[HubpinError] = FetchError
) -> Storage:
    """The back-end that serves ``location``'s scheme; InputError when none does."""
    spec = scheme(location)
    if spec is None or spec.storage is None:
        stores = ", ".join(s.example for s in known("storage"))
        raise InputError(f"{location}: not a location hubpin can store to or read from ({stores})")
    return load(spec.storage)(settings, error)  # type: ignore[no-any-return]
