"""The cache in a local folder, shared with tensorflow_hub (see :mod:`hubpin.cache`).

tensorflow_hub treats any non-empty ``<key>/`` as complete, so an entry only
ever appears by rename of a fully written, verified folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hubpin.atomic import exchange, write_atomic
from hubpin.cache import (
    MAX_NOTE,
    MAX_RECORD,
    NOTES,
    Cache,
    Hashed,
    Record,
    descriptor_text,
    holder_is_dead,
    no_record,
    not_synced,
    other_tree,
    work_name,
)
from hubpin.digests import Tree, hash_tree
from hubpin.errors import CacheError, SettingsError, write_error
from hubpin.storage.local import LocalStorage, path_of, remove_tree

if TYPE_CHECKING:  # the lock protocol is a writer's: `status` only reads the cache
    from hubpin.cache.lock import Holding, Place
    from hubpin.settings import Settings

log = logging.getLogger("hubpin")


class LocalCache(Cache):
    """A cache folder on this machine, shared with tensorflow_hub."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self.local_root = root
        self.storage = LocalStorage(None, CacheError)
        self._held: dict[str, Holding] = {}

    @classmethod
    def at(cls, root: str, settings: Settings) -> LocalCache:
        """The cache a ``cache_dir`` of a path or ``file://`` URL names."""
        folder = path_of(root)
        if folder.exists() and not folder.is_dir():
            raise SettingsError(
                f"the cache folder {folder} is a file, not a folder; point TFHUB_CACHE_DIR "
                "(or --cache-dir, or cache_dir in hubpin.toml) at a folder"
            )
        return cls(folder)

    def entry(self, key: str) -> str:
        return os.path.join(self.location, key)  # a Path per entry: a tenth of a 2,000-model status

    def record_path(self, key: str) -> str:
        return str(self._record(key))

    def _record(self, key: str) -> Path:
        return self.root / f"{key}.hubpin.json"

    def read_record(self, key: str) -> Record | None:
        path = f"{self.root}{os.sep}{key}.hubpin.json"
        try:
            # Bounded by the file's size: read(MAX_RECORD + 1) allocated 64 MiB per record
            # (a third of a 2,000-model status); a record is written whole, by rename. A file
            # descriptor, not a file object: half the cost of reading 2,000 records.
            fd = os.open(path, os.O_RDONLY)
            try:
                left = min(os.fstat(fd).st_size, MAX_RECORD) + 1
                chunks = []
                while left > 0 and (chunk := os.read(fd, left)):
                    chunks.append(chunk)
                    if len(chunk) < left:  # a short read of a file is its end: no read for b""
                        break
                    left -= len(chunk)
            finally:
                os.close(fd)
            return Record.from_json(b"".join(chunks))
        except OSError:
            return None
        except ValueError as exc:
            log.info("%s: unreadable hubpin record (%s); the entry counts as unrecorded", path, exc)
            return None

    def quick_check(self, key: str, tree_digest: str) -> list[str]:
        """Problems found by stat alone (record present and matching, every file at its size
        and readable); the entry must be a folder of the cache, not a link to one elsewhere."""
        entry = f"{self.root}{os.sep}{key}"  # str paths: a Path per file cost more than its stat
        try:
            mode = os.lstat(entry).st_mode
        except OSError:
            return [not_synced()]
        if stat.S_ISLNK(mode):
            return [_symlinked(Path(entry))]
        if not stat.S_ISDIR(mode):
            return [not_synced()]
        record = self.read_record(key)
        if record is None:
            return [no_record()]
        if record.tree_digest != tree_digest:
            return [other_tree(record.tree_digest, tree_digest)]
        problems = []
        base = f"{entry}{os.sep}"
        for path, (size, _) in record.tree.files.items():
            try:
                found = os.stat(base + path)
            except OSError:
                problems.append(f"missing file {path}")
                continue
            if found.st_size != size:
                problems.append(f"{path} is {found.st_size} bytes, expected {size}")
            elif _unreadable(base + path, found):
                problems.append(f"{path} is not readable (mode {found.st_mode & 0o777:03o})")
        return problems

    def has_entry(self, key: str) -> bool:
        return (self.root / key).is_dir()

    def hash_entry(self, key: str) -> Tree:
        """The entry's files as they are now; OSError when it is a link or a file is unreadable
        (to TensorFlow: root reads a file of mode 000, no other user does)."""
        entry = self.root / key
        if entry.is_symlink():
            raise OSError(_symlinked(entry))
        tree = hash_tree(entry)
        for path in sorted(tree.files):
            found = os.stat(entry / path)
            if _unreadable(entry / path, found):
                raise OSError(f"{path} is not readable (mode {found.st_mode & 0o777:03o})")
        return tree

    def hash_stamped(self, key: str) -> Hashed:
        """Hashed, with the entry's stamp (:func:`_stamp`) when it held still: the same
        stamp before and after the hash, and nothing in it changed since ``SETTLED_NS``
        before the hash began (a change within the filesystem's timestamp granularity of
        the stamp could leave it as it was, so such an entry gets no stamp)."""
        began = time.time_ns()
        entry = str(self.root / key)
        before = _stamp(entry)
        tree = self.hash_entry(key)
        settled = (
            before is not None
            and _stamp(entry) == before
            and all(max(m, c) < began - SETTLED_NS for *_, m, c in before)
        )
        return Hashed(tree, before if settled else None)

    def unchanged(self, key: str, hashed: Hashed) -> bool:
        """Whether the folder and everything in it has the inode, type, mode, size, mtime and
        ctime it had when hashed. The kernel sets a file's ctime to the current time on every
        write, truncate, chmod or rename, and no call sets it back, so a changed file, or a
        folder swapped in by another process's rename, has another stamp."""
        return hashed.stamp is not None and _stamp(str(self.root / key)) == hashed.stamp

    def ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, self.root) from None

    @contextlib.contextmanager
    def locked(self, key: str, timeout: float) -> Iterator[Path]:
        """Hold ``<key>.lock`` the way tensorflow_hub does (:mod:`hubpin.cache.lock`); yield a
        fresh work folder ``<key>.<uuid>.tmp`` named by the uuid written in the lock, so
        tensorflow_hub's waiters can see our progress and leave the lock alone.

        A lock whose holder died on this host is taken over at once (its work folder
        removed); a live or remote holder is waited for as long as its work folder keeps
        growing, and for at most ``timeout`` seconds without progress, like
        tensorflow_hub's own ``lock_file_timeout_sec``.
        """
        from hubpin.cache.lock import hold

        self.ensure_root()
        with hold(self._place(key), timeout) as holding:
            work = self.root / work_name(key, holding.task)
            self._held[key] = holding
            try:
                try:
                    work.mkdir()
                except OSError as exc:
                    raise write_error(exc, work) from None
                yield work
            finally:
                self._held.pop(key, None)
                remove_tree(work, quiet=True)

    def _place(self, key: str) -> Place:
        from hubpin.cache.lock import Place

        lock = self.root / f"{key}.lock"
        return Place(
            self.storage,
            str(lock),
            lock.name,
            lambda task: f"{self.root / work_name(key, task)}/",
        )

    def publish(self, key: str, work: Path, record: Record) -> None:
        """Make ``work`` the entry ``<key>/`` by rename, then write the record beside it.

        An older entry is swapped with ``work`` in one step where the kernel can
        (:func:`hubpin.atomic.exchange`), so a reader sees the old or the new
        complete folder, never none; elsewhere it is first moved aside (never
        deleted in place), so the entry folder is at every moment absent or complete.

        A record of the same tree stays in place through the swap (a repair puts
        back the bytes it vouches for), so a reader finds the old entry or the new
        one with their record, never neither. A record of another tree is removed
        before the swap: a crash between the two must not leave a record that
        describes a tree the entry does not hold (without one, the next sync re-hashes).
        """
        entry = self.root / key
        with self._committing(key):
            try:
                old_record = self.read_record(key)
                record = self.provenance(record, old_record, adopted=False)
                if old_record is None or old_record.tree_digest != record.tree_digest:
                    with contextlib.suppress(FileNotFoundError):
                        self._record(key).unlink()
                write_atomic(self.root / f"{key}.descriptor.txt", descriptor_text(record.handle))
                old = None
                present = os.path.lexists(entry)  # a symlink, even a dangling one, too
                if present and exchange(work, entry):
                    old = work  # now holding the old entry, under the work folder's name
                else:
                    if present:
                        old = entry.with_name(f"{key}.{uuid.uuid4().hex}.old")
                        os.rename(entry, old)
                    os.rename(work, entry)
            except OSError as exc:
                raise write_error(exc, entry) from None
            self._write_record(key, record)
        if old is not None:
            remove_tree(old, quiet=True)

    def _committing(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Commit only while this process holds ``key``'s lock, when it holds one."""
        holding = self._held.get(key)
        return holding.committing() if holding is not None else contextlib.nullcontext()

    def publish_record(self, key: str, record: Record) -> None:
        with self._committing(key):
            record = self.provenance(record, self.read_record(key), adopted=True)
            self._write_record(key, record)

    def _write_record(self, key: str, record: Record) -> None:
        try:
            write_atomic(self._record(key), record.to_json())
        except OSError as exc:
            raise write_error(exc, self._record(key)) from None

    def prunable(self, keep: set[str]) -> list[tuple[str, int]]:
        """What ``prune`` removes, with sizes: leftovers, and entries (with their
        descriptor and record) under keys that ``keep`` does not name."""
        found = [Path(name) for name in self.leftovers()]
        if self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                key = path.name.split(".")[0]
                sidecars = (key, f"{key}.descriptor.txt", f"{key}.hubpin.json")
                if _KEY_RE.fullmatch(key) and key not in keep and path.name in sidecars:
                    found.append(path)
        sized = []
        for path in found:
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile
                is_folder = path.is_dir() and not path.is_symlink()  # a link's target is not ours
                sized.append((str(path), entry_size(path) if is_folder else path.lstat().st_size))
        return sized

    def still_present(self, keys: set[str], timeout: float) -> set[str]:
        """One listing; a key whose ``<key>.lock`` a live process holds (a prune deciding
        whether to remove it, say) is looked at again once it is released (at most
        ``timeout``, and 30 s: a prune decides in well under that)."""
        try:
            listed = {e.name: e.is_dir(follow_symlinks=False) for e in os.scandir(self.root)}
        except OSError:
            return set()
        deadline = time.monotonic() + min(timeout, _PRUNE_DECIDES)
        found = set()
        for key in keys:
            lock = f"{self.root}{os.sep}{key}.lock"
            if f"{key}.lock" in listed:
                while os.path.lexists(lock) and not holder_is_dead(_read(Path(lock))):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                if os.path.isdir(f"{self.root}{os.sep}{key}"):
                    found.add(key)
            elif listed.get(key):
                found.add(key)
        return found

    def keys(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {
            path.name.split(".")[0]
            for path in self.root.iterdir()
            if _KEY_RE.fullmatch(path.name.split(".")[0])
            and path.name.partition(".")[2] in ("", "descriptor.txt", "hubpin.json")
        }

    def remove(self, name: str) -> None:
        """Remove one path that :meth:`prunable` named (a symlink itself, never its target)."""
        path = Path(name)
        try:
            remove_tree(path)
        except OSError as exc:
            raise write_error(exc, path) from None

    def read_note(self, name: str) -> bytes | None:
        try:
            with open(self.root / NOTES / name, "rb") as fh:
                return fh.read(MAX_NOTE + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write_note(self, name: str, data: bytes) -> None:
        folder = self.root / NOTES
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / name, data)
        except OSError as exc:
            raise write_error(exc, folder / name) from None

    def notes(self) -> list[str]:
        try:
            return sorted(
                p.name for p in (self.root / NOTES).iterdir() if not p.name.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remove_note(self, name: str) -> None:
        try:
            (self.root / NOTES / name).unlink(missing_ok=True)
        except OSError as exc:
            raise write_error(exc, self.root / NOTES / name) from None

    def leftovers(self) -> list[str]:
        """What crashes leave behind: dead locks and their work folders, moved-aside
        entries, and temp files that no running writer owns.

        Ownership decides, not age: a work folder or temp file of a key whose
        lock names a live (or remote) holder is a sync in progress and is kept;
        lock temp files and locks renamed aside name their writer inside.
        """
        if not self.root.is_dir():
            return []
        found = []
        now = time.time()
        for path in self.root.iterdir():
            name = path.name
            key = name.lstrip(".").split(".")[0]
            parts = name.split(".")
            if len(parts) == 3 and parts[2] == "old":
                found.append(path)
            elif len(parts) == 3 and parts[2] == "tmp":
                holder = _read(self.root / f"{key}.lock")
                if holder_is_dead(holder) or not holder.endswith(f".{parts[1]}"):
                    found.append(path)
            elif len(parts) == 2 and parts[1] == "lock":
                if holder_is_dead(_read(path)):
                    found.append(path)
            elif _LOCK_TEMP_RE.search(name):  # a lock being created or taken over
                holder = _read(path)
                if holder_is_dead(holder) or (not holder and _age(path, now) > 60):
                    found.append(path)
            elif _TEMP_FILE_RE.search(name):  # descriptor or record being written
                holder = _read(self.root / f"{key}.lock")
                if not holder or holder_is_dead(holder):
                    found.append(path)
        return [str(path) for path in sorted(found)]


_KEY_RE = re.compile(r"[0-9a-f]{40}")
# Temp files: hubpin's ``.<name>.<hex>``, tensorflow_hub's ``<name>.tmp<hex>``; for locks,
# ``<key>.lock.tmp<hex>`` (both tools) and hubpin's ``<key>.lock.<hex>.stale``.
_TEMP_FILE_RE = re.compile(r"^\..+\.[0-9a-f]{32}$|\.tmp[0-9a-f]{32}$")
_LOCK_TEMP_RE = re.compile(r"\.lock\.tmp[0-9a-f]{32}$|\.lock\.[0-9a-f]{32}\.stale$")


_PRUNE_DECIDES = 30.0  # seconds a sync waits on a present key's lock before looking anyway
SETTLED_NS = 2_000_000_000  # 2 s: the coarsest file timestamps in use (FAT's)

Stamp = tuple[tuple[str, int, int, int, int, int, int], ...]


def _stamp(entry: str) -> Stamp | None:
    """Every path below ``entry`` (and itself) with its ``lstat``: type and mode, device,
    inode, size, mtime and ctime in ns; no file is read. None if it cannot be listed."""
    found: list[tuple[str, int, int, int, int, int, int]] = []

    def add(rel: str, st: os.stat_result) -> None:
        found.append(
            (rel, st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        )

    try:
        add("", os.lstat(entry))
        folders = [""]
        while folders:
            rel = folders.pop()
            with os.scandir(os.path.join(entry, rel)) as listing:
                for item in listing:
                    path = f"{rel}/{item.name}" if rel else item.name
                    add(path, item.stat(follow_symlinks=False))
                    if item.is_dir(follow_symlinks=False):
                        folders.append(path)
    except OSError:
        return None
    return tuple(sorted(found))


def _symlinked(entry: Path) -> str:
    return f"{entry.name} is a symlink to {os.readlink(entry)}, not a folder hubpin published"


def _unreadable(path: Path | str, found: os.stat_result) -> bool:
    """A file TensorFlow could not open: no read permission for anyone (root still reads
    it, no other user does), or, for another user, none for this one."""
    if not found.st_mode & 0o444:
        return True
    return os.geteuid() != 0 and not os.access(path, os.R_OK)


def _age(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except OSError:
        return 0.0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def entry_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
