"""A loopback Hugging Face Hub stand-in, speaking the Hub's HTTP API as huggingface_hub 2.x calls it.

Two servers, on different hosts, like the Hub and its LFS/CDN storage:

- the Hub, on ``127.0.0.1`` (``HF_ENDPOINT`` points here):

  - ``GET /api/models/<org>/<repo>[/revision/<rev>]`` — ``model_info`` / ``repo_info``:
    ``{id, sha, private, gated, siblings: [{rfilename}], …}``;
  - ``GET /api/models/<org>/<repo>/tree/<rev>[/<path>]?recursive=…`` — ``list_repo_tree``:
    ``[{type: "file", oid: <git blob sha1>, size, path, lfs?: {oid: <sha256>, size,
    pointerSize}}, {type: "directory", …}]``, paged by a ``Link: <…>; rel="next"``
    header (``page_size`` per page);
  - ``HEAD``/``GET /<org>/<repo>/resolve/<rev>/<path>`` — ``hf_hub_download``: a small
    file answers 200 with ``ETag: "<git blob sha1>"``, ``X-Repo-Commit`` and Range; an
    LFS file answers 302 to the CDN with ``X-Linked-Etag: "<sha256>"``,
    ``X-Linked-Size`` and ``X-Repo-Commit`` (huggingface_hub reads the metadata from
    that redirect and does not follow it for a HEAD).

  Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
  ``GatedRepo``) and ``X-Error-Message`` as the Hub sends them: 401 for a private or
  gated repository without a valid token, 403 for a gated one whose terms the token's
  user has not accepted, 404 otherwise.

- the CDN, on ``127.0.0.2``: ``GET /lfs/<sha256>?X-Amz-Signature=…`` (signed, 403 otherwise),
  Content-Length, ETag, Range. It wants no credentials; every request is logged with its
  headers, so tests can check that a token never left the Hub.

Repositories have commits; :meth:`HfServer.push` makes a new one and moves ``main``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loopback import listener, serve, shut

_SIGNING_KEY = b"hfserver-signing-key"
LFS_SUFFIXES = (".h5", ".safetensors", ".bin", ".keras", ".weights.h5", ".msgpack", ".onnx")


def git_blob_sha1(data: bytes) -> str:
    """Git's blob id: ``sha1(b"blob <size>\\0" + data)``; the Hub's ETag for a small file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file the repository holds instead of an LFS file's bytes."""
    oid = hashlib.sha256(data).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()
    )


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    lfs: set[str]


@dataclass
class HfRepo:
    repo_id: str
    commits: list[Commit] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag → commit sha
    private: bool = False
    gated: bool = False
    accepted: set[str] = field(default_factory=set)  # usernames that accepted the terms

    def commit(self, revision: str) -> Commit | None:
        sha = self.refs.get(revision, revision)
        return next((c for c in self.commits if c.sha == sha), None)


@dataclass
class Logged:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int = 0

    @property
    def authorization(self) -> str | None:
        """The Authorization header, whatever its case (httpx sends it lowercase)."""
        return next((v for k, v in self.headers.items() if k.lower() == "authorization"), None)


class HfServer:
    """The stand-in; ``start()`` it, publish with :meth:`add` / :meth:`push`, ``stop()`` it."""

    def __init__(self, page_size: int = 1000) -> None:
        self.repos: dict[str, HfRepo] = {}
        self.tokens: dict[str, str] = {}  # token → username
        self.page_size = page_size
        self.corrupt: set[str] = set()  # paths served with one byte changed (Hub and CDN)
        self.requests: list[Logged] = []
        self._lock = threading.Lock()
        self._hub = self._server("127.0.0.1", "hub")
        self._cdn = self._server("127.0.0.2", "cdn")
        self._threads: list[threading.Thread] = []
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._hub.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HfServer:
        self._threads = serve((self._hub, self._cdn))
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            shut((self._hub, self._cdn), bool(self._threads))

    def add(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        lfs: set[str] | None = None,
        private: bool = False,
        gated: bool = False,
    ) -> str:
        """Create ``repo_id`` with one commit on ``main``; its sha. LFS files: ``lfs``, else by suffix."""
        with self._lock:
            self.repos[repo_id] = HfRepo(repo_id, private=private, gated=gated)
        return self.push(repo_id, files, lfs=lfs)

    def push(self, repo_id: str, files: dict[str, bytes], *, lfs: set[str] | None = None) -> str:
        """A new commit holding ``files`` (the whole tree); ``main`` moves to it. Its sha."""
        repo = self.repos[repo_id]
        lfs = {p for p in files if p.endswith(LFS_SUFFIXES)} if lfs is None else lfs
        digest = hashlib.sha1(f"{repo_id}\n{len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}\n{git_blob_sha1(files[path])}\n".encode())
        with self._lock:
            commit = Commit(digest.hexdigest(), dict(files), set(lfs))
            repo.commits.append(commit)
            repo.refs["main"] = commit.sha
        return commit.sha

    def tag(self, repo_id: str, name: str, sha: str) -> None:
        self.repos[repo_id].refs[name] = sha

    def log(self, server: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.requests if r.server == server]

    # -- internals --------------------------------------------------------------------

    def _server(self, host: str, role: str) -> ThreadingHTTPServer:
        return listener(host, 0, lambda req: self._dispatch(req, role))

    def _dispatch(self, req: BaseHTTPRequestHandler, role: str) -> None:
        parts = urllib.parse.urlsplit(req.path)
        entry = Logged(role, req.command, parts.path, parts.query, dict(req.headers.items()))
        with self._lock:
            self.requests.append(entry)
        try:
            if role == "cdn":
                self._cdn_get(req, parts, entry)
            else:
                self._hub_request(req, parts, entry)
        except (BrokenPipeError, ConnectionResetError):
            req.close_connection = True

    def _user(self, req: BaseHTTPRequestHandler) -> tuple[bool, str | None]:
        """(the Authorization header is absent or valid, the token's user)."""
        auth = req.headers.get("Authorization")
        if not auth:
            return True, None
        scheme, _, token = auth.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        return user is not None, user

    def _hub_request(
        self, req: BaseHTTPRequestHandler, parts: urllib.parse.SplitResult, entry: Logged
    ) -> None:
        raw = parts.path
        query = urllib.parse.parse_qs(parts.query)
        ok, user = self._user(req)
        if not ok:
            return self._error(req, entry, 401, "", "Invalid credentials in Authorization header")
        api = re.fullmatch(
            r"/api/models/([^/]+/[^/]+)(/revision/([^/]+)|/tree/([^/]+)(/.*)?)?", raw
        )
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", raw)
        found = api or resolve
        if not found:
            return self._error(req, entry, 404, "", f"no route {req.command} {raw}")
        repo = self.repos.get(urllib.parse.unquote(found.group(1)))
        if repo is None or (repo.private and user is None):
            status = 401 if user is None else 404
            message = "Repository not found"
            return self._error(req, entry, status, "RepoNotFound", message)
        if api:
            revision = urllib.parse.unquote(api.group(3) or api.group(4) or "main")
            commit = repo.commit(revision)
            if commit is None:
                return self._error(
                    req, entry, 404, "RevisionNotFound", f"Invalid rev id: {revision}"
                )
            if api.group(4) is not None:
                prefix = urllib.parse.unquote((api.group(5) or "").lstrip("/"))
                return self._tree(req, entry, repo, commit, prefix, query)
            return self._info(req, entry, repo, commit)
        assert resolve is not None
        revision = urllib.parse.unquote(resolve.group(2))
        path = urllib.parse.unquote(resolve.group(3))
        if repo.gated and (user is None or user not in repo.accepted):
            if user is None:
                message = (
                    f"Access to model {repo.repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in."
                )
                return self._error(req, entry, 401, "GatedRepo", message)
            message = (
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized "
                f"list. Visit https://huggingface.co/{repo.repo_id} to ask for access."
            )
            return self._error(req, entry, 403, "GatedRepo", message)
        commit = repo.commit(revision)
        if commit is None:
            return self._error(req, entry, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        data = commit.files.get(path)
        if data is None:
            return self._error(req, entry, 404, "EntryNotFound", f"{path} does not exist")
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if path in commit.lfs:
            sha256 = hashlib.sha256(data).hexdigest()
            headers |= {
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_sha1(lfs_pointer(data))}"',
                "Location": self._signed(sha256),
            }
            return self._send(req, entry, 302, b"", headers)
        headers["ETag"] = f'"{git_blob_sha1(data)}"'
        return self._send_ranged(req, entry, self._maybe_corrupt(path, data), headers)

    def _info(
        self, req: BaseHTTPRequestHandler, entry: Logged, repo: HfRepo, commit: Commit
    ) -> None:
        answer = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["keras-hub"],
            "library_name": "keras-hub",
            "lastModified": "2026-12-01T00:00:00.000Z",
            "createdAt": "2026-11-01T00:00:00.000Z",
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }
        self._send(
            req, entry, 200, json.dumps(answer).encode(), {"Content-Type": "application/json"}
        )

    def _tree(
        self,
        req: BaseHTTPRequestHandler,
        entry: Logged,
        repo: HfRepo,
        commit: Commit,
        prefix: str,
        query: dict[str, list[str]],
    ) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        items: list[dict[str, object]] = []
        folders: set[str] = set()
        base = f"{prefix}/" if prefix else ""
        for path in sorted(commit.files):
            if not path.startswith(base):
                continue
            rest = path[len(base) :]
            parents = rest.split("/")[:-1]
            for depth in range(1, len(parents) + 1):
                folder = base + "/".join(parents[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    oid = hashlib.sha1(folder.encode()).hexdigest()
                    items.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
            if parents and not recursive:
                continue
            data = commit.files[path]
            item: dict[str, object] = {"type": "file", "size": len(data), "path": path}
            if path in commit.lfs:
                pointer = lfs_pointer(data)
                item["oid"] = git_blob_sha1(pointer)
                item["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": len(pointer),
                }
            else:
                item["oid"] = git_blob_sha1(data)
            items.append(item)
        if prefix and not items:
            return self._error(req, entry, 404, "EntryNotFound", f"{prefix} does not exist")
        start = int(query.get("cursor", ["0"])[0])
        page = items[start : start + self.page_size]
        headers = {"Content-Type": "application/json"}
        if start + self.page_size < len(items):
            args = {k: v[0] for k, v in query.items()} | {"cursor": str(start + self.page_size)}
            url = f"{self.url}{urllib.parse.urlsplit(req.path).path}?{urllib.parse.urlencode(args)}"
            headers["Link"] = f'<{url}>; rel="next"'
        self._send(req, entry, 200, json.dumps(page).encode(), headers)

    @staticmethod
    def _signature(sha256: str) -> str:
        return hmac.new(_SIGNING_KEY, sha256.encode(), hashlib.sha256).hexdigest()

    def _signed(self, sha256: str) -> str:
        query = urllib.parse.urlencode(
            {"X-Amz-Expires": "3600", "X-Amz-Signature": self._signature(sha256)}
        )
        return f"{self.cdn_url}/lfs/{sha256}?{query}"

    def _cdn_get(
        self, req: BaseHTTPRequestHandler, parts: urllib.parse.SplitResult, entry: Logged
    ) -> None:
        found = re.fullmatch(r"/lfs/([0-9a-f]{64})", parts.path)
        signature = urllib.parse.parse_qs(parts.query).get("X-Amz-Signature", [""])[0]
        if not found or not hmac.compare_digest(signature, self._signature(found.group(1))):
            return self._send(req, entry, 403, b"<Error><Code>AccessDenied</Code></Error>", {})
        hit = next(
            (
                (p, d)
                for repo in self.repos.values()
                for c in repo.commits
                for p, d in c.files.items()
                if p in c.lfs and hashlib.sha256(d).hexdigest() == found.group(1)
            ),
            None,
        )
        if hit is None:
            return self._send(req, entry, 404, b"<Error><Code>NoSuchKey</Code></Error>", {})
        data = self._maybe_corrupt(*hit)
        headers = {"ETag": f'"{found.group(1)}"', "Accept-Ranges": "bytes"}
        self._send_ranged(req, entry, data, headers)

    def _maybe_corrupt(self, path: str, data: bytes) -> bytes:
        if path not in self.corrupt or not data:
            return data
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    def _send_ranged(
        self, req: BaseHTTPRequestHandler, entry: Logged, data: bytes, headers: dict[str, str]
    ) -> None:
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range", ""))
        if not wanted:
            return self._send(req, entry, 200, data, headers)
        start = int(wanted.group(1))
        end = min(len(data), int(wanted.group(2)) + 1) if wanted.group(2) else len(data)
        if start >= len(data) or start >= end:
            return self._send(req, entry, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
        headers = headers | {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        return self._send(req, entry, 206, data[start:end], headers)

    def _error(
        self, req: BaseHTTPRequestHandler, entry: Logged, status: int, code: str, message: str
    ) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(req, entry, status, json.dumps({"error": message}).encode(), headers)

    @staticmethod
    def _send(
        req: BaseHTTPRequestHandler,
        entry: Logged,
        status: int,
        body: bytes,
        headers: dict[str, str],
    ) -> None:
        entry.status = status
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)
