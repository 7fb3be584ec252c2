"""tensorflow_hub's cache layout and lock protocol, plus hubpin's record beside each entry.

Layout under the cache root, for ``key = sha1(handle)``:

- ``<key>/`` the model, exactly as unpacked; nothing of hubpin's inside;
- ``<key>.descriptor.txt`` tensorflow_hub's note of the handle;
- ``<key>.lock`` ``host.pid.uuid`` of whoever is filling the entry;
- ``<key>.<uuid>.tmp/`` that filler's work folder, renamed to ``<key>/`` when done;
- ``<key>.hubpin.json`` hubpin's record: the tree it verified, per file.

tensorflow_hub treats any non-empty ``<key>/`` as complete, so an entry only
ever appears by rename of a fully written, verified folder.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hubpin.digests import Tree, compare_trees, hash_tree
from hubpin.errors import CacheError
from hubpin.unpack import write_error

log = logging.getLogger("hubpin")
RECORD_VERSION = 1


@dataclass(frozen=True)
class Record:
    """What hubpin verified and published for one cache entry."""

    handle: str
    tree_digest: str
    tree: Tree

    def to_json(self) -> str:
        return json.dumps(
            {"version": RECORD_VERSION, "handle": self.handle, "tree_digest": self.tree_digest}
            | self.tree.to_json(),
            indent=1,
            sort_keys=True,
        )


class Cache:
    """A local cache folder shared with tensorflow_hub."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, key: str) -> Path:
        return self.root / key

    def record_path(self, key: str) -> Path:
        return self.root / f"{key}.hubpin.json"

    def read_record(self, key: str) -> Record | None:
        try:
            data = json.loads(self.record_path(key).read_text(encoding="utf-8"))
            return Record(data["handle"], data["tree_digest"], Tree.from_json(data))
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            return None

    def quick_check(self, key: str, tree_digest: str) -> list[str]:
        """Problems found by stat alone (record present and matching, every file at its size)."""
        entry = self.entry(key)
        record = self.read_record(key)
        if record is None:
            return ["not synced" if not entry.exists() else "no hubpin record for the entry"]
        if record.tree_digest != tree_digest:
            return [f"entry holds {record.tree_digest}, the lock pins {tree_digest}"]
        problems = []
        for path, (size, _) in record.tree.files.items():
            try:
                found = os.stat(entry / path).st_size
            except OSError:
                problems.append(f"missing file {path}")
                continue
            if found != size:
                problems.append(f"{path} is {found} bytes, expected {size}")
        return problems

    def verify(self, key: str, tree_digest: str) -> list[str]:
        """Re-hash an entry against hubpin's record and the lock; one phrase per damaged path."""
        record = self.read_record(key)
        if record is None:
            return ["not synced" if not self.entry(key).exists() else "no hubpin record for the entry"]
        if record.tree_digest != tree_digest:
            return [f"entry holds {record.tree_digest}, the lock pins {tree_digest}"]
        try:
            found = hash_tree(self.entry(key))
        except OSError as exc:
            return [str(exc)]
        problems = compare_trees(record.tree, found)
        if not problems and found.digest() != tree_digest:
            problems.append(f"tree digest is {found.digest()}, the lock pins {tree_digest}")
        return problems

    def ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, self.root) from None

    @contextlib.contextmanager
    def locked(self, key: str, timeout: float) -> Iterator[Path]:
        """Hold ``<key>.lock`` the way tensorflow_hub does; yield a fresh work folder.

        The work folder ``<key>.<uuid>.tmp`` uses the uuid written in the lock, so
        tensorflow_hub's waiters can see our progress and leave the lock alone.
        """
        self.ensure_root()
        task = uuid.uuid4().hex
        contents = f"{socket.gethostname()}.{os.getpid()}.{task}"
        lock = self.root / f"{key}.lock"
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read(lock)
                if _holder_is_dead(holder):
                    log.warning("taking over %s from dead process %s", lock.name, holder)
                    _remove(lock, holder)
                    continue
                if time.monotonic() > deadline:
                    raise CacheError(
                        f"{lock}: held by {holder or 'another process'} for more than "
                        f"{timeout:.0f}s; if no sync is running, delete it (or raise lock_timeout)"
                    ) from None
                if not announced:
                    log.warning("waiting for %s, held by %s", lock.name, holder)
                    announced = True
                time.sleep(0.1)
                continue
            except OSError as exc:
                raise write_error(exc, lock) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(contents)
            break
        work = self.root / f"{key}.{task}.tmp"
        try:
            work.mkdir()
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if _read(lock) == contents:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    def publish(self, key: str, work: Path, record: Record) -> None:
        """Make ``work`` the entry ``<key>/`` by rename, then write the record beside it.

        An older entry is first moved aside (never deleted in place), so the
        entry folder is at every moment absent or complete.
        """
        entry = self.entry(key)
        try:
            _atomic_write(
                self.root / f"{key}.descriptor.txt",
                f"Module: {record.handle}\nDownload Time: {datetime.datetime.today()}\n"
                f"Downloader Hostname: {socket.gethostname()} (PID:{os.getpid()})",
            )
            old = None
            if entry.exists():
                old = entry.with_name(f"{key}.{uuid.uuid4().hex}.old")
                os.rename(entry, old)
            os.rename(work, entry)
        except OSError as exc:
            raise write_error(exc, entry) from None
        self.publish_record(key, record)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def publish_record(self, key: str, record: Record) -> None:
        try:
            _atomic_write(self.record_path(key), record.to_json())
        except OSError as exc:
            raise write_error(exc, self.record_path(key)) from None

    def leftovers(self) -> list[Path]:
        """Work folders, moved-aside entries and temp files that crashes leave behind."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            name = path.name
            if (name.endswith((".tmp", ".old")) and len(name.split(".")) == 3) or (
                name.endswith(".lock") and _holder_is_dead(_read(path))
            ):
                found.append(path)
        return sorted(found)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _holder_is_dead(holder: str) -> bool:
    """True when the lock names a process on this host that no longer runs."""
    parts = holder.split(".")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False
    host = ".".join(parts[:-2])
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove(lock: Path, expected: str) -> None:
    if _read(lock) == expected:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def entry_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
