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
API calls on ordinary objects, so it instantiates (a subclass of)
``gcsfs.core.GCSFileSystem`` directly and does *not* set the variable: this works whatever the environment
says and whoever imported gcsfs first, and leaves the user's own gcsfs alone.
Zonal (Rapid) buckets, which need gRPC, are not supported.

**Retries and timeouts are hubpin's.** gcsfs fixes its own retry count when its
class is defined (6 tries, about 30 s of backoff, whatever an instance is given)
and passes ``timeout=None`` to every aiohttp request, which disables aiohttp's
default: a request the server never answers waits forever. So hubpin's client
class (:func:`_client_class`) replaces gcsfs's one request method, through which
every JSON API call, upload and copy of gcsfs goes, with one that

- bounds each try: ``connect_timeout`` for the TCP connect, ``read_timeout`` for
  each wait on the server's answer (aiohttp's ``sock_connect``/``sock_read``), and,
  for request bodies, ``read_timeout`` without a byte accepted (aiohttp has no
  write timeout: a server that accepts the connection and stops reading would
  block an upload forever, measured);
- retries what gcsfs deems transient (connection errors, timeouts, 5xx, 408, 429)
  ``retries`` times with hubpin's backoff (0.1 s doubling, at most 8 s), then
  raises with the number of tries, which :func:`errors` puts in its one line;
- once a request gave up on the endpoint itself (cannot connect, no answer), fails
  every request of the next minute at once with the same error, so a sync of many
  models costs one budget, not one per model and step (and a long-lived process
  tries again later).

**Writes with preconditions are multipart uploads** (:func:`upload`): real GCS
honours ``ifGenerationMatch`` on every kind of upload, but fake-gcs-server only on
``uploadType=multipart`` (measured on 1.54: ignored on ``media`` and ``resumable``
uploads, on rewrites and on DELETE), and hubpin's lock and record must be
exclusive wherever they are tested.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubpin.errors import FetchError, HubpinError, SettingsError, install_hint, unreachable
from hubpin.retry import Retries
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
_GIVEN_UP_FOR = 60.0  # seconds an endpoint that exhausted the retries fails at once
_WATCHED_BODY = 256 << 10  # bodies larger than this are fed in chunks, each watched
_CHUNK = 64 << 10


def _not_installed() -> HubpinError:
    return HubpinError(f"gs:// locations need gcsfs, which is not installed; {install_hint('gcs')}")


def filesystem(settings: Settings) -> GCSFileSystem:
    """One gcsfs client per credentials, endpoint and network settings, shared by the
    threads of a command."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    token = _token(settings, emulator)
    network = (settings.retries, settings.connect_timeout, settings.read_timeout)
    key = (token, settings.gcs_project, emulator, network)
    with _filesystems_lock:
        if key not in _filesystems:
            try:
                client = _client_class()
            except ImportError:
                raise _not_installed() from None
            # gcsfs logs a traceback when it gives up; we raise one line instead. A handler
            # of its own keeps Python's last-resort handler from printing it, while an
            # application that configured logging still receives it.
            logging.getLogger("gcsfs").addHandler(logging.NullHandler())
            extra = {"project": settings.gcs_project} if settings.gcs_project else {}
            try:
                _filesystems[key] = client(
                    settings,
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


class _BodyStalled(Exception):
    """Raised (as an aiohttp ServerTimeoutError) when a server stops accepting a body."""


_client: type[GCSFileSystem] | None = None


def _client_class() -> type[GCSFileSystem]:
    """``gcsfs.core.GCSFileSystem`` with hubpin's retries and timeouts (see the module doc)."""
    global _client
    if _client is not None:
        return _client
    import aiohttp
    from gcsfs.core import GCSFileSystem
    from gcsfs.retry import is_retriable, validate_response

    class Stalled(aiohttp.ServerTimeoutError, _BodyStalled):
        pass

    class Client(GCSFileSystem):  # type: ignore[misc]
        def __init__(self, settings: Settings, **kwargs: Any) -> None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
            )
            super().__init__(
                requests_timeout=timeout, session_kwargs={"timeout": timeout}, **kwargs
            )
            self.hubpin_settings = settings
            self.hubpin_given_up: tuple[float, BaseException] | None = None

        async def _request(  # type: ignore[override]
            self,
            method: str,
            path: str,
            *args: Any,
            headers: dict[str, str] | None = None,
            json: Any = None,
            data: Any = None,
            **kwargs: Any,
        ) -> tuple[int, Any, Any, bytes]:
            settings = self.hubpin_settings
            url = self._format_path(path, args)
            tries = Retries(settings.retries, first=0.1)
            while True:
                given_up = self.hubpin_given_up
                if given_up is not None and time.monotonic() - given_up[0] < _GIVEN_UP_FOR:
                    raise given_up[1]
                try:
                    return await self._attempt(method, url, path, args, headers, json, data, kwargs)
                except Exception as exc:
                    if not is_retriable(exc):
                        raise
                    delay = tries.failed()
                    if delay is None:
                        exc.hubpin_tries = tries.failures  # type: ignore[attr-defined]
                        exc.hubpin_reason = _timeout_reason(exc, settings)  # type: ignore[attr-defined]
                        exc.hubpin_endpoint = _endpoint(self)  # type: ignore[attr-defined]
                        if isinstance(
                            exc, aiohttp.ClientConnectionError | TimeoutError
                        ) and not isinstance(exc, _BodyStalled):
                            self.hubpin_given_up = (time.monotonic(), exc)
                        raise
                    log.info(
                        "%s: %s; retrying",
                        urllib.parse.unquote(url.split("?")[0]),
                        _timeout_reason(exc, settings) or _reason(exc),
                    )
                    await asyncio.sleep(delay)

        async def _attempt(
            self,
            method: str,
            url: str,
            path: str,
            args: tuple[Any, ...],
            headers: dict[str, str] | None,
            json: Any,
            data: Any,
            kwargs: dict[str, Any],
        ) -> tuple[int, Any, Any, bytes]:
            await self._set_session()
            kwargs = dict(kwargs)  # a retry sends the same request again
            extra = {k: kwargs.pop(k) for k in ("cache_type", "cache_source") if k in kwargs}
            extra = {k: v for k, v in extra.items() if v is not None}
            if hasattr(data, "seek"):
                data.seek(0)
            feed = None
            if isinstance(data, bytes | bytearray | memoryview) and len(data) > _WATCHED_BODY:
                feed = _Feed(data)
                headers = {**(headers or {}), "Content-Length": str(len(data))}

            async def send() -> tuple[int, Any, Any, bytes]:
                async with self.session.request(
                    method=method,
                    url=url,
                    params=self._get_params(kwargs),
                    json=json,
                    headers=self._get_headers(headers, **extra),
                    data=feed.chunks() if feed else data,
                    timeout=self.requests_timeout,
                    # a resumable upload's "308 Resume Incomplete" is an answer, not a redirect
                    # (real GCS sends no Location; an emulator that does must not be followed)
                    allow_redirects=False,
                ) as response:
                    contents = await response.read()
                    validate_response(response.status, contents, path, args)
                    return response.status, response.headers, response.request_info, contents

            if feed is None:
                return await send()
            return await feed.watch(send(), self.hubpin_settings.read_timeout, Stalled)

    _client = Client
    return _client


class _Feed:
    """A request body handed to aiohttp in chunks, so that a server that stops reading it
    is noticed: aiohttp asks for the next chunk only once the last one was taken."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = memoryview(data)
        self.last = time.monotonic()
        self.done = False

    async def chunks(self) -> Any:
        for start in range(0, len(self.data), _CHUNK):
            self.last = time.monotonic()
            yield self.data[start : start + _CHUNK]
        self.done = True  # from here on aiohttp's sock_read bounds the wait for the answer

    async def watch(self, request: Any, timeout: float, stalled: type[Exception]) -> Any:
        task = asyncio.ensure_future(request)
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(timeout, 1.0))
            if done:
                return task.result()
            if not self.done and time.monotonic() - self.last > timeout:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise stalled(f"the server accepted no bytes of the request for {timeout:g}s")


def _timeout_reason(exc: BaseException, settings: Settings) -> str:
    """What a timeout means in terms of the settings that bound it ("" for other errors)."""
    import aiohttp

    if isinstance(exc, _BodyStalled):
        return f"no bytes of the request accepted within read_timeout ({settings.read_timeout:g}s)"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"no connection within connect_timeout ({settings.connect_timeout:g}s)"
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return f"no answer within read_timeout ({settings.read_timeout:g}s)"
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        return os.strerror(exc.os_error.errno).lower()
    return ""


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
    try:
        import aiohttp
        import google.auth.exceptions
        from fsspec.exceptions import FSTimeoutError
        from gcsfs.retry import HttpError
    except ImportError:  # the gcs extra is not installed: say so before the client is made
        raise _not_installed() from None

    try:
        yield
    except HubpinError:
        raise
    except FileNotFoundError:
        raise error(f"{where}: not found (HTTP 404)") from None
    except FileExistsError:
        raise error(f"{where}: changed by someone else meanwhile (HTTP 412)") from None
    except (aiohttp.ClientConnectionError, TimeoutError, FSTimeoutError) as exc:
        if isinstance(exc, FSTimeoutError) and exc.__cause__ is not None:
            exc = exc.__cause__  # fsspec re-raises every asyncio.TimeoutError as its own
        endpoint = getattr(exc, "hubpin_endpoint", None) or _default_endpoint()
        reason = getattr(exc, "hubpin_reason", "") or _reason(exc)
        check = "that the endpoint is up" + (
            ", or STORAGE_EMULATOR_HOST, which names it" if _emulator() else ""
        )
        raise error(
            f"{where}: "
            + unreachable(f"the GCS endpoint {endpoint}", reason, _tries(exc).strip(" ()"), check)
        ) from None
    except OSError as exc:
        if str(exc).startswith("Forbidden"):
            raise error(
                f"{where}: access denied (HTTP 403); check gcs_token and gcs_project in hubpin.toml"
            ) from None
        raise error(f"{where}: {_reason(exc)}{_tries(exc)}") from None
    except HttpError as exc:
        hint = "; check gcs_token in hubpin.toml" if exc.code == 401 else ""
        raise error(f"{where}: HTTP {exc.code} {_reason(exc)}{hint}{_tries(exc)}") from None
    except (ValueError, aiohttp.ClientError, google.auth.exceptions.GoogleAuthError) as exc:
        raise error(f"{where}: {_reason(exc)}{_tries(exc)}") from None


def _tries(exc: BaseException) -> str:
    tries = getattr(exc, "hubpin_tries", None)
    return f" (gave up after {tries} tries)" if tries else ""


def _default_endpoint() -> str:
    """Where gcsfs sends requests (``gcsfs.core.GCSFileSystem._location``)."""
    emulator = _emulator()
    if emulator:
        return emulator if "://" in emulator else f"http://{emulator}"
    return "https://storage.googleapis.com"


def _emulator() -> str:
    """STORAGE_EMULATOR_HOST when it points gcsfs away from Google's endpoint, else ''."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    return "" if emulator == "default" else emulator


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
    fs: GCSFileSystem,
    bucket: str,
    name: str,
    data: bytes,
    if_generation_match: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A one-request multipart upload (metadata part, media part), md5-checked.

    ``if_generation_match="0"``: only if absent; ``"<generation>"``: only if that is the
    live generation; FileExistsError (HTTP 412) otherwise. Multipart, not
    ``uploadType=media``, because that is what fake-gcs-server enforces it on (real
    GCS honours both). The name is also in the query string (GCS takes it from there
    when both are given), so request logs show what each upload wrote.
    """
    boundary = f"hubpin-{uuid.uuid4().hex}"
    resource = {"name": name, "contentType": "application/octet-stream"}
    text = json.dumps(resource | ({"metadata": metadata} if metadata else {}))
    body = b"".join(
        (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            text.encode(),
            f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    result: dict[str, Any] = fs.call(
        "POST",
        f"{_endpoint(fs)}/upload/storage/v1/b/{{}}/o",
        bucket,
        uploadType="multipart",
        name=name,
        ifGenerationMatch=if_generation_match,
        data=body,
        headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
        json_out=True,
    )
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    if result.get("md5Hash", md5) != md5 or int(result.get("size", len(data))) != len(data):
        raise ValueError(
            f"upload of {name} arrived as {result.get('size')} bytes with md5 "
            f"{result.get('md5Hash')}, sent {len(data)} bytes with md5 {md5}"
        )
    return result


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
    fs: GCSFileSystem, bucket: str, name: str, generation: str, size: int, first: int = 0
) -> Iterator[bytes]:
    """One generation's bytes ``[first, size)``, by ranges of ``_BLOCK``: each range is retried
    by gcsfs, and an overwrite during the read fails (404 on that generation) instead of
    mixing versions."""
    url = f"{_endpoint(fs)}/download/storage/v1/b/{{}}/o/{{}}"
    for start in range(first, size, _BLOCK):
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


def crc32c_of(checksum: Any) -> str:
    """A ``google_crc32c.Checksum``'s value as GCS reports an object's ``crc32c`` (base64)."""
    import base64

    return base64.b64encode(checksum.digest()).decode("ascii")


def put_file(
    fs: GCSFileSystem,
    bucket: str,
    name: str,
    path: Path,
    crc32c: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Upload a local file; the object's resource afterwards.

    Above 5 MiB gcsfs uploads resumably, in ``_BLOCK`` chunks; GCS creates the object
    only when the last chunk arrives, so an upload killed midway leaves no object.
    With ``crc32c``, the object's is checked afterwards (a mismatch deletes it and
    raises ValueError).
    """
    size = path.stat().st_size
    fs.put_file(str(path), f"{bucket}/{name}", metadata=metadata, chunksize=_BLOCK)
    meta = stat(fs, bucket, name)
    if meta is None or int(meta["size"]) != size or (crc32c and meta.get("crc32c") != crc32c):
        found = (
            "no object" if meta is None else f"{meta['size']} bytes, crc32c {meta.get('crc32c')}"
        )
        if meta is not None:
            delete(fs, bucket, name, str(meta["generation"]))
        raise ValueError(f"after upload found {found}, expected {size} bytes, crc32c {crc32c}")
    return meta


def bucket_exists(fs: GCSFileSystem, bucket: str) -> bool:
    """Whether ``bucket`` exists (one listing request, which needs no bucket-level rights)."""
    try:
        fs.call("GET", "b/{}/o", bucket, maxResults=1)
    except FileNotFoundError:
        return False
    return True
