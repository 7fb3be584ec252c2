"""One pass over an archive: hash it, gunzip it, untar it safely, hash what it holds.

The archive's bytes arrive as an iterator of chunks (from HTTP, a file or GCS).
They are hashed as they are read, decompressed, and each tar member is checked
and written (or only hashed, when locking) while its sha256 feeds the tree
digest, so nothing is read twice and nothing unsafe reaches the disk.

Limits on what an archive may make hubpin do (all checked at lock and at sync):

- **Compression ratio** (setting ``max_compression_ratio``, default 100): once more
  than 64 MiB (``RATIO_FLOOR``) have been inflated, the inflated bytes may not exceed
  the ratio times the compressed bytes read so far. The archive's size is known only
  at its end, so the ratio is taken as the stream goes: a 4 MB archive of 4 GB is
  refused after about 100 MiB, not after 4 GB. Real SavedModels compress about 1:1
  (float weights) to a few :1 (text assets); the floor keeps small, very compressible
  models from being refused. A model whose first 64 MiB or more are nearly all zeros
  is refused even if the rest would bring the whole archive under the ratio: raise
  the setting for it.
- **Members** (setting ``max_members``, default 100,000): files and folders counted
  as they are read; a SavedModel has a handful, the largest asset folders thousands.
- **Tar headers**: the pax (``x``/``g``) and GNU long-name/long-link (``L``/``K``) data
  before one member may take at most 1 MiB (``MAX_HEADER_BYTES``), refused from the
  header's declared size before tarfile reads it; at most 64 header reads
  (``MAX_HEADER_READS``) lead to one member, so chained headers cannot recurse
  tarfile to death; global pax headers may set at most 64 keys. tarfile's list of
  every header read is emptied as members are taken, so memory does not grow with them.
- **Paths**: at most 4096 bytes (``MAX_PATH_BYTES``, Linux's PATH_MAX), each part at
  most 255 bytes (NAME_MAX), at most 256 folders deep (``MAX_DEPTH``); a longer
  path could not be written on Linux, and deeper trees overflow recursive walkers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import queue
import shutil
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from hubpin.digests import Tree
from hubpin.errors import ArchiveError, CacheError, LimitError, write_error
from hubpin.reader import LOW, HashingReader

try:  # python-isal's igzip decompresses about twice as fast as zlib
    from isal import igzip as _gzip  # type: ignore[import-not-found]
    from isal.isal_zlib import error as _isal_error  # type: ignore[import-not-found]

    _GzipReader = getattr(_gzip, "_IGzipReader", None)  # private; GzipFile is the fallback
except ImportError:  # pragma: no cover - platforms without isal wheels
    _gzip = gzip  # type: ignore[no-redef]
    _isal_error = zlib.error  # type: ignore[misc]
    _GzipReader = None

_CHUNK = 1 << 20
_FEED = object()  # in the inflater's output: it runs low on input (see Inflated._wait)

DEFAULT_MAX_RATIO = 100.0  # the defaults of the settings max_compression_ratio, max_members
DEFAULT_MAX_MEMBERS = 100_000
RATIO_FLOOR = 64 << 20  # inflated bytes before the compression ratio is checked
MAX_HEADER_BYTES = 1 << 20  # pax, GNU long-name and header blocks read for one member
MAX_HEADER_READS = 64  # header reads for one member (each chained header takes two)
MAX_GLOBAL_KEYS = 64  # keys set by global pax headers, which tarfile keeps to the end
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 256


@dataclass
class Unpacked:
    tree: Tree
    archive_sha256: str
    archive_size: int


def member_path(name: str) -> str | None:
    """The safe relative POSIX path of a tar member, None for the root, or raise."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # bytes tarfile kept as surrogates: no name a tree digest has
        raw = name.encode("utf-8", "surrogateescape")
        raise ArchiveError(f"member {_shown(str(raw))} has a name that is not UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise ArchiveError(
            f"member {_shown(name)} has a path of {size} bytes, more than {MAX_PATH_BYTES}"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ArchiveError(f"member {name!r} has control characters in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"member {name!r} has an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p not in (".", "")]
    if ".." in parts:
        raise ArchiveError(f"member {name!r} points outside the archive ('..')")
    if len(parts) > MAX_DEPTH:
        raise ArchiveError(
            f"member {_shown(name)} is {len(parts)} levels deep, more than {MAX_DEPTH}"
        )
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ArchiveError(
                f"member {_shown(name)} has a name part of "
                f"{len(part.encode('utf-8', 'surrogateescape'))} bytes, more than the "
                f"{MAX_NAME_BYTES} a file system allows"
            )
    return "/".join(parts) or None


def _shown(name: str) -> str:
    """A member name for a message: quoted, and cut if long."""
    return repr(name) if len(name) <= 80 else repr(name[:80]) + f"… ({len(name)} characters)"


def gunzip_isal(raw: io.RawIOBase) -> Readable:
    """The decompressor sync uses: ISA-L's inflate (about 2× zlib), else the stdlib's.

    ISA-L's reader (what ``igzip.GzipFile`` wraps) inflates straight into the
    caller's buffer with the GIL released, where ``GzipFile.readinto`` would
    inflate into a new bytes object and copy it.
    """
    if _GzipReader is not None:
        return _GzipReader(raw, _CHUNK // 2)  # type: ignore[no-any-return]
    return _gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[no-any-return]


class Feeder(Protocol):
    """What receives the download for the inflating thread (:class:`HashingReader`)."""

    waited: bool

    def read_ahead(self, low: Callable[[], None], depth: int = 8) -> None: ...
    def feed(self, keep: int | None = None) -> bool: ...
    def stop_ahead(self) -> None: ...


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...
    def close(self) -> None: ...


class Inflated:
    """The decompressed stream as views of a few reused buffers, filled ahead in a thread or not.

    Reused buffers keep the allocator from handing out fresh pages for every
    megabyte (page faults were a tenth of a sync's CPU). With ``background``, a
    thread inflates up to ``depth`` buffers ahead: ISA-L and zlib release the GIL
    while they inflate, and so do sha256 and file writes, so the two halves of a
    sync share both cores. With a ``feeder`` (the download's reader), the thread
    taking the views also receives and hashes the download for the inflater while
    it waits for it, so that inflating, the longest path, has a core to itself: a
    third thread receiving beside the two took that core from it. A view is valid
    until the next call to :meth:`next`. An exception in the thread is raised here,
    where the plain path would raise it.
    """

    def __init__(
        self, source: Readable, background: bool, depth: int = 4, feeder: Feeder | None = None
    ) -> None:
        self._source = source
        self._feeder = feeder
        self._current: bytearray | None = None
        self._thread: threading.Thread | None = None
        if not background:
            self._spare = bytearray(_CHUNK)
            return
        self._stop = threading.Event()
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[bytearray, int] | BaseException | object | None] = (
            queue.SimpleQueue()
        )
        for _ in range(depth):
            self._free.put(bytearray(_CHUNK))
        if feeder is not None:
            feeder.read_ahead(lambda: self._full.put(_FEED))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        item: tuple[bytearray, int] | BaseException | None = None
        try:
            while (buffer := self._free.get()) is not None and not self._stop.is_set():
                n = self._source.readinto(memoryview(buffer))
                if not n:
                    break
                self._full.put((buffer, n))
        except BaseException as exc:  # handed to the reader, which raises it
            item = exc
        self._full.put(item)

    def next(self) -> memoryview | None:
        """The next piece of the stream, or None at its end."""
        if self._thread is None:
            n = self._source.readinto(memoryview(self._spare))
            return memoryview(self._spare)[:n] if n else None
        if self._current is not None:
            self._free.put(self._current)
            self._current = None
        item = self._wait()
        if isinstance(item, BaseException):
            self._full.put(item)
            raise item
        if item is None:
            self._full.put(None)  # stay at the end for later calls
            return None
        self._current, n = item
        return memoryview(self._current)[:n]

    def _wait(self) -> tuple[bytearray, int] | BaseException | None:
        """The next inflated buffer; until there is one, receive for the inflater (``feeder``).

        It says when it runs low (:data:`_FEED`); while it has enough, the download is
        received ahead only as long as chunks arrive at once: waiting for a slow network
        (the ranged 40 MB/s row: 1.74 s against 1.63 s) held up inflated bytes meanwhile.
        """
        feeder = self._feeder
        while True:
            try:
                item = self._full.get_nowait()
            except queue.Empty:
                if feeder is not None and feeder.feed(LOW if feeder.waited else None):
                    continue
                item = self._full.get()
            if item is not _FEED:
                return item  # type: ignore[return-value]
            assert feeder is not None
            while feeder.feed(LOW):
                pass

    def close(self) -> None:
        """Stop the thread and wait for it, so the raw stream has one reader again."""
        if self._thread is not None:
            self._stop.set()
            self._free.put(None)
            if self._feeder is not None:
                self._feeder.stop_ahead()  # it may be waiting for a chunk
            self._thread.join()
        self._source.close()


class TarStream:
    """What ``tarfile`` needs of a seekable file (read, tell, seek forward) over a stream.

    tarfile's own stream mode copies every byte several times through its
    buffers. Here tarfile reads only headers; a member's bytes are taken with
    :meth:`views` straight from the inflated buffers, hashed and written uncopied.
    """

    def __init__(
        self,
        inflated: Inflated,
        compressed: Callable[[], int] | None = None,
        max_ratio: float = DEFAULT_MAX_RATIO,
    ) -> None:
        self._inflated = inflated
        self._view = memoryview(b"")
        self._pos = 0
        self._compressed = compressed  # bytes of the archive read so far; None: not gzipped
        self._max_ratio = max_ratio
        self._header_bytes = self._header_reads = 0

    def tell(self) -> int:
        return self._pos

    def views(self, n: int) -> Iterator[memoryview]:
        """The next ``n`` bytes (fewer at the end), each view valid until the next one."""
        while n > 0:
            if not self._view:
                view = self._inflated.next()
                if view is None:
                    return
                self._check_ratio(self._pos + len(view))
                self._view = view
            piece = self._view[:n]
            self._view = self._view[len(piece) :]
            self._pos += len(piece)
            n -= len(piece)
            yield piece

    def _check_ratio(self, inflated: int) -> None:
        if self._compressed is None or inflated <= RATIO_FLOOR:
            return
        read = max(1, self._compressed())
        if inflated > self._max_ratio * read:
            raise LimitError(
                f"decompression bomb: {inflated} bytes inflated from the first {read} bytes "
                f"of the archive (ratio {inflated / read:.0f}:1, above max_compression_ratio = "
                f"{self._max_ratio:g}); refused, nothing was published. If the archive is "
                "trusted, raise max_compression_ratio in hubpin.toml or set "
                "HUBPIN_MAX_COMPRESSION_RATIO"
            )

    def read(self, n: int) -> bytes:
        """What tarfile reads: header blocks, and the pax and GNU long-name data they announce.

        Bounded per member (see :meth:`next_member`) before anything is read, so a
        header that declares gigabytes is refused without holding them.
        """
        self._header_bytes += n
        self._header_reads += 1
        if self._header_bytes > MAX_HEADER_BYTES:
            raise ArchiveError(
                f"the tar header at byte {self._pos} announces {n} bytes of pax or GNU "
                f"long-name data, more than the {MAX_HEADER_BYTES} bytes one member's "
                "headers may take (not read)"
            )
        if self._header_reads > MAX_HEADER_READS:
            raise ArchiveError(
                f"more than {MAX_HEADER_READS} tar header reads before one member "
                f"(chained pax or GNU long-name headers, at byte {self._pos})"
            )
        return b"".join([bytes(piece) for piece in self.views(n)])

    def next_member(self) -> None:
        """A member was taken: the next one's headers start a new budget."""
        self._header_bytes = self._header_reads = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < self._pos:
            raise ArchiveError("the archive's tar headers point backwards; a stream cannot")
        for _ in self.views(offset - self._pos):
            pass
        return self._pos


def unpack(
    reader: HashingReader,
    dest: Path | None,
    *,
    max_unpacked: int,
    max_ratio: float = DEFAULT_MAX_RATIO,
    max_members: int = DEFAULT_MAX_MEMBERS,
    gunzip: Callable[[io.RawIOBase], Readable] = gunzip_isal,
    background: bool = True,
) -> Unpacked:
    """Unpack ``reader`` into ``dest`` (or only hash it when ``dest`` is None).

    ``max_ratio`` and ``max_members`` are the settings ``max_compression_ratio`` and
    ``max_members`` (see the module's docstring). ``gunzip`` and ``background`` are
    for tests that check every path writes the same bytes, and for syncs that
    already keep every core busy with other models.
    """
    tree = Tree()
    try:
        try:
            gzipped = reader.peek(2) == b"\x1f\x8b"
            threaded = background and gzipped
            inflated = Inflated(
                gunzip(reader) if gzipped else reader, threaded, feeder=reader if threaded else None
            )
            try:
                stream = TarStream(inflated, (lambda: reader.size) if gzipped else None, max_ratio)
                for count, member in enumerate(_members(stream), 1):
                    if count > max_members:
                        raise too_many_members(max_members, "")
                    _take(stream, member, tree, dest, max_unpacked)
            finally:
                inflated.close()  # a background inflater stops before ``drain`` reads on
            reader.drain()
        except (tarfile.ReadError, tarfile.HeaderError) as exc:
            error = ArchiveError(f"not a valid tar or tar.gz archive ({exc})")
            raise reader.short_or(error) from None
        except (gzip.BadGzipFile, zlib.error, _isal_error, EOFError) as exc:
            error = ArchiveError(f"corrupt gzip data ({exc or 'ends early'})")
            raise reader.short_or(error) from None
        except OSError as exc:
            if exc.errno is None:  # isal reports a bad CRC as a bare OSError; writes carry one
                raise reader.short_or(ArchiveError(f"corrupt gzip data ({exc})")) from None
            raise write_error(exc, dest) from None
    finally:
        reader.close_ahead()  # after ``short_or``, which may read to the end
    return Unpacked(tree, reader.hexdigest(), reader.size)


def too_many_members(limit: int, known: str) -> LimitError:
    """The refusal of an archive past ``max_members``; ``known`` says how it is known early."""
    return LimitError(
        f"more than {limit} members (files and folders){known}; refused, nothing was "
        "published. If the archive is trusted, raise max_members in hubpin.toml or set "
        "HUBPIN_MAX_MEMBERS"
    )


def _members(stream: TarStream) -> Iterator[tarfile.TarInfo]:
    """Each member's header as tarfile parses it, holding none of them after it is taken."""
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
            while (member := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header it read; a stream needs none
                if len(tar.pax_headers) > MAX_GLOBAL_KEYS:
                    raise ArchiveError(
                        f"global pax headers set more than {MAX_GLOBAL_KEYS} keys "
                        f"(before member {_shown(member.name)})"
                    )
                yield member
                stream.next_member()
    except ValueError as exc:  # tarfile's parsers of pax sparse maps and numbers, on garbage
        raise ArchiveError(f"not a valid tar or tar.gz archive (bad header: {exc})") from None


def _take(
    stream: TarStream, member: tarfile.TarInfo, tree: Tree, dest: Path | None, limit: int
) -> None:
    path = member_path(member.name)
    if member.isdir():
        if path is None:
            return
        if path in tree.files:
            raise ArchiveError(f"member {member.name!r} is both a file and a folder")
        _not_below_a_file(member, path, tree)
        tree.add_dir(path)
        if dest is not None:
            (dest / path).mkdir(parents=True, exist_ok=True)
        return
    if not member.isfile() or member.issparse():
        kind = {
            tarfile.SYMTYPE: "a symlink",
            tarfile.LNKTYPE: "a hard link",
            tarfile.CHRTYPE: "a character device",
            tarfile.BLKTYPE: "a block device",
            tarfile.FIFOTYPE: "a FIFO",
        }.get(member.type, "a sparse file" if member.issparse() else f"of type {member.type!r}")
        raise ArchiveError(f"member {member.name!r} is {kind}; only files and folders are allowed")
    if path is None:
        raise ArchiveError(f"member {member.name!r} is a file at the archive's root folder")
    if path in tree.files or path in tree.dirs:
        raise ArchiveError(f"member {member.name!r} appears twice")
    _not_below_a_file(member, path, tree)
    if tree.size + member.size > limit:
        raise ArchiveError(
            f"unpacks to more than {limit} bytes (at member {member.name!r}); "
            "refused before writing it (limit: the lock's unpacked_size, or max_unpacked_size)"
        )
    if dest is not None:
        ensure_space(dest, member.size, f"member {member.name!r}")
    digest = hashlib.sha256()
    out = None
    if dest is not None:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644
        )
        out = os.fdopen(fd, "wb")
    size = 0
    try:
        for piece in stream.views(member.size):
            digest.update(piece)
            size += len(piece)
            if out is not None:
                out.write(piece)
        if out is not None:
            out.close()
    except OSError as exc:  # a write error carries no file name: name the member's file
        if out is None or exc.errno is None:  # errno-less: bad data from the decompressor
            raise
        raise write_error(exc, dest / path) from None
    finally:
        if out is not None:
            out.close()
    if size != member.size:
        raise ArchiveError(f"member {member.name!r} is truncated ({size} of {member.size} bytes)")
    tree.add_file(path, size, digest.hexdigest())


def _not_below_a_file(member: tarfile.TarInfo, path: str, tree: Tree) -> None:
    """A file or folder below a file is a tree no folder can hold (mkdir would fail, after
    the lock had pinned it)."""
    for parent in PurePosixPath(path).parents:
        if str(parent) in tree.files:
            raise ArchiveError(f"member {member.name!r} is below a file, {str(parent)!r}")


def ensure_space(where: Path, needed: int, what: str) -> None:
    """Refuse to start writing ``needed`` bytes that the file system cannot hold.

    Checked before unpacking (the lock's unpacked size) and before each member,
    so a full disk is reported up front instead of as a half-written entry.
    """
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        raise write_error(exc, where) from None
    if needed > free:
        raise CacheError(
            f"not enough space in {where.parent}: {what} needs {needed} bytes, "
            f"{free} are free; free some space (hubpin prune) or set cache_dir elsewhere"
        )
