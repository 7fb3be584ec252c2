"""``gs://`` as a :class:`hubpin.storage.Storage`, over the one gcsfs client
(:mod:`hubpin.gcs.client`: hubpin's retries, timeouts and one-line errors).

Versions are object generations: ``if_absent`` is ``ifGenerationMatch=0`` and
``if_version`` is ``ifGenerationMatch=<generation>``, both sent as multipart
uploads (the kind fake-gcs-server enforces them on). The store's checksum is the
object's crc32c (base64, as GCS reports it), which GCS computes for every object.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubpin.checksums import Declared
from hubpin.download import Download
from hubpin.errors import FetchError, HubpinError, MissingError
from hubpin.gcs import client
from hubpin.settings import Settings
from hubpin.storage import Checksum, Conflict, NoRoot, Stat, Storage

if TYPE_CHECKING:
    from gcsfs.core import GCSFileSystem


class _Crc32c:
    def __init__(self) -> None:
        import google_crc32c

        self._checksum = google_crc32c.Checksum()

    def update(self, data: bytes) -> None:
        self._checksum.update(data)

    def value(self) -> str:
        return client.crc32c_of(self._checksum)


def stat_of(meta: dict[str, Any]) -> Stat:
    """A JSON API object resource as a Stat."""
    return Stat(
        f"gs://{meta['bucket']}/{meta['name']}",
        int(meta.get("size", 0)),
        str(meta.get("generation", "")),
        meta.get("crc32c"),
        dict(meta.get("metadata") or {}),
    )


class GcsStorage(Storage):
    """Objects under ``gs://bucket/…``, shared by every machine that can reach the bucket."""

    checksum_name = "crc32c"
    shared = True

    def __init__(self, settings: Settings, error: type[HubpinError] = FetchError) -> None:
        super().__init__(settings, error)
        self.settings: Settings = settings

    @property
    def fs(self) -> GCSFileSystem:
        return client.filesystem(self.settings)

    def _errors(self, location: str) -> Any:
        return client.errors(location, self.error)

    def open(
        self, location: str, start: int = 0, end: int | None = None, version: str | None = None
    ) -> Download:
        url = location.partition("?")[0]  # an object name has no query (a mirror may keep one)
        bucket, name = client.split_url(url)
        fs = self.fs
        if version is not None and end is not None:  # a listed object: no need to ask again
            meta: dict[str, Any] = {"size": end, "generation": version}
        else:
            with self._errors(url):
                meta = client.stat(fs, bucket, name) or {}
        if not meta or (version is not None and str(meta["generation"]) != version):
            if version is not None:
                raise FileNotFoundError(url)
            raise MissingError(f"{url}: archive not found (no such object)")
        size = int(meta["size"])
        stop = size if end is None else min(end, size)
        generation = str(meta["generation"])

        def chunks() -> Iterator[bytes]:
            with self._errors(url):
                yield from client.stream(fs, bucket, name, generation, stop, start)

        whole = start == 0 and stop == size
        declared = Declared(size, meta.get("crc32c"), meta.get("md5Hash")) if whole else None
        return Download(final_url=url, length=stop - start, chunks=chunks(), declared=declared)

    def stat(self, location: str) -> Stat | None:
        location = location.partition("?")[0]  # as in open()
        with self._errors(location):
            meta = client.stat(self.fs, *client.split_url(location))
        return None if meta is None else stat_of(meta)

    def read(self, location: str) -> tuple[bytes, Stat] | None:
        bucket, name = client.split_url(location)
        for _ in range(5):
            with self._errors(location):
                meta = client.stat(self.fs, bucket, name)
                if meta is None:
                    return None
                try:
                    body = client.download(self.fs, bucket, name, str(meta["generation"]))
                except FileNotFoundError:  # replaced between the two requests
                    continue
            return body, stat_of(meta)
        return None

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
        bucket, name = client.split_url(location)
        condition = "0" if if_absent else if_version
        with self._errors(location):
            if isinstance(data, Path) and condition is None:
                meta = client.put_file(self.fs, bucket, name, data, checksum, dict(metadata or {}))
                return stat_of(meta)
            body = data.read_bytes() if isinstance(data, Path) else data
            try:
                meta = client.upload(self.fs, bucket, name, body, condition, dict(metadata or {}))
            except FileExistsError:
                raise Conflict(location) from None
        return stat_of(meta)

    def list(self, prefix: str) -> list[Stat]:
        return self._list(prefix, None)[0]

    def children(self, folder: str) -> tuple[list[Stat], list[str]]:
        items, prefixes = self._list(folder, "/")
        bucket = client.split_url(folder)[0]
        return items, [f"gs://{bucket}/{p}" for p in prefixes]

    def _list(self, prefix: str, delimiter: str | None) -> tuple[list[Stat], list[str]]:
        """A listing answered 404 means the bucket is missing (an empty prefix lists empty)."""
        bucket, name = client.split_url(prefix)
        with self._errors(prefix):
            try:
                items, prefixes = client.list_all(self.fs, bucket, name, delimiter)
            except FileNotFoundError:
                raise NoRoot(self._no_bucket(bucket)) from None
        return [stat_of(item) for item in items], prefixes

    def copy(self, source: str, target: str) -> Stat:
        with self._errors(target):
            self.fs.copy(source.removeprefix("gs://"), target.removeprefix("gs://"))
            meta = client.stat(self.fs, *client.split_url(target))
        if meta is None:
            raise self.error(f"{target}: not there after a copy from {source}")
        return stat_of(meta)

    def delete(self, location: str, if_version: str | None = None) -> bool:
        with self._errors(location):
            try:
                return client.delete(self.fs, *client.split_url(location), if_version)
            except FileExistsError:
                raise Conflict(location) from None

    def remove_tree(self, prefix: str) -> None:
        names = [client.split_url(item.location)[1] for item in self.list(prefix)]
        if names:
            bucket = client.split_url(prefix)[0]
            with self._errors(prefix):
                client.delete_all(self.fs, bucket, names, self.settings.jobs)

    def remove_hint(self, location: str) -> str:
        return f"delete it (gcloud storage rm {location})"

    def new_checksum(self) -> Checksum:
        return _Crc32c()

    def root_problem(self, location: str) -> str | None:
        bucket = client.split_url(location)[0]
        with self._errors(location):
            if client.bucket_exists(self.fs, bucket):
                return None
        return self._no_bucket(bucket)

    @staticmethod
    def _no_bucket(bucket: str) -> str:
        return f"bucket {bucket} does not exist; create it (gcloud storage buckets create gs://{bucket})"
