"""The cache under a ``gs://`` prefix, shared by a fleet (see :class:`GcsCache`).

It has tensorflow_hub's layout, the one ``hub.load`` reads through
``tf.io.gfile`` when ``TFHUB_CACHE_DIR`` points at a bucket, and commits an
entry by writing hubpin's record last, so hubpin never sees half of one and
``hub.load`` almost never.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from hubpin.cache import (
    MAX_RECORD,
    Cache,
    Record,
    describe_holder,
    descriptor_text,
    holder_is_dead,
    lock_contents,
    no_record,
    not_synced,
    on_this_host,
    other_tree,
    parse_record,
)
from hubpin.cache.gcs_notes import GcsNotes
from hubpin.digests import Tree
from hubpin.errors import CacheError, HubpinError, some
from hubpin.gcs.client import (
    delete,
    delete_all,
    download,
    errors,
    filesystem,
    folder_prefix,
    list_all,
    split_url,
    stat,
    stream,
    upload,
)
from hubpin.settings import Settings

if TYPE_CHECKING:
    from gcsfs.core import GCSFileSystem

log = logging.getLogger("hubpin")
# Written last into an entry: TensorFlow fails on a folder without them instead
# of loading a model whose variables are still being copied.
_ENTRY_LAST = ("saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb")
_KEY_RE = re.compile(r"[0-9a-f]{40}")  # tensorflow_hub's cache keys: sha1 hex
_TASK_RE = re.compile(r"[0-9a-f]{32}")  # the uuid a lock names, and its upload folder's


class GcsCache(GcsNotes, Cache):
    """tensorflow_hub's cache layout under ``gs://bucket/prefix``, shared by a fleet.

    GCS has no rename, so an entry cannot appear at once as a local one does. A
    sync, holding the entry's lock, writes it in this order:

    1. ``<key>.lock``, created only if absent (``ifGenerationMatch=0``), holding
       ``host.pid.uuid`` as tensorflow_hub's lock does; a second sync waits, then
       finds the entry present. While held, a lease rewrites it with its generation
       as precondition (so waiters see progress, and a holder whose lock was taken
       over learns it and commits nothing). A stale lock is taken over by a rewrite
       conditional on its generation (see :meth:`_acquire`). Released with
       ``ifGenerationMatch=<its generation>``, unless the lease saw it taken over.
    2. The archive is unpacked and verified against the lock on local disk.
    3. A record ``<key>.hubpin.json`` of another tree is deleted first (with its
       generation as precondition): from then on hubpin treats the entry as absent.
       A record of the same tree (a repair) stays: the bytes it vouches for are
       put back unchanged.
    4. Every file is uploaded to ``<key>.<uuid>.tmp/`` (md5-checked by gcsfs),
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

    def __init__(self, root: str, settings: Settings) -> None:
        self.root = root.rstrip("/")
        self.location = self.root
        self.local_root = None
        self.bucket, prefix = split_url(self.root)
        self.prefix = folder_prefix(prefix)
        self.settings = settings
        self._leases: dict[str, _Lease] = {}

    @property
    def fs(self) -> GCSFileSystem:
        return filesystem(self.settings)

    def _name(self, relative: str) -> str:
        return self.prefix + relative

    def _url(self, relative: str) -> str:
        return f"gs://{self.bucket}/{self._name(relative)}"

    def entry(self, key: str) -> str:
        return self._url(key)

    def record_path(self, key: str) -> str:
        return self._url(f"{key}.hubpin.json")

    def _errors(self, relative: str) -> contextlib.AbstractContextManager[None]:
        return errors(self._url(relative), CacheError)

    # -- reading

    def _read_record(self, key: str) -> tuple[Record | None, dict[str, str], str] | None:
        """The record (None if unreadable), each file's crc32c, the record's generation;
        None when there is no record."""
        name = self._name(f"{key}.hubpin.json")
        with self._errors(f"{key}.hubpin.json"):
            meta = stat(self.fs, self.bucket, name)
            if meta is None:
                return None
            if int(meta.get("size", 0)) > MAX_RECORD:  # not one of ours: never downloaded
                text = b"\0" * (MAX_RECORD + 1)
            else:
                try:
                    text = download(self.fs, self.bucket, name, str(meta["generation"]))
                except FileNotFoundError:  # replaced between the two requests
                    return self._read_record(key)
        try:
            record, crcs = parse_record(text)
        except ValueError as exc:
            log.warning(
                "%s: unreadable hubpin record (%s); the entry is treated as absent", name, exc
            )
            return None, {}, str(meta["generation"])
        return record, {path: crc for path, crc in crcs.items() if crc}, str(meta["generation"])

    def read_record(self, key: str) -> Record | None:
        found = self._read_record(key)
        return found[0] if found else None

    def _listing(self, key: str) -> dict[str, dict[str, Any]]:
        """Objects below ``<key>/`` by relative name (folder placeholders end with ``/``)."""
        prefix = self._name(f"{key}/")
        items, _ = self._list(f"{key}/")
        return {item["name"][len(prefix) :]: item for item in items}

    def has_entry(self, key: str) -> bool:
        return bool(self._listing(key))

    def quick_check(self, key: str, tree_digest: str) -> list[str]:
        """Problems seen in one listing: record, every file at its size and crc32c."""
        record, crcs, _ = self._read_record(key) or (None, {}, "")
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
            elif int(item["size"]) != size:
                problems.append(f"{path} is {item['size']} bytes, expected {size}")
            elif crcs.get(path) and item.get("crc32c") != crcs[path]:
                problems.append(
                    f"{path} changed (crc32c {item.get('crc32c')}, expected {crcs[path]})"
                )
        return problems

    def hash_entry(self, key: str) -> Tree:
        """Download and hash every object of the entry (for ``verify`` and adoption)."""
        from concurrent.futures import ThreadPoolExecutor

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
            with self._errors(f"{key}/{path}"):
                for chunk in stream(
                    self.fs, self.bucket, item["name"], str(item["generation"]), int(item["size"])
                ):
                    digest.update(chunk)
                    size += len(chunk)
            return path, size, digest.hexdigest()

        with ThreadPoolExecutor(max_workers=max(1, self.settings.jobs)) as pool:
            for path, size, sha256 in pool.map(hash_one, files):
                tree.add_file(path, size, sha256)
        return tree

    # -- writing

    def ensure_root(self) -> None:
        """Fail early, and clearly, when the bucket is missing (listing needs no bucket rights)."""
        with self._errors(""):
            try:
                self.fs.call("GET", "b/{}/o", self.bucket, prefix=self.prefix or None, maxResults=1)
            except FileNotFoundError:
                raise self._no_bucket() from None

    def _no_bucket(self) -> CacheError:
        return CacheError(
            f"cache_dir {self.root}: bucket {self.bucket} does not exist; "
            f"create it (gcloud storage buckets create gs://{self.bucket}) or fix cache_dir"
        )

    def _list(
        self, relative: str, delimiter: str | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Objects (and sub-prefixes) under a name relative to the cache; a listing answered
        404 means the bucket is missing (a prefix with nothing under it lists empty)."""
        with self._errors(relative):
            try:
                return list_all(self.fs, self.bucket, self._name(relative), delimiter)
            except FileNotFoundError:
                raise self._no_bucket() from None

    @contextlib.contextmanager
    def locked(self, key: str, timeout: float) -> Iterator[Path]:
        """Hold ``<key>.lock`` on GCS; yield a local work folder named ``<key>.<uuid>.tmp``.

        The uuid is the one in the lock, and the upload folder on GCS has the same
        name, so tensorflow_hub's waiters see progress and leave the lock alone.
        While it is held, the lock is rewritten every ``timeout / 4`` (at most every
        30 s) with its generation as precondition: waiters see the generation move,
        and a holder whose lock was taken over learns it at the next rewrite and
        commits nothing.
        """
        self.ensure_root()
        task = uuid.uuid4().hex
        contents = lock_contents(task)
        lease = _Lease(self, key, contents, self._acquire(key, contents, timeout), timeout)
        self._leases[key] = lease
        scratch = Path(tempfile.mkdtemp(prefix="hubpin-gcs-"))
        work = scratch / f"{key}.{task}.tmp"
        try:
            work.mkdir()
            yield work
        finally:
            lease.stop()
            self._leases.pop(key, None)
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(HubpinError):
                self._remove_prefix(work.name + "/")
            self._release(key, lease)

    def _acquire(self, key: str, contents: str, timeout: float) -> str:
        """Create the lock (only if absent); return its generation.

        A holder that died on this host is replaced at once; one on another host
        (which this machine cannot ask) once neither its lock's generation nor its
        upload folder changed for ``timeout`` seconds, as tensorflow_hub does with a
        stale lock. A replacement is an upload with the stale generation as
        precondition, so of several waiters exactly one takes the lock over.
        """
        name = self._name(f"{key}.lock")
        url = self._url(f"{key}.lock")
        seen: tuple[str, tuple[int, int]] | None = None
        deadline = next_look = 0.0
        while True:
            with self._errors(f"{key}.lock"):
                try:
                    return str(
                        upload(self.fs, self.bucket, name, contents.encode(), "0")["generation"]
                    )
                except FileExistsError:
                    pass
                found = self._lock_holder(key)
            if found is None:
                continue  # released between our two requests
            holder, generation = found
            if holder == contents:  # our create, retried after its answer was lost
                return generation
            if holder_is_dead(holder):
                log.warning("taking over %s from dead process %s", url, holder)
                taken = self._take_over(key, holder, generation, contents)
                if taken:
                    return taken
                continue
            now = time.monotonic()
            if now >= next_look:  # progress: the lock rewritten, or its upload folder changing
                progress = (generation, self._work_size(key, holder))
                if progress != seen:
                    if seen is None:
                        log.warning(
                            "waiting for %s, held by %s (%s); %s after %.0fs without "
                            "progress (setting lock_timeout)",
                            url,
                            holder or "an unnamed process",
                            describe_holder(holder),
                            "giving up" if on_this_host(holder) else "taking it over",
                            timeout,
                        )
                    seen, deadline = progress, now + timeout
                next_look = now + min(1.0, timeout / 4 or 0.05)
            if now > deadline:
                if on_this_host(holder):  # alive (not dead, above): never taken from it
                    raise CacheError(
                        f"{url}: held by {holder} ({describe_holder(holder)}) with no "
                        f"progress for {timeout:.0f}s; if no sync is running there, delete it "
                        f"(gcloud storage rm {url}) and rerun, or raise lock_timeout in hubpin.toml"
                    )
                log.warning(
                    "taking over %s from %s (%s): no progress for %.0fs (setting lock_timeout)",
                    url,
                    holder or "an unnamed process",
                    describe_holder(holder),
                    timeout,
                )
                taken = self._take_over(key, holder, generation, contents)
                if taken:
                    return taken
                seen = None
            time.sleep(0.2)

    def _lock_holder(self, key: str) -> tuple[str, str] | None:
        """What ``<key>.lock`` holds and its generation; None when there is none."""
        name = self._name(f"{key}.lock")
        meta = stat(self.fs, self.bucket, name)
        if meta is None:
            return None
        try:
            text = download(self.fs, self.bucket, name, str(meta["generation"]))
        except FileNotFoundError:  # replaced meanwhile: look again
            return self._lock_holder(key)
        return text.decode("utf-8", "replace").strip(), str(meta["generation"])

    def _work_size(self, key: str, holder: str) -> tuple[int, int]:
        """Objects and bytes in the upload folder the lock's holder names (0, 0 if none)."""
        task = holder.rpartition(".")[2]
        if not _TASK_RE.fullmatch(task):
            return 0, 0
        items, _ = self._list(f"{key}.{task}.tmp/")
        return len(items), sum(int(i.get("size", 0)) for i in items)

    def _take_over(self, key: str, holder: str, generation: str, contents: str) -> str | None:
        """Replace a stale lock with ours, only if it is still that generation; then remove
        the stale holder's upload folder. Our lock's generation, or None if another won."""
        with self._errors(f"{key}.lock"):
            try:
                meta = upload(
                    self.fs, self.bucket, self._name(f"{key}.lock"), contents.encode(), generation
                )
            except FileExistsError:
                return None  # another waiter took it over, or the holder rewrote it
        task = holder.rpartition(".")[2]
        if _TASK_RE.fullmatch(task):
            with contextlib.suppress(HubpinError):
                self._remove_prefix(f"{key}.{task}.tmp/")
        return str(meta["generation"])

    def _release(self, key: str, lease: _Lease) -> None:
        url = self._url(f"{key}.lock")
        if lease.lost_to is not None:
            log.warning("%s was taken over by %s; left to it", url, lease.lost_to)
            return
        try:
            with self._errors(f"{key}.lock"):
                try:
                    delete(self.fs, self.bucket, self._name(f"{key}.lock"), lease.generation)
                except FileExistsError:
                    log.warning("%s was taken over by another process; left to it", url)
        except CacheError as exc:
            log.warning("could not release the lock: %s", exc)

    def _remove_prefix(self, relative: str) -> None:
        items, _ = self._list(relative)
        with self._errors(relative):
            if items:
                delete_all(self.fs, self.bucket, [i["name"] for i in items], self.settings.jobs)

    def publish(self, key: str, work: Path, record: Record) -> None:
        """Upload a verified work folder into ``<key>/`` and commit it with the record (see class)."""
        self._still_held(key)
        record = self.provenance(record, self.read_record(key), adopted=False)
        self._revoke_other(key, record)
        tmp = work.name  # <key>.<uuid>.tmp, as named by locked()
        files = sorted(record.tree.files, key=lambda p: (p in _ENTRY_LAST, p))
        with self._errors(tmp):
            self.fs.put(
                [str(work / p) for p in files],
                [f"{self.bucket}/{self._name(f'{tmp}/{p}')}" for p in files],
                consistency="md5",
            )
        uploaded = self._listing(tmp)
        self._still_held(key)  # an upload can take longer than lock_timeout
        payload = [p for p in files if p not in _ENTRY_LAST]
        with self._errors(key):
            for batch in (payload, [p for p in files if p in _ENTRY_LAST]):
                if batch:
                    self.fs.copy(
                        [f"{self.bucket}/{self._name(f'{tmp}/{p}')}" for p in batch],
                        [f"{self.bucket}/{self._name(f'{key}/{p}')}" for p in batch],
                    )
            for folder in _empty_dirs(record.tree):
                self.fs.pipe_file(f"{self.bucket}/{self._name(f'{key}/{folder}/')}", b"")
        listing = self._listing(key)
        extra = [
            name
            for name in listing
            if name not in record.tree.files and name.rstrip("/") not in record.tree.dirs
        ]
        if extra:
            with self._errors(key):
                names = [listing[name]["name"] for name in extra]
                delete_all(self.fs, self.bucket, names, self.settings.jobs)
        problems = [
            f"missing {p}" if p not in listing else f"{p} differs from the verified upload"
            for p, (size, _) in record.tree.files.items()
            if p not in listing
            or int(listing[p]["size"]) != size
            or listing[p].get("crc32c") != uploaded.get(p, {}).get("crc32c")
        ]
        if problems:
            raise CacheError(
                f"{self.entry(key)}: after upload {some(problems)}; nothing was committed; "
                "run: hubpin sync"
            )
        self._still_held(key)
        with self._errors(f"{key}.descriptor.txt"):
            upload(
                self.fs,
                self.bucket,
                self._name(f"{key}.descriptor.txt"),
                descriptor_text(record.handle).encode(),
            )
        self._commit(key, record, {p: listing[p].get("crc32c") for p in record.tree.files})

    def _still_held(self, key: str) -> None:
        lease = self._leases.get(key)
        if lease is not None and lease.lost_to is not None:
            raise CacheError(
                f"{self._url(f'{key}.lock')}: taken over by {lease.lost_to} while this sync "
                "held it (it saw no progress for lock_timeout); nothing was committed; "
                "run: hubpin sync"
            )

    def publish_record(self, key: str, record: Record) -> None:
        """Commit an entry someone else wrote (tensorflow_hub), once it was hashed and matched."""
        self._still_held(key)
        record = self.provenance(record, self.read_record(key), adopted=True)
        self._revoke_other(key, record)
        listing = self._listing(key)
        self._commit(
            key, record, {p: listing[p].get("crc32c") for p in record.tree.files if p in listing}
        )

    def _revoke_other(self, key: str, record: Record) -> None:
        """Delete a record that is unreadable or vouches for another tree (see step 3)."""
        old, _, generation = self._read_record(key) or (None, {}, "")
        if not generation or (old is not None and old.tree_digest == record.tree_digest):
            return
        with self._errors(f"{key}.hubpin.json"):
            try:
                delete(self.fs, self.bucket, self._name(f"{key}.hubpin.json"), generation)
            except FileExistsError:
                raise CacheError(
                    f"{self.record_path(key)}: rewritten by another sync meanwhile; "
                    "nothing was changed; run: hubpin sync"
                ) from None

    def _commit(self, key: str, record: Record, crcs: dict[str, str | None]) -> None:
        text = json.dumps(json.loads(record.to_json()) | {"crc32c": crcs}, indent=1, sort_keys=True)
        name = self._name(f"{key}.hubpin.json")
        with self._errors(f"{key}.hubpin.json"):
            try:
                upload(self.fs, self.bucket, name, text.encode(), "0")
                return
            except FileExistsError:
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
        items, prefixes = self._list("", delimiter="/")
        found = [(url, self._size_of(url)) for url in self.leftovers()]
        for name in prefixes:  # entry folders: "<prefix><key>/"
            key = name[len(self.prefix) :].rstrip("/")
            if _KEY_RE.fullmatch(key) and key not in keep:
                found.append((self._url(f"{key}/"), self._size_of(self._url(f"{key}/"))))
        for item in items:
            relative = item["name"][len(self.prefix) :]
            key, _, rest = relative.partition(".")
            if (
                _KEY_RE.fullmatch(key)
                and key not in keep
                and rest in ("descriptor.txt", "hubpin.json")
            ):
                found.append((self._url(relative), int(item.get("size", 0))))
        return found

    def keys(self) -> set[str]:
        items, prefixes = self._list("", delimiter="/")
        found = {name[len(self.prefix) :].rstrip("/") for name in prefixes}
        for item in items:
            key, _, rest = item["name"][len(self.prefix) :].partition(".")
            if rest in ("descriptor.txt", "hubpin.json"):
                found.add(key)
        return {key for key in found if _KEY_RE.fullmatch(key)}

    def _size_of(self, url: str) -> int:
        bucket, name = split_url(url)
        with errors(url, CacheError):
            items, _ = list_all(self.fs, bucket, name)
        return sum(int(i.get("size", 0)) for i in items)

    def remove(self, name: str) -> None:
        """Remove an object, or every object under a folder URL ending in ``/``."""
        bucket, object_name = split_url(name)
        with errors(name, CacheError):
            items, _ = list_all(self.fs, bucket, object_name)
            names = [i["name"] for i in items if name.endswith("/") or i["name"] == object_name]
            if names:
                delete_all(self.fs, bucket, names, self.settings.jobs)

    def leftovers(self) -> list[str]:
        """Locks of syncs that died on this host, and upload folders no live lock names."""
        items, prefixes = self._list("", delimiter="/")
        found = []
        live = set()
        for item in items:
            if not item["name"].endswith(".lock"):
                continue
            where = f"gs://{self.bucket}/{item['name']}"
            with errors(where, CacheError), contextlib.suppress(FileNotFoundError):
                holder = download(self.fs, self.bucket, item["name"]).decode("utf-8", "replace")
                if holder_is_dead(holder.strip()):
                    found.append(where)
                else:  # alive, or on another host: its upload folder is in use
                    key = item["name"][len(self.prefix) : -len(".lock")]
                    live.add(f"{self.prefix}{key}.{holder.strip().rpartition('.')[2]}.tmp/")
        found += [
            f"gs://{self.bucket}/{p}"
            for p in prefixes
            if p.endswith(".tmp/") and len(p[len(self.prefix) :].split(".")) == 3 and p not in live
        ]
        return sorted(found)


def _empty_dirs(tree: Tree) -> list[str]:
    """Folders with nothing below them, which exist on GCS only as ``folder/`` placeholders."""
    parents = {
        str(parent) for path in [*tree.files, *tree.dirs] for parent in PurePosixPath(path).parents
    }
    return sorted(tree.dirs - parents)


class _Lease:
    """Keeps a held ``<key>.lock`` fresh: rewrites it with its generation as precondition
    every ``timeout / 4`` (0.2 s to 30 s), so waiters see progress; a 412 that is not
    our own retried rewrite means the lock was taken over (``lost_to`` names by whom)."""

    def __init__(self, cache: GcsCache, key: str, contents: str, generation: str, timeout: float):
        self.cache, self.key, self.contents = cache, key, contents
        self.generation = generation
        self.lost_to: str | None = None
        self._interval = max(0.2, min(30.0, timeout / 4))
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"hubpin-lease-{key[:8]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        cache = self.cache
        name = cache._name(f"{self.key}.lock")
        while not self._stopped.wait(self._interval):
            try:
                with cache._errors(f"{self.key}.lock"):
                    try:
                        meta = upload(
                            cache.fs, cache.bucket, name, self.contents.encode(), self.generation
                        )
                        self.generation = str(meta["generation"])
                        continue
                    except FileExistsError:
                        found = cache._lock_holder(self.key)
                if found is not None and found[0] == self.contents:
                    self.generation = found[1]  # our rewrite went through; its answer was lost
                    continue
                self.lost_to = found[0] if found else "someone who deleted it"
                log.warning("%s: lost the lock to %s", cache._url(f"{self.key}.lock"), self.lost_to)
                return
            except HubpinError as exc:  # the sync's own requests report the endpoint
                log.debug("could not refresh the lock: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
