"""One face for the shared-store emulators (gs:// on gcp-storage-emulator or fake-gcs-server,
s3:// on moto's server), so tests of a contract every store keeps (bundles, mirrors, the
shared cache's commit and lock protocol) are written once and run on each.

Each emulator logs its requests in its own dialect; :class:`Store` reads them as
:class:`Request` (method, object key, status) so a test counts writes to an object, not
lines of one server's log. What only one store does (GCS's resumable uploads and
generations, S3's stored SHA-256) stays in that store's own test file.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

_LINE = re.compile(r'^"(\w+) (\S+) HTTP/[\d.]+" (\d+)')
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Request:
    """One request an emulator answered: its method, the object it named (None for a request
    that names none, such as a resumable upload's continuation), its query and status."""

    method: str
    key: str | None
    query: str
    status: int


@dataclass
class Store:
    """A store emulator as a test sees it (see the module docstring)."""

    name: str  # the emulator: "gcp-storage-emulator", "fake-gcs-server" or "s3"
    server: Any  # gcs_emulator.GcsServer or moto_s3.MotoS3

    def __repr__(self) -> str:
        return self.name

    @property
    def scheme(self) -> str:
        return "s3" if self.name == "s3" else "gs"

    def bucket(self) -> str:
        return str(self.server.bucket())

    def url(self, bucket: str, path: str) -> str:
        return f"{self.scheme}://{bucket}/{path}"

    def listing(self, url: str) -> dict[str, dict[str, Any]]:
        return self.server.listing(url)  # type: ignore[no-any-return]

    def read(self, url: str) -> bytes:
        return self.server.read(url)  # type: ignore[no-any-return]

    def put(self, url: str, data: bytes) -> None:
        self.server.put(url, data)

    def no_bucket(self, bucket: str) -> str:
        """What hubpin says to do about a bucket that does not exist."""
        if self.scheme == "s3":
            return f"bucket {bucket} does not exist; create it (aws s3 mb s3://{bucket})"
        return (
            f"bucket {bucket} does not exist; create it (gcloud storage buckets create "
            f"gs://{bucket})"
        )

    def requests(self, bucket: str, since: int = 0) -> list[Request]:
        """The requests about ``bucket`` answered so far (from the ``since``-th on)."""
        needle = f" /{bucket}/" if self.scheme == "s3" else f"/b/{bucket}/"
        return [self._parse(line, bucket) for line in self.server.requests(needle)][since:]

    def writes(self, bucket: str, since: int = 0) -> list[Request]:
        return [r for r in self.requests(bucket, since) if r.method in WRITES]

    def _parse(self, line: str, bucket: str) -> Request:
        found = _LINE.match(line)
        assert found, line
        method, target, status = found[1], found[2], int(found[3])
        path, _, query = target.partition("?")
        key: str | None = None
        if self.scheme == "s3":
            key = path.removeprefix(f"/{bucket}/")
        elif f"/rewriteTo/b/{bucket}/o/" in path:  # a copy names its target last
            key = path.rpartition(f"/rewriteTo/b/{bucket}/o/")[2]
        elif "name" in (fields := urllib.parse.parse_qs(query)):
            key = fields["name"][0]
        elif f"/b/{bucket}/o/" in path:
            key = path.partition(f"/b/{bucket}/o/")[2]
        return Request(method, key, query, status)


def b64(hex_digest: str) -> str:
    """A hex digest as S3 and GCS headers carry it (base64 of the bytes)."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()
