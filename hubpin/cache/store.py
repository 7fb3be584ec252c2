"""The cache under a store prefix shared by a fleet, ``gs://`` (see :class:`StoreCache`).

It has tensorflow_hub's layout, the one ``hub.load`` reads through
``tf.io.gfile`` when ``TFHUB_CACHE_DIR`` points at a bucket, and commits an
entry by writing hubpin's record last, so hubpin never sees half of one and
``hub.load`` almost never. Every request goes through the store's
:class:`hubpin.storage.Storage` back-end, so another store with conditional writes
(``s3://``) is this same cache with its own back-end: one ``cache=`` in its
:mod:`hubpin.storage.schemes` entry naming ``hubpin.cache.store:StoreCache``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from hubpin.cache import (
    MAX_NOTE,
    MAX_RECORD,
    NOTES,
    Cache,
    Record,
    descriptor_text,
    holder_is_dead,
    no_record,
    not_synced,
    other_tree,
    parse_record,
    task_of,
    work_name,
)
from hubpin.cache.lock import Holding, Place, hold
from hubpin.digests import Tree
from hubpin.errors import CacheError, HubpinError, some
from hubpin.settings import Settings
from hubpin.storage import Conflict, NoRoot, Stat, Storage, scheme, storage_for

log = logging.getLogger("hubpin")
# Written last into an entry: TensorFlow fails on a folder without them instead
# of loading a model whose variables are still being copied.
_ENTRY_LAST = ("saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb")
_KEY_RE = re.compile(r"[0-9a-f]{40}")  # tensorflow_hub's cache keys: sha1 hex


class StoreCache(Cache):
    """tensorflow_hub's cache layout under ``gs://bucket/prefix``, shared by a fleet.

    GCS has no rename, so an entry cannot appear at once as a local one does. A
    sync, holding the entry's lock, writes it in this order:

    1. ``<key>.lock``, created only if absent (``ifGenerationMatch=0``), holding
       ``host.pid.uuid`` as tensorflow_hub's lock does; a second sync waits, then
       finds the entry present. While held, a lease rewrites it with its generation
       as precondition (so waiters see progress, and a holder whose lock was taken
       over learns it and commits nothing). A stale lock is taken over by a rewrite
       conditional on its generation (see :mod:`hubpin.cache.lock`). Released with
       ``ifGenerationMatch=<its generation>``, unless the lease saw it taken over.
    2. The archive is unpacked and verified against the lock on local disk.
    3. A record ``<key>.hubpin.json`` of another tree is deleted first (with its
       generation as precondition): from then on hubpin treats the entry as absent.
       A record of the same tree (a repair) stays: the bytes it vouches for are
       put back unchanged.
    4. Every file is uploaded to ``<key>.<uuid>.tmp/`` (checked against its crc32c, or the
       store's own checksum, computed locally from the verified file),
       then copied server-side into ``<key>/``, ``saved_model.pb`` last; files
       the new tree does not hold are deleted. tensorflow_hub counts a non-empty
       ``<key>/`` as complete, so the copies keep the window in which ``hub.load``
       could see a partial folder to the copy time, not the upload time.
    5. ``<key>/`` is listed and compared with the verified tree (paths, sizes and
       the crc32c of each upload); then ``<key>.descriptor.txt`` is written.
    6. The record is written last, only if absent (``ifGenerationMatch=0``): the
       commit point. ``hubpin.load``, ``status`` and ``sync`` trust an entry only
       through its record, so they never observe a half-written one. The record
       also keeps each file's crc32c, so the quick check (one listing) notices a
       changed file of the same size.

    Every precondition-bearing upload is multipart (``hubpin.gcs.client.upload``):
    fake-gcs-server enforces the precondition there, so the race tests exercise
    the lock. Without working preconditions (gcp-storage-emulator ignores them all)
    the lock is not exclusive; two syncs of one lock then write the same verified
    bytes, each copy replaces an object whole, and nothing is deleted that the
    other needs, so the entry still ends complete. Conditional DELETEs (release,
    step 3) are honoured by GCS but by neither emulator; exclusion never rests on
    them: a takeover is a conditional upload, and the lease tells a holder it lost.
    """

    def __init__(self, root: str, settings: Settings, storage: Storage) -> None:
        self.root = root.rstrip("/")
        self.location = self.root
        self.local_root = None
        self.settings = settings
        self.storage = storage
        self._held: dict[str, Holding] = {}
        spec = scheme(root)  # TensorFlow reads gs:// in place; s3:// entries are staged
        self.tensorflow_reads = spec is not None and spec.folders

    @classmethod
    def at(cls, root: str, settings: Settings) -> StoreCache:
        return cls(root, settings, storage_for(root, settings, CacheError))

    def _url(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def entry(self, key: str) -> str:
        return self._url(key)

    def record_path(self, key: str) -> str:
        return self._url(f"{key}.hubpin.json")

    @property
    def _sums_name(self) -> str:
        """What the record keeps of each file, from a listing, to notice changed bytes."""
        if self.storage.lists_checksums:
            return self.storage.checksum_name or "checksum"
        return "versions"  # not "version": that is the record's own format number

    def _print(self, stat: Stat) -> str | None:
        """What a listing shows of an object's bytes: the store's checksum where a listing
        carries it (GCS's crc32c), else its version (S3's ETag, which changes with them)."""
        return stat.checksum if self.storage.lists_checksums else stat.version

    # -- reading

    def _read_record(self, key: str) -> tuple[Record | None, dict[str, str], str] | None:
        """The record (None if unreadable), each file's store checksum, the record's version;
        None when there is no record."""
        text, meta = self._read_bounded(self.record_path(key), MAX_RECORD) or (b"", None)
        if meta is None:
            return None
        try:
            record, sums = parse_record(text, self._sums_name)
        except ValueError as exc:
            log.warning(
                "%s: unreadable hubpin record (%s); the entry is treated as absent",
                self.record_path(key),
                exc,
            )
            return None, {}, meta.version
        return record, {path: value for path, value in sums.items() if value}, meta.version

    def _read_bounded(self, location: str, limit: int) -> tuple[bytes, Stat] | None:
        """A small object's bytes and version; an object over ``limit`` bytes is never
        downloaded (its bytes read as ``limit + 1`` NULs, which no parser accepts)."""
        for _ in range(5):  # replaced between the stat and the read: look again
            meta = self.storage.stat(location)
            if meta is None:
                return None
            if meta.size > limit:
                return b"\0" * (limit + 1), meta
            try:
                download = self.storage.open(location, 0, meta.size, meta.version)
                return b"".join(download.chunks), meta
            except FileNotFoundError:
                continue
        return None

    def read_record(self, key: str) -> Record | None:
        found = self._read_record(key)
        return found[0] if found else None

    def _listing(self, relative: str) -> dict[str, Stat]:
        """Objects below ``<relative>/`` by relative name (folder placeholders end with ``/``)."""
        prefix = self._url(f"{relative}/")
        return {item.location[len(prefix) :]: item for item in self._list(f"{relative}/")}

    def has_entry(self, key: str) -> bool:
        return bool(self._listing(key))

    def quick_check(self, key: str, tree_digest: str) -> list[str]:
        """Problems seen in one listing: record, every file at its size and crc32c."""
        record, sums, _ = self._read_record(key) or (None, {}, "")
        if record is None:
            return [not_synced() if not self.has_entry(key) else no_record()]
        if record.tree_digest != tree_digest:
            return [other_tree(record.tree_digest, tree_digest)]
        listing = self._listing(key)
        problems = []
        for path, (size, _) in record.tree.files.items():
            item = listing.get(path)
            if item is None:
                problems.append(f"missing file {path}")
            elif item.size != size:
                problems.append(f"{path} is {item.size} bytes, expected {size}")
            elif sums.get(path) and self._print(item) != sums[path]:
                problems.append(
                    f"{path} changed ({self._sums_name} {self._print(item)}, expected {sums[path]})"
                )
        return problems

    def hash_entry(self, key: str) -> Tree:
        """Download and hash every object of the entry (for ``verify`` and adoption)."""
        listing = self._listing(key)
        tree = Tree()
        for path in listing:
            if path.endswith("/") and path.strip("/"):
                tree.add_dir(path.strip("/"))
        files = sorted(p for p in listing if not p.endswith("/"))

        def hash_one(path: str) -> tuple[str, int, str]:
            digest = hashlib.sha256()
            size = 0
            item = listing[path]
            for chunk in self.storage.open(item.location, 0, item.size, item.version).chunks:
                digest.update(chunk)
                size += len(chunk)
            return path, size, digest.hexdigest()

        with ThreadPoolExecutor(max_workers=max(1, self.settings.jobs)) as pool:
            for path, size, sha256 in pool.map(hash_one, files):
                tree.add_file(path, size, sha256)
        return tree

    def copy_entry(self, key: str, into: Path) -> None:
        """Download the entry's files (and empty folders) below ``into``, for staging."""
        listing = self._listing(key)
        for path in listing:
            if path.endswith("/") and path.strip("/"):
                (into / path).mkdir(parents=True, exist_ok=True)

        def fetch(path: str) -> None:
            item = listing[path]
            target = into / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                for chunk in self.storage.open(item.location, 0, item.size, item.version).chunks:
                    fh.write(chunk)

        self._each(fetch, sorted(p for p in listing if not p.endswith("/")))

    # -- writing

    def ensure_root(self) -> None:
        """Fail early, and clearly, when the bucket is missing."""
        problem = self.storage.root_problem(self.root)
        if problem is not None:
            raise CacheError(f"cache_dir {self.root}: {problem} or fix cache_dir")

    def _list(self, relative: str) -> list[Stat]:
        """Objects under a name relative to the cache."""
        try:
            return self.storage.list(self._url(relative))
        except NoRoot as exc:
            raise CacheError(f"cache_dir {self.root}: {exc} or fix cache_dir") from None

    def _children(self) -> tuple[list[Stat], list[str]]:
        """The objects at the cache's top level and its folders (entries, upload folders)."""
        try:
            return self.storage.children(f"{self.root}/")
        except NoRoot as exc:
            raise CacheError(f"cache_dir {self.root}: {exc} or fix cache_dir") from None

    def _each(self, action: Callable[[str], object], locations: list[str]) -> None:
        """Run ``action`` on every location, ``jobs`` at a time (each request is retried)."""
        if not locations:
            return
        with ThreadPoolExecutor(
            max_workers=max(1, min(self.settings.jobs, len(locations)))
        ) as pool:
            list(pool.map(action, locations))

    @contextlib.contextmanager
    def locked(self, key: str, timeout: float) -> Iterator[Path]:
        """Hold ``<key>.lock`` on GCS (:mod:`hubpin.cache.lock`, with a lease); yield a local
        work folder named ``<key>.<uuid>.tmp``.

        The uuid is the one in the lock, and the upload folder on GCS has the same
        name, so tensorflow_hub's waiters see progress and leave the lock alone.
        While it is held, the lock is rewritten every ``timeout / 4`` (at most every
        30 s) with its generation as precondition: waiters see the generation move,
        and a holder whose lock was taken over learns it at the next rewrite and
        commits nothing.
        """
        self.ensure_root()
        with hold(self._place(key), timeout) as holding:
            self._held[key] = holding
            scratch = Path(tempfile.mkdtemp(prefix="hubpin-gcs-"))
            work = scratch / work_name(key, holding.task)
            try:
                work.mkdir()
                yield work
            finally:
                self._held.pop(key, None)
                shutil.rmtree(scratch, ignore_errors=True)
                with contextlib.suppress(HubpinError):
                    self.storage.remove_tree(self._url(work.name) + "/")

    def _place(self, key: str) -> Place:
        url = self._url(f"{key}.lock")
        return Place(
            self.storage,
            url,
            url,
            lambda task: self._url(work_name(key, task)) + "/",
        )

    def publish(self, key: str, work: Path, record: Record) -> None:
        """Upload a verified work folder into ``<key>/`` and commit it with the record (see class)."""
        self._still_held(key)
        record = self.provenance(record, self.read_record(key), adopted=False)
        self._revoke_other(key, record)
        tmp = work.name  # <key>.<uuid>.tmp, as named by locked()
        files = sorted(record.tree.files, key=lambda p: (p in _ENTRY_LAST, p))

        def put(path: str) -> None:
            local = work / path
            sha256 = record.tree.files[path][1]
            checksum = self.storage.sha256_checksum(sha256) or self._checksum_of(local)
            self.storage.put(self._url(f"{tmp}/{path}"), local, checksum=checksum)

        self._each(put, files)
        uploaded = self._listing(tmp)
        self._still_held(key)  # an upload can take longer than lock_timeout
        payload = [p for p in files if p not in _ENTRY_LAST]
        for batch in (payload, [p for p in files if p in _ENTRY_LAST]):
            self._each(
                lambda p: self.storage.copy(self._url(f"{tmp}/{p}"), self._url(f"{key}/{p}")),
                batch,
            )
        for folder in _empty_dirs(record.tree):
            self.storage.put(self._url(f"{key}/{folder}/"), b"")
        listing = self._listing(key)
        extra = [
            name
            for name in listing
            if name not in record.tree.files and name.rstrip("/") not in record.tree.dirs
        ]
        self._each(self.storage.delete, [listing[name].location for name in extra])
        problems = [
            f"missing {p}" if p not in listing else f"{p} differs from the verified upload"
            for p, (size, _) in record.tree.files.items()
            if p not in listing
            or listing[p].size != size
            or self._print(listing[p]) != (self._print(uploaded[p]) if p in uploaded else None)
        ]
        if problems:
            raise CacheError(
                f"{self.entry(key)}: after upload {some(problems)}; nothing was committed; "
                "run: hubpin sync"
            )
        with self._committing(key):
            self.storage.put(
                self._url(f"{key}.descriptor.txt"), descriptor_text(record.handle).encode()
            )
            self._commit(key, record, {p: self._print(listing[p]) for p in record.tree.files})

    def _checksum_of(self, path: Path) -> str | None:
        """The store's checksum of a local file, which the store checks the upload against."""
        checksum = self.storage.new_checksum()
        if checksum is None:
            return None
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                checksum.update(chunk)
        return checksum.value()

    def _still_held(self, key: str) -> None:
        holding = self._held.get(key)
        if holding is not None:
            holding.check()

    def _committing(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Commit only while this process holds ``key``'s lock, when it holds one."""
        holding = self._held.get(key)
        return holding.committing() if holding is not None else contextlib.nullcontext()

    def publish_record(self, key: str, record: Record) -> None:
        """Commit an entry someone else wrote (tensorflow_hub), once it was hashed and matched."""
        with self._committing(key):
            record = self.provenance(record, self.read_record(key), adopted=True)
            self._revoke_other(key, record)
            listing = self._listing(key)
            sums = {p: self._print(listing[p]) for p in record.tree.files if p in listing}
            self._commit(key, record, sums)

    def _revoke_other(self, key: str, record: Record) -> None:
        """Delete a record that is unreadable or vouches for another tree (see step 3)."""
        old, _, generation = self._read_record(key) or (None, {}, "")
        if not generation or (old is not None and old.tree_digest == record.tree_digest):
            return
        try:
            self.storage.delete(self.record_path(key), if_version=generation)
        except Conflict:
            raise CacheError(
                f"{self.record_path(key)}: rewritten by another sync meanwhile; "
                "nothing was changed; run: hubpin sync"
            ) from None

    def _commit(self, key: str, record: Record, sums: dict[str, str | None]) -> None:
        named = {self._sums_name: sums}
        text = json.dumps(json.loads(record.to_json()) | named, indent=1, sort_keys=True)
        try:
            self.storage.put(self.record_path(key), text.encode(), if_absent=True)
            return
        except Conflict:
            pass
        other = self.read_record(key)
        if other is None or other.tree_digest != record.tree_digest:
            raise CacheError(
                f"{self.record_path(key)}: another sync committed "
                f"{other.tree_digest if other else 'a different entry'} meanwhile, not "
                f"{record.tree_digest}; run: hubpin verify --repair"
            )
        log.info("%s: another sync committed the same tree", self.entry(key))

    def prunable(self, keep: set[str]) -> list[tuple[str, int]]:
        """Leftovers, and entries (folder, descriptor, record) under keys ``keep`` lacks."""
        items, folders = self._children()
        found = [(url, self._size_of(url)) for url in self.leftovers()]
        top = f"{self.root}/"
        for folder in folders:  # entry folders: "<root>/<key>/"
            key = folder[len(top) :].rstrip("/")
            if _KEY_RE.fullmatch(key) and key not in keep:
                found.append((folder, self._size_of(folder)))
        for item in items:
            relative = item.location[len(top) :]
            key, _, rest = relative.partition(".")
            if (
                _KEY_RE.fullmatch(key)
                and key not in keep
                and rest in ("descriptor.txt", "hubpin.json")
            ):
                found.append((item.location, item.size))
        return found

    def keys(self) -> set[str]:
        items, folders = self._children()
        top = f"{self.root}/"
        found = {folder[len(top) :].rstrip("/") for folder in folders}
        for item in items:
            key, _, rest = item.location[len(top) :].partition(".")
            if rest in ("descriptor.txt", "hubpin.json"):
                found.add(key)
        return {key for key in found if _KEY_RE.fullmatch(key)}

    # -- notes beside the entries (hubpin-projects/, see hubpin.owners): small objects
    # written whole, so a reader sees old or new bytes

    def read_note(self, name: str) -> bytes | None:
        found = self._read_bounded(self._url(f"{NOTES}/{name}"), MAX_NOTE)
        return None if found is None else found[0]

    def write_note(self, name: str, data: bytes) -> None:
        self.storage.put(self._url(f"{NOTES}/{name}"), data)

    def notes(self) -> list[str]:
        start = len(self._url(f"{NOTES}/"))
        return sorted(item.location[start:] for item in self._list(f"{NOTES}/"))

    def remove_note(self, name: str) -> None:
        self.storage.delete(self._url(f"{NOTES}/{name}"))

    def _size_of(self, url: str) -> int:
        return sum(item.size for item in self.storage.list(url))

    def remove(self, name: str) -> None:
        """Remove an object, or every object under a folder URL ending in ``/``."""
        if name.endswith("/"):
            self.storage.remove_tree(name)
        else:
            self.storage.delete(name)

    def leftovers(self) -> list[str]:
        """Locks of syncs that died on this host, and upload folders no live lock names."""
        items, folders = self._children()
        top = f"{self.root}/"
        found = []
        live = set()
        for item in items:
            if not item.location.endswith(".lock"):
                continue
            read = self.storage.read(item.location)
            if read is None:
                continue
            holder = read[0].decode("utf-8", "replace").strip()
            if holder_is_dead(holder):
                found.append(item.location)
            else:  # alive, or on another host: its upload folder is in use
                key = item.location[len(top) : -len(".lock")]
                task = task_of(holder)
                if task is not None:
                    live.add(f"{top}{work_name(key, task)}/")
        found += [
            folder
            for folder in folders
            if folder.endswith(".tmp/")
            and len(folder[len(top) :].split(".")) == 3
            and folder not in live
        ]
        return sorted(found)


def _empty_dirs(tree: Tree) -> list[str]:
    """Folders with nothing below them, which exist on GCS only as ``folder/`` placeholders."""
    parents = {
        str(parent) for path in [*tree.files, *tree.dirs] for parent in PurePosixPath(path).parents
    }
    return sorted(tree.dirs - parents)
