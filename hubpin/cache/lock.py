"""The cache's lock protocol, written once over :class:`hubpin.storage.Storage`.

tensorflow_hub's ``atomic_download`` serves local and gs:// caches with one
routine over ``tf.io.gfile``; this is hubpin's equivalent, for every store with
create-only-if-absent, read, replace-only-if-unchanged and delete:

1. ``<key>.lock`` is created only if absent, holding ``host.pid.uuid`` as
   tensorflow_hub writes it; the holder's work folder is ``<key>.<uuid>.tmp``
   (:func:`hubpin.cache.work_name`), so waiters of either tool see its progress.
2. A waiter watches for progress: the lock's version changing (a lease) or the
   holder's work folder growing. It waits as long as there is progress, and
   ``lock_timeout`` seconds without.
3. A holder that died on this host is taken over at once; on a store that other
   machines share, a stale holder elsewhere (which this machine cannot ask) is
   taken over after ``lock_timeout`` without progress. A live holder on this host
   is never taken from: the waiter gives up, naming it. A takeover replaces the
   lock only if it is still the version that was judged stale, so of several
   waiters exactly one wins; the loser's work folder is removed.
4. On a shared store the holder renews a lease: it rewrites the lock, only if
   unchanged, every ``lock_timeout / 4`` (0.2 s to 30 s). Waiters see the version
   move; a holder whose rewrite is refused learns it was taken over.
5. Before committing anything, a holder checks it still holds the lock
   (:meth:`Holding.check`), and commits nothing if not.
6. The lock is released only if unchanged (a lock someone took over is left to them).
7. A process leaving at once (Ctrl-C or SIGTERM; the CLI ends without waiting for the
   downloads in flight) releases the locks its threads hold on the way out
   (:func:`release_held`), after any commit in progress ends, and its threads commit
   nothing after that. A lock left behind would make tensorflow_hub wait for it (up to
   its ``lock_file_timeout_sec``) before taking it over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hubpin.cache import (
    describe_holder,
    holder_is_dead,
    lock_contents,
    on_this_host,
    task_of,
)
from hubpin.errors import CacheError, HubpinError
from hubpin.storage import Conflict, Storage

log = logging.getLogger("hubpin")


@dataclass
class Place:
    """Where one key's lock lives, and how to name things in messages."""

    storage: Storage
    lock: str  # the lock's location
    label: str  # how logs name the lock (a file name, or a URL)
    work_of: Callable[[str], str]  # a holder's task → its work folder's location, ending in "/"


class Holding:
    """A held lock: its contents and version, and whether it was lost since."""

    def __init__(self, place: Place, task: str, contents: str, version: str) -> None:
        self.place, self.task, self.contents, self.version = place, task, contents, version
        self.lost_to: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._commit = threading.Lock()  # held while committing; release_held waits for it
        self._abandoned = False  # released by release_held: commit nothing
        self._released = False

    def renew_every(self, interval: float) -> None:
        """Start the lease (stores other machines share)."""
        self._thread = threading.Thread(
            target=self._renew, args=(interval,), name="hubpin-lease", daemon=True
        )
        self._thread.start()

    def _renew(self, interval: float) -> None:
        place = self.place
        while not self._stopped.wait(interval):
            try:
                try:
                    self.version = place.storage.put(
                        place.lock, self.contents.encode(), if_version=self.version
                    ).version
                    continue
                except Conflict:
                    found = _read(place)
                if found is not None and found[0] == self.contents:
                    self.version = found[1]  # our rewrite went through; its answer was lost
                    continue
                self.lost_to = found[0] if found else "someone who deleted it"
                log.warning("%s: lost the lock to %s", place.lock, self.lost_to)
                return
            except HubpinError as exc:  # the sync's own requests report the endpoint
                log.debug("could not refresh the lock: %s", exc)

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Commit in this block, only while the lock is held (:meth:`check`); a process
        leaving at once releases the lock only after the block ends."""
        with self._commit:
            self.check()
            yield

    def check(self) -> None:
        """Raise unless this process still holds the lock: a holder that lost it commits nothing."""
        if self._abandoned:
            raise CacheError(
                f"{self.place.lock}: released, hubpin was interrupted; nothing was committed"
            )
        if self._thread is None and self.lost_to is None:  # no lease: look
            found = _read(self.place)
            if found is None or found[0] != self.contents:
                self.lost_to = found[0] if found else "someone who deleted it"
        if self.lost_to is not None:
            raise CacheError(
                f"{self.place.lock}: taken over by {self.lost_to} while this sync held it (it "
                "saw no progress for lock_timeout); nothing was committed; run: hubpin sync"
            )

    def abandon(self, timeout: float) -> None:
        """Release the lock from another thread, for a process leaving now: once the commit
        in progress, if any, ended (waiting at most ``timeout``; past it the lock stays, a
        dead holder's once the process is gone). The holder commits nothing after, so its
        work folder is removed too."""
        if not self._commit.acquire(timeout=max(0.0, timeout)):
            return
        self._abandoned = True
        self._commit.release()
        self.release()
        with contextlib.suppress(HubpinError, OSError):  # nothing renames it into place now
            self.place.storage.remove_tree(self.place.work_of(self.task))

    def release(self) -> None:
        with _registry:
            if self._released:
                return
            self._released = True
            _held.discard(self)
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost_to is not None:
            log.warning("%s was taken over by %s; left to it", self.place.label, self.lost_to)
            return
        try:
            self.place.storage.delete(self.place.lock, if_version=self.version)
        except Conflict:
            log.warning("%s was taken over by another process; left to it", self.place.label)
        except CacheError as exc:
            log.warning("could not release the lock: %s", exc)


_held: set[Holding] = set()  # every lock this process holds now
_registry = threading.Lock()


@contextlib.contextmanager
def hold(place: Place, timeout: float) -> Iterator[Holding]:
    """Hold the lock at ``place`` (see the module docstring) until the block ends."""
    task = uuid.uuid4().hex
    contents = lock_contents(task)
    holding = Holding(place, task, contents, _acquire(place, contents, timeout))
    with _registry:
        _held.add(holding)
    if place.storage.shared:
        holding.renew_every(max(0.2, min(30.0, timeout / 4)))
    try:
        yield holding
    finally:
        holding.release()


def release_held(timeout: float = 2.0) -> None:
    """Release every lock this process holds, for a process that leaves now while other
    threads still hold them (mid-download): each once its commit in progress, if any,
    ended; the threads commit nothing after, so the holder's work folder is removed too.
    Bounded by ``timeout`` in all (a shared store may not answer): a lock not released by
    then is left, to be taken over as a dead holder's."""

    def release_all() -> None:
        deadline = time.monotonic() + timeout
        with _registry:
            holdings = list(_held)
        for holding in holdings:
            holding.abandon(deadline - time.monotonic())

    worker = threading.Thread(target=release_all, name="hubpin-release", daemon=True)
    worker.start()
    worker.join(timeout)


def _acquire(place: Place, contents: str, timeout: float) -> str:
    """Create the lock, waiting for (or taking over) its holder; our lock's version."""
    storage, shared = place.storage, place.storage.shared
    seen: tuple[object, ...] | None = None
    deadline = next_look = 0.0
    while True:
        try:
            return storage.put(place.lock, contents.encode(), if_absent=True).version
        except Conflict:
            found = _read(place)
        if found is None:
            continue  # released between our two requests
        holder, version = found
        if holder == contents:  # our create, retried after its answer was lost
            return version
        if holder_is_dead(holder):
            log.warning("taking over %s from dead process %s", place.label, holder)
            taken = _take_over(place, holder, version, contents)
            if taken:
                return taken
            continue
        now = time.monotonic()
        if now >= next_look:  # progress: the lock rewritten, or its work folder changing
            progress = (holder, version, *_work_size(place, holder))
            if progress != seen:
                if seen is None:
                    log.warning(
                        "waiting for %s, held by %s (%s); %s after %.0fs without "
                        "progress (setting lock_timeout)",
                        place.label,
                        holder or "an unnamed process",
                        describe_holder(holder),
                        "taking it over" if shared and not on_this_host(holder) else "giving up",
                        timeout,
                    )
                seen, deadline = progress, now + timeout
            next_look = now + min(1.0, timeout / 4 or 0.05)
        if now > deadline:
            if not shared or on_this_host(holder):  # alive (not dead, above): never taken
                raise CacheError(
                    f"{place.lock}: held by {holder or 'an unnamed process'} "
                    f"({describe_holder(holder)}) with no progress for {timeout:.0f}s; if no "
                    f"sync is running there, {storage.remove_hint(place.lock)} and rerun, or raise "
                    "lock_timeout in hubpin.toml"
                )
            log.warning(
                "taking over %s from %s (%s): no progress for %.0fs (setting lock_timeout)",
                place.label,
                holder or "an unnamed process",
                describe_holder(holder),
                timeout,
            )
            taken = _take_over(place, holder, version, contents)
            if taken:
                return taken
            seen = None
        time.sleep(0.2 if shared else 0.05)


def _read(place: Place) -> tuple[str, str] | None:
    """What the lock holds and its version; None when there is none."""
    found = place.storage.read(place.lock)
    if found is None:
        return None
    return found[0].decode("utf-8", "replace").strip(), found[1].version


def _work_size(place: Place, holder: str) -> tuple[int, int]:
    """Files and bytes in the work folder the lock's holder names (0, 0 if none)."""
    task = task_of(holder)
    if task is None:
        return 0, 0
    items = place.storage.list(place.work_of(task))
    return len(items), sum(item.size for item in items)


def _take_over(place: Place, holder: str, version: str, contents: str) -> str | None:
    """Replace a stale lock with ours only if it is still ``version``, then remove the stale
    holder's work folder; our lock's version, or None when another process won."""
    try:
        taken = place.storage.put(place.lock, contents.encode(), if_version=version).version
    except Conflict:
        return None  # another waiter took it over, or the holder rewrote it
    task = task_of(holder)
    if task is not None:
        with contextlib.suppress(HubpinError):
            place.storage.remove_tree(place.work_of(task))
    return taken
