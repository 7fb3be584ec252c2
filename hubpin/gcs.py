"""Google Cloud Storage: UNCOMPRESSED models pinned per object, gs:// archives, a gs:// cache.

Everything here talks to the GCS JSON API through gcsfs (the ``gcs`` extra), which
is imported only when something actually lives on GCS, so the CLI stays slim.

**Endpoint and credentials.** gcsfs sends every request to ``STORAGE_EMULATOR_HOST``
when it is set (``gcsfs.core._location``: the value, with ``http://`` prepended
when it has no scheme), else to ``https://storage.googleapis.com``. The token is
``gcs_token`` from hubpin.toml / ``HUBPIN_GCS_TOKEN``: ``anon`` (public buckets),
``google_default`` (application-default credentials), ``cloud`` (the metadata
server), a path to a service-account or authorized-user JSON file, or else a raw
OAuth access token. Unset, it is ``anon`` against an emulator and otherwise
gcsfs's own guess (ADC, gcloud's cache, metadata server, anonymous). A token is
never printed: errors name the setting, never its value.

**The gRPC bucket probe.** Since 2025 ``gcsfs.GCSFileSystem`` is, unless
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is false when gcsfs is first imported,
``ExtendedGcsFileSystem``, which asks the Storage Control API over gRPC what kind
of bucket each one is before using it. Nothing answers that on an emulator or
behind an HTTPS-only proxy: measured against gcp-storage-emulator, every call
stalled 60 s (a mkdir and four small writes had not finished after 200 s; the
same with ``gcsfs.core.GCSFileSystem`` took 0.4 s). hubpin needs only plain JSON
API calls on ordinary objects, so it instantiates ``gcsfs.core.GCSFileSystem``
directly and does *not* set the variable: this works whatever the environment
says and whoever imported gcsfs first, and leaves the user's own gcsfs alone.
Zonal (Rapid) buckets, which need gRPC, are not supported.

gcsfs retries transient failures itself (6 tries, about 30 s of backoff), so an
unreachable endpoint fails after that, with one line naming the location.

**A gs:// cache** (``cache_dir = "gs://bucket/prefix"``) has tensorflow_hub's
layout, the one ``hub.load`` reads through ``tf.io.gfile`` when
``TFHUB_CACHE_DIR`` points at a bucket. See :class:`GcsCache` for how an entry
is written so that hubpin never sees half of one and ``hub.load`` almost never.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from hubpin.cache import Cache, Record, _holder_is_dead, descriptor_text
from hubpin.digests import Tree
from hubpin.errors import CacheError, FetchError, HubpinError, IntegrityError, SettingsError
from hubpin.fetch import Download
from hubpin.settings import Settings

if TYPE_CHECKING:
    from gcsfs.core import GCSFileSystem

    from hubpin.lockfile import Pin

log = logging.getLogger("hubpin")
_BLOCK = 8 << 20  # bytes per ranged GET when streaming an object
_TOKEN_WORDS = ("anon", "google_default", "cloud", "cache")
# Written last into an entry: TensorFlow fails on a folder without them instead
# of loading a model whose variables are still being copied.
_ENTRY_LAST = ("saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb")
GCS_DIGEST_VERSION = "gcs-v1"
_KEY_RE = re.compile(r"[0-9a-f]{40}")  # tensorflow_hub's cache keys: sha1 hex


@dataclass
class RemoteObject:
    """One object below a gs:// folder, as listed (the lock's GcsObject is made from it)."""

    path: str  # relative to the folder, POSIX
    size: int
    generation: str
    crc32c: str | None
    md5: str | None


class _Pinned(Protocol):
    path: str
    size: int
    generation: str
    crc32c: str | None
    md5: str | None


# ---------------------------------------------------------------- plumbing


def split_url(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → ``("bucket", "a/b")``; the name may be empty."""
    bucket, _, name = url.removeprefix("gs://").partition("/")
    return bucket, name


_filesystems: dict[tuple[Any, ...], GCSFileSystem] = {}
_filesystems_lock = threading.Lock()


def filesystem(settings: Settings) -> GCSFileSystem:
    """One gcsfs client per credentials and endpoint, shared by the threads of a command."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    token = _token(settings, emulator)
    key = (token, settings.gcs_project, emulator)
    with _filesystems_lock:
        if key not in _filesystems:
            try:
                from gcsfs.core import GCSFileSystem
            except ImportError:
                raise HubpinError(
                    "gs:// locations need gcsfs, which is not installed; "
                    "run: pip install 'hubpin[gcs]'"
                ) from None
            # gcsfs logs a traceback when it gives up; we raise one line instead. A handler
            # of its own keeps Python's last-resort handler from printing it, while an
            # application that configured logging still receives it.
            logging.getLogger("gcsfs").addHandler(logging.NullHandler())
            extra = {"project": settings.gcs_project} if settings.gcs_project else {}
            try:
                _filesystems[key] = GCSFileSystem(
                    token=token,
                    use_listings_cache=False,  # other processes write; never trust a listing twice
                    skip_instance_cache=True,
                    **extra,
                )
            except Exception as exc:  # gcsfs/google-auth raise many kinds; none is a bug of ours
                raise SettingsError(
                    f"gcs_token: the GCS credentials could not be loaded ({type(exc).__name__}); "
                    f"expected one of {', '.join(_TOKEN_WORDS)}, a service-account JSON file "
                    "or an access token (set gcs_token in hubpin.toml or HUBPIN_GCS_TOKEN)"
                ) from None
        return _filesystems[key]


def _token(settings: Settings, emulator: str) -> str | None:
    token = settings.gcs_token
    if token is None:
        return "anon" if emulator not in ("", "default") else None
    if token in _TOKEN_WORDS:
        return token
    if "/" in token or os.sep in token or token.endswith(".json"):
        path = Path(token).expanduser()
        if not path.is_file():
            raise SettingsError(
                f"gcs_token {path}: file not found (expected a service-account JSON key file)"
            )
        return str(path)
    return token  # a raw access token: passed on, never shown


def _endpoint(fs: GCSFileSystem) -> str:
    return fs.base.rsplit("/storage/v1/", 1)[0]


@contextlib.contextmanager
def _errors(where: str, error: type[HubpinError] = FetchError) -> Iterator[None]:
    """Turn whatever gcsfs, aiohttp or google-auth raise into one line naming ``where``."""
    import aiohttp
    import google.auth.exceptions
    from fsspec.exceptions import FSTimeoutError
    from gcsfs.retry import HttpError

    try:
        yield
    except HubpinError:
        raise
    except FileNotFoundError:
        raise error(f"{where}: not found (HTTP 404)") from None
    except FileExistsError:
        raise error(f"{where}: changed by someone else meanwhile (HTTP 412)") from None
    except (aiohttp.ClientConnectionError, TimeoutError, FSTimeoutError) as exc:
        raise error(f"{where}: cannot reach the GCS endpoint ({_reason(exc)})") from None
    except OSError as exc:
        if str(exc).startswith("Forbidden"):
            raise error(
                f"{where}: access denied (HTTP 403); check gcs_token and gcs_project in hubpin.toml"
            ) from None
        raise error(f"{where}: {_reason(exc)}") from None
    except HttpError as exc:
        hint = "; check gcs_token in hubpin.toml" if exc.code == 401 else ""
        raise error(f"{where}: HTTP {exc.code} {_reason(exc)}{hint}") from None
    except (ValueError, aiohttp.ClientError, google.auth.exceptions.GoogleAuthError) as exc:
        raise error(f"{where}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split("?")[0] if "://" in text else text


def _list(
    fs: GCSFileSystem, bucket: str, prefix: str, delimiter: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every object (and with ``delimiter``, every sub-prefix) whose name starts with ``prefix``."""
    items: list[dict[str, Any]] = []
    prefixes: list[str] = []
    token = None
    while True:
        page = fs.call(
            "GET",
            "b/{}/o",
            bucket,
            prefix=prefix or None,
            delimiter=delimiter,
            pageToken=token,
            json_out=True,
        )
        items += page.get("items", [])
        prefixes += page.get("prefixes", [])
        token = page.get("nextPageToken")
        if not token:
            return items, prefixes


def _stat(fs: GCSFileSystem, bucket: str, name: str) -> dict[str, Any] | None:
    try:
        return fs.call("GET", "b/{}/o/{}", bucket, name, json_out=True)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def _download(fs: GCSFileSystem, bucket: str, name: str, generation: str | None = None) -> bytes:
    _, body = fs.call(
        "GET",
        f"{_endpoint(fs)}/download/storage/v1/b/{{}}/o/{{}}",
        bucket,
        name,
        alt="media",
        generation=generation,
    )
    return body  # type: ignore[no-any-return]


def _upload(
    fs: GCSFileSystem, bucket: str, name: str, data: bytes, if_generation_match: str | None = None
) -> dict[str, Any]:
    """A one-request upload; ``if_generation_match="0"`` means only if absent (412 otherwise)."""
    return fs.call(  # type: ignore[no-any-return]
        "POST",
        f"{_endpoint(fs)}/upload/storage/v1/b/{{}}/o",
        bucket,
        uploadType="media",
        name=name,
        ifGenerationMatch=if_generation_match,
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        json_out=True,
    )


def _delete(
    fs: GCSFileSystem, bucket: str, name: str, if_generation_match: str | None = None
) -> bool:
    """Delete one object; False when it was already gone."""
    try:
        fs.call("DELETE", "b/{}/o/{}", bucket, name, ifGenerationMatch=if_generation_match)
    except FileNotFoundError:
        return False
    return True


def _delete_all(fs: GCSFileSystem, bucket: str, names: list[str], jobs: int) -> None:
    """Delete objects concurrently (each request is retried by gcsfs)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(names)))) as pool:
        list(pool.map(lambda name: _delete(fs, bucket, name), names))


def _stream(
    fs: GCSFileSystem, bucket: str, name: str, generation: str, size: int
) -> Iterator[bytes]:
    """One generation's bytes, by ranges of ``_BLOCK``: each range is retried by gcsfs, and
    an overwrite during the read fails (404 on that generation) instead of mixing versions."""
    url = f"{_endpoint(fs)}/download/storage/v1/b/{{}}/o/{{}}"
    for start in range(0, size, _BLOCK):
        end = min(size, start + _BLOCK) - 1
        _, body = fs.call(
            "GET",
            url,
            bucket,
            name,
            alt="media",
            generation=generation,
            headers={"Range": f"bytes={start}-{end}"},
        )
        if len(body) != end - start + 1:
            raise ValueError(f"got {len(body)} bytes for range {start}-{end} of {size}")
        yield body


def _remote(item: dict[str, Any], prefix: str) -> RemoteObject:
    return RemoteObject(
        path=item["name"][len(prefix) :],
        size=int(item["size"]),
        generation=str(item["generation"]),
        crc32c=item.get("crc32c"),
        md5=item.get("md5Hash"),
    )


def _folder_prefix(name: str) -> str:
    return name.rstrip("/") + "/" if name.strip("/") else ""


# ---------------------------------------------------------------- archives and folders


def open_object(url: str, settings: Settings) -> Download:
    """Stream a gs:// archive (tensorflow_hub's GcsCompressedFileResolver case)."""
    bucket, name = split_url(url)
    fs = filesystem(settings)
    with _errors(url):
        meta = _stat(fs, bucket, name)
    if meta is None:
        raise FetchError(f"{url}: archive not found (no such object)")

    def chunks() -> Iterator[bytes]:
        with _errors(url):
            yield from _stream(fs, bucket, name, str(meta["generation"]), int(meta["size"]))

    return Download(final_url=url, length=int(meta["size"]), chunks=chunks())


def _list_objects(location: str, settings: Settings) -> list[RemoteObject]:
    bucket, name = split_url(location)
    prefix = _folder_prefix(name)
    fs = filesystem(settings)
    with _errors(location):
        try:
            items, _ = _list(fs, bucket, prefix)
        except FileNotFoundError:
            raise FetchError(f"{location}: bucket {bucket} not found (HTTP 404)") from None
    # "folder/" placeholders some tools write hold no bytes and mean nothing to TensorFlow.
    found = [_remote(item, prefix) for item in items if not item["name"].endswith("/")]
    return sorted(found, key=lambda o: o.path.encode("utf-8"))


def list_folder(location: str, settings: Settings) -> list[RemoteObject]:
    """The objects of an UNCOMPRESSED model folder, sorted; FetchError unless it is a SavedModel."""
    listing = _list_objects(location, settings)
    if not listing:
        raise FetchError(
            f"{location}: no objects below this gs:// location; expected a SavedModel folder"
        )
    top = {o.path for o in listing if "/" not in o.path}
    if not top & {"saved_model.pb", "saved_model.pbtxt"}:
        shown = ", ".join(o.path for o in listing[:5]) + (", …" if len(listing) > 5 else "")
        raise FetchError(
            f"{location}: expected saved_model.pb at the top of the folder, found {len(listing)} "
            f"objects ({shown}); check the handle"
        )
    return listing


def objects_digest(listing: Iterable[_Pinned]) -> str:
    """A GCS folder's identity: exactly these objects at exactly these generations.

    Canonical form, version 1 (``gcs-v1:<sha256 hex>``): the sha256 of the text

        hubpin-gcs-v1\\n
        o <path> <size> <generation> <crc32c> <md5>\\n     for every object

    sorted by path (bytes of its UTF-8), paths relative to the folder and POSIX,
    checksums as GCS reports them (base64), ``-`` for a missing md5 (composite
    objects have none). GCS forbids CR and LF in object names and the four
    fields after the path hold no spaces, so the form is unambiguous. Unlike the
    tree digest of an archive, it includes generations: an UNCOMPRESSED model is
    read in place at load time, so a re-upload, even of the same bytes, is a
    change the lock must notice.
    """
    lines = sorted(
        (f"o {o.path} {o.size} {o.generation} {o.crc32c or '-'} {o.md5 or '-'}" for o in listing),
        key=lambda line: line[2:].encode("utf-8"),
    )
    text = "\n".join([f"hubpin-{GCS_DIGEST_VERSION}", *lines]) + "\n"
    return f"{GCS_DIGEST_VERSION}:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_folder(pin: Pin, settings: Settings) -> None:
    """Re-list a pinned gs:// folder; IntegrityError naming every object that drifted."""
    location = pin.location or ""
    now = {o.path: o for o in _list_objects(location, settings)}
    pinned = {o.path: o for o in pin.objects or []}
    changed = [
        f"{p} (generation {pinned[p].generation} → {now[p].generation})"
        if pinned[p].generation != now[p].generation
        else f"{p} (checksum or size differs at the same generation)"
        for p in sorted(pinned.keys() & now.keys())
        if _fingerprint(pinned[p]) != _fingerprint(now[p])
    ]
    added = sorted(now.keys() - pinned.keys())
    deleted = sorted(pinned.keys() - now.keys())
    if not (changed or added or deleted):
        return
    parts = [
        f"{word} {_some(names)}"
        for word, names in (("changed", changed), ("added", added), ("deleted", deleted))
        if names
    ]
    raise IntegrityError(
        f"{location} differs from the lock: {'; '.join(parts)}; "
        "if the model changed upstream on purpose, run: hubpin lock"
    )


def _fingerprint(o: _Pinned) -> tuple[int, str, str | None, str | None]:
    return (o.size, o.generation, o.crc32c, o.md5)


def _some(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------- the gs:// cache


class GcsCache(Cache):
    """tensorflow_hub's cache layout under ``gs://bucket/prefix``, shared by a fleet.

    GCS has no rename, so an entry cannot appear at once as a local one does. A
    sync, holding the entry's lock, writes it in this order:

    1. ``<key>.lock``, created only if absent (``ifGenerationMatch=0``), holding
       ``host.pid.uuid`` as tensorflow_hub's lock does; a second sync waits, then
       finds the entry present. Released with ``ifGenerationMatch=<its generation>``,
       so a lock taken over by someone else is never deleted.
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

    Without working preconditions (gcp-storage-emulator ignores them) the lock is
    not exclusive; two syncs of one lock then write the same verified bytes, each
    copy replaces an object whole, and nothing is deleted that the other needs,
    so the entry still ends complete.
    """

    def __init__(self, root: str, settings: Settings) -> None:
        self.root = root.rstrip("/")  # type: ignore[assignment]  # a gs:// URL, not a Path
        self.bucket, prefix = split_url(self.root)
        self.prefix = _folder_prefix(prefix)
        self.settings = settings

    @property
    def fs(self) -> GCSFileSystem:
        return filesystem(self.settings)

    def _name(self, relative: str) -> str:
        return self.prefix + relative

    def _url(self, relative: str) -> str:
        return f"gs://{self.bucket}/{self._name(relative)}"

    def entry(self, key: str) -> str:  # type: ignore[override]  # gs:// URL
        return self._url(key)

    def record_path(self, key: str) -> str:  # type: ignore[override]
        return self._url(f"{key}.hubpin.json")

    def _errors(self, relative: str) -> contextlib.AbstractContextManager[None]:
        return _errors(self._url(relative), CacheError)

    # -- reading

    def _read_record(self, key: str) -> tuple[Record | None, dict[str, str], str] | None:
        """The record (None if unreadable), each file's crc32c, the record's generation;
        None when there is no record."""
        name = self._name(f"{key}.hubpin.json")
        with self._errors(f"{key}.hubpin.json"):
            meta = _stat(self.fs, self.bucket, name)
            if meta is None:
                return None
            try:
                text = _download(self.fs, self.bucket, name, str(meta["generation"]))
            except FileNotFoundError:  # replaced between the two requests
                return self._read_record(key)
        try:
            record = Record.from_json(text.decode("utf-8"))
            crcs = json.loads(text)["crc32c"]
        except (ValueError, KeyError, TypeError, AssertionError):
            log.warning("%s: unreadable hubpin record; the entry is treated as absent", name)
            return None, {}, str(meta["generation"])
        return record, dict(crcs), str(meta["generation"])

    def read_record(self, key: str) -> Record | None:
        found = self._read_record(key)
        return found[0] if found else None

    def _listing(self, key: str) -> dict[str, dict[str, Any]]:
        """Objects below ``<key>/`` by relative name (folder placeholders end with ``/``)."""
        prefix = self._name(f"{key}/")
        with self._errors(key):
            items, _ = _list(self.fs, self.bucket, prefix)
        return {item["name"][len(prefix) :]: item for item in items}

    def has_entry(self, key: str) -> bool:
        return bool(self._listing(key))

    def quick_check(self, key: str, tree_digest: str) -> list[str]:
        """Problems seen in one listing: record, every file at its size and crc32c."""
        record, crcs, _ = self._read_record(key) or (None, {}, "")
        if record is None:
            return ["not synced" if not self.has_entry(key) else "no hubpin record for the entry"]
        if record.tree_digest != tree_digest:
            return [f"entry holds {record.tree_digest}, the lock pins {tree_digest}"]
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
                for chunk in _stream(
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
                raise CacheError(
                    f"cache_dir {self.root}: bucket {self.bucket} does not exist; "
                    f"create it (gcloud storage buckets create gs://{self.bucket}) or fix cache_dir"
                ) from None

    @contextlib.contextmanager
    def locked(self, key: str, timeout: float) -> Iterator[Path]:
        """Hold ``<key>.lock`` on GCS; yield a local work folder named ``<key>.<uuid>.tmp``.

        The uuid is the one in the lock, and the upload folder on GCS has the same
        name, so tensorflow_hub's waiters see progress and leave the lock alone.
        """
        self.ensure_root()
        task = uuid.uuid4().hex
        contents = f"{socket.gethostname()}.{os.getpid()}.{task}"
        generation = self._acquire(key, contents, timeout)
        scratch = Path(tempfile.mkdtemp(prefix="hubpin-gcs-"))
        work = scratch / f"{key}.{task}.tmp"
        try:
            work.mkdir()
            yield work
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(HubpinError):
                self._remove_prefix(work.name + "/")
            self._release(key, generation)

    def _acquire(self, key: str, contents: str, timeout: float) -> str:
        name = self._name(f"{key}.lock")
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            with self._errors(f"{key}.lock"):
                try:
                    return str(
                        _upload(self.fs, self.bucket, name, contents.encode(), "0")["generation"]
                    )
                except FileExistsError:
                    pass
                meta = _stat(self.fs, self.bucket, name)
                holder = ""
                if meta is not None:
                    with contextlib.suppress(FileNotFoundError):
                        holder = _download(self.fs, self.bucket, name).decode("utf-8", "replace")
            if meta is None:
                continue  # released between our two requests
            if _holder_is_dead(holder.strip()):
                log.warning("taking over %s from dead process %s", self._url(f"{key}.lock"), holder)
                with (
                    self._errors(f"{key}.lock"),
                    contextlib.suppress(FileNotFoundError, FileExistsError),
                ):
                    _delete(self.fs, self.bucket, name, str(meta["generation"]))
                continue
            if time.monotonic() > deadline:
                raise CacheError(
                    f"{self._url(f'{key}.lock')}: held by {holder.strip() or 'another process'} "
                    f"for more than {timeout:.0f}s; if no sync is running, delete it "
                    f"(gcloud storage rm {self._url(f'{key}.lock')}) or raise lock_timeout"
                )
            if not announced:
                log.warning("waiting for %s, held by %s", self._url(f"{key}.lock"), holder.strip())
                announced = True
            time.sleep(0.2)

    def _release(self, key: str, generation: str) -> None:
        try:
            with self._errors(f"{key}.lock"):
                try:
                    _delete(self.fs, self.bucket, self._name(f"{key}.lock"), generation)
                except FileExistsError:
                    log.warning(
                        "%s was taken over by another process; left to it", self._url(f"{key}.lock")
                    )
        except CacheError as exc:
            log.warning("could not release the lock: %s", exc)

    def _remove_prefix(self, relative: str) -> None:
        prefix = self._name(relative)
        with self._errors(relative):
            items, _ = _list(self.fs, self.bucket, prefix)
            if items:
                _delete_all(self.fs, self.bucket, [i["name"] for i in items], self.settings.jobs)

    def publish(self, key: str, work: Path, record: Record) -> None:
        """Upload a verified work folder into ``<key>/`` and commit it with the record (see class)."""
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
                _delete_all(self.fs, self.bucket, names, self.settings.jobs)
        problems = [
            f"missing {p}" if p not in listing else f"{p} differs from the verified upload"
            for p, (size, _) in record.tree.files.items()
            if p not in listing
            or int(listing[p]["size"]) != size
            or listing[p].get("crc32c") != uploaded.get(p, {}).get("crc32c")
        ]
        if problems:
            raise CacheError(
                f"{self.entry(key)}: after upload {_some(problems)}; nothing was committed; "
                "run: hubpin sync"
            )
        with self._errors(f"{key}.descriptor.txt"):
            _upload(
                self.fs,
                self.bucket,
                self._name(f"{key}.descriptor.txt"),
                descriptor_text(record.handle).encode(),
            )
        self._commit(key, record, {p: listing[p].get("crc32c") for p in record.tree.files})

    def publish_record(self, key: str, record: Record) -> None:
        """Commit an entry someone else wrote (tensorflow_hub), once it was hashed and matched."""
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
                _delete(self.fs, self.bucket, self._name(f"{key}.hubpin.json"), generation)
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
                _upload(self.fs, self.bucket, name, text.encode(), "0")
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
        with self._errors(""):
            items, prefixes = _list(self.fs, self.bucket, self.prefix, delimiter="/")
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

    def _size_of(self, url: str) -> int:
        bucket, name = split_url(url)
        with _errors(url, CacheError):
            items, _ = _list(self.fs, bucket, name)
        return sum(int(i.get("size", 0)) for i in items)

    def remove(self, name: str) -> None:  # type: ignore[override]  # a gs:// URL
        """Remove an object, or every object under a folder URL ending in ``/``."""
        bucket, object_name = split_url(name)
        with _errors(name, CacheError):
            items, _ = _list(self.fs, bucket, object_name)
            names = [i["name"] for i in items if name.endswith("/") or i["name"] == object_name]
            if names:
                _delete_all(self.fs, bucket, names, self.settings.jobs)

    def leftovers(self) -> list[str]:  # type: ignore[override]
        """Upload folders of dead syncs and their locks (by name, as for a local cache)."""
        with self._errors(""):
            items, prefixes = _list(self.fs, self.bucket, self.prefix, delimiter="/")
        found = [
            f"gs://{self.bucket}/{p}"
            for p in prefixes
            if p.endswith(".tmp/") and len(p[len(self.prefix) :].split(".")) == 3
        ]
        for item in items:
            if item["name"].endswith(".lock"):
                where = f"gs://{self.bucket}/{item['name']}"
                with _errors(where, CacheError), contextlib.suppress(FileNotFoundError):
                    holder = _download(self.fs, self.bucket, item["name"]).decode(
                        "utf-8", "replace"
                    )
                    if _holder_is_dead(holder.strip()):
                        found.append(where)
        return sorted(found)


def _empty_dirs(tree: Tree) -> list[str]:
    """Folders with nothing below them, which exist on GCS only as ``folder/`` placeholders."""
    parents = {
        str(parent) for path in [*tree.files, *tree.dirs] for parent in PurePosixPath(path).parents
    }
    return sorted(tree.dirs - parents)
