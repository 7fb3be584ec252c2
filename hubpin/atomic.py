"""Swapping two folders in one step, where the kernel can.

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

import ctypes
import errno
import os
import sys
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# No such call, flag unsupported by this file system, or a swap across layers (overlayfs):
# the caller falls back to two renames, which report any real problem themselves.
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


def _load() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
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


_renameat2 = _load()


def exchange(new: Path, old: Path) -> bool:
    """Swap the names ``new`` and ``old`` atomically: True if done, False where unsupported.

    Both must exist. Any other failure (permissions, read-only, missing) raises OSError.
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(new), None, str(old))
