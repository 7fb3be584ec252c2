"""A loopback Kaggle Models stand-in, speaking the API as kagglehub 1.0.3 (kagglesdk 0.1.38) calls it.

Two servers in one object, on different host *names*, like Kaggle and GCS:

- the API, on ``127.0.0.1`` (or ``localhost:7777``, where kagglesdk's
  ``KAGGLE_API_ENVIRONMENT=TEST`` sends the real kagglehub):

  - ``POST /api/v1/models.ModelApiService/GetModelInstance`` — JSON body
    ``{ownerSlug, modelSlug, framework: "MODEL_FRAMEWORK_…", instanceSlug}``;
    answers an ``ApiModelInstance`` (``versionNumber`` is what kagglehub reads);
  - ``POST …/ListModelInstanceVersionFiles`` — ``{…, versionNumber, pageSize,
    pageToken}``; answers ``{files: [{name, size}], nextPageToken}`` (kagglehub
    downloads file by file when everything fits in one page of 25, else the archive);
  - ``POST …/DownloadModelInstanceVersion`` — ``{…, versionNumber[, path]}``;
    answers ``302`` to a signed storage URL (``X-Goog-Signature=…``);
  - the older REST forms kagglehub 0.x used: ``GET /api/v1/models/o/m/f/v/get``,
    ``GET /api/v1/models/o/m/f/v/N/download[/path]``, ``GET …/N/files``;
  - tensorflow_hub's protocol on model URLs:
    ``GET /models/o/m/f/v[/N]?tf-hub-format=compressed`` → ``302`` to storage.

  ``/v1/…`` (api.kaggle.com's form) is accepted as well as ``/api/v1/…``.
  Errors are JSON ``{"code": N, "message": …}`` with the same HTTP status.

- storage, on ``127.0.0.2``: ``GET /kaggle-models-data/<id>/<version>/…`` with a
  valid signature (403 ``SignatureDoesNotMatch`` otherwise, as GCS answers),
  Content-Length, ``Accept-Ranges: bytes`` and Range, and ``X-Goog-Hash`` as GCS
  sends it: two headers ``crc32c=<b64>`` and ``md5=<b64>`` (or one joined header).

Switchable per model: ``private`` (401 without valid credentials), ``gated``
(403 until :meth:`KaggleServer.accept`), ``corrupt`` versions (one byte of the
body differs from the declared X-Goog-Hash), new versions at run time
(:meth:`KaggleServer.bump`). Server-wide: 429/503 with Retry-After N times, on
the API or on storage (:class:`Throttle`). Every request is logged with its
server, method, path, query and headers, so tests can check where credentials went.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import google_crc32c
from loopback import listener, serve, shut

_SIGNING_KEY = b"kaggleserver-signing-key"
# kagglesdk/models/types/model_enums.py:20-44
_FRAMEWORKS = (
    "TENSOR_FLOW_1",
    "TENSOR_FLOW_2",
    "TF_LITE",
    "TF_JS",
    "PY_TORCH",
    "JAX",
    "FLAX",
    "PAX",
    "MAX_TEXT",
    "GEMMA_CPP",
    "GGML",
    "GGUF",
    "CORAL",
    "SCIKIT_LEARN",
    "MXNET",
    "ONNX",
    "KERAS",
    "TRANSFORMERS",
    "API",
    "OTHER",
    "TENSOR_RT_LLM",
    "TRITON",
    "VLLM",
)


def framework_enum(name: str) -> str | None:
    """kagglehub's to_enum (kagglehub/enum.py): case and underscores do not matter."""
    key = name.replace("_", "").upper().removeprefix("MODELFRAMEWORK")
    for item in _FRAMEWORKS:
        if item.replace("_", "") == key:
            return f"MODEL_FRAMEWORK_{item}"
    return None


def gcs_hashes(data: bytes) -> tuple[str, str]:
    """(crc32c, md5) as GCS declares them: base64 of the big-endian CRC32C and of the MD5."""
    crc = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    return crc, base64.b64encode(hashlib.md5(data).digest()).decode()


def archive_files(archive: bytes) -> dict[str, bytes]:
    """The regular files of a tar(.gz), by relative POSIX path (no ``./``)."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            if member.isfile():
                name = member.name.removeprefix("./")
                files[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return files


@dataclass
class KaggleModel:
    """One model variation: its versions' archives and who may download them."""

    owner: str
    model: str
    framework: str  # as Kaggle writes it in URLs, e.g. "tensorFlow2"
    variation: str
    versions: dict[int, bytes] = field(default_factory=dict)  # version → .tar.gz
    private: bool = False  # 401 for requests without valid credentials
    gated: bool = False  # downloads 403 until the caller's account accepted the terms
    accepted: set[str] = field(default_factory=set)  # usernames that accepted
    corrupt: set[int] = field(default_factory=set)  # versions served with one byte changed
    id: int = 0

    @property
    def slug(self) -> str:
        return f"{self.owner}/{self.model}/{self.framework}/{self.variation}"

    @property
    def current(self) -> int:
        return max(self.versions)

    def files(self, version: int) -> dict[str, bytes]:
        return archive_files(self.versions[version])


@dataclass
class Throttle:
    """Answer ``status`` (429 or 503) with ``Retry-After: retry_after`` this many ``times``."""

    times: int = 0
    status: int = 429
    retry_after: str | None = "1"  # seconds, an HTTP date, or None for no header
    where: str = "api"  # "api" or "storage"


@dataclass
class Logged:
    """One request, logged as it arrives (before any answer), its status set as it is answered."""

    server: str  # "api" or "storage"
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int
    body: bytes = b""
    at: float = 0.0  # time.monotonic() when the request arrived


class KaggleServer:
    """The stand-in; ``start()`` it, register models with :meth:`add`, ``stop()`` it."""

    def __init__(
        self,
        api_host: str = "127.0.0.1",
        api_port: int = 0,
        api_name: str | None = None,
        storage_host: str = "127.0.0.2",
    ) -> None:
        self.models: dict[tuple[str, str, str, str], KaggleModel] = {}
        self.users: dict[str, str] = {}  # username → key (HTTP Basic)
        self.tokens: dict[str, str] = {}  # bearer token → username
        self.throttle = Throttle()
        self.joint_hash_header = False  # one "X-Goog-Hash: crc32c=…,md5=…" instead of two
        self.requests: list[Logged] = []
        self._lock = threading.Lock()
        self._next_id = 1000
        self._api = self._server(api_host, api_port, "api")
        self._storage = self._server(storage_host, 0, "storage")
        self._api_name = api_name or api_host
        self._threads: list[threading.Thread] = []

    # -- control ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API's base URL (what KAGGLE_API_ENDPOINT / kaggle_endpoint would be)."""
        return f"http://{self._api_name}:{self._api.server_address[1]}"

    @property
    def storage_url(self) -> str:
        host, port = self._storage.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KaggleServer:
        self._threads = serve((self._api, self._storage))
        return self

    def stop(self) -> None:
        """Stop both servers (again is harmless): afterwards nothing listens on either port."""
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        shut((self._api, self._storage), bool(self._threads))

    def add(
        self, slug: str, archive: bytes, *, private: bool = False, gated: bool = False
    ) -> KaggleModel:
        """Publish ``owner/model/framework/variation`` with ``archive`` as version 1."""
        owner, model, framework, variation = slug.split("/")
        with self._lock:
            self._next_id += 1
            entry = KaggleModel(
                owner, model, framework, variation, {1: archive}, private, gated, id=self._next_id
            )
            self.models[self._key(owner, model, framework, variation)] = entry
        return entry

    def bump(self, slug: str, archive: bytes) -> int:
        """Publish a new version of ``slug``; it becomes the current one. Its number."""
        model = self.model(slug)
        with self._lock:
            version = model.current + 1
            model.versions[version] = archive
        return version

    def accept(self, slug: str, username: str) -> None:
        """``username`` accepts the model's terms (consent is per model on Kaggle)."""
        self.model(slug).accepted.add(username)

    def model(self, slug: str) -> KaggleModel:
        return self.models[self._key(*slug.split("/"))]

    def log(self, server: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.requests if r.server == server]

    # -- internals --------------------------------------------------------------------

    @staticmethod
    def _key(owner: str, model: str, framework: str, variation: str) -> tuple[str, str, str, str]:
        return owner.lower(), model.lower(), framework_enum(framework) or "?", variation.lower()

    def _server(self, host: str, port: int, role: str) -> ThreadingHTTPServer:
        return listener(host, port, lambda req: self._dispatch(req, role))

    def _dispatch(self, req: BaseHTTPRequestHandler, role: str) -> None:
        parts = urllib.parse.urlsplit(req.path)
        if parts.netloc and parts.netloc == urllib.parse.urlsplit(self.storage_url).netloc:
            role = "storage"  # used as a proxy (an absolute URI): storage's request, passed on
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        entry = Logged(
            role,
            req.command,
            urllib.parse.unquote(parts.path),
            parts.query,
            dict(req.headers.items()),
            0,
            body,
            time.monotonic(),
        )
        with self._lock:
            self.requests.append(entry)
            throttled = self.throttle.times > 0 and self.throttle.where == role
            self.throttle.times -= throttled
        status_box = _Box(entry)
        if throttled:
            extra = {"Retry-After": self.throttle.retry_after} if self.throttle.retry_after else {}
            status = self.throttle.status
            _json_reply(req, status, _error(status, "slow down"), extra, status_box)
        elif role == "storage":
            self._storage_get(req, parts, status_box)
        else:
            self._api_request(req, parts, body, status_box)

    # -- the API ------------------------------------------------------------------------

    def _who(self, req: BaseHTTPRequestHandler) -> tuple[bool, str | None]:
        """(credentials valid or absent, username): kagglesdk sends Bearer or Basic."""
        auth = req.headers.get("Authorization")
        if not auth:
            return True, None
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            user = self.tokens.get(value.strip())
            return user is not None, user
        if scheme.lower() == "basic":
            try:
                name, _, key = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False, None
            ok = self.users.get(name) == key
            return ok, name if ok else None
        return False, None

    def _api_request(
        self,
        req: BaseHTTPRequestHandler,
        parts: urllib.parse.SplitResult,
        body: bytes,
        box: _Box,
    ) -> None:
        path = urllib.parse.unquote(parts.path)
        query = urllib.parse.parse_qs(parts.query)
        ok, user = self._who(req)
        if not ok:
            return _json_reply(req, 401, _error(401, "Unauthenticated"), None, box)
        rpc = re.fullmatch(r"(?:/api)?/v1/models\.ModelApiService/(\w+)", path)
        if rpc and req.command == "POST":
            try:
                call = json.loads(body or b"{}")
            except ValueError:
                return _json_reply(req, 400, _error(400, "invalid JSON"), None, box)
            model = self.models.get(
                (
                    str(call.get("ownerSlug", "")).lower(),
                    str(call.get("modelSlug", "")).lower(),
                    str(call.get("framework", "")),
                    str(call.get("instanceSlug", "")).lower(),
                )
            )
            return self._rpc(req, rpc.group(1), call, model, user, box)
        rest = re.fullmatch(r"(?:/api)?/v1/models/([^/]+)/([^/]+)/([^/]+)/([^/]+)/(.+)", path)
        if rest and req.command == "GET":
            model = self.models.get(self._key(*rest.groups()[:4]))
            tail = rest.group(5)
            if tail == "get":
                return self._rpc(req, "GetModelInstance", {}, model, user, box)
            found = re.fullmatch(r"(\d+)/(download|files)(?:/(.+))?", tail)
            if found:
                version, what, file = int(found.group(1)), found.group(2), found.group(3)
                if what == "files":
                    size = int(query.get("page_size", ["20"])[0])
                    call = {"versionNumber": version, "pageSize": size}
                    call["pageToken"] = query.get("page_token", [""])[0]
                    return self._rpc(req, "ListModelInstanceVersionFiles", call, model, user, box)
                call = {"versionNumber": version, **({"path": file} if file else {})}
                return self._rpc(req, "DownloadModelInstanceVersion", call, model, user, box)
        hub = re.fullmatch(r"/models/([^/]+)/([^/]+)/([^/]+)/([^/]+)(?:/(\d+))?/?", path)
        if hub and req.command == "GET" and query.get("tf-hub-format") == ["compressed"]:
            model = self.models.get(self._key(*hub.groups()[:4]))
            version = int(hub.group(5)) if hub.group(5) else (model.current if model else 0)
            return self._rpc(
                req, "DownloadModelInstanceVersion", {"versionNumber": version}, model, user, box
            )
        return _json_reply(req, 404, _error(404, f"no route {req.command} {path}"), None, box)

    def _rpc(
        self,
        req: BaseHTTPRequestHandler,
        method: str,
        call: dict[str, Any],
        model: KaggleModel | None,
        user: str | None,
        box: _Box,
    ) -> None:
        if model is None:
            return _json_reply(req, 404, _error(404, "Model instance not found"), None, box)
        if model.private and user is None:
            return _json_reply(
                req, 401, _error(401, "This model requires authentication"), None, box
            )
        if method == "GetModelInstance":
            version = model.current
            answer = {
                "id": model.id,
                "slug": model.variation,
                "framework": framework_enum(model.framework),
                "versionId": model.id * 100 + version,
                "versionNumber": version,
                "url": f"/models/{model.owner}/{model.model}/{model.framework}/{model.variation}",
                "licenseName": "Apache 2.0",
                "modelInstanceType": "MODEL_INSTANCE_TYPE_BASE_MODEL",
                "totalUncompressedBytes": sum(len(v) for v in model.files(version).values()),
                # the REST form's extra fields (kagglehub 0.x read versionNumber only)
                "ownerSlug": model.owner,
                "modelSlug": model.model,
            }
            return _json_reply(req, 200, answer, None, box)
        version = int(call.get("versionNumber") or 0)
        if version not in model.versions:
            return _json_reply(req, 404, _error(404, f"Version {version} not found"), None, box)
        if method == "ListModelInstanceVersionFiles":
            names = sorted(model.files(version).items())
            size = int(call.get("pageSize") or 20)
            start = int(call.get("pageToken") or 0)
            page = names[start : start + size]
            more = start + size < len(names)
            answer = {
                "files": [{"name": n, "size": len(d)} for n, d in page],
                "nextPageToken": str(start + size) if more else "",
            }
            return _json_reply(req, 200, answer, None, box)
        if method == "DownloadModelInstanceVersion":
            if model.gated and (user is None or user not in model.accepted):
                message = "You must accept the model's terms on its Kaggle page to download it"
                return _json_reply(req, 403, _error(403, message), None, box)
            path = call.get("path")
            if path and path not in model.files(version):
                return _json_reply(req, 404, _error(404, f"File {path} not found"), None, box)
            name = f"files/{path}" if path else "bundle/archive.tar.gz"
            location = self._signed(f"/kaggle-models-data/{model.id}/{version}/{name}")
            box.set(302)
            req.send_response(302)
            req.send_header("Location", location)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return None
        return _json_reply(req, 404, _error(404, f"unknown method {method}"), None, box)

    # -- storage ------------------------------------------------------------------------

    @staticmethod
    def _signature(path: str, expires: str) -> str:
        return hmac.new(_SIGNING_KEY, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _signed(self, path: str) -> str:
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        query = {
            "X-Goog-Algorithm": "GOOG4-RSA-SHA256",
            "X-Goog-Credential": "kaggle-models@kaggle.iam.gserviceaccount.com/auto/storage",
            "X-Goog-Date": date,
            "X-Goog-Expires": "600",
            "X-Goog-SignedHeaders": "host",
            "X-Goog-Signature": self._signature(path, date),
        }
        return f"{self.storage_url}{urllib.parse.quote(path)}?{urllib.parse.urlencode(query)}"

    def _storage_get(
        self, req: BaseHTTPRequestHandler, parts: urllib.parse.SplitResult, box: _Box
    ) -> None:
        path = urllib.parse.unquote(parts.path)
        query = urllib.parse.parse_qs(parts.query)
        signature = query.get("X-Goog-Signature", [""])[0]
        date = query.get("X-Goog-Date", [""])[0]
        if not hmac.compare_digest(signature, self._signature(path, date)):
            body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code></Error>"
            return _reply(req, 403, body, {"Content-Type": "application/xml"}, box)
        found = re.fullmatch(
            r"/kaggle-models-data/(\d+)/(\d+)/(bundle/archive\.tar\.gz|files/(.+))", path
        )
        model = next(
            (m for m in self.models.values() if found and m.id == int(found.group(1))), None
        )
        if not found or model is None or int(found.group(2)) not in model.versions:
            return _reply(
                req,
                404,
                b"<Error><Code>NoSuchKey</Code></Error>",
                {"Content-Type": "application/xml"},
                box,
            )
        version = int(found.group(2))
        if found.group(4):
            data = model.files(version).get(found.group(4))
            if data is None:
                return _reply(req, 404, b"<Error><Code>NoSuchKey</Code></Error>", None, box)
            kind = "application/octet-stream"
        else:
            data, kind = model.versions[version], "application/x-gzip"
        crc, md5 = gcs_hashes(data)
        if version in model.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        headers: list[tuple[str, str]] = [
            ("Content-Type", kind),
            ("Accept-Ranges", "bytes"),
            ("ETag", f'"{hashlib.md5(data).hexdigest()}"'),
            ("Last-Modified", formatdate(usegmt=True)),
            ("X-Goog-Generation", str(1700000000000000 + model.id * 100 + version)),
            ("X-Goog-Metageneration", "1"),
            ("X-Goog-Stored-Content-Encoding", "identity"),
            ("X-Goog-Stored-Content-Length", str(len(data))),
        ]
        if self.joint_hash_header:
            headers.append(("X-Goog-Hash", f"crc32c={crc},md5={md5}"))
        else:
            headers += [("X-Goog-Hash", f"crc32c={crc}"), ("X-Goog-Hash", f"md5={md5}")]
        status, start, end = 200, 0, len(data)
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
        if wanted:
            start = int(wanted.group(1))
            end = min(len(data), int(wanted.group(2)) + 1) if wanted.group(2) else len(data)
            if start >= len(data) or start >= end:
                return _reply(req, 416, b"", {"Content-Range": f"bytes */{len(data)}"}, box)
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{len(data)}"))
        body = data[start:end]
        box.set(status)
        req.send_response(status)
        for key, value in headers:
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            try:
                req.wfile.write(body)
            except OSError:
                req.close_connection = True


class _Box:
    """Where an answer's status is written, before the answer is sent (tests read it right after)."""

    def __init__(self, entry: Logged) -> None:
        self.entry = entry

    def set(self, status: int) -> None:
        self.entry.status = status


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _json_reply(
    req: BaseHTTPRequestHandler,
    status: int,
    answer: dict[str, Any],
    headers: dict[str, str] | None,
    box: _Box,
) -> None:
    body = json.dumps(answer).encode()
    _reply(
        req,
        status,
        body,
        {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        box,
    )


def _reply(
    req: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None,
    box: _Box,
) -> None:
    box.set(status)
    req.send_response(status)
    for key, value in (headers or {}).items():
        req.send_header(key, value)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    if req.command != "HEAD":
        req.wfile.write(body)


def start_isolated(tmp_path: Path, monkeypatch: Any) -> KaggleServer:
    """A started stand-in reached through HUBPIN_KAGGLE_ENDPOINT, with no KAGGLE_* variable
    of the machine's, and HOME and kagglehub's cache in ``tmp_path`` (``monkeypatch`` undoes it)."""
    import os

    for var in list(os.environ):
        if var.startswith("KAGGLE"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    server = KaggleServer().start()
    monkeypatch.setenv("HUBPIN_KAGGLE_ENDPOINT", server.url)
    return server
