"""What a handle names, and where its bytes come from, exactly as tensorflow_hub sees it.

tensorflow_hub keys its cache by ``sha1(handle)`` of the handle *as written*, and
asks http(s) handles for ``?tf-hub-format=compressed`` (or ``uncompressed``) even
when they already point at an archive. hubpin must do the same to share that
cache, so nothing here normalises a handle.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

from hubpin.storage.schemes import host_of, known, scheme, scheme_of, split

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CONTROL = re.compile("[\x00-\x1f]")
_CN_HUB = "https://hub.tensorflow.google.cn/"
_CN_GCS = "https://gcs.tensorflow.google.cn/tfhub-modules/%s.tar.gz"


class Format(str, Enum):
    """tensorflow_hub's ModelLoadFormat; AUTO behaves as COMPRESSED."""

    COMPRESSED = "COMPRESSED"
    UNCOMPRESSED = "UNCOMPRESSED"
    AUTO = "AUTO"


class Kind(str, Enum):
    """How a pinned model is stored, which decides how it is synced and loaded."""

    ARCHIVE = "archive"  # a tar(.gz) unpacked into <cache>/<sha1(handle)>/
    GCS = "gcs"  # a gs:// folder read in place (UNCOMPRESSED); pinned per object
    FOLDER = "folder"  # a local folder read in place; pinned by tree digest
    HUGGINGFACE = "huggingface"  # a Hugging Face repository at a commit, in HF_HUB_CACHE


@dataclass(frozen=True)
class Source:
    """Where one handle's model comes from, once its format is known."""

    kind: Kind
    location: str  # URL to fetch, gs:// URL, or local path (absolute)
    ask_location: bool = False  # http handle in UNCOMPRESSED mode: GET for a gs:// body


def cache_key(handle: str) -> str:
    """tensorflow_hub's cache folder name for a handle."""
    return hashlib.sha1(handle.encode("utf8")).hexdigest()


def archive_key(handle: str, sha256: str) -> str:
    """The cache folder of an archive pinned under ``handle`` with this sha256.

    tensorflow_hub's ``sha1(handle)`` for a handle it looks up in its cache. A path
    or ``file://`` URL it never looks up there (its PathResolver hands the path to
    TensorFlow), and the same relative path means different files in different
    projects: those are keyed by the archive's sha256, so two projects' own
    ``model.tar.gz`` never claim one folder, and the same archive shares one.
    """
    spec = scheme(handle)
    if spec is not None and spec.local:
        return cache_key(f"hubpin:archive-sha256:{sha256}")
    return cache_key(handle)


def is_archive_name(name: str) -> bool:
    return urllib.parse.urlsplit(name).path.lower().endswith(ARCHIVE_SUFFIXES)


def _tf_hub_archive_name(handle: str) -> bool:
    """tensorflow_hub's own test for a gs:// archive: the handle's suffix, case and all."""
    return handle.endswith(ARCHIVE_SUFFIXES)


def check_handle(handle: str) -> str | None:
    """Return why ``handle`` cannot be a handle, or None when it can."""
    if not handle or handle != handle.strip():
        return "a handle must be a non-empty string without surrounding spaces"
    if _CONTROL.search(handle):
        return "a handle must not contain control characters"
    found = scheme_of(handle)
    written = handle[: len(found)]  # urlsplit lower-cases it; tensorflow_hub does not
    if found and written != found:
        return (
            f"write the scheme in lower case ({found}:): tensorflow_hub does not take "
            f"{written}: for a URL and would look for a file of that name"
        )
    if handle.startswith("~"):
        return (
            "tensorflow_hub does not expand '~' (it would look for a file named '~'); "
            "write the path out, or relative to the manifest"
        )
    spec = scheme(handle)
    parts = split(handle)
    if spec is None or not spec.handles:
        forms = [s.prefix for s in known("handles") if s.name]
        return f"unsupported scheme {scheme_of(handle)!r} (expected {', '.join(forms)} or a path)"
    if (
        spec.folders
        and spec.remote
        and is_archive_name(handle)
        and not _tf_hub_archive_name(handle)
    ):
        return (
            "write the archive's suffix in lower case (.tar.gz, .tgz or .tar): "
            f"tensorflow_hub reads any other {spec.prefix} name as a model folder"
        )
    if spec.web:
        if not host_of(handle):
            return "an http(s) handle needs a host"
    elif spec.local:
        if spec.name and not parts.path:
            return f"a {spec.prefix} handle needs a path"
    elif spec.storage is not None:
        if not parts.netloc:
            return f"a {spec.prefix} handle needs a bucket ({spec.example})"
        if not spec.folders and not is_archive_name(handle):
            return f"a {spec.prefix} handle names an archive ({', '.join(ARCHIVE_SUFFIXES)})"
    # a Kaggle handle is checked by hubpin.kaggle.handle.parse_handle, which knows Kaggle's form
    return None


# "tfhub.dev/google/x/1": read as a relative path, it would fail much later as a missing folder.
_HOST_WITHOUT_SCHEME = re.compile(r"(?:[a-z0-9-]+\.)+[a-z]{2,}/.", re.IGNORECASE)


def meant_as_url(handle: str) -> str | None:
    """The URL a path handle was probably meant to be, for the message when that path names
    nothing: ``tfhub.dev/…`` without its ``https://``, or ``https//…`` without its colon
    (both read as relative paths, as tensorflow_hub would read them)."""
    if scheme_of(handle):
        return None  # a handle with a scheme of its own
    head, _, rest = handle.partition("/")
    for spec in known("handles"):
        if spec.remote and head == spec.name and rest[:1] == "/":
            return spec.prefix + rest[1:]  # "https//host/…": the colon left out
    if _HOST_WITHOUT_SCHEME.match(handle):
        web = next(spec for spec in known("web") if spec.prefix.endswith("s://"))
        return web.prefix + handle
    return None


def local_path(handle: str, base: Path) -> Path | None:
    """The filesystem path a path or file:// handle names (relative to ``base``)."""
    spec = scheme(handle)
    if spec is None or not spec.local:
        return None
    if spec.name:
        from urllib.request import url2pathname  # lazily: urllib.request costs 9 ms to import

        return Path(url2pathname(urllib.parse.urlsplit(handle).path))
    path = Path(handle).expanduser()  # a handle never starts with '~' (check_handle)
    return path if path.is_absolute() else base / path


def kind_for(handle: str, fmt: Format, base: Path) -> Kind:
    """Which kind of source ``handle`` is under ``fmt``: :func:`source_for`'s decision, without
    building the URL it fetches (``lock --check`` recomputes the kind of every pin)."""
    spec = scheme(handle)
    if (spec is not None and spec.huggingface) or is_hf_host(handle):  # into HF's own cache
        return Kind.HUGGINGFACE
    if spec is not None and spec.web:
        return Kind.GCS if fmt is Format.UNCOMPRESSED else Kind.ARCHIVE
    if spec is not None and spec.remote:  # a store's archive or folder, or a Kaggle handle
        folder = spec.folders and spec.storage is not None and not is_archive_name(handle)
        return Kind.GCS if folder else Kind.ARCHIVE
    path = local_path(handle, base)
    assert path is not None
    return Kind.ARCHIVE if is_archive_name(str(path)) else Kind.FOLDER


def source_for(handle: str, fmt: Format, base: Path) -> Source:
    """Decide how ``handle`` is fetched under ``fmt``, as tensorflow_hub's resolvers do."""
    kind, spec = kind_for(handle, fmt, base), scheme(handle)
    if spec is not None and spec.web and kind is not Kind.HUGGINGFACE:
        if kind is Kind.GCS:
            return Source(kind, append_query(handle, "uncompressed"), ask_location=True)
        if handle.startswith(_CN_HUB):
            return Source(kind, _CN_GCS % handle[len(_CN_HUB) :])
        return Source(kind, append_query(handle, "compressed"))
    if kind is Kind.HUGGINGFACE or (spec is not None and spec.remote):
        return Source(kind, handle)
    return Source(kind, str(local_path(handle, base)))


def is_hf_host(handle: str) -> bool:
    """An https://huggingface.co/… handle: a repository page, not a tensorflow_hub model URL."""
    spec = scheme(handle)
    return spec is not None and spec.web and host_of(handle) in ("huggingface.co", "hf.co")


def append_query(handle: str, fmt: str) -> str:
    """``handle`` with ``tf-hub-format=fmt`` appended, as tensorflow_hub builds it."""
    parts = list(urllib.parse.urlparse(handle))
    query = urllib.parse.parse_qsl(parts[4])
    query.append(("tf-hub-format", fmt))
    parts[4] = urllib.parse.urlencode(query)
    return urllib.parse.urlunparse(parts)


def strip_query(url: str) -> str:
    """A URL safe to record or print: no query (signed URLs, tokens), no fragment, no password."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if ":" in (parts.hostname or ""):
        netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def relative_posix(path: Path, base: Path) -> str:
    """A path as recorded in a lock: relative to the lock's folder when below it."""
    try:
        return PurePosixPath(path.resolve().relative_to(base.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()
