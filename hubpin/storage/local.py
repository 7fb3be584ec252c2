"""Files on this machine as a :class:`hubpin.storage.Storage` (paths and ``file://``).

Conditional writes are built from what POSIX makes atomic: "only if absent" is a
hard link of a complete temp file (which fails if the name exists, so a reader
never sees a half-written object); "only if unchanged" first renames the object
aside to a unique name, which exactly one contender can do, compares the
version of what it moved, and puts it back if it was not the expected one. A
version is the inode, mtime and size, which any rewrite changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hubpin.atomic import write_atomic
from hubpin.errors import MissingError, write_error
from hubpin.storage import Conflict, Stat, Storage
from hubpin.storage.schemes import is_url

if TYPE_CHECKING:  # reading a file imports it: `status` only stats the cache
    from hubpin.download import Download

_CHUNK = 1 << 20


def path_of(location: str) -> Path:
    """The path a location names: a path (as given: relative to the working directory) or
    a file:// URL."""
    if is_url(location):  # file://
        import urllib.parse
        from urllib.request import url2pathname  # lazily: urllib.request costs 9 ms to import

        return Path(url2pathname(urllib.parse.urlsplit(location).path))
    return Path(location).expanduser()


def version_of(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


class LocalStorage(Storage):
    """A folder tree on this machine."""

    def open(
        self, location: str, start: int = 0, end: int | None = None, version: str | None = None
    ) -> Download:
        path = path_of(location)
        path = path if path.is_absolute() else Path.cwd() / path  # named so in messages
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            if version is not None:
                raise  # replaced since it was looked at: the caller looks again
            raise MissingError(f"{path}: archive not found") from None
        except OSError as exc:
            raise self.error(f"{path}: cannot read: {exc.strerror}") from None
        st = os.fstat(fh.fileno())
        if version is not None and version_of(st) != version:
            fh.close()
            raise FileNotFoundError(path)
        stop = st.st_size if end is None else min(end, st.st_size)
        fh.seek(start)

        def chunks() -> Iterator[bytes]:
            left = stop - start
            with fh:
                while left > 0 and (chunk := fh.read(min(_CHUNK, left))):
                    left -= len(chunk)
                    yield chunk

        from hubpin.download import Download

        return Download(path.as_posix(), st.st_size if start == 0 else stop - start, chunks())

    def stat(self, location: str) -> Stat | None:
        path = path_of(location)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self.error(f"{path}: cannot read: {exc.strerror}") from None
        if not path.is_file():
            return None
        return Stat(location, st.st_size, version_of(st))

    def put(
        self,
        location: str,
        data: bytes | Path,
        *,
        if_absent: bool = False,
        if_version: str | None = None,
        checksum: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Stat:
        path = path_of(location)
        body = data.read_bytes() if isinstance(data, Path) else data
        try:
            if if_version is not None:
                self._replace(path, body, if_version)
            elif if_absent:
                self._create(path, body)
            else:
                write_atomic(path, body)
            found = path.stat()
        except OSError as exc:
            raise self.error(str(write_error(exc, path))) from None
        return Stat(location, found.st_size, version_of(found))

    def _create(self, path: Path, body: bytes) -> None:
        tmp = path.with_name(f"{path.name}.tmp{uuid.uuid4().hex}")  # tensorflow_hub's lock temp
        try:
            tmp.write_bytes(body)
            os.link(tmp, path)
        except FileExistsError:
            raise Conflict(str(path)) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _aside(self, path: Path, version: str) -> Path:
        """Rename ``path`` aside if it is still ``version`` (Conflict otherwise); the new name."""
        aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
        os.rename(path, aside)  # FileNotFoundError: gone already
        if version_of(aside.stat()) != version:  # changed in between: give it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            aside.unlink()
            raise Conflict(str(path))
        return aside

    def _replace(self, path: Path, body: bytes, version: str) -> None:
        try:
            aside = self._aside(path, version)
        except FileNotFoundError:
            raise Conflict(str(path)) from None
        try:
            self._create(path, body)  # Conflict: someone created it meanwhile, and holds it
        finally:
            aside.unlink()

    def list(self, prefix: str) -> list[Stat]:
        """Files below a folder (``prefix`` ending in ``/``), or whose path starts with ``prefix``."""
        base = path_of(prefix)
        if prefix.endswith("/"):
            tops = [base] if base.is_dir() else []
        else:
            parent = base.parent
            tops = (
                [p for p in parent.iterdir() if p.name.startswith(base.name)]
                if parent.is_dir()
                else []
            )
        found = []
        for top in tops:
            paths = (
                [Path(d, n) for d, _, names in os.walk(top) for n in names]
                if top.is_dir()
                else [top]
            )
            for path in paths:
                with contextlib.suppress(OSError):
                    st = path.lstat()
                    found.append(Stat(str(path), st.st_size, version_of(st)))
        return sorted(found, key=lambda s: s.location)

    def delete(self, location: str, if_version: str | None = None) -> bool:
        path = path_of(location)
        try:
            if if_version is not None:
                path = self._aside(path, if_version)
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self.error(str(write_error(exc, path))) from None
        return True

    def copy(self, source: str, target: str) -> Stat:
        target_path = path_of(target)
        try:
            target_path.parent.mkdir(parents=True, exist_ok=True)
            with open(path_of(source), "rb") as src:
                write_atomic(target_path, lambda fh: shutil.copyfileobj(src, fh))
            found = target_path.stat()
        except OSError as exc:
            raise self.error(str(write_error(exc, target_path))) from None
        return Stat(target, found.st_size, version_of(found))

    def remove_hint(self, location: str) -> str:
        return "delete the lock file" if location.endswith(".lock") else f"delete {location}"

    def remove_tree(self, prefix: str) -> None:
        remove_tree(path_of(prefix), quiet=True)


def remove_tree(path: Path, *, quiet: bool = False) -> None:
    """Remove a file, a symlink (never what it points to) or a folder, whatever its modes.

    A folder without write or search permission is opened up and retried, so a
    damaged entry that was swapped out leaves no ``.tmp`` or ``.old`` behind.
    Already gone is fine; any other failure raises OSError unless ``quiet``.
    """

    def opened_up(function: object, failed: str, exc_info: object) -> None:
        if not os.path.lexists(failed):  # removed by an earlier retry
            return
        parent = os.path.dirname(failed)
        for folder in (parent, failed):
            with contextlib.suppress(OSError):
                if os.path.isdir(folder) and not os.path.islink(folder):
                    os.chmod(folder, 0o700)
        if os.path.isdir(failed) and not os.path.islink(failed):
            shutil.rmtree(failed)
        else:
            os.unlink(failed)

    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
            return
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        shutil.rmtree(path, onerror=opened_up)
    except FileNotFoundError:  # removed meanwhile (by its owner or another prune)
        return
    except OSError:
        if not quiet:
            raise
