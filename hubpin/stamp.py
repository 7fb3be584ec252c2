"""A no-op sync without pydantic: the stamp a clean sync (or a lock that filled the
cache, see :func:`after_lock`) leaves, checked by stat alone.

A sync in which every model ended in the cache leaves a stamp: the cache, the
entries it holds for the lock with their tree digests, and what the command
printed. The stamp's name is a digest of every input of that outcome: the
command line, the working folder, the manifest, lock and hubpin.toml (path and
bytes) and the environment variables hubpin and tensorflow_hub read. The next
run with the same inputs finds the stamp and checks each entry with
:meth:`LocalCache.quick_check` (a Hugging Face snapshot with :meth:`HfCache.quick_check`),
the same stat check the full path makes, without
importing pydantic (about 60 ms, most of a no-op sync). Any other command
line, any changed input, any entry that fails the check: the full path runs.

Stamps live in ``$XDG_CACHE_HOME/hubpin/noop`` (``~/.cache`` by default); one
that cannot be written is skipped silently, it only costs the next run speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hubpin import __version__
from hubpin.handles import cache_key
from hubpin.project import Project
from hubpin.tomlfile import tomllib

VERSION = 1
# What the fast path accepts: plain `sync` with these flags, nothing that names files or caches.
_FLAGS = {"--frozen", "--locked", "--offline", "-q", "--quiet"}
_LOCK_FLAGS = {"-q", "--quiet", "-v", "--verbose"}  # a lock's flags that change no input
_ENV_PREFIXES = ("HUBPIN_", "TFHUB_", "HF_", "HUGGINGFACE_")  # HF_HUB_CACHE: the HF pins' cache
_ENV_NAMES = ("HOME", "TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME")
_KEEP_DAYS = 30


def eligible(argv: Sequence[str]) -> bool:
    """Whether a command line is a plain sync whose outcome the stamp's key covers."""
    words = list(argv)
    return words.count("sync") == 1 and all(w == "sync" or w in _FLAGS for w in words)


def after_lock(argv: Sequence[str]) -> list[list[str]]:
    """The plain syncs whose outcome a `hubpin lock` with this command line fills in advance.

    Right after a lock that filled the cache, `sync`, `sync --locked` and `sync --frozen`
    find the lock up to date and every entry present: the same outcome a clean sync
    stamps, so the lock leaves their stamps (each checked by stat when replayed).
    """
    words = list(argv)
    if words.count("lock") != 1 or not set(words) <= {"lock", "--fill", *_LOCK_FLAGS}:
        return []
    return [[*q, "sync", *mode] for q in ([], ["-q"]) for mode in ([], ["--locked"], ["--frozen"])]


def sources_state(project: Project) -> str | None:
    """A digest of the manifest and hubpin.toml as they are now (what a lock is made from)."""
    try:
        return hashlib.sha256(
            b"".join(
                hashlib.sha256(path.read_bytes() if path.exists() else b"").digest()
                for path in (project.manifest_path, project.settings_path)
            )
        ).hexdigest()
    except OSError:
        return None


def folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hubpin" / "noop"


def _project(argv: Sequence[str]) -> Project:
    return Project.discover(need_manifest="--frozen" not in argv)


def _key(argv: Sequence[str], project: Project) -> str:
    def content(path: Path) -> str | None:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None

    files = [project.manifest_path, project.lock_path, project.settings_path]
    inputs = {
        "version": VERSION,
        "hubpin": __version__,
        "python": sys.version,
        "cwd": os.getcwd(),
        "argv": list(argv),
        "env": {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        | {k: os.environ.get(k) for k in _ENV_NAMES},
        "files": {str(path): content(path) for path in files},
    }
    blob = json.dumps(inputs, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def replay(argv: Sequence[str]) -> int | None:
    """Exit 0 after printing what the last identical sync printed, if every entry is intact.

    None means "run the full command": not a plain sync, no stamp, or anything
    amiss. Never raises: whatever goes wrong here, the full path reports it.
    """
    if not eligible(argv):
        return None
    try:
        project = _project(argv)
        path = folder() / _key(argv, project)
        stamp = json.loads(path.read_text("utf-8"))
        output = stamp["output"]
        if stamp["version"] != VERSION or not isinstance(output, str):
            return None
        # What the stamp claims is checked against what it proves, never taken from it: it
        # was written under this name, for the cache these settings name, and it lists every
        # entry of this lock (else a stamp edited to list none, or copied from another
        # project, would answer a sync whose entry was deleted).
        root = _cache_root(project)
        entries = lock_entries(project.lock_path)
        if stamp.get("key") != path.name or root is None or stamp["cache"] != str(root):
            return None
        if entries is None or sorted(map(tuple, stamp["entries"])) != entries:
            return None
        if not intact(root, entries):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # in use: not one to forget
    except Exception:  # whatever it is, the full path says it properly
        return None
    sys.stderr.write(output)
    return 0


def _cache_root(project: Project) -> Path | None:
    """The local cache the settings name, found without pydantic; None when it cannot be
    told for sure here (a relative or ``~`` path, a gs:// one, an unreadable hubpin.toml):
    then the full path decides, as it always may."""
    value = os.environ.get("TFHUB_CACHE_DIR") or os.environ.get("HUBPIN_CACHE_DIR")
    if not value and project.settings_path.is_file():
        try:
            value = tomllib.loads(project.settings_path.read_text("utf-8")).get("cache_dir")
        except (OSError, ValueError):
            return None
        if value is not None and not isinstance(value, str):
            return None
    if not value:
        value = os.path.join(tempfile.gettempdir(), "tfhub_modules")
    root = Path(value)
    return root if root.is_absolute() and "://" not in value else None


def lock_entries(lock_path: Path) -> list[tuple[str, str]] | None:
    """Every (cache key, tree digest) the lock's archive pins fill (one key per handle,
    ``also`` handle and versioned handle), and every Hugging Face snapshot it pins
    (:func:`_hf_entry`); None if it cannot tell, or if a sync of this lock needs more than
    stat checks of these (a folder, a gs:// model, kagglehub's cache). A clean sync stamps
    exactly these (:func:`hubpin.ops.sync.stamp_entries`) and the replay checks exactly
    these (:func:`intact`), read without pydantic."""
    try:
        models = tomllib.loads(lock_path.read_text("utf-8"))["models"]
        found = set()
        for pin in models.values():
            if pin.get("kind") == "huggingface":
                hf = pin["huggingface"]
                found.add((_hf_entry(hf["repo"], hf["revision"], hf["commit"]), pin["tree_digest"]))
                continue
            if pin.get("kind") != "archive" or not pin.get("cache_key") or "kaggle_version" in pin:
                return None  # such a sync leaves no stamp
            handles = [pin["handle"], *pin.get("also", [])]
            if pin.get("versioned_handle"):
                handles.append(pin["versioned_handle"])
            found |= {(cache_key(handle), pin["tree_digest"]) for handle in handles}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return sorted(found)


_HF = "hf:"  # a Hugging Face snapshot's entry: hf:<repo>:<revision>:<commit> (git refs hold no ':')


def _hf_entry(repo: str, revision: str, commit: str) -> str:
    if not all(isinstance(v, str) and ":" not in v for v in (repo, revision, commit)):
        raise ValueError("not a Hugging Face pin")
    return f"{_HF}{repo}:{revision}:{commit}"


def intact(root: Path, entries: list[tuple[str, str]]) -> bool:
    """Whether every entry passes the stat check a sync's plan makes of it: a tensorflow_hub
    entry in the cache at ``root``, a snapshot in Hugging Face's cache (its files as
    hubpin's record lists them, which must add up to the lock's tree digest)."""
    from hubpin.cache.huggingface import HfCache, Pinned, hf_cache_root
    from hubpin.cache.local import LocalCache

    cache, hf = LocalCache(root), None
    for key, digest in entries:
        if not key.startswith(_HF):
            if cache.quick_check(key, digest):
                return False
            continue
        repo, revision, commit = key[len(_HF) :].split(":")
        hf = hf or HfCache(hf_cache_root())
        record = hf.read_record(Pinned(repo, revision, commit, False, ()))
        if record is None:
            return False
        pinned = Pinned.of(record | {"revision": revision, "complete": False})
        if pinned.repo != repo or pinned.digest() != digest or hf.quick_check(pinned):
            return False
    return True


def inputs(argv: Sequence[str], project: Project) -> str | None:
    """The stamp's name for this command's inputs as they are now; None if not eligible.

    Taken when a sync starts and compared when it ends: a manifest or lock edited
    meanwhile must not be stamped with an outcome that was reached without it.
    """
    if not eligible(argv):
        return None
    try:
        return _key(argv, project)
    except OSError:
        return None


def write(
    at_start: str | None,
    argv: Sequence[str],
    project: Project,
    entries: list[tuple[str, str]],
    output: str,
) -> None:
    """Record a clean sync of local ``entries`` (cache key, tree digest) and what it printed."""
    if at_start is None or inputs(argv, project) != at_start:
        return
    try:
        where = folder()
        where.mkdir(parents=True, exist_ok=True)
        stale = time.time() - _KEEP_DAYS * 86400
        for old in where.iterdir():  # a stamp per input set: forget the ones long unused
            if old.stat().st_mtime < stale:
                old.unlink(missing_ok=True)
        data = {
            "version": VERSION,
            "key": at_start,
            "cache": project.cache.location,
            "entries": entries,
            "output": output,
        }
        target = where / at_start
        from hubpin.atomic import write_atomic  # lazily: the no-op path only reads stamps

        write_atomic(target, json.dumps(data))
    except OSError:
        return
