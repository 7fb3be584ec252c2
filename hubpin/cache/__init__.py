"""The cache interface: what sync, verify, prune, status and the runtime need of a cache.

Two implementations share tensorflow_hub's layout under a root, for
``key = sha1(handle)``:

- ``<key>/`` the model, exactly as unpacked; nothing of hubpin's inside;
- ``<key>.descriptor.txt`` tensorflow_hub's note of the handle;
- ``<key>.lock`` ``host.pid.uuid`` of whoever is filling the entry;
- ``<key>.<uuid>.tmp/`` that filler's work folder;
- ``<key>.hubpin.json`` hubpin's record: the tree it verified, per file.

:class:`hubpin.cache.local.LocalCache` keeps it in a folder and publishes by
rename; :class:`hubpin.cache.store.StoreCache` keeps it under a store prefix (``gs://``) and
commits by writing the record last. Callers hold a :class:`Cache` and ask it,
never which kind it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from hubpin.digests import Tree, compare_trees

RECORD_VERSION = 1


class Problem(str):
    """One phrase of what is wrong with an entry, with a code that callers decide by.

    It is a ``str`` so that messages join it as they always did; the runtime picks
    its error by :attr:`code` (the entry is absent, or damaged), never by the text.
    """

    NOT_SYNCED = "not-synced"  # nothing at <key>/
    NO_RECORD = "no-record"  # an entry hubpin has not verified (tensorflow_hub's, or torn)
    OTHER_TREE = "other-tree"  # hubpin's record says the entry holds another model
    DAMAGED = "damaged"  # files differ from hubpin's record

    code: str

    def __new__(cls, text: str, code: str = DAMAGED) -> Problem:
        made = super().__new__(cls, text)
        made.code = code
        return made


ABSENT = frozenset({Problem.NOT_SYNCED, Problem.NO_RECORD, Problem.OTHER_TREE})
"""The codes that mean "this model is not in the cache" (sync fetches it), not damage."""


def not_synced() -> Problem:
    return Problem("not synced", Problem.NOT_SYNCED)


def no_record() -> Problem:
    return Problem("no hubpin record for the entry", Problem.NO_RECORD)


def other_tree(found: str, pinned: str) -> Problem:
    return Problem(f"entry holds {found}, the lock pins {pinned}", Problem.OTHER_TREE)


def code_of(problem: str) -> str:
    """A problem's code; a plain phrase (from a cache that predates codes) is damage."""
    return problem.code if isinstance(problem, Problem) else Problem.DAMAGED


@dataclass(frozen=True)
class Record:
    """What hubpin verified and published for one cache entry."""

    handle: str
    tree_digest: str
    tree: Tree
    # Who made the entry, for ``prune``: the absolute path of the lock whose command
    # wrote its files; "" when unknown (a record older than this field). ``adopted``:
    # hubpin only hashed and recorded files someone else (tensorflow_hub) wrote.
    created_by: str = ""
    adopted: bool = False
    # The lock table ``hubpin lock`` pinned when it published the entry (JSON), so a lock
    # interrupted before it wrote models.lock is finished by the next one without a download.
    pin: dict[str, object] | None = None
    # The host of that lock: a fleet sharing a gs:// or s3:// cache has one lock path on
    # every machine (/app/models.lock); "" in a record older than this field.
    created_on: str = ""

    def to_json(self) -> str:
        provenance: dict[str, object] = {"created_by": self.created_by} if self.created_by else {}
        if self.created_by and self.created_on:
            provenance["created_on"] = self.created_on
        if self.adopted:
            provenance["adopted"] = True
        if self.pin is not None:
            provenance["pin"] = self.pin
        return json.dumps(
            {"version": RECORD_VERSION, "handle": self.handle, "tree_digest": self.tree_digest}
            | provenance
            | self.tree.to_json(),
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        """Parse ``to_json``'s output; ValueError for anything else (see :func:`parse_record`)."""
        return parse_record(text)[0]


# A record lists every file of a model; 100,000 files (max_members) take about 15 MB.
MAX_RECORD = 64 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # a set of its characters took 2.5x as long


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


# One decoder for every record: json.loads with an argument builds a new one per call (a
# tenth of reading 2,000 records).
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def parse_record(text: str | bytes, sums: str = "crc32c") -> tuple[Record, dict[str, str | None]]:
    """A record and what it may hold of each file under ``sums`` (a store cache's per-file
    checksum or version: gs:// ``crc32c``, s3:// ``versions``), or ValueError.

    A record is input like any file on disk: bounded before it is parsed, no
    ``NaN``/``Infinity``, no nesting beyond its own, every field of its type, and
    its file list must add up to its own tree digest (so a record edited to drop
    a file is not trusted). Whatever fails is a record that is absent: the entry
    is re-hashed or re-fetched, never trusted and never a traceback.
    """
    if len(text) > MAX_RECORD:
        raise ValueError(f"larger than {MAX_RECORD} bytes")
    if isinstance(text, bytes):  # as json.loads reads bytes
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    handle, digest, files, dirs = (data.get(k) for k in ("handle", "tree_digest", "files", "dirs"))
    created_by, adopted = data.get("created_by", ""), data.get("adopted", False)
    created_on = data.get("created_on", "")
    crcs = data.get(sums, {})
    if not (
        isinstance(handle, str)
        and isinstance(digest, str)
        and isinstance(files, dict)
        and isinstance(dirs, list)
        and isinstance(created_by, str)
        and isinstance(created_on, str)
        and isinstance(adopted, bool)
        and isinstance(crcs, dict)
    ):
        raise ValueError("a field is missing or of the wrong type")
    sha256 = _SHA256_HEX.fullmatch
    for path, entry in files.items():
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and type(entry[0]) is int
            and entry[0] >= 0
            and isinstance(entry[1], str)
            and sha256(entry[1])
        ):
            raise ValueError(f"file {path!r}: expected [size, sha256], found {str(entry)[:80]}")
    tree = Tree({path: (size, sha) for path, (size, sha) in files.items()})
    if not all(isinstance(d, str) for d in dirs):
        raise ValueError("dirs: expected a list of paths")
    tree.dirs = set(dirs)
    if tree.digest() != digest:
        raise ValueError(f"its files add up to {tree.digest()}, not to its tree digest {digest}")
    if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in crcs.items()):
        raise ValueError(f"{sums}: expected path → checksum")
    pin = data.get("pin")
    return Record(
        handle,
        digest,
        tree,
        created_by,
        adopted,
        pin if isinstance(pin, dict) else None,
        created_on,
    ), crcs


class Cache(ABC):
    """A tensorflow_hub cache that hubpin fills: its lock protocol, publishing and records.

    ``location`` is what messages and ``status`` name (a folder or a ``gs://``
    prefix). ``local_root`` is the folder on this machine when there is one:
    only then can entries be hard-linked into other keys, or checked by a
    ``stat`` without a network round trip (the no-op stamp).
    """

    location: str
    local_root: Path | None
    # Whether TensorFlow reads entries where they are (a folder, gs://); hubpin.load stages
    # the entries of a cache it cannot read (s3://) into a local folder (hubpin.cache.staging).
    tensorflow_reads: bool = True
    # The lock (absolute path) of the project whose commands write through this cache:
    # the ``created_by`` of the entries they publish, this host their ``created_on``
    # (see :mod:`hubpin.owners`).
    owner: str = ""

    def provenance(self, record: Record, previous: Record | None, *, adopted: bool) -> Record:
        """``record`` with who made the entry: kept from a record of the same tree (a
        repair puts the same bytes back), else this project's lock (or adopted)."""
        if previous is not None and previous.tree_digest == record.tree_digest:
            return dataclasses.replace(
                record,
                created_by=previous.created_by,
                created_on=previous.created_on,
                adopted=previous.adopted,
                pin=record.pin or previous.pin,
            )
        if adopted:
            return dataclasses.replace(record, created_by="", created_on="", adopted=True)
        host = socket.gethostname() if self.owner else ""
        return dataclasses.replace(record, created_by=self.owner, created_on=host, adopted=False)

    @abstractmethod
    def entry(self, key: str) -> str:
        """Where tensorflow_hub reads the entry (a path, or a gs:// URL)."""

    @abstractmethod
    def record_path(self, key: str) -> str:
        """Where hubpin's record of the entry lives (for messages)."""

    @abstractmethod
    def read_record(self, key: str) -> Record | None:
        """The entry's record; None when absent or unreadable (the entry then counts as absent)."""

    @abstractmethod
    def has_entry(self, key: str) -> bool:
        """Whether anything is at ``<key>/`` (tensorflow_hub's idea of "cached")."""

    @abstractmethod
    def quick_check(self, key: str, tree_digest: str) -> list[str]:
        """Problems seen without reading file contents; empty when the entry is usable as is."""

    def entry_state(self, key: str, tree_digest: str) -> str:
        """What ``status`` says of an entry: ``synced``, or the first problem
        :meth:`quick_check` finds (the status stamp's replay says it the same way)."""
        problems = self.quick_check(key, tree_digest)
        return "synced" if not problems else problems[0]

    @abstractmethod
    def hash_entry(self, key: str) -> Tree:
        """The entry's files as they are now, hashed; OSError or CacheError if unreadable."""

    def hash_stamped(self, key: str) -> Hashed:
        """:meth:`hash_entry`, with a stamp that :meth:`unchanged` can later compare, when
        this cache can tell from metadata alone that no file changed since (None: it cannot,
        and the entry must be hashed again)."""
        return Hashed(self.hash_entry(key), None)

    def unchanged(self, key: str, hashed: Hashed) -> bool:
        """Whether the entry provably holds what ``hashed`` found: so a hash taken before its
        lock was held may be trusted under it, without reading the files again."""
        return False

    def verify(self, key: str, tree_digest: str) -> list[str]:
        """Re-hash an entry against hubpin's record and the lock; one phrase per damaged path."""
        record = self.read_record(key)
        if record is None:
            return [not_synced() if not self.has_entry(key) else no_record()]
        if record.tree_digest != tree_digest:
            return [other_tree(record.tree_digest, tree_digest)]
        try:
            found = self.hash_entry(key)
        except OSError as exc:
            return [str(exc)]
        problems = compare_trees(record.tree, found)
        if not problems and found.digest() != tree_digest:
            problems.append(f"tree digest is {found.digest()}, the lock pins {tree_digest}")
        return problems

    def copy_entry(self, key: str, into: Path) -> None:
        """Write the entry's files (and empty folders) below ``into``, for staging; only
        caches TensorFlow cannot read need it."""
        raise NotImplementedError(f"{type(self).__name__} entries are read in place")

    @abstractmethod
    def ensure_root(self) -> None:
        """Fail early, and clearly, when the cache cannot exist (no bucket, no permission)."""

    @abstractmethod
    def locked(self, key: str, timeout: float) -> contextlib.AbstractContextManager[Path]:
        """Hold ``<key>.lock`` as tensorflow_hub does; yield a local work folder to unpack into."""

    @abstractmethod
    def publish(self, key: str, work: Path, record: Record) -> None:
        """Make the verified ``work`` folder the entry, with ``record`` as its commit."""

    @abstractmethod
    def publish_record(self, key: str, record: Record) -> None:
        """Commit an entry someone else wrote (tensorflow_hub), once hashed and matched."""

    @abstractmethod
    def prunable(self, keep: set[str]) -> list[tuple[str, int]]:
        """Leftovers, and entries under keys ``keep`` lacks, with their sizes in bytes."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Remove one thing :meth:`prunable` named; already gone is fine."""

    @abstractmethod
    def leftovers(self) -> list[str]:
        """What crashed syncs left behind (dead locks, their work folders, temp files)."""

    @abstractmethod
    def keys(self) -> set[str]:
        """Every cache key with anything of its entry here (folder, descriptor or record)."""

    def still_present(self, keys: set[str], timeout: float) -> set[str]:
        """Which of ``keys`` have an entry now, once no prune holds their lock: what a sync
        that found them present asks after noting its lock (see
        :class:`hubpin.owners.Recheck`). Here by one listing, without waiting for locks."""
        return keys & self.keys()

    # Notes: small files hubpin keeps beside the entries, under ``hubpin-projects/``
    # (which projects use this cache; see :mod:`hubpin.owners`).

    @abstractmethod
    def read_note(self, name: str) -> bytes | None:
        """A note's bytes (at most ``MAX_NOTE`` of them); None when absent."""

    @abstractmethod
    def write_note(self, name: str, data: bytes) -> None:
        """Write a note whole (a reader sees the old or the new bytes)."""

    @abstractmethod
    def notes(self) -> list[str]:
        """The names of every note."""

    @abstractmethod
    def remove_note(self, name: str) -> None:
        """Remove a note; already gone is fine."""


NOTES = "hubpin-projects"
MAX_NOTE = 1 << 20


def note_name(lock_path: Path, host: str | None = None) -> str:
    """The file under ``NOTES`` in which a lock on a host notes what it uses (here, not in
    :mod:`hubpin.owners`, for the no-op stamp's check of its notes, which needs no more)."""
    ident = f"{host or socket.gethostname()}\0{lock_path}"
    return hashlib.sha1(ident.encode("utf-8")).hexdigest() + ".json"


@dataclass(frozen=True)
class Hashed:
    """An entry's files as hashed at one moment, and the cache's stamp of them then."""

    tree: Tree
    stamp: object | None  # see Cache.hash_stamped


def descriptor_text(handle: str) -> str:
    """tensorflow_hub's ``<key>.descriptor.txt``: which handle the entry holds, who fetched it."""
    return (
        f"Module: {handle}\nDownload Time: {datetime.datetime.today()}\n"
        f"Downloader Hostname: {socket.gethostname()} (PID:{os.getpid()})"
    )


def lock_contents(task: str) -> str:
    """What a lock holds, as tensorflow_hub writes it: ``host.pid.uuid``."""
    return f"{socket.gethostname()}.{os.getpid()}.{task}"


def work_name(key: str, task: str) -> str:
    """The work folder of the lock holder whose ``host.pid.uuid`` ends in ``task``: where it
    unpacks (or uploads) the entry before publishing, named as tensorflow_hub names it."""
    return f"{key}.{task}.tmp"


def task_of(holder: str) -> str | None:
    """The task uuid a lock's contents name, if plausible as part of a file name."""
    task = holder.rpartition(".")[2]
    return task if _TASK_RE.fullmatch(task) else None


_TASK_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")


def _holder(holder: str) -> tuple[str, int] | None:
    """``(host, pid)`` of a lock's ``host.pid.uuid``; None for anything else."""
    parts = holder.split(".")
    if len(parts) < 3 or not parts[-2].isdigit():
        return None
    return ".".join(parts[:-2]), int(parts[-2])


def on_this_host(holder: str) -> bool:
    """Whether the lock names a process of this host (which can be asked whether it runs)."""
    found = _holder(holder)
    return found is not None and found[0] == socket.gethostname()


def holder_is_dead(holder: str) -> bool:
    """True when the lock names a process on this host that no longer runs."""
    found = _holder(holder)
    if found is None or found[0] != socket.gethostname():
        return False
    try:
        os.kill(found[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def describe_holder(holder: str) -> str:
    """Who holds a lock, for the message that says what is waited for."""
    found = _holder(holder)
    if found is None:
        return "not a hubpin or tensorflow_hub lock"
    host, pid = found
    if host != socket.gethostname():
        return f"process {pid} on host {host}"
    return f"running process {pid} on this host"
