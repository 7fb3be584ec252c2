"""Changing a file system in one step: a file written whole, two folders swapped.

:func:`write_atomic` is the one way hubpin writes a file that others may read
meanwhile (locks' contents, records, descriptors, the lock file, bundles): the
bytes go to a temp file with a unique name beside the target, then
``os.replace`` puts it in place, so a reader sees the old file or the new one and
two writers of one path never share a temp file.

Swapping two folders:

Replacing a cache entry with two renames (old aside, new in) leaves a moment in
which ``<key>/`` does not exist: a ``hub.load`` then, or a crash, finds no model.
Linux's ``renameat2(RENAME_EXCHANGE)`` (3.15+, glibc 2.28+) swaps two names
atomically: a reader sees the old complete folder or the new one, never neither.
ext4, xfs, btrfs, tmpfs and overlayfs (for folders in its upper layer) support it.
Measured on this project's test machines (Linux 6.18): it works on ext4, tmpfs and
overlayfs; a folder in an overlay's lower layer gives EXDEV, as a plain rename does.

No maintained PyPI package wraps it (``renameat2`` is a CFFI build last released in
2022 that refuses to import off Linux), so this calls libc through ctypes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# No such call, flag unsupported by this file system, or a swap across layers (overlayfs):
# the caller falls back to two renames, which report any real problem themselves.
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


@functools.cache  # ctypes costs ~2 ms to import: only a swap needs it, not every lock read
def _load() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without the wrapper (glibc < 2.28, some musl)
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def exchange(new: Path, old: Path) -> bool:
    """Swap the names ``new`` and ``old`` atomically: True if done, False where unsupported.

    Both must exist. Any other failure (permissions, read-only, missing) raises OSError.
    """
    renameat2 = _load()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), _RENAME_EXCHANGE) == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(new), None, str(old))


def temp_name(path: Path) -> Path:
    """A temp file's name beside ``path``, unique to this writer: ``.<name>.<32 hex>``."""
    return path.with_name(f".{path.name}.{os.urandom(16).hex()}")


def write_atomic(
    path: Path, data: bytes | str | Callable[[IO[bytes]], None], keep_mode: bool = False
) -> None:
    """Write ``path`` whole: ``data`` (or what ``data(fh)`` writes) goes to a unique temp
    file, which replaces ``path`` in one rename (with ``keep_mode``, keeping the old file's
    permissions). On any failure the temp file is removed and ``path`` is as it was;
    OSError (and whatever ``data`` raises) propagates."""
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        if keep_mode:
            with contextlib.suppress(OSError):
                shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
