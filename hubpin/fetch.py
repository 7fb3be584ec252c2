"""HTTP(S) downloads with retries and resume, and local files.

HTTP follows tensorflow_hub's protocol (``?tf-hub-format=...``, redirects) but
checks each hop itself: plain http only to loopback unless allowed, never an
https→http downgrade. Transient failures (resets, timeouts, 5xx, 429) are retried
with backoff (429/503 after the server's Retry-After, capped); a body cut short
resumes with a Range request from where it stopped. Headers given for one host
(Kaggle credentials) go to that host only, never to a redirect target elsewhere.
A host that did not answer one request through all its tries is down for the rest of
the command: the parallel jobs' requests to it stop retrying, and later ones fail at
once, so what to check is said once, not once per model after as many timeouts.
Nothing here prints or records a URL with its query string.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from hubpin.checksums import from_headers
from hubpin.download import Download
from hubpin.errors import (
    MIRRORS_CHECK,
    FetchError,
    InputError,
    unreachable,
)
from hubpin.handles import is_loopback, scheme_of, strip_query
from hubpin.httpfaults import (
    NEXT_STEP,
    Hosts,
    Transient,
    down_reason,
    is_status,
    reason,
    retry_after,
    transient_errors,
)
from hubpin.retry import Retries, backoff_delay  # noqa: F401 - backoff_delay: re-exported
from hubpin.settings import Settings

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger("hubpin")
T = TypeVar("T")
_CHUNK = 1 << 20
_MAX_REDIRECTS = 10
# Parallel ranges (see Fetcher._ranged_if_slow): only for archives this large, after
# probing this many bytes on one connection and finding it slower than SLOW bytes/s.
RANGED_MIN = 32 << 20
PROBE = 4 << 20
SEGMENT = 4 << 20
SLOW = 50e6


class Fetcher:
    """Opens downloads; one per command, sharing HTTP connection pools.

    urllib3 rather than httpx: on a 194 MB body over loopback, urllib3 read it in
    0.05 s and httpx (pure-Python h11) in 0.26-0.32 s, holding the GIL that
    decompression and hashing need (benchmarks/).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pools: dict[str | None, urllib3.PoolManager] = {}
        self._proxies: dict[str, str] | None = None
        self._hosts = Hosts()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.clear()

    def _pool(self, url: str) -> urllib3.PoolManager:
        """The direct pool, or a proxy's for this URL (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)."""
        import urllib.request

        import urllib3

        if self._proxies is None:
            self._proxies = urllib.request.getproxies()
        proxy = self._proxies.get(scheme_of(url))
        host = urllib.parse.urlsplit(url).hostname or ""
        if proxy and urllib.request.proxy_bypass(host):
            proxy = None
        if proxy not in self._pools:
            s = self.settings
            options = _tls_options(s) | {
                "timeout": urllib3.Timeout(connect=s.connect_timeout, read=s.read_timeout),
                "retries": False,
                "maxsize": max(2, s.jobs),
                "headers": {"User-Agent": "hubpin"},
            }
            self._pools[proxy] = (
                urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
            )
        return self._pools[proxy]

    def ask_location(self, url: str) -> str:
        """GET ``url`` expecting tfhub.dev's ``303 See Other`` with a gs:// body."""
        response = self._with_retries(functools.partial(self._send, url, 0), url)
        try:
            body = response.read().decode("utf-8", "replace").strip()
        finally:
            response.release_conn()
        if response.status != 303:
            raise FetchError(
                f"{strip_query(url)}: expected HTTP 303 with a gs:// location, "
                f"got HTTP {response.status}"
            )
        if not body.startswith("gs://"):
            raise FetchError(
                f"{strip_query(url)}: expected a gs:// location in the 303 body, got {body[:80]!r}"
            )
        return body

    def open(self, url: str) -> Download:
        """GET an archive, following redirects; its bytes resume by Range after a cut."""
        response, final = self._with_retries(functools.partial(self._follow, url, 0), url)
        length = _content_length(response)
        chunks = self._http_chunks(url, response, length)
        if (
            self.settings.connections > 1
            and response.status == 200
            and length is not None
            and length >= RANGED_MIN
            and response.headers.get("accept-ranges", "").lower() == "bytes"
        ):
            chunks = self._ranged_if_slow(url, final, chunks, length)
        return Download(strip_query(final), length, chunks, from_headers(response.headers))

    def _ranged_if_slow(
        self, url: str, final: str, single: Iterator[bytes], length: int
    ) -> Iterator[bytes]:
        """The archive in order; the rest over parallel Range requests if one connection is slow.

        A single TCP connection is often capped well below the link (per-connection
        shaping, long fat pipes, some proxies). The first ``PROBE`` bytes are read
        before any is handed on, so their rate measures the network, not how fast
        unpacking consumes them. Segments are requested from the final URL (signed
        query included, never shown), handed on strictly in order, and at most
        ``connections + 2`` of them are held in memory.
        """
        started, head, got = time.monotonic(), [], 0
        for chunk in single:
            head.append(chunk)
            got += len(chunk)
            if got >= PROBE:
                break
        rate = got / max(time.monotonic() - started, 1e-6)
        yield from head
        if got >= length or rate >= SLOW:
            yield from single
            return
        single.close()  # type: ignore[attr-defined]  # a generator: closes its response
        log.info(
            "%s: %.0f MB/s on one connection; using %d",
            strip_query(url),
            rate / 1e6,
            self.settings.connections,
        )
        connections = self.settings.connections
        starts = iter(range(got, length, SEGMENT))
        pending: collections.deque[Future[bytes]] = collections.deque()
        with ThreadPoolExecutor(connections, thread_name_prefix="hubpin-range") as pool:
            try:
                while True:
                    while (
                        len(pending) < connections + 2 and (start := next(starts, None)) is not None
                    ):
                        end = min(start + SEGMENT, length) - 1
                        pending.append(pool.submit(self._segment, url, final, start, end))
                    if not pending:
                        return
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def _segment(self, url: str, final: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` (inclusive) of ``final``, resumed after transient failures."""
        parts: list[bytes] = []
        got, want = 0, end - start + 1
        tries = Retries(self.settings.retries)
        while True:
            try:
                response, _ = self._with_retries(
                    functools.partial(self._follow, final, start + got, end), url
                )
                try:
                    if response.status != 206:
                        raise FetchError(
                            f"{strip_query(url)}: asked for bytes {start + got}-{end}, got HTTP "
                            f"{response.status}; set connections = 1 in hubpin.toml"
                        )
                    while chunk := response.read(_CHUNK, decode_content=False):
                        parts.append(chunk)
                        got += len(chunk)
                    response.release_conn()
                finally:
                    response.close()
                if got != want:
                    raise Transient(f"range {start}-{end} ended after {got} of {want} bytes")
                return b"".join(parts)
            except transient_errors() as exc:
                delay = tries.failed()
                if delay is None or got > want:
                    raise FetchError(
                        f"{strip_query(url)}: bytes {start}-{end}: {reason(exc)} ({tries.gave_up})"
                    ) from None
                log.info("%s: %s; resuming the range", strip_query(url), reason(exc))
                self._pause(url, delay)

    def _http_chunks(
        self, url: str, response: urllib3.BaseHTTPResponse, length: int | None
    ) -> Iterator[bytes]:
        offset = 0
        tries = Retries(self.settings.retries)
        skip = 0  # bytes to drop: a server that ignored Range sent everything again
        while True:
            try:
                try:
                    while chunk := response.read(_CHUNK, decode_content=False):
                        if skip:
                            dropped = min(skip, len(chunk))
                            skip, chunk = skip - dropped, chunk[dropped:]
                            if not chunk:
                                continue
                        offset += len(chunk)
                        yield chunk
                    response.release_conn()
                finally:
                    response.close()
                if length is not None and offset < length:
                    raise Transient(f"body ended after {offset} of {length} bytes")
                return
            except transient_errors() as exc:
                delay = tries.failed()
                if delay is None:
                    what = (
                        f"download truncated: got {offset} of {length} bytes"
                        if length is not None
                        else f"download failed after {offset} bytes"
                    )
                    raise FetchError(
                        f"{strip_query(url)}: {what} after {tries.failures} tries ({reason(exc)})"
                    ) from None
                log.info("%s: %s; resuming at byte %d", strip_query(url), reason(exc), offset)
                self._pause(url, delay)
                response, _ = self._with_retries(functools.partial(self._follow, url, offset), url)
                skip = offset if response.status == 200 else 0

    def _with_retries(self, attempt: Callable[[], T], url: str, retries: int | None = None) -> T:
        tries = Retries(self.settings.retries if retries is None else retries)
        while True:
            self._refuse_if_down(url)
            try:
                return attempt()
            except transient_errors() as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # permanent: retrying cannot help
                    raise FetchError(
                        f"{strip_query(url)}: {reason(exc)}; if a company proxy or CA signs this "
                        "host, set ca_bundle in hubpin.toml"
                    ) from None
                delay = tries.failed(exc)
                down = self._unreachable(exc, url)
                if delay is None:
                    if down is None:
                        busy = "; the host is failing: try again later" if is_status(exc) else ""
                        raise FetchError(
                            f"{strip_query(url)}: {reason(exc)} ({tries.gave_up}){busy}"
                        ) from None
                    if retries is None:  # the whole budget (a caller's single try recovers)
                        self._gave_up_on(url, down_reason(exc, self.settings) or reason(exc))
                    raise FetchError(f"{strip_query(url)}: {down(tries.gave_up)}") from None
                why = down_reason(exc, self.settings) or reason(exc)
                log.info("%s: %s; retrying (%s)", strip_query(url), why, tries.tried)
                self._pause(url, delay)

    def _gave_up_on(self, url: str, why: str) -> None:
        """Note that ``url``'s host is down, and wake the requests waiting to retry it; if
        another request said so first, fail with the short line instead (the full one, with
        what to check, is said once)."""
        if not self._hosts.give_up(_origin(url), why):
            self._refuse_if_down(url)

    def _refuse_if_down(self, url: str) -> None:
        """Fail at once for a host another request of this command gave up on."""
        why = self._hosts.why_down(_origin(url))
        if why is not None:
            host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
            raise FetchError(
                f"{strip_query(url)}: not tried: {host} is down ({why}), as another request "
                "found after its last try; its line says what to check"
            )

    def _pause(self, url: str, delay: float) -> None:
        """Wait ``delay`` seconds before retrying ``url``, less if its host is found down."""
        self._hosts.pause(_origin(url), delay)

    def _follow(
        self, url: str, offset: int, end: int | None = None
    ) -> tuple[urllib3.BaseHTTPResponse, str]:
        """GET with redirects followed by hand, so every hop is checked; (response, final URL)."""
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send(url, offset, end)
            location = response.headers.get("location")
            if response.status in (301, 302, 303, 307, 308) and location:
                response.drain_conn()
                response.release_conn()
                target = urllib.parse.urljoin(url, location)
                self._check_url(target, url)
                url = target
                continue
            if response.status not in (200, 206):
                response.close()
                error = FetchError(
                    f"{strip_query(url)}: HTTP {response.status} {response.reason}"
                    f"{NEXT_STEP.get(response.status, '')}"
                )
                error.status = response.status
                raise error
            return response, url
        raise FetchError(f"{strip_query(url)}: more than {_MAX_REDIRECTS} redirects")

    def _send(self, url: str, offset: int, end: int | None = None) -> urllib3.BaseHTTPResponse:
        self._check_url(url, None)
        ranged = offset or end is not None
        headers = {"Range": f"bytes={offset}-{'' if end is None else end}"} if ranged else {}
        headers.update(self._headers_for(url))
        self._wait_for_host(url)
        response = self._pool(url).request(
            "GET", url, headers=headers, redirect=False, preload_content=False, decode_content=False
        )
        self._raise_if_transient(response, url)
        return response

    def _check_url(self, url: str, came_from: str | None) -> None:
        scheme = scheme_of(url)
        if scheme not in ("http", "https"):
            raise FetchError(f"{strip_query(url)}: redirect to unsupported scheme {scheme!r}")
        if came_from and scheme_of(came_from) == "https" and scheme == "http":
            raise FetchError(
                f"{strip_query(came_from)}: refused redirect from https to plain http "
                f"({strip_query(url)})"
            )
        if scheme == "http" and not (
            self.settings.allow_http
            or is_loopback(url)
            or urllib.parse.urlsplit(url).netloc in self.settings.insecure_registries
        ):
            raise InputError(
                f"{strip_query(url)}: plain http is refused for non-loopback hosts; "
                "use https, or set allow_http = true in hubpin.toml"
            )

    # -- Rate limits, per-host headers and single API requests (Kaggle) --------------------

    retry_after_cap: float = 60.0  # never wait longer than this for one Retry-After

    def add_host_headers(self, url: str, headers: Mapping[str, str]) -> None:
        """Send ``headers`` (credentials) with every request to ``url``'s origin, and only there.

        The origin is scheme, host and port: a redirect to another host (a signed
        storage URL) or to the same host over another scheme never gets them.
        """
        self._hosts.add_headers(_origin(url), headers)

    def _headers_for(self, url: str) -> dict[str, str]:
        return self._hosts.headers_for(_origin(url))

    def _raise_if_transient(self, response: urllib3.BaseHTTPResponse, url: str) -> None:
        """Raise Transient for 429 and 5xx; for 429/503 remember the host's Retry-After.

        The wait is kept per host, so every job talking to that host holds off
        until then, not only the one that was told (parallel jobs would hammer it).
        """
        if response.status != 429 and response.status < 500:
            return
        wait = None
        if response.status in (429, 503):
            wait = retry_after(response.headers.get("retry-after"), self.retry_after_cap)
        response.close()
        exc = Transient(f"HTTP {response.status} {response.reason}")
        if wait is not None:
            exc.retry_after = wait
            self._hosts.hold_off(_origin(url), wait)
        raise exc

    def add_host_hint(self, url: str, check: str) -> None:
        """What to check when ``url``'s origin does not answer: the setting that chose the host
        (an API endpoint), instead of [[mirrors]], which serve archives only."""
        self._hosts.add_hint(_origin(url), check)

    def _unreachable(self, exc: BaseException, url: str) -> Callable[[str], str] | None:
        """For a server that is down (refused, unknown host, no connection or no answer in
        time, closed before answering), the one line to say after the last try, else None."""
        import urllib3

        host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
        if isinstance(exc, urllib3.exceptions.ProxyError):
            proxy = strip_query((self._proxies or {}).get(scheme_of(url), "the proxy"))
            cause = down_reason(exc.original_error, self.settings) or reason(exc.original_error)
            return lambda tries: (
                f"cannot reach {host} through the proxy {proxy}: {cause} ({tries}); "
                "check the proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) and the network"
            )
        why = down_reason(exc, self.settings)
        if why is None:
            return None
        check = self._hosts.hint(_origin(url), MIRRORS_CHECK)
        return lambda tries: unreachable(host, why, tries, check)

    def _wait_for_host(self, url: str) -> None:
        """Sleep until the Retry-After this host gave (to any job) has passed."""
        self._hosts.wait_turn(_origin(url))

    def request(
        self,
        method: str,
        url: str,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One API request: (status, headers, body), redirects *not* followed.

        Retried like downloads (resets, timeouts, 5xx; 429/503 after Retry-After),
        counted against ``retries`` (the setting unless given); any other status is
        returned for the caller to explain. Headers from :meth:`add_host_headers`
        are added for this URL's origin. Meant for small JSON answers (the Kaggle
        API, a registry's), read whole. A file ``body`` is streamed, from its start
        on every try (a registry blob upload).
        """
        self._check_url(url, None)

        def attempt() -> tuple[int, Mapping[str, str], bytes]:
            if body is not None and not isinstance(body, bytes):
                body.seek(0)
            self._wait_for_host(url)
            pool = self._pool(url)
            merged = {**pool.headers, **self._headers_for(url), **(headers or {})}
            response = pool.request(
                method, url, body=body, headers=merged, redirect=False, preload_content=False
            )
            self._raise_if_transient(response, url)
            try:
                data = response.read()
            finally:
                response.release_conn()
            return response.status, response.headers, data

        return self._with_retries(attempt, url, retries)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.isdigit():
        return None
    if response.status == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    return int(value)


def _tls_options(settings: Settings) -> dict[str, Any]:
    """urllib3 TLS options: the system's CAs, a ca_bundle, or tensorflow_hub's opt-out."""
    if os.environ.get("TFHUB_DISABLE_CERT_VALIDATION") == "true":
        import urllib3

        log.warning("TFHUB_DISABLE_CERT_VALIDATION=true: TLS certificates are not checked")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return {"cert_reqs": "CERT_NONE"}
    if settings.ca_bundle:
        if not Path(settings.ca_bundle).is_file():
            raise InputError(f"ca_bundle {settings.ca_bundle}: file not found")
        return {"cert_reqs": "CERT_REQUIRED", "ca_certs": settings.ca_bundle}
    return {"cert_reqs": "CERT_REQUIRED"}
