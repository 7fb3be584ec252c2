"""Hugging Face's own cache, filled with verified files so unmodified huggingface_hub finds them.

Layout as huggingface_hub 2.x writes and reads it (file_download.py
``_hf_hub_download_to_cache_dir``, ``_create_symlink``; _snapshot_download.py;
_tree_cache.py), under ``HF_HUB_CACHE`` (default ``$HF_HOME/hub``):

- ``models--<org>--<repo>/blobs/<etag>``: the bytes, named by the sha256 for LFS
  files and by the git blob id for the others;
- ``snapshots/<commit>/<path>``: relative symlinks to the blobs;
- ``refs/<revision>``: the commit, without a trailing newline;
- ``trees/<commit>.json``: the commit's file list; offline ``snapshot_download``
  refuses a snapshot folder that misses a file of it, so it is written only when
  every file was pinned (no include/exclude left one out).

hubpin's record of a snapshot, ``hubpin/<commit>.json``, sits beside ``snapshots/``,
not in it: huggingface_hub's ``scan_cache_dir`` calls a file in ``snapshots/`` a
corrupted cache. It lists every file verified into the snapshot, by whichever project's
sync (projects may pin different files of one commit), and must add up to its own tree
digest; a pin is synced when each of its files is listed there and linked to its blob. Every file is checked (sha256, or the git blob sha1) before it is
renamed into ``blobs/``; the snapshot is built aside and swapped in whole; the ref
and the record are written last. So a killed sync leaves the previous snapshot,
and a reader never follows a link to an unverified blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hubpin.atomic import exchange
from hubpin.errors import IntegrityError, write_error

RECORD_VERSION = 1
HF_DIGEST_PREFIX = "hf-files-v1:sha256:"
TREE_FORMAT_VERSION = 1  # huggingface_hub/_tree_cache.py TREE_CACHE_FORMAT_VERSION
_CHUNK = 1 << 20


class HfFile(Protocol):
    """What the cache needs of one pinned file (:class:`hubpin.huggingface.HfFile` is one)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def blob_id(self) -> str: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def etag(self) -> str: ...


class HfPinned(Protocol):
    """What the cache needs of a pinned commit (:class:`hubpin.huggingface.HfPinned` is one,
    :class:`Pinned` another, read without pydantic for the no-op stamp)."""

    @property
    def repo(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def commit(self) -> str: ...
    @property
    def complete(self) -> bool: ...
    @property
    def files(self) -> Sequence[HfFile]: ...
    def digest(self) -> str: ...
    def model_dump_files(self) -> list[dict[str, Any]]: ...


def files_digest(files: Iterable[HfFile]) -> str:
    """The pinned tree of a commit's files: sorted paths, sizes, blob ids and LFS sha256s (no
    download needed); a pin's ``tree_digest``."""
    rows = sorted([f.path, f.size, f.blob_id, f.sha256] for f in files)
    blob = json.dumps(rows, separators=(",", ":")).encode()
    return HF_DIGEST_PREFIX + hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class File:
    """A pinned file as a lock's TOML holds it (``[[models.<alias>.huggingface.files]]``)."""

    path: str
    size: int
    blob_id: str
    sha256: str | None = None

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class Pinned:
    """A pinned commit read from a lock's ``[models.<alias>.huggingface]`` table as parsed
    TOML, without pydantic (the no-op stamp's stat check); raises ValueError for a table
    that is not one hubpin wrote."""

    repo: str
    revision: str
    commit: str
    complete: bool
    files: tuple[File, ...]

    @classmethod
    def of(cls, table: Any) -> Pinned:
        try:
            files = tuple(
                File(f["path"], f["size"], f["blob_id"], f.get("sha256")) for f in table["files"]
            )
            made = cls(table["repo"], table["revision"], table["commit"], table["complete"], files)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a Hugging Face pin: {exc}") from None
        fields = (made.repo, made.revision, made.commit, *(f.path for f in files))
        if not all(isinstance(v, str) and v for v in fields) or "/" in made.commit:
            raise ValueError("not a Hugging Face pin")
        if any(type(f.size) is not int for f in files) or ".." in made.repo:
            raise ValueError("not a Hugging Face pin")
        return made

    def digest(self) -> str:
        return files_digest(self.files)

    def model_dump_files(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in vars(f).items() if v is not None} for f in self.files]


def hf_home(environ: Mapping[str, str] | None = None) -> Path:
    """``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface`` (constants.py)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(env["HF_HOME"])))
    return Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "huggingface"


def hf_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """``HF_HUB_CACHE``, else ``HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub`` (constants.py)."""
    env = os.environ if environ is None else environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(os.path.expandvars(os.path.expanduser(env[name])))
    return hf_home(env) / "hub"


def repo_folder(root: Path, repo: str) -> Path:
    """``models--<org>--<repo>`` (file_download.py ``repo_folder_name``)."""
    return root / ("models--" + repo.replace("/", "--"))


class HfCache:
    """One ``HF_HUB_CACHE``; every method takes the pin's own fields (:class:`HfPinned`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def snapshot(self, pin: HfPinned) -> Path:
        return repo_folder(self.root, pin.repo) / "snapshots" / pin.commit

    def record_path(self, pin: HfPinned) -> Path:
        return repo_folder(self.root, pin.repo) / "hubpin" / f"{pin.commit}.json"

    def blob(self, pin: HfPinned, f: HfFile) -> Path:
        return repo_folder(self.root, pin.repo) / "blobs" / f.etag

    def lock_path(self, pin: HfPinned) -> Path:
        """``hubpin/<commit>.lock``: held by a sync filling the snapshot and by a prune
        removing it (the protocol of :mod:`hubpin.cache.lock`, as a cache entry's; held by
        :func:`hubpin.handlers.huggingface.locked`)."""
        return repo_folder(self.root, pin.repo) / "hubpin" / f"{pin.commit}.lock"

    # -- checks -----------------------------------------------------------------------

    def quick_check(self, pin: HfPinned, revision_ref: bool = True) -> list[str]:
        """What is missing or wrong, by stat only (sizes, links, the ref, hubpin's record)."""
        problems: list[str] = []
        record = self.read_record(pin)
        if record is None:
            return ["not synced"]
        verified = recorded_files(record)
        if verified is None:
            return [f"{self.record_path(pin)}: its files do not add up to its tree digest"]
        snapshot = self.snapshot(pin)
        if snapshot.is_symlink():
            return [f"{snapshot}: a symlink, not the snapshot hubpin verified"]
        for f in pin.files:
            link, blob = snapshot / f.path, self.blob(pin, f)
            if _row(verified.get(f.path)) != _row(f):
                problems.append(f"{f.path}: not verified into snapshots/{pin.commit[:12]}")
                continue
            if blob.is_symlink():  # its target could be changed by anyone who owns it
                problems.append(f"{f.path}: blob {f.etag[:12]} is a symlink, not a verified file")
                continue
            try:
                size = blob.stat().st_size
            except OSError:
                problems.append(f"{f.path}: blob {f.etag[:12]} missing")
                continue
            if size != f.size:
                problems.append(f"{f.path}: {size} bytes, the lock pins {f.size}")
            elif not link.is_symlink() or link.resolve() != blob.resolve():
                problems.append(f"{f.path}: not linked into snapshots/{pin.commit[:12]}")
        if revision_ref and pin.revision != pin.commit and self.ref(pin) != pin.commit:
            problems.append(f"refs/{pin.revision} does not name commit {pin.commit[:12]}")
        return problems

    def verify(self, pin: HfPinned) -> list[str]:
        """Re-hash every pinned file against the lock; one phrase per damaged path."""
        problems = self.quick_check(pin)
        if problems:
            return problems
        for f in pin.files:
            with open(self.blob(pin, f), "rb") as handle:
                found = check_file(f, iter(lambda h=handle: h.read(_CHUNK), b""))  # type: ignore[misc]
            if found:
                problems.append(f"{f.path}: {found}")
        return problems

    def ref(self, pin: HfPinned) -> str | None:
        try:
            return (repo_folder(self.root, pin.repo) / "refs" / pin.revision).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def read_record(self, pin: HfPinned) -> dict[str, object] | None:
        try:
            data = json.loads(self.record_path(pin).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("commit") == pin.commit else None

    # -- filling ----------------------------------------------------------------------

    def fill(
        self,
        handle: str,
        pin: HfPinned,
        fetch: Callable[[HfFile], Iterable[bytes]],
        on_bytes: Callable[[int], None] | None = None,
        created_by: str = "",
        work: Path | None = None,
    ) -> int:
        """Make the cache hold ``pin``; the number of files downloaded.

        ``created_by`` is the lock of the project filling it, for ``prune``; a snapshot
        keeps the creator its record names (a repair by another project does not take it).

        A blob already there with the pinned size is re-hashed, not downloaded; a
        wrong one is replaced. Raises IntegrityError naming the file whose bytes
        do not match the lock; nothing of that file is published. ``work``: the folder to
        build in (the one :func:`hubpin.handlers.huggingface.locked` yields), else a fresh one.
        """
        folder = repo_folder(self.root, pin.repo)
        work = work or folder / "hubpin" / f".{uuid.uuid4().hex}.tmp"
        downloaded = 0
        try:
            work.mkdir(parents=True)
            (folder / "blobs").mkdir(exist_ok=True)
            for f in pin.files:
                blob = self.blob(pin, f)
                if _blob_ok(blob, f):
                    continue
                part = work / f"{f.etag}.part"
                with open(part, "wb") as out:
                    found = check_file(f, _tee(fetch(f), out, on_bytes))
                if found:
                    raise IntegrityError(f"{f.path}: {found}; nothing of it was published")
                os.replace(part, blob)
                downloaded += 1
            self._swap_snapshot(pin, work)
            if pin.complete:
                self._write_tree(pin, work)
            if pin.revision != pin.commit:
                _write_atomic(folder / "refs" / pin.revision, pin.commit.encode(), work)
            previous = self.read_record(pin)
            creator = previous.get("created_by") if previous is not None else None
            ours = {f.path for f in pin.files}
            kept = recorded_files(previous) if previous is not None else None
            files = [f for path, f in sorted((kept or {}).items()) if path not in ours]
            files += pin.files  # and the files other projects pin of this commit, still linked
            owner = creator if isinstance(creator, str) and creator else created_by
            text = record_json(handle, pin, files, owner)
            _write_atomic(self.record_path(pin), text, work)
        except OSError as exc:
            raise write_error(exc, folder) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return downloaded

    def _swap_snapshot(self, pin: HfPinned, work: Path) -> None:
        """Build ``snapshots/<commit>`` aside (links relative to its final place) and swap it in."""
        snapshot = self.snapshot(pin)
        built = work / "snapshot"  # same depth below the repo folder as snapshots/<commit>
        built.mkdir()
        for f in pin.files:
            link = built / f.path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(link_target(f))
        # files others put there (another hubpin project, hf_hub_download); never from the
        # folder a symlinked snapshot points to, which is not the cache's
        extra = [] if snapshot.is_symlink() else _extra_files(snapshot, {f.path for f in pin.files})
        for rel in extra:
            target = built / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(snapshot / rel, target)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        if snapshot.exists() and not exchange(built, snapshot):
            os.rename(snapshot, work / "old")
            os.rename(built, snapshot)
        elif not snapshot.exists():
            os.rename(built, snapshot)

    def _write_tree(self, pin: HfPinned, work: Path) -> None:
        path = repo_folder(self.root, pin.repo) / "trees" / f"{pin.commit}.json"
        _write_atomic(path, tree_json(pin.files), work)

    def records(self) -> Iterator[tuple[str, dict[str, object]]]:
        """Every snapshot hubpin recorded, as (repository id, record), for ``prune``."""
        for folder in sorted(self.root.glob("models--*")):
            for path in sorted((folder / "hubpin").glob("*.json")):
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict) and isinstance(data.get("repo"), str):
                    yield data["repo"], data

    def note_path(self, repo: str, name: str) -> Path:
        """Where :meth:`note_use` notes a project (a no-op stamp checks it is still there)."""
        return repo_folder(self.root, repo) / "hubpin" / "users" / name

    def note_use(self, repo: str, name: str, note: dict[str, object]) -> None:
        """Note beside a repository's snapshots that a project's lock pins some of them."""
        path = self.note_path(repo, name)
        data = json.dumps(note, indent=1, sort_keys=True).encode()
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, data, path.parent)
        except OSError:
            return  # a read-only cache: nothing can be pruned from it either

    def notes(self, repo: str) -> dict[str, dict[str, object]]:
        """The projects noted as using ``repo``'s snapshots, by note name."""
        found = {}
        for path in sorted((repo_folder(self.root, repo) / "hubpin" / "users").glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                found[path.name] = data
        return found

    def forget(self, repo: str, name: str) -> None:
        (repo_folder(self.root, repo) / "hubpin" / "users" / name).unlink(missing_ok=True)

    def freed_by(self, pin: HfPinned) -> int:
        """The bytes :meth:`remove` frees: the blobs no other link uses."""
        used = self._used_blobs(pin)
        sizes = {f.etag: f.size for f in pin.files if f.etag not in used}
        return sum(sizes.values())

    def _used_blobs(self, pin: HfPinned) -> set[str]:
        """The blobs linked from anywhere in ``snapshots/`` but ``pin``'s own files."""
        snapshots = repo_folder(self.root, pin.repo) / "snapshots"
        own, paths = self.snapshot(pin), {f.path for f in pin.files}
        return {
            os.path.basename(os.readlink(p))
            for p in snapshots.rglob("*")
            if p.is_symlink()
            and not (p.is_relative_to(own) and p.relative_to(own).as_posix() in paths)
        }

    def remove(self, pin: HfPinned) -> None:
        """Forget a snapshot hubpin made (prune): the links of the files it recorded, its
        record, the tree file that lists them, the blobs no other link uses, and the ref
        when the snapshot is gone. Files others put into the snapshot (huggingface_hub's
        own downloads of that commit) stay, with their blobs and the ref."""
        folder = repo_folder(self.root, pin.repo)
        snapshot = self.snapshot(pin)
        used = self._used_blobs(pin)
        if snapshot.is_symlink():  # the link goes, never what it points to
            snapshot.unlink()
        for f in pin.files if snapshot.is_dir() else ():
            link = snapshot / f.path
            if link.is_symlink() or link.is_file():
                link.unlink()
        _remove_empty_folders(snapshot)
        if not snapshot.exists() and self.ref(pin) == pin.commit:
            (folder / "refs" / pin.revision).unlink(missing_ok=True)
        (folder / "trees" / f"{pin.commit}.json").unlink(missing_ok=True)
        self.record_path(pin).unlink(missing_ok=True)
        for f in pin.files:
            if f.etag not in used:
                self.blob(pin, f).unlink(missing_ok=True)


def link_target(f: HfFile) -> str:
    """A snapshot's link to a file's blob, relative to the link (as huggingface_hub's
    ``_create_symlink`` makes it): up from the file to the repository folder, then blobs/."""
    depth = len(f.path.split("/")) + 1
    return "/".join([".."] * depth + ["blobs", f.etag])


def tree_json(files: Iterable[HfFile]) -> bytes:
    """``trees/<commit>.json``: a commit's every file, as offline ``snapshot_download`` reads it."""
    listed = {}
    for f in sorted(files, key=lambda f: f.path):
        info: dict[str, object] = {"size": f.size, "blob_id": f.blob_id}
        if f.sha256:
            info |= {"lfs_sha256": f.sha256, "lfs_size": f.size}
        listed[f.path] = info
    return json.dumps({"format_version": TREE_FORMAT_VERSION, "files": listed}, indent=1).encode()


def record_json(handle: str, pin: HfPinned, files: Iterable[HfFile], created_by: str) -> bytes:
    """hubpin's record of a snapshot (``hubpin/<commit>.json``): the files verified into it,
    which must add up to its tree digest (:func:`recorded_files`)."""
    ordered = sorted(files, key=lambda f: f.path)
    record = {
        "created_by": created_by,
        "version": RECORD_VERSION,
        "handle": handle,
        "repo": pin.repo,
        "revision": pin.revision,
        "commit": pin.commit,
        "tree_digest": files_digest(ordered),
        "files": [_dump(f) for f in ordered],
    }
    return json.dumps(record, indent=1, sort_keys=True).encode()


def _remove_empty_folders(top: Path) -> None:
    """Remove ``top`` and the folders below it that are left empty, deepest first."""
    if not top.is_dir() or top.is_symlink():
        return
    for here, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):  # not empty: someone else's files
            os.rmdir(here)


def recorded_files(record: Mapping[str, object]) -> dict[str, File] | None:
    """The files a snapshot's record says were verified into it, by path; None for a record
    whose files do not add up to its own tree digest (edited, or not one hubpin wrote).

    One record serves every project pinning the commit: it lists the union of the files
    their syncs verified (a project may pin only some of them, by include/exclude)."""
    try:
        files = [File(f["path"], f["size"], f["blob_id"], f.get("sha256")) for f in record["files"]]  # type: ignore[attr-defined, index]
    except (KeyError, TypeError, AttributeError):
        return None
    if any(type(f.size) is not int or not isinstance(f.path, str) for f in files):
        return None
    try:
        if files_digest(files) != record.get("tree_digest"):
            return None
    except TypeError:  # unsortable rows: not hubpin's
        return None
    found = {f.path: f for f in files}
    return found if len(found) == len(files) else None


def _row(f: HfFile | None) -> tuple[object, ...] | None:
    return None if f is None else (f.path, f.size, f.blob_id, f.sha256)


def _dump(f: HfFile) -> dict[str, object]:
    row: dict[str, object] = {"path": f.path, "size": f.size, "blob_id": f.blob_id}
    return row | ({"sha256": f.sha256} if f.sha256 else {})


def _extra_files(snapshot: Path, pinned: set[str]) -> list[str]:
    if not snapshot.is_dir():
        return []
    found = []
    for path in snapshot.rglob("*"):
        rel = path.relative_to(snapshot).as_posix()
        if rel not in pinned and (path.is_symlink() or path.is_file()):
            found.append(rel)
    return sorted(found)


def _blob_ok(blob: Path, f: HfFile) -> bool:
    try:
        if blob.is_symlink() or blob.stat().st_size != f.size:
            return False
        with open(blob, "rb") as handle:
            return not check_file(f, iter(lambda: handle.read(_CHUNK), b""))
    except OSError:
        return False


def _tee(
    chunks: Iterable[bytes], out: object, on_bytes: Callable[[int], None] | None
) -> Iterator[bytes]:
    for chunk in chunks:
        out.write(chunk)  # type: ignore[attr-defined]
        if on_bytes:
            on_bytes(len(chunk))
        yield chunk


def check_file(f: HfFile, chunks: Iterable[bytes]) -> str:
    """Why these bytes are not the pinned file ('' when they are): sha256 for LFS, else git sha1."""
    size = 0
    digest = hashlib.sha256() if f.sha256 else hashlib.sha1(b"blob %d\0" % f.size)
    for chunk in chunks:
        size += len(chunk)
        digest.update(chunk)
    if size != f.size:
        return f"{size} bytes, the lock pins {f.size}"
    want = f.sha256 or f.blob_id
    if digest.hexdigest() != want:
        kind = "sha256" if f.sha256 else "git blob sha1"
        return f"{kind} is {digest.hexdigest()}, the lock pins {want}"
    return ""


def _write_atomic(path: Path, data: bytes, work: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = work / f"{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
