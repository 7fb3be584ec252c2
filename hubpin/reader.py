"""The bytes of a download as unpacking reads them: hashed, counted, checked, read ahead.

Every source (HTTP, a file, a store) hands over an iterator of chunks; a
:class:`HashingReader` makes it a readable that keeps the archive's sha256 and
size, checks what the host declared once the body has ended, and tells a body
cut short from a corrupt one. Unpacking a single archive has it receive and
hash in the thread that consumes the inflated bytes, beside the inflating one
(:meth:`HashingReader.read_ahead`).
"""

from __future__ import annotations

import collections
import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hubpin.checksums import Checker, Declared
from hubpin.download import Download
from hubpin.errors import HubpinError, IntegrityError, Interrupted, TruncatedError

LOW = 2  # chunks waiting for the reading thread below which the feeding thread is told
WAITED = 0.002  # seconds: a chunk that took longer to arrive came slower than it inflates


class HashingReader(io.RawIOBase):
    """A readable over a download's chunks that hashes and counts every byte it hands out.

    With ``expected_size`` (the lock's archive size), a body that ends short of it
    is noted; if gzip or tar then fail for want of bytes, :meth:`short_or` reports
    truncation instead of corrupt data. A complete archive of another size is not
    truncated but different: the digest check reports that. What the host declared
    (``Content-Length``, ``X-Goog-Hash``) is checked once the whole body was read,
    so a body corrupted in transit is a "corrupt download", not a digest to pin.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        on_bytes: Callable[[int], None] | None = None,
        expected_size: int | None = None,
        stop: threading.Event | None = None,
        declared: Declared | None = None,
        where: str = "",
    ) -> None:
        self._chunks = chunks
        self._where = where
        self._checker = Checker(declared) if declared else None
        self._exhausted = False
        self._pending = memoryview(b"")
        self._expected_size = expected_size
        self._draining = False
        self._on_bytes = on_bytes
        self._sha256 = hashlib.sha256()
        self._received = 0  # bytes taken from ``chunks`` (ahead of ``size`` when reading ahead)
        self._inbox: _Inbox | None = None  # chunks for a reading thread (read_ahead)
        self._feeder: int | None = None  # the thread that receives for it
        self._left: collections.deque[bytes | BaseException | None] = collections.deque()
        self._fed_all = False  # the download's end (or its error) was taken for the inbox
        self.waited = False  # the last chunk fed took longer than WAITED to arrive
        self.size = 0  # bytes handed out
        self.ended_short = False
        self._stop = stop

    @classmethod
    def of(cls, download: Download, **options: Any) -> HashingReader:
        """A reader of ``download`` that also checks what its host declared."""
        return cls(download.chunks, declared=download.declared, where=download.final_url, **options)

    def readable(self) -> bool:
        return True

    def _pull(self) -> bool:
        if self._stop is not None and self._stop.is_set():
            raise Interrupted("interrupted; nothing was published")
        if self._exhausted:
            return False
        if self._inbox is not None and threading.get_ident() != self._feeder:
            chunk = self._inbox.next()
        elif self._left:
            chunk = _raised(self._left.popleft())
        else:
            chunk = None if self._fed_all else self._take()
        if chunk is not None:
            self.size += len(chunk)
            self._pending = memoryview(chunk)
            return True
        if not self._draining and self.size < (self._expected_size or 0):
            self.ended_short = True
        self._exhausted = True
        return False

    def _take(self) -> bytes | None:
        """The next non-empty chunk of the download, hashed and counted; None at its end."""
        for chunk in self._chunks:
            if chunk:
                self._sha256.update(chunk)
                if self._checker is not None:
                    self._checker.update(chunk)
                self._received += len(chunk)
                if self._expected_size is not None and self._received > self._expected_size:
                    raise IntegrityError(
                        f"archive is larger than the {self._expected_size} bytes pinned"
                    )
                if self._on_bytes:
                    self._on_bytes(len(chunk))
                return chunk
        return None

    def peek(self, n: int) -> bytes:
        while len(self._pending) < n and self._pull_more():
            pass
        return bytes(self._pending[:n])

    def _pull_more(self) -> bool:
        before = bytes(self._pending)
        if not self._pull():
            return False
        self._pending = memoryview(before + self._pending)
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._pending and not self._pull():
            return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def read_ahead(self, low: Callable[[], None], depth: int = 8) -> None:
        """Have the download received and hashed by the thread that called this, up to ``depth``
        chunks ahead (:meth:`feed`), for another thread that reads (inflates) it.

        Inflating one stream is the longest path of a sync that unpacks alone, so the
        inflating thread only inflates: the thread consuming its output receives and
        hashes while it would otherwise wait (both release the GIL, as inflating does),
        and is told by ``low`` (called from the reading thread) when fewer than
        :data:`LOW` chunks wait. Chunks and errors reach the reading thread in order,
        so the reader behaves as without it; :meth:`close_ahead` ends it.
        """
        if self._inbox is None:
            self._inbox = _Inbox(depth, low)
            self._feeder = threading.get_ident()

    def feed(self, keep: int | None = None) -> bool:
        """Receive and hash one chunk for the reading thread if fewer than ``keep`` wait (default:
        the depth); False if none was wanted or the download has ended. Feeding thread only.
        :attr:`waited` says whether that chunk kept it waiting (a slow network)."""
        inbox = self._inbox
        if inbox is None or self._fed_all or not inbox.wants(keep):
            return False
        started = time.perf_counter()
        try:
            chunk = self._take()
            self.waited = time.perf_counter() - started > WAITED
        except BaseException as exc:  # handed out in its place, after the chunks before it
            self._fed_all = True
            inbox.put(exc)
            return True
        self._fed_all = chunk is None
        inbox.put(chunk)
        return True

    def stop_ahead(self) -> None:
        """Hand the reading thread no more chunks (one waiting is woken with :class:`Stopped`);
        what it did not take is read first by later reads, here."""
        if self._inbox is not None and not self._inbox.closed:
            self._left.extend(self._inbox.close())

    def close_ahead(self) -> None:
        """:meth:`stop_ahead`, and close a download not received to its end (from the thread
        that received it), so a refused archive is not read on."""
        self.stop_ahead()
        if self._inbox is not None and not self._fed_all:
            self._fed_all = True
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def hexdigest(self) -> str:
        """The sha256 of every byte read so far; once all were read, raise unless they are
        what the host declared (IntegrityError "corrupt download", or TruncatedError).

        Only once reading ahead has ended (at the end, or after :meth:`close_ahead`)."""
        if self._exhausted and self._checker is not None:
            checker, self._checker = self._checker, None
            checker.check(self._where, self._sha256.digest())
        return self._sha256.hexdigest()

    def short_or(self, error: HubpinError) -> HubpinError:
        """``error``, unless the body ended short of the pinned size, or differs from what the
        host declared: then that is the news (bad gzip is how a corrupt transfer shows first)."""
        if self.ended_short:
            return TruncatedError(
                f"download truncated: got {self.size} of the {self._expected_size} bytes pinned"
            )
        if self._checker is not None:
            try:
                self.drain()
                self.hexdigest()
            except HubpinError as exc:
                return exc
        return error

    def drain(self) -> None:
        """Read to the end, so the digest covers bytes past the tar's end marker."""
        self._draining = True
        while self._pull():
            pass
        self._pending = memoryview(b"")


class Stopped(Exception):
    """No more chunks for the reading thread (:meth:`HashingReader.stop_ahead`)."""


def _raised(item: bytes | BaseException | None) -> bytes | None:
    if isinstance(item, BaseException):
        raise item
    return item


class _Inbox:
    """Chunks received for the reading thread: bytes, the error in their place, None at the end."""

    def __init__(self, depth: int, low: Callable[[], None]) -> None:
        self._items: collections.deque[bytes | BaseException | None] = collections.deque()
        self._depth = depth
        self._low = low
        self._told = False  # ``low`` was called and nothing was put since
        self._ready = threading.Condition(threading.Lock())
        self.closed = False

    def wants(self, keep: int | None) -> bool:
        return len(self._items) < (self._depth if keep is None else min(keep, self._depth))

    def put(self, item: bytes | BaseException | None) -> None:
        with self._ready:
            self._items.append(item)
            self._told = False
            self._ready.notify()

    def next(self) -> bytes | None:
        """The next chunk, waiting for it (None at the end); raises what came in its place."""
        with self._ready:
            while not self._items and not self.closed:
                self._tell()
                self._ready.wait()
            if not self._items:
                raise Stopped("no longer reading ahead")
            item = self._items.popleft()
            if len(self._items) < LOW:
                self._tell()
        return _raised(item)

    def _tell(self) -> None:
        if not self._told:
            self._told = True
            self._low()

    def close(self) -> list[bytes | BaseException | None]:
        """What the reading thread did not take; a thread waiting for more gets :class:`Stopped`."""
        with self._ready:
            self.closed = True
            left, self._items = list(self._items), collections.deque()
            self._ready.notify_all()
        return left
