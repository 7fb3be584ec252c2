"""The GCS client hubpin shares: one gcsfs filesystem per credentials, one-line errors.

Everything on GCS talks to the GCS JSON API through gcsfs (the ``gcs`` extra), which
is imported only when something actually lives on GCS, so the CLI stays slim.

**Endpoint and credentials.** gcsfs sends every request to ``STORAGE_EMULATOR_HOST``
when it is set (``gcsfs.core._location``: the value, with ``http://`` prepended
when it has no scheme), else to ``https://storage.googleapis.com``. The token is
``gcs_token`` from hubpin.toml / ``HUBPIN_GCS_TOKEN``: ``anon`` (public buckets),
``google_default`` (application-default credentials), ``cloud`` (the metadata
server), a path to a service-account or authorized-user JSON file, or else a raw
OAuth access token. Unset, it is ``anon`` against an emulator and otherwise
gcsfs's own guess (ADC, gcloud's cache, metadata server, anonymous). A token is
never printed: errors name the setting, never its value.

**The gRPC bucket probe.** Since 2025 ``gcsfs.GCSFileSystem`` is, unless
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is false when gcsfs is first imported,
``ExtendedGcsFileSystem``, which asks the Storage Control API over gRPC what kind
of bucket each one is before using it. Nothing answers that on an emulator or
behind an HTTPS-only proxy: measured against gcp-storage-emulator, every call
stalled 60 s (a mkdir and four small writes had not finished after 200 s; the
same with ``gcsfs.core.GCSFileSystem`` took 0.4 s). hubpin needs only plain JSON
API calls on ordinary objects, so it instantiates ``gcsfs.core.GCSFileSystem``
directly and does *not* set the variable: this works whatever the environment
says and whoever imported gcsfs first, and leaves the user's own gcsfs alone.
Zonal (Rapid) buckets, which need gRPC, are not supported.

gcsfs retries transient failures itself (6 tries, about 30 s of backoff), so an
unreachable endpoint fails after that, with one line naming the location.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubpin.checksums import Declared
from hubpin.download import Download
from hubpin.errors import FetchError, HubpinError, MissingError, SettingsError
from hubpin.settings import Settings

if TYPE_CHECKING:
    from gcsfs.core import GCSFileSystem

log = logging.getLogger("hubpin")
_BLOCK = 8 << 20  # bytes per ranged GET when streaming an object
_TOKEN_WORDS = ("anon", "google_default", "cloud", "cache")


def split_url(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → ``("bucket", "a/b")``; the name may be empty."""
    bucket, _, name = url.removeprefix("gs://").partition("/")
    return bucket, name


_filesystems: dict[tuple[Any, ...], GCSFileSystem] = {}
_filesystems_lock = threading.Lock()


def filesystem(settings: Settings) -> GCSFileSystem:
    """One gcsfs client per credentials and endpoint, shared by the threads of a command."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    token = _token(settings, emulator)
    key = (token, settings.gcs_project, emulator)
    with _filesystems_lock:
        if key not in _filesystems:
            try:
                from gcsfs.core import GCSFileSystem
            except ImportError:
                raise HubpinError(
                    "gs:// locations need gcsfs, which is not installed; "
                    "run: pip install 'hubpin[gcs]'"
                ) from None
            # gcsfs logs a traceback when it gives up; we raise one line instead. A handler
            # of its own keeps Python's last-resort handler from printing it, while an
            # application that configured logging still receives it.
            logging.getLogger("gcsfs").addHandler(logging.NullHandler())
            extra = {"project": settings.gcs_project} if settings.gcs_project else {}
            try:
                _filesystems[key] = GCSFileSystem(
                    token=token,
                    use_listings_cache=False,  # other processes write; never trust a listing twice
                    skip_instance_cache=True,
                    **extra,
                )
            except Exception as exc:  # gcsfs/google-auth raise many kinds; none is a bug of ours
                raise SettingsError(
                    f"gcs_token: the GCS credentials could not be loaded ({type(exc).__name__}); "
                    f"expected one of {', '.join(_TOKEN_WORDS)}, a service-account JSON file "
                    "or an access token (set gcs_token in hubpin.toml or HUBPIN_GCS_TOKEN)"
                ) from None
        return _filesystems[key]


def _token(settings: Settings, emulator: str) -> str | None:
    token = settings.gcs_token
    if token is None:
        return "anon" if emulator not in ("", "default") else None
    if token in _TOKEN_WORDS:
        return token
    if "/" in token or os.sep in token or token.endswith(".json"):
        path = Path(token).expanduser()
        if not path.is_file():
            raise SettingsError(
                f"gcs_token {path}: file not found (expected a service-account JSON key file)"
            )
        return str(path)
    return token  # a raw access token: passed on, never shown


def _endpoint(fs: GCSFileSystem) -> str:
    return fs.base.rsplit("/storage/v1/", 1)[0]


@contextlib.contextmanager
def errors(where: str, error: type[HubpinError] = FetchError) -> Iterator[None]:
    """Turn whatever gcsfs, aiohttp or google-auth raise into one line naming ``where``."""
    import aiohttp
    import google.auth.exceptions
    from fsspec.exceptions import FSTimeoutError
    from gcsfs.retry import HttpError

    try:
        yield
    except HubpinError:
        raise
    except FileNotFoundError:
        raise error(f"{where}: not found (HTTP 404)") from None
    except FileExistsError:
        raise error(f"{where}: changed by someone else meanwhile (HTTP 412)") from None
    except (aiohttp.ClientConnectionError, TimeoutError, FSTimeoutError) as exc:
        raise error(f"{where}: cannot reach the GCS endpoint ({_reason(exc)})") from None
    except OSError as exc:
        if str(exc).startswith("Forbidden"):
            raise error(
                f"{where}: access denied (HTTP 403); check gcs_token and gcs_project in hubpin.toml"
            ) from None
        raise error(f"{where}: {_reason(exc)}") from None
    except HttpError as exc:
        hint = "; check gcs_token in hubpin.toml" if exc.code == 401 else ""
        raise error(f"{where}: HTTP {exc.code} {_reason(exc)}{hint}") from None
    except (ValueError, aiohttp.ClientError, google.auth.exceptions.GoogleAuthError) as exc:
        raise error(f"{where}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split("?")[0] if "://" in text else text


def list_all(
    fs: GCSFileSystem, bucket: str, prefix: str, delimiter: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every object (and with ``delimiter``, every sub-prefix) whose name starts with ``prefix``."""
    items: list[dict[str, Any]] = []
    prefixes: list[str] = []
    token = None
    while True:
        page = fs.call(
            "GET",
            "b/{}/o",
            bucket,
            prefix=prefix or None,
            delimiter=delimiter,
            pageToken=token,
            json_out=True,
        )
        items += page.get("items", [])
        prefixes += page.get("prefixes", [])
        token = page.get("nextPageToken")
        if not token:
            return items, prefixes


def stat(fs: GCSFileSystem, bucket: str, name: str) -> dict[str, Any] | None:
    try:
        return fs.call("GET", "b/{}/o/{}", bucket, name, json_out=True)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def download(fs: GCSFileSystem, bucket: str, name: str, generation: str | None = None) -> bytes:
    _, body = fs.call(
        "GET",
        f"{_endpoint(fs)}/download/storage/v1/b/{{}}/o/{{}}",
        bucket,
        name,
        alt="media",
        generation=generation,
    )
    return body  # type: ignore[no-any-return]


def upload(
    fs: GCSFileSystem, bucket: str, name: str, data: bytes, if_generation_match: str | None = None
) -> dict[str, Any]:
    """A one-request upload; ``if_generation_match="0"`` means only if absent (412 otherwise)."""
    return fs.call(  # type: ignore[no-any-return]
        "POST",
        f"{_endpoint(fs)}/upload/storage/v1/b/{{}}/o",
        bucket,
        uploadType="media",
        name=name,
        ifGenerationMatch=if_generation_match,
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        json_out=True,
    )


def delete(
    fs: GCSFileSystem, bucket: str, name: str, if_generation_match: str | None = None
) -> bool:
    """Delete one object; False when it was already gone."""
    try:
        fs.call("DELETE", "b/{}/o/{}", bucket, name, ifGenerationMatch=if_generation_match)
    except FileNotFoundError:
        return False
    return True


def delete_all(fs: GCSFileSystem, bucket: str, names: list[str], jobs: int) -> None:
    """Delete objects concurrently (each request is retried by gcsfs)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(names)))) as pool:
        list(pool.map(lambda name: delete(fs, bucket, name), names))


def stream(
    fs: GCSFileSystem, bucket: str, name: str, generation: str, size: int
) -> Iterator[bytes]:
    """One generation's bytes, by ranges of ``_BLOCK``: each range is retried by gcsfs, and
    an overwrite during the read fails (404 on that generation) instead of mixing versions."""
    url = f"{_endpoint(fs)}/download/storage/v1/b/{{}}/o/{{}}"
    for start in range(0, size, _BLOCK):
        end = min(size, start + _BLOCK) - 1
        _, body = fs.call(
            "GET",
            url,
            bucket,
            name,
            alt="media",
            generation=generation,
            headers={"Range": f"bytes={start}-{end}"},
        )
        if len(body) != end - start + 1:
            raise ValueError(f"got {len(body)} bytes for range {start}-{end} of {size}")
        yield body


def folder_prefix(name: str) -> str:
    return name.rstrip("/") + "/" if name.strip("/") else ""


def open_object(url: str, settings: Settings) -> Download:
    """Stream a gs:// archive (tensorflow_hub's GcsCompressedFileResolver case)."""
    bucket, name = split_url(url)
    fs = filesystem(settings)
    with errors(url):
        meta = stat(fs, bucket, name)
    if meta is None:
        raise MissingError(f"{url}: archive not found (no such object)")

    def chunks() -> Iterator[bytes]:
        with errors(url):
            yield from stream(fs, bucket, name, str(meta["generation"]), int(meta["size"]))

    declared = Declared(int(meta["size"]), meta.get("crc32c"), meta.get("md5Hash"))
    return Download(final_url=url, length=int(meta["size"]), chunks=chunks(), declared=declared)


def crc32c_of(checksum: Any) -> str:
    """A ``google_crc32c.Checksum``'s value as GCS reports an object's ``crc32c`` (base64)."""
    import base64

    return base64.b64encode(checksum.digest()).decode("ascii")


def upload_file_if_different(
    fs: GCSFileSystem,
    bucket: str,
    name: str,
    path: Path,
    crc32c: str,
    metadata: dict[str, str] | None = None,
) -> bool:
    """Upload a local file unless the object already has its size and ``crc32c``.

    Returns whether it uploaded. Above 5 MiB gcsfs uploads resumably, in ``_BLOCK``
    chunks; GCS creates the object only when the last chunk arrives, so an upload
    killed midway leaves no object. The object's crc32c is checked afterwards (a
    mismatch deletes it and raises ValueError).
    """
    size = path.stat().st_size
    meta = stat(fs, bucket, name)
    if meta is not None and int(meta["size"]) == size and meta.get("crc32c") == crc32c:
        return False
    fs.put_file(str(path), f"{bucket}/{name}", metadata=metadata, chunksize=_BLOCK)
    meta = stat(fs, bucket, name)
    if meta is None or meta.get("crc32c") != crc32c or int(meta["size"]) != size:
        found = (
            "no object" if meta is None else f"{meta['size']} bytes, crc32c {meta.get('crc32c')}"
        )
        if meta is not None:
            delete(fs, bucket, name, str(meta["generation"]))
        raise ValueError(f"after upload found {found}, expected {size} bytes, crc32c {crc32c}")
    return True


def bucket_exists(fs: GCSFileSystem, bucket: str) -> bool:
    """Whether ``bucket`` exists (one listing request, which needs no bucket-level rights)."""
    try:
        fs.call("GET", "b/{}/o", bucket, maxResults=1)
    except FileNotFoundError:
        return False
    return True
