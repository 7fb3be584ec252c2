"""A loopback HTTP server that speaks the tfhub.dev protocol, for the test suite.

- ``GET /<model path>?tf-hub-format=compressed`` → ``302`` to ``/archives/<file>``
  with a signed-URL-style query string (which must never reach a lock or log);
- ``GET /<model path>?tf-hub-format=uncompressed`` → ``303`` with a ``gs://`` body;
- ``GET /archives/<file>`` → the bytes, with Content-Length and Range support
  (``bytes=N-`` and ``bytes=N-M``), optionally paced to ``rate`` bytes per second
  per connection so that benchmarks can imitate a slow link.

Faults are injected per archive: answer 5xx a few times, reset the connection,
stall before answering, cut the body after N bytes, send the body slowly, serve a
short file with a consistent Content-Length, ignore Range, or serve a different file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SIGNATURE = "X-Goog-Signature=s3cr3t-t0ken&X-Goog-Expires=600"


@dataclass
class Faults:
    """What to do wrong when serving one archive."""

    fail_times: int = 0  # answer ``fail_status`` this many times first
    fail_status: int = 500
    cut_after: int | None = None  # close the connection after this many body bytes...
    cut_times: int = 0  # ...this many times
    ignore_range: bool = False
    reset_times: int = 0  # drop the connection (TCP RST) without an answer this many times
    stall: float = 0.0  # sleep this long before answering...
    stall_times: int = 0  # ...this many times (to provoke read timeouts)
    delay: float = 0.0  # sleep this long between chunks of ``chunk`` bytes (a slow server)
    chunk: int = 1 << 16
    truncate_to: int | None = None  # serve only this many bytes, with a matching Content-Length
    wrong_hash: bool = False  # declare another body's X-Goog-Hash (a body corrupted in transit)


@dataclass
class HubServer:
    models: dict[str, bytes] = field(default_factory=dict)  # model path → archive bytes
    uncompressed: dict[str, str] = field(default_factory=dict)  # model path → gs:// location
    faults: dict[str, Faults] = field(default_factory=dict)  # model path → faults
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)  # model path → absolute Location
    port: int = 0
    tls: ssl.SSLContext | None = None  # serve https with this server-side context
    rate: int | None = None  # bytes per second per connection for archive bodies (a slow link)
    goog_hash: bool = False  # declare X-Goog-Hash crc32c and md5, as GCS signed URLs do
    sent: int = 0  # archive body bytes written so far (what clients downloaded from upstream)
    # Hold each archive request until this many are in flight at once (at most 10 s each);
    # ``together`` says whether that happened: a client that fetches one at a time never
    # gets there, one that fetches in parallel passes without waiting.
    hold_until: int = 0
    together: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def handle(self, path: str) -> str:
        return f"{self.url}/{path.strip('/')}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def archive_requests(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if p == f"/archives/{path.strip('/')}.tar.gz")

    def downloads(self, path: str) -> int:
        """Downloads of an archive started from its first byte: requests without Range.

        A download that continues over parallel Range requests (a loaded machine makes
        one loopback connection measure slow) or resumes after a cut is still one.
        """
        return sum(
            1
            for _, p, headers in self.requests
            if p == f"/archives/{path.strip('/')}.tar.gz" and "Range" not in headers
        )

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        with self._lock:
            self.requests.append((req.command, parts.path, dict(req.headers)))
        query = parse_qs(parts.query)
        if parts.path.startswith("/archives/"):
            return self._serve_archive(req, parts.path[len("/archives/") :].removesuffix(".tar.gz"))
        model = parts.path.strip("/")
        fmt = query.get("tf-hub-format", [""])[0]
        if fmt == "uncompressed" and model in self.uncompressed:
            body = self.uncompressed[model].encode()
            return _reply(req, 303, body, {"Content-Type": "text/plain"})
        if fmt == "compressed" and model in self.redirects:
            return _reply(req, 302, b"", {"Location": self.redirects[model]})
        if fmt == "compressed" and model in self.models:
            location = f"/archives/{model}.tar.gz?{SIGNATURE}"
            return _reply(req, 302, b"", {"Location": location})
        return _reply(req, 404, b"not found")

    def _serve_archive(self, req: BaseHTTPRequestHandler, model: str) -> None:
        data = self.models.get(model)
        if data is None:
            return _reply(req, 404, b"no such archive")
        if self.hold_until:
            with self._lock:
                self._in_flight += 1
                if self._in_flight >= self.hold_until:
                    self.together.set()
            try:
                self.together.wait(10)
                return self._serve_held(req, model, data)
            finally:
                with self._lock:
                    self._in_flight -= 1
        return self._serve_held(req, model, data)

    def _serve_held(self, req: BaseHTTPRequestHandler, model: str, data: bytes) -> None:
        faults = self.faults.get(model, Faults())
        with self._lock:
            reset = faults.reset_times > 0
            faults.reset_times -= reset
            stall = faults.stall if faults.stall_times > 0 else 0.0
            faults.stall_times -= bool(stall)
            fail = not reset and faults.fail_times > 0
            faults.fail_times -= fail
        if reset:
            req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            req.close_connection = True
            return None
        if stall:
            time.sleep(stall)
        if fail:
            return _reply(req, faults.fail_status, b"try again")
        if faults.truncate_to is not None:
            data = data[: faults.truncate_to]
        start, end = 0, len(data)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
        status, headers = 200, {"Accept-Ranges": "bytes", "Content-Type": "application/gzip"}
        if match and not faults.ignore_range:
            start = int(match.group(1))
            status = 206
            end = min(end, int(match.group(2)) + 1) if match.group(2) else end
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = memoryview(data)[start:end]
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        if self.goog_hash or faults.wrong_hash:
            for value in _goog_hash(data + b"x" if faults.wrong_hash else data):
                req.send_header("X-Goog-Hash", value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        with self._lock:
            cut = faults.cut_after if faults.cut_times > 0 else None
            if cut is not None:
                faults.cut_times -= 1
        if cut is not None:
            req.wfile.write(body[:cut])
            req.wfile.flush()
            self._count(cut)
            req.close_connection = True
            return
        step = (
            faults.chunk
            if faults.delay
            else 1 << 20
            if self.rate is None
            else max(1 << 12, self.rate // 20)
        )
        started = time.monotonic()
        for i in range(0, len(body), step):
            if faults.delay and i:
                time.sleep(faults.delay)
            if self.rate is not None:
                time.sleep(max(0.0, started + i / self.rate - time.monotonic()))
            try:
                req.wfile.write(body[i : i + step])
                req.wfile.flush()
            except OSError:  # the client went away (killed, or gave up)
                req.close_connection = True
                return
            self._count(len(body[i : i + step]))

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent += n


@functools.lru_cache(maxsize=16)
def _goog_hash(data: bytes) -> tuple[str, str]:
    """The whole object's ``crc32c=<b64>`` and ``md5=<b64>``, as GCS declares them (two headers)."""
    import google_crc32c

    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    return f"crc32c={crc}", f"md5={md5}"


def _reply(
    req: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    req.send_response(status)
    for key, value in (headers or {}).items():
        req.send_header(key, value)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)
