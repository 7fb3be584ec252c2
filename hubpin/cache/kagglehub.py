"""kagglehub's own cache, filled from a verified entry so unmodified kagglehub finds it offline.

Layout as the installed kagglehub (1.0.3) reads it (kagglehub/cache.py:190-266):
``$KAGGLEHUB_CACHE/models/<owner>/<model>/<framework>/<variation>/<version>/``
with an empty ``<version>.complete`` beside it; kagglehub returns a cached folder
only when both exist. One file of it, ``model_download(handle, path)`` as KerasHub
asks for every preset file, is returned from the cache only when its own marker,
``<variation>/.complete/<version>/<path>.complete``, exists too (cache.py:236-248),
so hubpin writes one per file. A versioned handle is then answered with no
network at all, whole or file by file.
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from hubpin.errors import CacheError, write_error
from hubpin.kaggle.handle import KaggleHandle

if TYPE_CHECKING:
    from hubpin.digests import Tree

KAGGLEHUB_MARKER_CONTENTS = b""  # kagglehub touches an empty file (cache.py:51-54)
FILE_MARKERS = ".complete"  # kagglehub's FILE_COMPLETION_MARKER_FOLDER (cache.py:12)


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


def kagglehub_file_markers(root: Path, handle: KaggleHandle) -> Path:
    """The folder of per-file markers, ``<variation>/.complete/<version>/`` (cache.py:236-248).

    ``model_download(handle, "a/b.json")`` returns ``<entry>/a/b.json`` from the cache
    only when ``<this folder>/a/b.json.complete`` exists (cache.py:45-49).
    """
    entry = kagglehub_entry(root, handle)
    return entry.parent / FILE_MARKERS / entry.name


def marker_clash(handle: str, tree: Tree) -> str | None:
    """Why kagglehub's per-file markers cannot describe ``tree`` (None: they can).

    File ``x`` is marked by a file ``<markers>/x.complete``; a file ``x.complete/y`` needs
    that same name as the folder of its marker ``x.complete/y.complete``. Such an archive
    cannot be published into kagglehub's cache, so it is refused before anything is written.
    """
    holding: dict[str, str] = {}  # folder → one file below it
    for path in tree.files:
        for parent in PurePosixPath(path).parents:
            holding.setdefault(str(parent), path)
    for path in sorted(tree.files):
        below = holding.get(f"{path}.complete")
        if below is not None:
            return (
                f"{handle}: the archive holds {path} and {below}; kagglehub marks a cached "
                f"file done with a marker file named {path}.complete, which {below}'s marker "
                "needs as a folder, so kagglehub's cache cannot hold this model; refused, "
                "nothing was published (rename one of them in the model's archive)"
            )
    return None


def in_kagglehub_cache(root: Path, handle: KaggleHandle) -> bool:
    """Whether kagglehub would take ``handle`` from its cache, whole and file by file."""
    entry = kagglehub_entry(root, handle)
    if not (kagglehub_marker(root, handle).exists() and entry.exists()):
        return False
    try:
        return _file_markers_present(entry, kagglehub_file_markers(root, handle))
    except (OSError, CacheError):
        return False


def _file_markers_present(entry: Path, markers: Path) -> bool:
    return all(
        (markers / f"{rel}.complete").is_file()
        for rel, st in _walk(entry).items()
        if stat.S_ISREG(st.st_mode)
    )


def _write_file_markers(entry: Path, markers: Path, tag: str) -> None:
    """One empty ``<path>.complete`` per file of ``entry``, built aside and renamed in."""
    tmp = markers.parent / f".{markers.name}.hubpin-{tag}.tmp"
    try:
        tmp.mkdir(parents=True)
        for rel, st in sorted(_walk(entry).items()):
            if stat.S_ISREG(st.st_mode):
                marker = tmp / f"{rel}.complete"
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_bytes(KAGGLEHUB_MARKER_CONTENTS)
        try:
            os.rename(tmp, markers)
        except OSError as exc:  # another process published the same version meanwhile
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not _file_markers_present(
                entry, markers
            ):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove(path: Path, tag: str) -> None:
    """Take ``path`` out of kagglehub's sight at once (a rename), then delete it."""
    if not (path.exists() or path.is_symlink()):
        return
    gone = path.with_name(f".{path.name}.hubpin-{tag}.old")
    os.rename(path, gone)
    if gone.is_dir() and not gone.is_symlink():
        shutil.rmtree(gone, ignore_errors=True)
    else:
        gone.unlink(missing_ok=True)


_PUBLISHING = threading.Lock()  # two aliases of one version, synced by parallel jobs


def publish_to_kagglehub(
    folder: Path, root: Path, handle: KaggleHandle, rehash: bool = False
) -> Path:
    """:func:`_publish`, one at a time in this process (it swaps shared folders)."""
    with _PUBLISHING:
        return _publish(folder, root, handle, rehash)


def _publish(folder: Path, root: Path, handle: KaggleHandle, rehash: bool = False) -> Path:
    """Make kagglehub's cache hold ``folder`` (already verified) for ``handle``; its entry path.

    Files are hard-linked (one copy on disk for tensorflow_hub's and kagglehub's
    caches), copied where links are impossible (another file system). The tree
    is built in a hidden sibling (``.<N>.hubpin-<uuid>.tmp``), the markers (the
    version's and every file's) are removed, the folder renamed into place, then
    the per-file markers (built aside, renamed in) and the version's marker are
    written last, so kagglehub never sees a marker beside a partial folder; a
    crash leaves at worst missing markers, and kagglehub then downloads for
    itself. An entry that already holds these very files (same inodes, or same
    sizes and mtimes, and with ``rehash`` the same bytes: :func:`differences`) is left
    alone, its missing per-file markers written.

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
    markers = kagglehub_file_markers(root, handle)
    parent = entry.parent
    tag = uuid.uuid4().hex
    tmp = parent / f".{entry.name}.hubpin-{tag}.tmp"
    try:
        if marker.exists() and entry.is_dir() and not differences(folder, entry, rehash):
            if not _file_markers_present(entry, markers):
                _remove(markers, tag)
                _write_file_markers(entry, markers, tag)
            return entry
        parent.mkdir(parents=True, exist_ok=True)
        link_tree(folder, tmp)
        marker.unlink(missing_ok=True)
        _remove(markers, tag)
        _remove(entry, tag)
        os.rename(tmp, entry)
        _write_file_markers(entry, markers, tag)
        marker_tmp = parent / f".{marker.name}.hubpin-{tag}.tmp"
        marker_tmp.write_bytes(KAGGLEHUB_MARKER_CONTENTS)
        os.rename(marker_tmp, marker)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(exc, entry) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def differences(source: Path, entry: Path, rehash: bool = False) -> list[str]:
    """Where kagglehub's ``entry`` is not ``source``'s tree (empty: it is), one phrase each.

    A file is the same when it is a hard link to ``source``'s (same inode), else when its
    size and mtime are (a copy to another file system keeps them); with ``rehash`` such a
    copy's bytes are compared too, so ``verify`` finds a copy rewritten in place.
    """
    try:
        ours, theirs = _walk(source), _walk(entry)
    except (OSError, CacheError) as exc:
        return [str(exc)]
    found = [f"{entry / rel}: not in the pinned model" for rel in sorted(theirs.keys() - ours)]
    found += [f"{entry / rel}: missing" for rel in sorted(ours.keys() - theirs)]
    for rel in sorted(ours.keys() & theirs.keys()):
        st, other = ours[rel], theirs[rel]
        if (st.st_mode & 0o170000) != (other.st_mode & 0o170000):
            found.append(f"{entry / rel}: another type of file than the pinned model's")
        elif not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_dev) == (
            other.st_ino,
            other.st_dev,
        ):
            continue
        elif (st.st_size, st.st_mtime_ns) != (other.st_size, other.st_mtime_ns) or (
            rehash and not _same_bytes(source / rel, entry / rel)
        ):
            found.append(f"{entry / rel}: other bytes than the pinned model's {source / rel}")
    return found


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


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
