"""The notes hubpin keeps beside a gs:// cache's entries (``hubpin-projects/``, see
:mod:`hubpin.owners`): small objects written whole, so a reader sees old or new bytes."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from hubpin.cache import MAX_NOTE, NOTES
from hubpin.gcs.client import delete, download, stat, upload

if TYPE_CHECKING:
    from gcsfs.core import GCSFileSystem


class GcsNotes:
    """:class:`hubpin.cache.Cache`'s note methods for :class:`hubpin.cache.gcs.GcsCache`."""

    bucket: str
    fs: GCSFileSystem

    def _name(self, relative: str) -> str:
        raise NotImplementedError

    def _errors(self, relative: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _list(
        self, relative: str, delimiter: str | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        raise NotImplementedError

    def read_note(self, name: str) -> bytes | None:
        relative = f"{NOTES}/{name}"
        with self._errors(relative):
            meta = stat(self.fs, self.bucket, self._name(relative))
            if meta is None or int(meta.get("size", 0)) > MAX_NOTE:  # too large: never read
                return None if meta is None else b"\0" * (MAX_NOTE + 1)
            try:
                return download(self.fs, self.bucket, self._name(relative), str(meta["generation"]))
            except FileNotFoundError:
                return None

    def write_note(self, name: str, data: bytes) -> None:
        relative = f"{NOTES}/{name}"
        with self._errors(relative):
            upload(self.fs, self.bucket, self._name(relative), data)

    def notes(self) -> list[str]:
        items, _ = self._list(f"{NOTES}/")
        start = len(self._name(f"{NOTES}/"))
        return sorted(item["name"][start:] for item in items)

    def remove_note(self, name: str) -> None:
        relative = f"{NOTES}/{name}"
        with self._errors(relative):
            delete(self.fs, self.bucket, self._name(relative))
