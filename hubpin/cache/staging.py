"""A local copy of a committed entry of a cache that TensorFlow cannot read (s3://).

TensorFlow 2.21 has no ``s3`` file system ("File system scheme 's3' not
implemented"), so ``hubpin.load`` cannot hand it an ``s3://`` entry the way it hands
it a ``gs://`` one. Instead it stages the entry: copies its files into a local
folder, hashes them, and uses them only if their tree digest is the one the lock
pins. The staging folder is itself a :class:`~hubpin.cache.local.LocalCache`
(tensorflow_hub's layout, its lock, publish by rename, hubpin's record), so a
second load, in this process or another, finds it by ``stat`` alone, and two
loads racing stage it once.

Where: ``stage_dir`` (hubpin.toml, ``HUBPIN_STAGE_DIR``), else
``$XDG_CACHE_HOME/hubpin/staged`` (``~/.cache/hubpin/staged``), then one folder per
remote cache: ``<scheme>/<bucket>/<prefix>``.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from hubpin.cache import Cache, Record
from hubpin.cache.local import LocalCache
from hubpin.digests import hash_tree
from hubpin.errors import DamagedEntryError


def stage_root(remote: str, stage_dir: str | None) -> Path:
    """The local folder that holds staged copies of the entries of cache ``remote``."""
    base = (
        Path(stage_dir).expanduser()
        if stage_dir
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hubpin" / "staged"
    )
    parts = urllib.parse.urlsplit(remote)
    return base / parts.scheme / parts.netloc / parts.path.strip("/")


def staging_cache(remote: Cache, stage_dir: str | None) -> LocalCache:
    """Where ``remote``'s entries are staged: a local cache of their verified copies."""
    return LocalCache(stage_root(remote.location, stage_dir))


def stage(remote: Cache, local: LocalCache, key: str, record: Record, timeout: float) -> str:
    """Copy ``remote``'s committed entry ``key`` (whose record, already checked against the
    lock, is ``record``) into ``local``, verified; its local path."""
    with local.locked(key, timeout) as work:
        if not local.quick_check(key, record.tree_digest):  # staged by another load meanwhile
            return local.entry(key)
        remote.copy_entry(key, work)
        found = hash_tree(work)
        if found.digest() != record.tree_digest:
            raise DamagedEntryError(
                f"cache entry {remote.entry(key)} does not match its record: its files hash to "
                f"{found.digest()}, the lock pins {record.tree_digest}; nothing was staged; "
                "run: hubpin verify --repair"
            )
        local.publish(key, work, Record(record.handle, record.tree_digest, found))
    return local.entry(key)
