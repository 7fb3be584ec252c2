"""The checksums a host declares for a download, and checking the bytes against them.

Kaggle and tfhub.dev archives are served from Google Cloud Storage signed URLs,
which declare the object's size (``Content-Length``) and its CRC32C and MD5
(``X-Goog-Hash: crc32c=<b64>,md5=<b64>``, often as two separate headers). Those
are checked on every download, the first one included, because that first
download is what the lock's sha256 gets computed from: a body corrupted in
transit would otherwise be pinned as the truth.

Cost, measured on this project's 2-core machine over 200 MiB in 1 MiB chunks:
CRC32C with google-crc32c (compiled, SSE4.2) 30 ms, MD5 340 ms, SHA-256
(SHA-NI) 155 ms. A cold 1×200 MB sync takes about 0.8 s, so CRC32C fits the
3% budget and MD5 cannot: MD5 is computed only when it is declared and CRC32C
cannot be checked (not declared, or google-crc32c missing), unless asked for.
GCS always declares CRC32C; it omits MD5 for composite objects.

Nothing here touches the network or imports anything heavy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hubpin.errors import IntegrityError, TruncatedError

log = logging.getLogger("hubpin")

_crc32c: Any
try:  # compiled CRC32C; the pure-Python fallback (about 5 MB/s) is as good as none
    import google_crc32c as _crc32c

    _CRC32C = _crc32c.implementation == "c"
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c = None
    _CRC32C = False

_HASH_HEADER = "x-goog-hash"
_DIGEST_SIZE = {"crc32c": 4, "md5": 16}


def crc32c_available() -> bool:
    """Whether CRC32C can be computed at compiled speed (google-crc32c's C extension)."""
    return _CRC32C


@dataclass(frozen=True)
class Declared:
    """What a host says about a body: total size and base64 CRC32C / MD5 / SHA-256 (None: not
    said). S3 declares an object's SHA-256 (``x-amz-checksum-sha256``) when it was uploaded
    with one; it costs nothing to check, since every archive's SHA-256 is computed anyway.
    ``by`` names where the values came from, for the message when they do not match."""

    length: int | None = None
    crc32c: str | None = None
    md5: str | None = None
    sha256: str | None = None
    by: str = "Content-Length/X-Goog-Hash"

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.length, self.crc32c, self.md5, self.sha256))


def _header_values(headers: Any, name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive), however the mapping keeps repeats.

    urllib3's HTTPHeaderDict has ``getlist``; http.client / email messages have
    ``get_all``; requests and plain dicts join or keep one value; a list of
    pairs keeps each.
    """
    if hasattr(headers, "getlist"):
        return [str(v) for v in headers.getlist(name)]
    if hasattr(headers, "get_all"):
        return [str(v) for v in headers.get_all(name) or []]
    items: Iterable[tuple[Any, Any]] = headers.items() if isinstance(headers, Mapping) else headers
    return [str(v) for k, v in items if str(k).lower() == name]


def from_headers(headers: Any) -> Declared:
    """The checksums a response declares (``Content-Length``/``Content-Range``, ``X-Goog-Hash``).

    For a ``206`` the total size comes from ``Content-Range`` (GCS declares the
    whole object's hashes on ranged answers too). When GCS decompressed a
    gzip-stored object on the way (decompressive transcoding: stored encoding
    gzip, no ``Content-Encoding`` on the answer), the declared hashes and size
    describe the stored bytes, not the body, so nothing is declared. Malformed
    hash values are ignored with a warning (kagglehub does the same), so a
    broken header cannot fail a good download; two *different* values for one
    algorithm are an :class:`IntegrityError`, since one of them must be wrong.
    """
    stored = ",".join(_header_values(headers, "x-goog-stored-content-encoding")).strip().lower()
    encoding = ",".join(_header_values(headers, "content-encoding")).strip().lower()
    if stored not in ("", "identity") and encoding != stored:
        log.debug("body was transcoded from %s storage; its X-Goog-Hash does not apply", stored)
        return Declared()
    found: dict[str, str] = {}
    for value in _header_values(headers, _HASH_HEADER):
        for item in value.split(","):
            name, sep, digest = item.strip().partition("=")
            name = name.strip().lower()
            digest = digest.strip()
            if not sep or name not in _DIGEST_SIZE:
                if item.strip():
                    log.debug("ignoring X-Goog-Hash item %r", item.strip()[:40])
                continue
            try:
                raw = base64.b64decode(digest, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != _DIGEST_SIZE[name]:
                log.warning("ignoring malformed X-Goog-Hash %s value %r", name, digest[:40])
                continue
            if name in found and found[name] != digest:
                raise IntegrityError(
                    f"the server declared two different {name} values in X-Goog-Hash "
                    f"({found[name]} and {digest})"
                )
            found[name] = digest
    return Declared(_total_length(headers), found.get("crc32c"), found.get("md5"))


def _total_length(headers: Any) -> int | None:
    content_range = ",".join(_header_values(headers, "content-range"))
    if content_range:
        total = content_range.rpartition("/")[2].strip()
        return int(total) if total.isdigit() else None
    lengths = {v.strip() for v in _header_values(headers, "content-length")}
    if len(lengths) == 1 and (value := lengths.pop()).isdigit():
        return int(value)
    return None


class Checker:
    """Hash a body as it streams, then compare it with what the host declared.

    ``md5``: None (the default) computes MD5 only when it is declared and CRC32C
    cannot be checked; True whenever it is declared; False never. CRC32C is
    computed whenever it is declared and google-crc32c is available.
    """

    def __init__(self, declared: Declared, *, md5: bool | None = None) -> None:
        self.declared = declared
        self.size = 0
        self._crc: int | None = 0 if declared.crc32c is not None and _CRC32C else None
        want_md5 = declared.md5 is not None and (md5 if md5 is not None else self._crc is None)
        self._md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
        if declared.crc32c is not None and not _CRC32C:
            log.debug("google-crc32c is not installed: the declared crc32c is not checked")

    @property
    def checks(self) -> list[str]:
        """What :meth:`check` will compare: some of "length", "crc32c", "md5"."""
        return [
            name
            for name, on in (
                ("length", self.declared.length is not None),
                ("crc32c", self._crc is not None),
                ("md5", self._md5 is not None),
                ("sha256", self.declared.sha256 is not None),
            )
            if on
        ]

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self.size += len(chunk)
        if self._crc is not None:
            # google-crc32c takes only bytes; a view is copied (about 10 ms per 200 MB)
            data = chunk if isinstance(chunk, bytes) else bytes(chunk)
            self._crc = _crc32c.extend(self._crc, data)
        if self._md5 is not None:
            self._md5.update(chunk)

    def computed(self, sha256: bytes | None = None) -> Declared:
        """What the bytes seen so far have: size, and the checksums being computed (SHA-256 is
        the caller's, who computes it anyway)."""
        crc = (
            base64.b64encode(self._crc.to_bytes(4, "big")).decode()
            if self._crc is not None
            else None
        )
        md5 = base64.b64encode(self._md5.digest()).decode() if self._md5 is not None else None
        sha = base64.b64encode(sha256).decode() if sha256 is not None else None
        return Declared(self.size, crc, md5, sha)

    def check(self, where: str, sha256: bytes | None = None) -> None:
        """Raise unless every declared value that was computed matches; ``where`` names the download,
        ``sha256`` is the digest of the bytes (compared when the host declared one).

        A body shorter than its declared length is a :class:`TruncatedError`
        (the transfer stopped); any other difference is a "corrupt download"
        :class:`IntegrityError` naming the declared and the computed checksums.
        """
        declared, got = (
            self.declared,
            self.computed(sha256 if self.declared.sha256 is not None else None),
        )
        if declared.length is not None and got.length is not None and got.length < declared.length:
            raise TruncatedError(
                f"{where}: download truncated: got {got.length} of the {declared.length} bytes "
                "the server declared"
            )
        names = [n for n in ("crc32c", "md5", "sha256") if getattr(got, n) is not None]
        bad_length = declared.length is not None and got.length != declared.length
        bad_hash = any(getattr(got, n) != getattr(declared, n) for n in names)
        if not (bad_length or bad_hash):
            return
        said = [f"{n}={getattr(declared, n)}" for n in names]
        seen = [f"{n}={getattr(got, n)}" for n in names]
        if bad_length:
            said.insert(0, f"{declared.length} bytes")
            seen.insert(0, f"{got.length} bytes")
        raise IntegrityError(
            f"{where}: corrupt download: the server declared {', '.join(said)} "
            f"({declared.by}) but the bytes received have {', '.join(seen)}; "
            "nothing was pinned or published, run the command again"
        )
