"""``s3://`` (Amazon S3 and S3-compatible stores) as a :class:`hubpin.storage.Storage`,
over the one botocore client (:mod:`hubpin.s3.client`: hubpin's retries, timeouts and
one-line errors).

``if_absent`` is ``If-None-Match: *``; ``if_version`` is ``If-Match`` on the ETag; a
delete with ``if_version`` is a conditional DELETE (S3 and moto's server honour all
three with 412). The store's checksum is the object's SHA-256 (``x-amz-checksum-sha256``,
shown in hex as the lock holds it), which every hubpin upload carries and S3 checks on
arrival: a bundle's archive whose store checksum is the lock's sha256 is that archive.

**Versions.** An S3 ETag is the MD5 of the bytes, so rewriting an object with the same
bytes keeps its ETag: a lease that rewrites ``host.pid.uuid`` would look to waiters
like no progress at all, and they would take a live holder's lock after
``lock_timeout``. So every hubpin write also stores a fresh nonce in the object's
metadata (``x-amz-meta-hubpin-write``), and a version is ``<etag>#<nonce>``: it
changes on every write, while conditions still compare the ETag, the part S3 knows.
A listing (which carries no metadata) gives the ETag alone.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hubpin.checksums import Declared
from hubpin.download import Download
from hubpin.errors import FetchError, HubpinError, MissingError
from hubpin.s3 import client
from hubpin.s3.client import S3, Head, split_url
from hubpin.s3.multipart import copy_parts, put_parts
from hubpin.settings import Settings
from hubpin.storage import Conflict, NoRoot, Stat, Storage

_NONCE = "hubpin-write"


def _version(etag: str, metadata: Mapping[str, str]) -> str:
    nonce = metadata.get(_NONCE)
    return f"{etag}#{nonce}" if nonce else etag


def _etag(version: str) -> str:
    return version.partition("#")[0]


def _stat(bucket: str, head: Head) -> Stat:
    return Stat(
        f"s3://{bucket}/{head.key}",
        head.size,
        _version(head.etag, head.metadata),
        client.hex_of(head.sha256) if head.sha256 else None,
        {k: v for k, v in head.metadata.items() if k != _NONCE},
    )


class _Sha256:
    """A running SHA-256, in hex as the lock holds it (and as :class:`Stat` carries S3's)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def value(self) -> str:
        return self._hash.hexdigest()


class S3Storage(Storage):
    """Objects under ``s3://bucket/…``, shared by every machine that can reach the bucket."""

    checksum_name = "sha256"
    shared = True
    lists_checksums = False  # ListObjectsV2 names no checksum; the ETag changes with the bytes

    def __init__(self, settings: Settings, error: type[HubpinError] = FetchError) -> None:
        super().__init__(settings, error)
        self._in_parts: dict[str, Head] = {}  # objects this command wrote in parts

    @property
    def s3(self) -> S3:
        assert self.settings is not None
        return client.client(self.settings)

    def _errors(self, location: str) -> Any:
        return client.errors(location, self.error)

    def open(
        self, location: str, start: int = 0, end: int | None = None, version: str | None = None
    ) -> Download:
        url = location.partition("?")[0]  # a key has no query (a mirror may keep one)
        bucket, key = split_url(url)
        s3 = self.s3
        head: Head | None
        if version is not None and end is not None:  # a listed object: no need to ask again
            head = Head(key, end, _etag(version))
        else:
            with self._errors(url):
                head = s3.head(bucket, key)
        if head is None or (version is not None and _etag(version) != head.etag):
            if version is not None:
                raise FileNotFoundError(url)
            raise MissingError(f"{url}: archive not found (no such object)")
        stop = head.size if end is None else min(end, head.size)

        def chunks() -> Iterator[bytes]:
            with self._errors(url):
                yield from s3.stream(bucket, key, head.etag, stop, start)

        whole = start == 0 and stop == head.size
        declared = (
            Declared(head.size, crc32c=head.crc32c, sha256=head.sha256, by=client.DECLARED_BY)
            if whole
            else None
        )
        return Download(final_url=url, length=stop - start, chunks=chunks(), declared=declared)

    def stat(self, location: str) -> Stat | None:
        bucket, key = split_url(location)
        with self._errors(location):
            head = self.s3.head(bucket, key)
        return None if head is None else _stat(bucket, head)

    def read(self, location: str) -> tuple[bytes, Stat] | None:
        """One GET: the bytes and, from its headers, the version they are."""
        bucket, key = split_url(location)
        with self._errors(location):
            found = self.s3.read(bucket, key)
        if found is None:
            return None
        body, head = found
        return body, _stat(bucket, head)

    def put(
        self,
        location: str,
        data: bytes | Path,
        *,
        if_absent: bool = False,
        if_version: str | None = None,
        checksum: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Stat:
        """``checksum``: the SHA-256 (hex) the bytes must have; S3 refuses others."""
        bucket, key = split_url(location)
        noted = {**(metadata or {}), _NONCE: uuid.uuid4().hex}
        assert self.settings is not None
        write = self.s3.put
        in_parts = isinstance(data, Path) and data.stat().st_size > self.settings.s3_part_size
        if in_parts:
            write = functools.partial(put_parts, self.s3)  # one PUT takes at most 5 GiB
        with self._errors(location):
            try:
                head = write(
                    bucket,
                    key,
                    data,
                    if_absent=if_absent,
                    if_match=_etag(if_version) if if_version else None,
                    sha256=checksum,
                    metadata=noted,
                )
            except FileExistsError:
                raise Conflict(location) from None
        if in_parts:  # copied part for part, so the copy keeps its ETag (see copy)
            self._in_parts[location] = head
        return _stat(bucket, head)

    def list(self, prefix: str) -> list[Stat]:
        return self._list(prefix, None)[0]

    def children(self, folder: str) -> tuple[list[Stat], list[str]]:
        items, prefixes = self._list(folder, "/")
        bucket = split_url(folder)[0]
        return items, [f"s3://{bucket}/{p}" for p in prefixes]

    def _list(self, prefix: str, delimiter: str | None) -> tuple[list[Stat], list[str]]:
        """A listing's objects (each with its ETag as version: a listing has no metadata)."""
        bucket, key = split_url(prefix)
        with self._errors(prefix):
            problem = None
            try:
                items, prefixes = self.s3.list(bucket, key, delimiter)
            except Exception as exc:
                problem = client.no_bucket(exc, bucket)
                if problem is None:
                    raise
        if problem is not None:
            raise NoRoot(problem)
        stats = [
            Stat(f"s3://{bucket}/{item['Key']}", int(item.get("Size", 0)), item.get("ETag", ""))
            for item in items
        ]
        return stats, prefixes

    def copy(self, source: str, target: str) -> Stat:
        bucket, key = split_url(source)
        uploaded = self._in_parts.get(source)
        with self._errors(target):
            if uploaded is not None:
                head = copy_parts(self.s3, bucket, key, split_url(target)[1], uploaded)
            else:
                head = self.s3.copy(bucket, key, split_url(target)[1])
        return Stat(
            target, head.size, head.etag, client.hex_of(head.sha256) if head.sha256 else None
        )

    def delete(self, location: str, if_version: str | None = None) -> bool:
        bucket, key = split_url(location)
        with self._errors(location):
            try:
                return self.s3.delete(bucket, key, _etag(if_version) if if_version else None)
            except FileExistsError:
                raise Conflict(location) from None

    def remove_tree(self, prefix: str) -> None:
        bucket, key = split_url(prefix)
        with self._errors(prefix):
            items, _ = self.s3.list(bucket, key)
            if items:
                self.s3.delete_all(bucket, [item["Key"] for item in items])

    def new_checksum(self) -> _Sha256:
        return _Sha256()

    def sha256_checksum(self, sha256: str) -> str:
        return sha256

    def remove_hint(self, location: str) -> str:
        return f"delete it (aws s3 rm {location})"

    def root_problem(self, location: str) -> str | None:
        bucket = split_url(location)[0]
        with self._errors(location):
            return self.s3.bucket_problem(bucket)
