"""Which projects use a cache, and so what ``hubpin prune`` may remove from it.

tensorflow_hub's default cache (``$TMPDIR/tfhub_modules``) is shared by every
project and tool on the machine, so "not in my lock" does not mean "nobody's".
Two facts decide what is a project's own:

- every record hubpin writes names the lock whose command created the entry and its
  host (``created_by``, ``created_on``; an entry hubpin only adopted, or one without a
  record, was made by someone else: tensorflow_hub, or a copy);
- every ``sync``, filling ``lock`` and ``verify --repair`` notes in the cache, under
  ``hubpin-projects/``, which lock uses it (path, host) and the cache keys it pins.

``prune`` removes, by default, leftovers of crashed syncs and the entries its own
lock created that no registered lock pins now. A registered lock on this host is
read again (so a project that dropped a model no longer protects it); one that no
longer exists (deleted, or moved: it registers again at its next sync) protects
nothing and is forgotten; one on another host (a gs:// cache shared by a fleet)
protects the keys it registered. Entries other projects created that no lock pins
now are removed only with ``--all-unpinned``; entries hubpin did not create only
with ``--foreign``.

A project is a lock on a host. A fleet sharing a gs:// or s3:// cache has the same lock
path on every machine (``/app/models.lock`` in each container of one image), often with
the same bytes, yet each host is a project of its own: its bytes change as the fleet
rolls from one image to the next (the old image's containers still load what theirs
pins), and a lock's bytes are not yet written when ``hubpin lock`` publishes what it
pins. So one host's sync never replaces an entry that a lock at the same path on another
host created and still pins, and its ``prune`` removes only what it created; what other
hosts created and no noted lock pins goes with ``--all-unpinned``. A record older than
``created_on`` names no host: in a local cache it is this machine's, as before; in a
store's it is no host's (every host keeps it by default, none replaces it while a lock
of that path on another host pins it).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hubpin.cache import MAX_NOTE, Cache, Record, note_name
from hubpin.errors import CacheError, HubpinError
from hubpin.paths import identity

log = logging.getLogger("hubpin")
VERSION = 1


@dataclass(frozen=True)
class User:
    """A project that noted it uses the cache: its lock, host, the keys it pins now."""

    lock: str
    host: str
    keys: frozenset[str]
    note: str
    state: str  # "read" (lock read now) | "registered" (keys as noted) | "gone"

    @property
    def where(self) -> str:
        return self.lock if self.host == socket.gethostname() else f"{self.lock} on {self.host}"


@dataclass
class PrunePlan:
    """What ``prune`` removes, what it keeps and why, which registrations it forgets."""

    remove: list[tuple[str, int]]
    kept: dict[str, str] = field(default_factory=dict)  # cache key → why it stays
    forget: list[User] = field(default_factory=list)


def register(cache: Cache, lock_path: Path, keys: Iterable[str]) -> None:
    """Note that ``lock_path`` uses ``cache`` for ``keys``; written only when it changed.

    A cache that cannot be written (read-only, say) is not an error: nothing can be
    pruned from it either.
    """
    host = socket.gethostname()
    data = json.dumps(
        {"version": VERSION, "host": host, "lock": str(lock_path), "keys": sorted(set(keys))},
        indent=1,
        sort_keys=True,
    ).encode("utf-8")
    name = note_name(lock_path, host)
    try:
        if cache.read_note(name) != data:
            cache.write_note(name, data)
    except (HubpinError, OSError) as exc:
        log.info("%s: could not note that %s uses this cache: %s", cache.location, lock_path, exc)


def users(cache: Cache) -> list[User]:
    """Every project noted in the cache; a lock on this host is read again for its keys."""
    from hubpin.lockfile import read_lock

    found = []
    here = socket.gethostname()
    for name in cache.notes():
        raw = cache.read_note(name)
        try:
            if raw is None or len(raw) > MAX_NOTE:
                raise ValueError("missing or too large")
            data = json.loads(raw)
            lock, host, keys = data["lock"], data["host"], data["keys"]
            if not (isinstance(lock, str) and isinstance(host, str) and isinstance(keys, list)):
                raise ValueError("not a registration")
            noted = frozenset(str(k) for k in keys)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("%s: ignoring unreadable note %s (%s)", cache.location, name, exc)
            continue
        if host != here:
            found.append(User(lock, host, noted, name, "registered"))
            continue
        path = Path(lock)
        if not path.is_file():
            found.append(User(lock, host, noted, name, "gone"))
            continue
        try:
            pins = read_lock(path).models.values()
            keys_now = frozenset(k for pin in pins for k in pin.cache_keys())
            found.append(User(lock, host, keys_now, name, "read"))
        except HubpinError as exc:  # unreadable now: what it pinned when it synced still counts
            log.warning("%s: %s; keeping what it pinned when it last synced", lock, exc)
            found.append(User(lock, host, noted, name, "registered"))
    return found


def created_here(cache: Cache, record: Record, lock: str) -> bool:
    """Whether ``record``'s entry was created by the project of ``lock`` on this host (a
    record with no host: see the module)."""
    if record.adopted or not record.created_by or record.created_by != lock:
        return False
    if record.created_on:
        return record.created_on == socket.gethostname()
    return cache.local_root is not None


def creator(cache: Cache, record: Record) -> str:
    """Who created ``record``'s entry, for a message: its lock, and its host when not this one."""
    if record.created_on and record.created_on != socket.gethostname():
        return f"{record.created_by} on {record.created_on}"
    if not record.created_on and cache.local_root is None:
        return f"{record.created_by} (on a host an older hubpin did not note)"
    return record.created_by


def pinned_by_another(cache: Cache, key: str, tree_digest: str) -> str | None:
    """Which other project pins the model ``<key>/`` holds now, when it is not ``tree_digest``.

    A sync must not replace it: that project's unmodified ``hub.load(handle)`` would
    get this project's model. Whose it is comes from the record (``created_by``) and
    whether that lock still pins the key from :func:`users`; None when the entry is
    this project's, nobody's (tensorflow_hub's, or no lock pins it now) or the same model.
    """
    record = cache.read_record(key)
    if record is None or record.tree_digest == tree_digest:
        return None
    if record.adopted or not record.created_by or created_here(cache, record, cache.owner):
        return None
    here = socket.gethostname()
    for user in users(cache):
        if (user.lock, user.host) == (cache.owner, here) or user.lock != record.created_by:
            continue  # this project's own note, or another lock's
        if record.created_on and user.host != record.created_on:
            continue  # the same path on another host: another project
        if user.state != "gone" and key in user.keys:
            return user.where
    return _creator_pins(record.created_by, record.created_on, key, here)


def _creator_pins(created_by: str, created_on: str, key: str, here: str) -> str | None:
    """The creator's lock, when it is on this host and pins ``key``, noted or not: a sync
    notes its lock only once all its models are done, and one of them published minutes
    before (another project's sync replacing it then would give the first one's
    ``hub.load`` the other model, after its sync said it fetched its own)."""
    from hubpin.lockfile import read_lock

    if created_on and created_on != here:
        return None
    try:
        pins = read_lock(Path(created_by)).models.values()
    except (HubpinError, OSError):
        return None
    return created_by if any(key in pin.cache_keys() for pin in pins) else None


def refuse_replacing(cache: Cache, key: str, tree_digest: str, handle: str) -> None:
    """CacheError when ``<key>/`` holds another project's pinned model (:func:`pinned_by_another`)."""
    other = pinned_by_another(cache, key, tree_digest)
    if other is not None:
        raise CacheError(
            f"{cache.entry(key)} holds another model, which {other} pins for {handle}; "
            "hubpin does not replace another project's entry. Give this project a cache of "
            "its own (TFHUB_CACHE_DIR or cache_dir), or pin one model in both locks"
        )


def prune_plan(
    cache: Cache,
    lock_path: Path,
    own_keys: set[str],
    *,
    all_unpinned: bool = False,
    foreign: bool = False,
) -> PrunePlan:
    """What ``hubpin prune`` for the project of ``lock_path`` removes (see the module)."""
    own = str(lock_path)
    protected, forget = _protection(cache, lock_path)
    kept: dict[str, str] = {}
    for key in sorted(cache.keys() - own_keys):
        if key in protected:
            kept[key] = protected[key]
            continue
        record = cache.read_record(key)
        if record is None or record.adopted:
            if not foreign:
                kept[key] = "not created by hubpin"
        elif not created_here(cache, record, own) and not all_unpinned:
            kept[key] = (
                f"created by {creator(cache, record)}"
                if record.created_by
                else "created by a hubpin that did not note its project"
            )
    return PrunePlan(cache.prunable(own_keys | set(kept)), kept, forget)


def _protection(cache: Cache, lock_path: Path) -> tuple[dict[str, str], list[User]]:
    """The keys other projects' locks pin (each → why it stays), and the notes of locks
    that are gone."""
    own, here = str(lock_path), socket.gethostname()
    protected: dict[str, str] = {}
    forget = []
    for user in users(cache):
        if user.lock == own and user.host == here:
            continue
        if user.state == "gone":
            forget.append(user)
            continue
        for key in user.keys:
            protected.setdefault(key, f"pinned by {user.where}")
    return protected, forget


class Recheck:
    """Whether an entry prune planned to remove became pinned since, asked while holding the
    entry's ``<key>.lock``.

    A sync that found the entry present notes its lock after it looked, and then looks
    again, waiting while the key is locked (:meth:`hubpin.cache.Cache.still_present`). So
    prune, holding the lock, reads the notes again: a note written before is seen here and
    the entry kept; one written after is followed by the sync's second look, which finds
    the entry gone once prune let go of the lock, and says so (exit 1) instead of
    "already present". The same for this project's own lock, rewritten by a sync that
    locked first (its new pins are written before their entries are fetched).
    """

    def __init__(self, cache: Cache, lock_path: Path, own_keys: set[str]) -> None:
        self.cache, self.lock_path, self.own_keys = cache, lock_path, own_keys
        self.seen = self._notes()
        self.lock_seen = identity(lock_path)
        self.protected: dict[str, str] | None = None  # as the plan had it, until notes change

    def _notes(self) -> dict[str, bytes | None]:
        return {name: self.cache.read_note(name) for name in self.cache.notes()}

    def pinned_now(self, key: str) -> str | None:
        """Why ``key`` must stay now (None: still nobody's)."""
        from hubpin.lockfile import read_lock

        now = identity(self.lock_path)
        if now != self.lock_seen:
            self.lock_seen = now
            try:
                pins = read_lock(self.lock_path).models.values()
                self.own_keys = {k for pin in pins for k in pin.cache_keys()}
            except HubpinError as exc:
                return f"{self.lock_path} changed while pruning and cannot be read ({exc})"
        if key in self.own_keys:
            return f"pinned by {self.lock_path}, rewritten while pruning"
        notes = self._notes()
        if self.protected is None or notes != self.seen:
            self.seen, self.protected = notes, _protection(self.cache, self.lock_path)[0]
        return self.protected.get(key)
