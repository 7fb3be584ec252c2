"""Hugging Face Hub repositories as the installed huggingface_hub (2.x) sees them.

A repository is pinned to the commit its revision resolves to, with each file's
path, size, git blob id and (for LFS files) sha256, so sync can check every byte
before anything is published (huggingface_hub itself checks sizes only). What is
followed here, from huggingface_hub's source rather than the Hub's docs:

- handles: ``hf:<org>/<repo>[@<revision>]``; ``hf://<org>/<repo>`` as KerasHub writes it
  (keras_hub/src/utils/preset_utils.py ``get_file``: always ``main``); the repository's
  page, ``https://huggingface.co/<org>/<repo>[/tree/<revision>]``;
- the endpoint: ``HF_ENDPOINT`` (constants.py ``ENDPOINT``), default https://huggingface.co;
- the API: ``GET /api/models/<repo>/revision/<rev>`` (hf_api.py ``model_info``: ``sha``),
  ``GET /api/models/<repo>/tree/<commit>?recursive=true`` paged by ``Link: rel="next"``
  (hf_api.py ``_iter_repo_tree_pages``, utils/_pagination.py), files from
  ``/<repo>/resolve/<commit>/<path>`` (constants.py ``HUGGINGFACE_CO_URL_TEMPLATE``);
- errors: ``X-Error-Code`` ``GatedRepo``/``RepoNotFound``/``RevisionNotFound``/``EntryNotFound``
  (utils/_http.py ``hf_raise_for_status``);
- the token: ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``), else the file ``HF_TOKEN_PATH``
  (default ``$HF_HOME/token``) (utils/_auth.py ``get_token``); sent as ``Bearer`` to the
  Hub's origin only, never to the CDN a file redirects to, never printed or stored.

No network at import; the HTTP layer is hubpin's :class:`hubpin.fetch.Fetcher`.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hubpin.errors import FetchError, InputError
from hubpin.handles import strip_query
from hubpin.storage.schemes import host_of, scheme_of

if TYPE_CHECKING:
    from hubpin.fetch import Fetcher

DEFAULT_ENDPOINT = "https://huggingface.co"
_HF_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
EXPECTED_FORM = (
    "expected hf:<org>/<repo>[@<revision>], hf://<org>/<repo> or "
    "https://huggingface.co/<org>/<repo>[/tree/<revision>]"
)
# huggingface_hub/utils/_validators.py: REPO_ID_REGEX (one name part), no "--" or "..".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HfHandle:
    """One model repository at one revision (a branch, tag or commit)."""

    repo_id: str
    revision: str = "main"

    @property
    def page_url(self) -> str:
        """The repository's page on the Hub, where gated terms are accepted."""
        return f"{DEFAULT_ENDPOINT}/{self.repo_id}"

    def __str__(self) -> str:
        return f"hf:{self.repo_id}" + ("" if self.revision == "main" else f"@{self.revision}")


def is_hf_handle(handle: str) -> bool:
    """Whether ``handle`` is meant for the Hugging Face Hub (well-formed or not)."""
    if handle.startswith("hf:"):
        return True
    return scheme_of(handle) in ("http", "https") and host_of(handle) in _HF_HOSTS


def parse_hf(handle: str) -> HfHandle | None:
    """The repository ``handle`` names, or None when it is not a Hugging Face handle.

    A handle meant for the Hub but malformed raises :class:`InputError` with the form.
    """
    if not is_hf_handle(handle):
        return None
    shown = strip_query(handle) if "://" in handle and not handle.startswith("hf:") else handle
    if handle.startswith("hf://"):
        rest, revision = handle[len("hf://") :], "main"
    elif handle.startswith("hf:"):
        rest, _, revision = handle[len("hf:") :].partition("@")
        if "@" in handle and not revision:
            raise InputError(f"{shown}: an empty revision after '@'; {EXPECTED_FORM}")
        revision = revision or "main"
    else:
        path = urllib.parse.urlsplit(handle).path.strip("/")
        pieces = path.split("/")
        if len(pieces) > 2 and pieces[2] == "tree" and len(pieces) > 3:
            rest, revision = "/".join(pieces[:2]), urllib.parse.unquote("/".join(pieces[3:]))
        elif len(pieces) == 2:
            rest, revision = path, "main"
        else:
            raise InputError(f"{shown}: not a Hugging Face repository URL; {EXPECTED_FORM}")
    names = rest.split("/")
    if len(names) != 2 or not all(_NAME.fullmatch(n) for n in names):
        raise InputError(f"{shown}: the repository must be <org>/<repo>; {EXPECTED_FORM}")
    if any("--" in n or ".." in n or n.endswith((".", "-")) for n in names):
        raise InputError(
            f"{shown}: '--', '..' and a trailing '.' or '-' are not allowed in a repo id"
        )
    if not is_ref_name(revision):
        raise InputError(
            f"{shown}: {revision!r} is not a revision (a branch, tag or commit as git names "
            f"them); {EXPECTED_FORM}"
        )
    return HfHandle(rest, revision)


_NOT_IN_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def is_ref_name(revision: str) -> bool:
    """Whether git would take ``revision`` as a ref name (``git check-ref-format``'s rules).

    It names ``refs/<revision>`` in Hugging Face's cache, so one starting with ``/`` (a
    path outside the cache) or climbing with ``..`` must never get that far."""
    parts = revision.split("/")
    return not (
        not revision
        or revision == "@"
        or _NOT_IN_REF.search(revision)
        or revision.endswith(".")
        or any(not p or p.startswith(".") or p.endswith(".lock") for p in parts)
    )


def is_commit(revision: str) -> bool:
    """Whether a revision names a commit itself (then it is pinned as is, never resolved)."""
    return _COMMIT.fullmatch(revision) is not None


def endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The Hub's base URL: ``HF_ENDPOINT`` as huggingface_hub reads it, else huggingface.co."""
    env = os.environ if environ is None else environ
    value = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.query:
        raise InputError(f"HF_ENDPOINT = {strip_query(value)!r}: expected an http(s) base URL")
    return value


@dataclass(frozen=True)
class Token:
    """A Hub token and where it was found; printing it never shows the secret."""

    source: str
    value: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}

    def __str__(self) -> str:
        return f"the token from {self.source}"


def load_token(environ: Mapping[str, str] | None = None) -> Token | None:
    """The token huggingface_hub would send: ``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN``, then
    the file ``HF_TOKEN_PATH`` (default ``$HF_HOME/token``); Colab's vault is not read."""
    env = os.environ if environ is None else environ
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = (env.get(name) or "").replace("\r", "").replace("\n", "").strip()
        if value:
            return Token(name, value)
    from hubpin.cache.huggingface import hf_home

    path = Path(env.get("HF_TOKEN_PATH") or hf_home(env) / "token")
    try:
        value = path.read_text(encoding="utf-8").replace("\r", "").replace("\n", "").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Token(str(path), value) if value else None


# -- What a lock pins ------------------------------------------------------------------


class HfFile(BaseModel):
    """One file of a pinned commit: its git blob id, and its sha256 when it is in LFS."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    path: str
    size: int = Field(ge=0, strict=True)
    blob_id: str = Field(pattern=r"^[0-9a-f]{40}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @property
    def etag(self) -> str:
        """The name huggingface_hub gives its blob: X-Linked-Etag (the sha256) for LFS files,
        the ETag (the git blob id) for the others (file_download.py ``_normalize_etag``)."""
        return self.sha256 or self.blob_id

    @model_validator(mode="after")
    def _safe_path(self) -> HfFile:
        parts = self.path.split("/")
        if not self.path or self.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"file path {self.path!r} must be relative, without '.' or '..'")
        return self


class HfPinned(BaseModel):
    """A Hugging Face pin's own fields: the repository, the revision asked, the commit, files."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    repo: str
    revision: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    complete: bool  # every file of the commit (no include/exclude left any out)
    files: list[HfFile]

    def digest(self) -> str:
        """The pinned tree: sorted paths, sizes, blob ids and LFS sha256s (no download needed)."""
        from hubpin.cache.huggingface import (
            files_digest,
        )  # lazily: a lock of archives needs no HF cache

        return files_digest(self.files)

    def model_dump_files(self) -> list[dict[str, Any]]:
        return [f.model_dump(exclude_none=True) for f in self.files]

    @model_validator(mode="after")
    def _unique(self) -> HfPinned:
        if parse_hf(f"hf:{self.repo}") is None:
            raise ValueError(f"{self.repo!r} is not a repository id")
        seen = [f.path for f in self.files]
        if len(seen) != len(set(seen)):
            raise ValueError("a file is listed twice")
        return self


def _path(f: HfFile) -> str:
    return f.path


def select(paths: list[str], include: list[str] | None, exclude: list[str] | None) -> set[str]:
    """The paths ``include`` (default: all) keeps and ``exclude`` drops, matched as
    huggingface_hub's ``allow_patterns``/``ignore_patterns`` are (fnmatch; a pattern
    ending in ``/`` means everything below it)."""

    def hit(path: str, patterns: list[str]) -> bool:
        return any(fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)

    return {
        p
        for p in paths
        if (include is None or hit(p, include)) and not (exclude and hit(p, exclude))
    }


# -- The Hub's API ---------------------------------------------------------------------


class HfApi:
    """The Hub's model API over hubpin's fetcher; the token is registered for its origin only."""

    def __init__(self, where: str, token: Token | None, fetcher: Fetcher) -> None:
        self.endpoint = where
        self.token = token
        self.fetcher = fetcher
        fetcher.add_host_hint(where, "that the host is up, or the Hub's address: HF_ENDPOINT")
        if token is not None:
            fetcher.add_host_headers(where, token.headers())

    def file_url(self, repo: str, commit: str, path: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{commit}/{urllib.parse.quote(path)}"

    def resolve(self, handle: HfHandle) -> str:
        """The commit ``handle.revision`` names now."""
        rev = urllib.parse.quote(handle.revision, safe="")
        answer = self._json(f"{self.endpoint}/api/models/{handle.repo_id}/revision/{rev}", handle)
        sha = answer.get("sha") if isinstance(answer, dict) else None
        if not isinstance(sha, str) or not _COMMIT.fullmatch(sha):
            raise FetchError(
                f"Hugging Face repository {handle.repo_id}: the Hub's answer names no commit "
                f"for {handle.revision!r} (sha = {sha!r})"
            )
        return sha

    def list_files(self, handle: HfHandle, commit: str) -> list[HfFile]:
        """Every file of ``commit``, following the Hub's pages."""
        url: str | None = (
            f"{self.endpoint}/api/models/{handle.repo_id}/tree/{commit}?recursive=true&expand=false"
        )
        files: list[HfFile] = []
        while url:
            page, headers = self._json_and_headers(url, handle)
            if not isinstance(page, list):
                raise FetchError(f"{strip_query(url)}: expected a JSON list of files")
            for item in page:
                if isinstance(item, dict) and item.get("type") == "file":
                    files.append(_file(item, url))
            url = _next_link(headers.get("link") or headers.get("Link") or "")
        return files

    def check_access(self, handle: HfHandle, commit: str, path: str) -> None:
        """HEAD one file as hf_hub_download does, so a gated repository fails at lock time."""
        status, headers, _ = self.fetcher.request(
            "HEAD", self.file_url(handle.repo_id, commit, path)
        )
        if status >= 400:
            raise self.error(status, headers, handle)

    def explain(self, url: str, handle: HfHandle) -> FetchError | None:
        """After a failed download: the Hub's reason, when it is one (gated, private, gone)."""
        status, headers, _ = self.fetcher.request("HEAD", url)
        return self.error(status, headers, handle) if status >= 400 else None

    def _json(self, url: str, handle: HfHandle) -> Any:
        return self._json_and_headers(url, handle)[0]

    def _json_and_headers(self, url: str, handle: HfHandle) -> tuple[Any, Mapping[str, str]]:
        status, headers, body = self.fetcher.request(
            "GET", url, headers={"Accept": "application/json"}
        )
        if status >= 400:
            raise self.error(status, headers, handle)
        try:
            return json.loads(body or b"null"), headers
        except ValueError:
            raise FetchError(
                f"{strip_query(url)}: HTTP {status} without JSON; is HF_ENDPOINT the Hub?"
            ) from None

    def error(self, status: int, headers: Mapping[str, str], handle: HfHandle) -> FetchError:
        """Why the Hub refused, and what fixes it; never the token."""
        code = _header(headers, "x-error-code")
        name, page = handle.repo_id, handle.page_url
        if code == "GatedRepo" or (status == 403 and self.token is not None):
            if self.token is None:
                return FetchError(
                    f"Hugging Face repository {name} is gated (HTTP {status}): it needs a token "
                    f"(set HF_TOKEN, or run: hf auth login) of an account that accepted its terms "
                    f"on {page}"
                )
            return FetchError(
                f"Hugging Face repository {name} is gated (HTTP {status}): {self.token} was "
                f"accepted, but its account has not accepted the terms; accept them on {page}"
            )
        if code == "RevisionNotFound":
            return FetchError(
                f"Hugging Face repository {name}: no revision {handle.revision!r} (HTTP {status})"
            )
        if code == "EntryNotFound":
            return FetchError(
                f"Hugging Face repository {name}: a pinned file is gone (HTTP {status}); run: hubpin lock"
            )
        if status == 401 and self.token is not None and code != "RepoNotFound":
            return FetchError(
                f"Hugging Face repository {name}: HTTP 401: the Hub refused {self.token}; "
                "check it, or create one at https://huggingface.co/settings/tokens"
            )
        if status in (401, 404) or code == "RepoNotFound":
            need = (
                ""
                if self.token
                else " or private: if private, set HF_TOKEN (or run: hf auth login)"
            )
            return FetchError(
                f"Hugging Face repository {name}: not found (HTTP {status}); check the name{need}; "
                f"its page would be {page}"
            )
        where = urllib.parse.urlsplit(self.endpoint).netloc
        return FetchError(f"Hugging Face repository {name}: {where} answered HTTP {status}")


def _file(item: dict[str, Any], url: str) -> HfFile:
    lfs = item.get("lfs")
    try:
        return HfFile(
            path=item["path"],
            size=item["size"],
            blob_id=item["oid"],
            sha256=lfs["oid"] if isinstance(lfs, dict) else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FetchError(
            f"{strip_query(url)}: a file entry the Hub should not send: {exc}"
        ) from None


def _next_link(value: str) -> str | None:
    for part in value.split(","):
        found = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if found:
            return found.group(1)
    return None


def _header(headers: Mapping[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name), "")


def pin_repo(
    spec_handle: str,
    include: list[str] | None,
    exclude: list[str] | None,
    api: HfApi,
    commit: str | None = None,
) -> HfPinned:
    """Resolve and list one repository: what a lock records. ``commit`` keeps an earlier pin's
    commit (plain ``hubpin lock`` never moves a branch; ``lock --upgrade`` does)."""
    handle = parse_hf(spec_handle)
    assert handle is not None
    if commit is None:
        commit = handle.revision if is_commit(handle.revision) else api.resolve(handle)
    listed = api.list_files(handle, commit)
    keep = select([f.path for f in listed], include, exclude)
    files = sorted((f for f in listed if f.path in keep), key=_path)
    if not files:
        raise InputError(
            f"{handle}: no file of commit {commit[:12]} matches include = {include!r}, "
            f"exclude = {exclude!r}"
        )
    api.check_access(handle, commit, files[0].path)
    return HfPinned(
        repo=handle.repo_id,
        revision=handle.revision,
        commit=commit,
        complete=len(files) == len(listed),
        files=files,
    )
