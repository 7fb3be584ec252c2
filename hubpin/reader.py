"""The bytes of a download as unpacking reads them: hashed, counted, checked, read ahead.

Every source (HTTP, a file, a store) hands over an iterator of chunks; a
:class:`HashingReader` makes it a readable that keeps the archive's sha256 and
size, checks what the host declared once the body has ended, and tells a body
cut short from a corrupt one. Unpacking a single archive has it receive and
hash in a thread of its own (:meth:`HashingReader.read_ahead`).
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from hubpin.checksums import Checker, Declared
from hubpin.download import Download
from hubpin.errors import HubpinError, IntegrityError, Interrupted, TruncatedError


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
        self._ahead: _ReadAhead | None = None
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
        chunk = self._ahead.next() if self._ahead is not None else self._take()
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

    def read_ahead(self, depth: int = 8) -> None:
        """Receive, hash and count the download in a thread of its own, ``depth`` chunks ahead.

        Receiving from the socket and hashing release the GIL, as inflating does:
        done in the inflating thread, they made it wait for the network and for the
        hash, and inflating one stream is the longest path of a sync that unpacks
        alone. Chunks are handed out in order and errors where they happened, so
        the reader behaves as without it; :meth:`close_ahead` stops the thread.
        """
        if self._ahead is None:
            self._ahead = _ReadAhead(self._take, self._chunks, depth)

    def close_ahead(self) -> None:
        """Stop reading ahead and wait for the thread (it may be in a read of the network)."""
        if self._ahead is not None:
            self._ahead.close()

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


class _ReadAhead:
    """A thread calling ``take`` until it returns None, its results handed out by :meth:`next`.

    At most ``depth`` chunks wait; an exception from ``take`` is handed out in its
    place, after the chunks before it. ``close`` makes the thread stop after its
    current ``take`` and closes ``chunks`` from that thread (a generator must be
    closed by the thread running it).
    """

    def __init__(
        self, take: Callable[[], bytes | None], chunks: Iterator[bytes], depth: int
    ) -> None:
        self._take = take
        self._chunks = chunks
        self._items: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
        self._room = threading.Semaphore(depth)
        self._closed = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="hubpin-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        item: bytes | BaseException | None = None
        try:
            while self._room.acquire() and not self._closed:
                item = self._take()
                if item is None:
                    break
                self._items.put(item)
            item = None
        except BaseException as exc:  # handed out in its place, raised by the reader
            item = exc
        finally:
            if self._closed:
                close = getattr(self._chunks, "close", None)
                if close is not None:
                    close()
        self._items.put(item)

    def next(self) -> bytes | None:
        """The next chunk, None at the end; raises what the thread raised, where it did."""
        if self._ended:
            return None
        item = self._items.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is None:
            self._ended = True
            return None
        self._room.release()
        return item

    def close(self) -> None:
        self._closed = True
        self._room.release()  # a thread waiting for room wakes, and sees it is closed
        self._thread.join()
