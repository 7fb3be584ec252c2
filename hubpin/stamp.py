"""Repeated commands without pydantic: the stamp a clean run leaves, replayed after stat
checks alone.

A sync in which every model ended in the cache leaves a stamp: the cache, the
entries it holds for the lock with their tree digests, and what the command
printed. So do a passing ``lock --check`` (what it printed) and ``status`` (its
report, less each entry's state). The stamp's name is a digest of every input of
that outcome: the command line, the working folder, the manifest, lock and
hubpin.toml (path and bytes), the environment variables hubpin, tensorflow_hub,
Kaggle and Hugging Face read, and hubpin's own code. The next run with the same
inputs finds the stamp and checks each entry with :meth:`LocalCache.quick_check` (a
Hugging Face snapshot with :meth:`HfCache.quick_check`), the same stat check the full
path makes, without importing pydantic (about 60 ms,
most of a no-op sync or a ``status`` of 50 models). Any other command line, any
changed input, any entry that fails the check: the full path runs. A lock edited
by hand is other bytes, so ``lock --check`` and ``status`` check it in full.

Stamps live in ``$XDG_CACHE_HOME/hubpin/noop`` (``~/.cache`` by default); one
that cannot be written is skipped silently, it only costs the next run speed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubpin import __version__
from hubpin.handles import archive_key
from hubpin.project import Project
from hubpin.tomlfile import tomllib

if TYPE_CHECKING:
    from hubpin.ops.status import StatusReport

VERSION = 3
# What the fast path accepts: plain `sync` with these flags, nothing that names files or caches.
_FLAGS = {"--frozen", "--locked", "--offline", "-q", "--quiet"}
_LOCK_FLAGS = {"-q", "--quiet", "-v", "--verbose"}  # a lock's flags that change no input
_QUIET = {"-q", "--quiet"}
# HF_HUB_CACHE: the HF pins' cache; KAGGLE_API_ENDPOINT: what a Kaggle handle is
_ENV_PREFIXES = ("HUBPIN_", "TFHUB_", "KAGGLE", "HF_", "HUGGINGFACE_")
_ENV_NAMES = ("HOME", "TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME")
_KEEP_DAYS = 30


def command(argv: Sequence[str]) -> str | None:
    """Which command a stamp may answer this command line for (``sync``, ``check``,
    ``status``), or None: only flags that name no file or cache, and no aliases."""
    words = list(argv)
    if words.count("sync") == 1 and all(w == "sync" or w in _FLAGS for w in words):
        return "sync"
    if words.count("lock") == words.count("--check") == 1 and set(words) <= {
        "lock",
        "--check",
        *_QUIET,
    }:
        return "check"
    if words.count("status") == 1 and set(words) <= {"status", "--json", *_QUIET}:
        return "status"
    return None


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
    """The project as the command finds it (``status`` and ``sync --frozen`` need no manifest)."""
    return Project.discover(need_manifest="--frozen" not in argv and command(argv) != "status")


@functools.cache  # a run takes the key at its start and again before it stamps
def _code() -> tuple[tuple[str, int, int], ...]:
    """hubpin's own modules as they are on disk: another hubpin (or an edited one) is
    another input, whatever its version says. Read once per process: the code that runs
    is the code this process started with."""
    here = os.path.dirname(os.path.abspath(__file__))
    found = []
    for base, dirs, files in os.walk(here):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                info = os.stat(os.path.join(base, name))
                found.append((os.path.join(base, name), info.st_mtime_ns, info.st_size))
    return tuple(sorted(found))


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
        "code": _code(),
        "python": sys.version,
        "cwd": os.getcwd(),
        "argv": list(argv),
        "env": {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        | {k: os.environ.get(k) for k in _ENV_NAMES},
        "files": {str(path): content(path) for path in files},
    }
    blob = json.dumps(inputs, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def replay(
    argv: Sequence[str], show_status: Callable[[StatusReport, bool], None] | None = None
) -> int | None:
    """Exit 0 after printing what the last identical command printed (a sync, a passing
    ``lock --check``) or its report with each entry's state checked now (``status``), if
    every entry it names is intact.

    None means "run the full command": not such a command line, no stamp, or
    anything amiss. Never raises: whatever goes wrong here, the full path reports it.
    ``show_status`` prints a status report (the CLI's renderer, which sits above this module).
    """
    what = command(argv)
    if what is None or (what == "status" and show_status is None):
        return None
    try:
        project = _project(argv)
        path = folder() / _key(argv, project)
        stamp = json.loads(path.read_text("utf-8"))
        output = stamp["output"]
        if stamp["version"] != VERSION or not isinstance(output, str):
            return None
        # What the stamp claims is checked against what it proves, never taken from it: it
        # was written under this name, for the command and cache these settings name.
        if stamp.get("key") != path.name or stamp.get("command") != what:
            return None
        if what == "sync" and not _entries_intact(project, stamp):
            return None
        report = _status(project, stamp["report"]) if what == "status" else None
        if what == "status" and report is None:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # in use: not one to forget
    except Exception:  # whatever it is, the full path says it properly
        return None
    if report is not None and show_status is not None:
        show_status(report, "--json" in argv)
    sys.stdout.write(output)  # the result, as the command it stands for printed it
    return 0


def _entries_intact(project: Project, stamp: dict[str, Any]) -> bool:
    """Whether the stamp lists every entry of this lock (else a stamp edited to list none, or
    copied from another project, would answer a sync whose entry was deleted), in the cache
    the settings name, and each passes the stat check."""
    root = cache_root(project)
    entries = lock_entries(project.lock_path)
    if root is None or stamp["cache"] != str(root):
        return False
    if entries is None or sorted(map(tuple, stamp["entries"])) != entries:
        return False
    # The notes first: a prune that removes an entry after this looked at it saw them
    # (:class:`hubpin.owners.Recheck`)
    return noted(root, project.lock_path, entries) == stamp["notes"] and intact(root, entries)


def noted(root: Path, lock_path: Path, entries: list[tuple[str, str]]) -> dict[str, str] | None:
    """The notes a sync of these entries leaves that this lock uses the caches (what
    :func:`hubpin.ops.common.register_use` writes), each path → a digest of its bytes; None
    if one is missing.

    The full path notes them on every sync; the stamp's replay only finds them as the sync
    it stands for left them. A note another project's prune forgot (this lock was gone for a
    while) sends the sync down the full path, which notes it again: else that prune's next
    run would remove the entries this project syncs (they would be protected by no note).
    """
    from hubpin.cache import NOTES, note_name

    name = note_name(lock_path)
    paths = (
        [os.path.join(root, NOTES, name)] if any(not k.startswith(_HF) for k, _ in entries) else []
    )
    repos = sorted({key[len(_HF) :].split(":")[0] for key, _ in entries if key.startswith(_HF)})
    if repos:
        from hubpin.cache.huggingface import HfCache, hf_cache_root  # HF pins only

        hf = HfCache(hf_cache_root())
        paths += [str(hf.note_path(repo, name)) for repo in repos]
    found = {}
    for path in paths:
        try:
            with open(path, "rb") as fh:
                found[path] = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return None
    return found


def _status(project: Project, doc: dict[str, Any]) -> StatusReport | None:
    """``status`` from its stamped report, each entry's state checked now as the full path
    checks it (:meth:`hubpin.cache.Cache.entry_state`); None if the stamp does not hold."""
    from hubpin.cache.local import LocalCache
    from hubpin.ops.status import ModelStatus, StatusReport

    # The entries it lists are this lock's (else a stamp edited to list fewer, or copied from
    # another project, would hide an entry that is missing), in the cache the settings name.
    root, pins = cache_root(project), archive_pins(project.lock_path)
    if root is None or doc["cache_dir"] != str(root) or doc["lock"] != str(project.lock_path):
        return None
    if pins != {m["alias"]: (m["cache_key"], m["tree_digest"]) for m in doc["models"]}:
        return None
    cache = LocalCache(root)
    report = StatusReport(Path(doc["lock"]), doc["lock_state"], doc["cache_dir"])
    report.cache_chosen = doc["cache_chosen"]
    for m in doc["models"]:
        row = {k: v for k, v in m.items() if k not in ("cache_key", "tree_digest")}
        state = cache.entry_state(m["cache_key"], m["tree_digest"])
        report.models.append(ModelStatus(**row, state=state))
    return report


def cache_root(project: Project) -> Path | None:
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
    """Every (cache key, tree digest) the lock's archive pins fill (one key per handle and
    ``also`` handle), and every Hugging Face snapshot it pins
    (:func:`_hf_entry`); None if it cannot tell, or if a sync of this lock needs more than
    stat checks of these (a folder, a gs:// model, kagglehub's cache). A clean sync stamps
    exactly these (:func:`hubpin.ops.sync.stamp_entries`) and the replay checks exactly
    these (:func:`intact`), read without pydantic."""
    try:
        models = tomllib.loads(lock_path.read_text("utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entries_of(models)


def entries_of(models: Any) -> list[tuple[str, str]] | None:
    """:func:`lock_entries` of a lock's ``[models]`` tables: as read from the file, or as
    :func:`hubpin.lockfile.dumps` writes the pins (a sync stamps what it has read, and
    the replay compares that with the file, so a difference costs only the stamp)."""
    try:
        found = set()
        for pin in models.values():
            if pin.get("kind") == "huggingface":
                hf = pin["huggingface"]
                found.add((_hf_entry(hf["repo"], hf["revision"], hf["commit"]), pin["tree_digest"]))
                continue
            if pin.get("kind") != "archive" or not pin.get("cache_key") or "kaggle_version" in pin:
                return None  # such a sync leaves no stamp
            # The keys the pin fills (ArchivePin.keyed): a path or file:// handle's is its
            # archive's content key, not sha1(handle), which may hold another entry
            found.add((pin["cache_key"], pin["tree_digest"]))
            found |= {
                (archive_key(handle, pin["archive_sha256"]), pin["tree_digest"])
                for handle in pin.get("also", [])
            }
    except (ValueError, KeyError, TypeError, AttributeError):
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
    from hubpin.cache.local import LocalCache

    cache, hf = LocalCache(root), None
    for key, digest in entries:
        if not key.startswith(_HF):
            if cache.quick_check(key, digest):
                return False
            continue
        from hubpin.cache.huggingface import HfCache, Pinned, hf_cache_root  # HF pins only

        repo, revision, commit = key[len(_HF) :].split(":")
        hf = hf or HfCache(hf_cache_root())
        record = hf.read_record(Pinned(repo, revision, commit, False, ()))
        if record is None:
            return False
        pinned = Pinned.of(record | {"revision": revision, "complete": False})
        if pinned.repo != repo or pinned.digest() != digest or hf.quick_check(pinned):
            return False
    return True


def archive_pins(lock_path: Path) -> dict[str, tuple[str, str]] | None:
    """Each alias's pinned cache key and tree digest, read without pydantic; None unless every
    pin is an archive in tensorflow_hub's cache (not a Kaggle one), whose state ``status``
    tells by the stat check alone."""
    try:
        models = tomllib.loads(lock_path.read_text("utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return archives_of(models)


def archives_of(models: Any) -> dict[str, tuple[str, str]] | None:
    """:func:`archive_pins` of a lock's ``[models]`` tables (read, or as hubpin writes them).

    None for a Kaggle pin too (``kaggle_version``): its status is also whether kagglehub's
    copy is the pinned model (:meth:`hubpin.handlers.kaggle.KaggleHandler.state`), which
    the entry's stat check cannot tell."""
    try:
        found = {}
        for alias, pin in models.items():
            key, digest = pin.get("cache_key"), pin.get("tree_digest")
            if (
                pin.get("kind") != "archive"
                or "kaggle_version" in pin
                or not isinstance(key, str)
                or not isinstance(digest, str)
            ):
                return None
            found[alias] = (key, digest)
    except (TypeError, AttributeError):
        return None
    return found


def inputs(argv: Sequence[str], project: Project) -> str | None:
    """The stamp's name for this command's inputs as they are now; None if no stamp may
    answer this command line.

    Taken when a sync starts and compared when it ends: a manifest or lock edited
    meanwhile must not be stamped with an outcome that was reached without it.
    """
    if command(argv) is None:
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
    report: dict[str, Any] | None = None,
) -> None:
    """Record a clean run: a sync of local ``entries`` (cache key, tree digest) and what it
    printed, a passing check's output, or a status ``report`` (see :func:`_status`)."""
    if at_start is None or inputs(argv, project) != at_start:
        return
    try:
        where = folder()
        where.mkdir(parents=True, exist_ok=True)
        stale = time.time() - _KEEP_DAYS * 86400
        for old in where.iterdir():  # a stamp per input set: forget the ones long unused
            if old.stat().st_mtime < stale:
                old.unlink(missing_ok=True)
        notes = None
        if command(argv) == "sync":
            notes = noted(Path(project.cache.location), project.lock_path, entries)
            if notes is None:
                return  # not noted (a read-only cache): the full path tries again each time
        data = {
            "version": VERSION,
            "key": at_start,
            "command": command(argv),
            "cache": project.cache.location if command(argv) == "sync" else None,
            "entries": entries,
            "notes": notes,
            "output": output,
            "report": report,
        }
        target = where / at_start
        from hubpin.atomic import write_atomic  # lazily: the no-op path only reads stamps

        write_atomic(target, json.dumps(data))
    except OSError:
        return
