"""kagglehub's own cache, filled from a verified entry so unmodified kagglehub finds it offline.

Layout as the installed kagglehub (1.0.3) reads it (kagglehub/cache.py:190-266):
``$KAGGLEHUB_CACHE/models/<owner>/<model>/<framework>/<variation>/<version>/``
with an empty ``<version>.complete`` beside it; kagglehub returns a cached folder
only when both exist. A versioned handle is then answered with no network at all.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path

from hubpin.errors import CacheError, write_error
from hubpin.kaggle import KaggleHandle

KAGGLEHUB_MARKER_CONTENTS = b""  # kagglehub touches an empty file (cache.py:51-54)


def kagglehub_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """kagglehub's cache folder: ``$KAGGLEHUB_CACHE``, else ``~/.cache/kagglehub`` (config.py:17, 62-65)."""
    env = os.environ if environ is None else environ
    if "KAGGLEHUB_CACHE" in env:
        return Path(env["KAGGLEHUB_CACHE"])
    return Path(env.get("HOME") or Path.home()) / ".cache" / "kagglehub"


def _require_version(handle: KaggleHandle) -> int:
    if handle.version is None:
        raise ValueError(f"{handle}: kagglehub caches versions only; pin one first")
    return handle.version


def kagglehub_entry(root: Path, handle: KaggleHandle) -> Path:
    """The folder ``kagglehub.model_download(handle.kagglehub_handle)`` returns (cache.py:190-201)."""
    version = _require_version(handle)
    return (
        root
        / "models"
        / handle.owner
        / handle.model
        / handle.framework
        / handle.variation
        / str(version)
    )


def kagglehub_marker(root: Path, handle: KaggleHandle) -> Path:
    """The completion marker beside the entry, ``<version>.complete`` (cache.py:244-266).

    kagglehub returns a cached folder only when both exist (cache.py:45-49) and
    never looks inside the marker.
    """
    entry = kagglehub_entry(root, handle)
    return entry.with_name(f"{entry.name}.complete")


def in_kagglehub_cache(root: Path, handle: KaggleHandle) -> bool:
    """Whether kagglehub would take ``handle`` from its cache (both entry and marker exist)."""
    return kagglehub_marker(root, handle).exists() and kagglehub_entry(root, handle).exists()


def publish_to_kagglehub(folder: Path, root: Path, handle: KaggleHandle) -> Path:
    """Make kagglehub's cache hold ``folder`` (already verified) for ``handle``; its entry path.

    Files are hard-linked (one copy on disk for tensorflow_hub's and kagglehub's
    caches), copied where links are impossible (another file system). The tree
    is built in a hidden sibling (``.<N>.hubpin-<uuid>.tmp``), the marker is
    removed, the folder renamed into place, and the marker written last, so
    kagglehub never sees a marker beside a partial folder; a crash leaves at
    worst no marker, and kagglehub then downloads for itself. An entry that
    already holds these very files (same inodes, or same sizes and mtimes) is
    left alone.

    kagglehub then answers ``model_download("o/m/f/v/N")`` from the cache with
    no network at all and no flag needed (http_resolver.py:208-215: a versioned
    handle skips ``GetModelInstance``). An *unversioned* handle always asks the
    API first, so offline it fails even when cached. In Colab (``TBE_RUNTIME_ADDR``
    set) or a Kaggle notebook, kagglehub tries its Colab/Kaggle resolvers first
    (kagglehub/__init__.py:20-22); ``DISABLE_COLAB_CACHE=true`` /
    ``DISABLE_KAGGLE_CACHE=true`` make it use this cache there too.
    """
    entry = kagglehub_entry(root, handle)
    marker = kagglehub_marker(root, handle)
    parent = entry.parent
    tag = uuid.uuid4().hex
    tmp = parent / f".{entry.name}.hubpin-{tag}.tmp"
    old = parent / f".{entry.name}.hubpin-{tag}.old"
    try:
        if marker.exists() and entry.is_dir() and _same_tree(folder, entry):
            return entry
        parent.mkdir(parents=True, exist_ok=True)
        link_tree(folder, tmp)
        marker.unlink(missing_ok=True)
        moved = False
        if entry.exists() or entry.is_symlink():
            os.rename(entry, old)
            moved = True
        os.rename(tmp, entry)
        marker_tmp = parent / f".{marker.name}.hubpin-{tag}.tmp"
        marker_tmp.write_bytes(KAGGLEHUB_MARKER_CONTENTS)
        os.rename(marker_tmp, marker)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(exc, entry) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return entry


def _walk(folder: Path) -> dict[str, os.stat_result]:
    """Relative POSIX path → lstat of everything below ``folder``; symlinks are refused."""
    found: dict[str, os.stat_result] = {}
    pending = [(folder, "")]
    while pending:
        here, prefix = pending.pop()
        with os.scandir(here) as entries:
            for item in entries:
                rel = f"{prefix}{item.name}"
                if item.is_symlink():
                    raise CacheError(
                        f"{item.path}: a symlink in a model folder; refusing to publish it"
                    )
                found[rel] = item.stat(follow_symlinks=False)
                if item.is_dir(follow_symlinks=False):
                    pending.append((Path(item.path), f"{rel}/"))
    return found


def _same_tree(source: Path, entry: Path) -> bool:
    try:
        ours, theirs = _walk(source), _walk(entry)
    except (OSError, CacheError):
        return False
    if ours.keys() != theirs.keys():
        return False
    for rel, st in ours.items():
        other = theirs[rel]
        if (st.st_mode & 0o170000) != (other.st_mode & 0o170000):
            return False
        if stat.S_ISREG(st.st_mode) and not (
            (st.st_ino, st.st_dev) == (other.st_ino, other.st_dev)
            or (st.st_size, st.st_mtime_ns) == (other.st_size, other.st_mtime_ns)
        ):
            return False
    return True


_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


def link_tree(source: Path, target: Path) -> None:
    """``target`` as a copy of ``source``: directories made, files hard-linked (one copy on
    disk for every cache that holds the model) or copied where links are impossible."""
    items = _walk(source)
    target.mkdir(exist_ok=True)
    link = True
    for rel in sorted(items):
        st = items[rel]
        dest = target / rel
        if stat.S_ISDIR(st.st_mode):
            dest.mkdir(exist_ok=True)
            continue
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f"{source / rel}: not a regular file; refusing to publish it")
        if link:
            try:
                os.link(source / rel, dest)
                continue
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                link = False  # e.g. another file system: copy this one and the rest
        shutil.copy2(source / rel, dest)
