"""hubpin: pin TensorFlow Hub models in a lock, sync them into tensorflow_hub's cache.

``import hubpin`` is light: the runtime API below is imported on first use, and
TensorFlow only when a model is loaded.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 10):  # noqa: UP036 - said before anything 3.10 fails with a traceback
    _TOO_OLD = (
        f"hubpin needs Python 3.10 or newer, this is {sys.version.split()[0]} "
        f"({sys.executable}); run it with python3.10 or newer (pip refuses to install it here)"
    )
    if sys.argv[:1] == ["-m"]:  # `python -m hubpin`, being located: the command line
        print(f"hubpin: error: {_TOO_OLD}", file=sys.stderr)
        raise SystemExit(2)
    raise ImportError(_TOO_OLD)

from typing import TYPE_CHECKING, Any

from hubpin.errors import (
    DamagedEntryError,
    HubpinError,
    LockfileError,
    LockMissingError,
    NotSyncedError,
    StaleLockError,
    UnknownAliasError,
)

__version__ = "0.1.0"
__all__ = [
    "DamagedEntryError",
    "HubpinError",
    "KerasLayer",
    "Lock",
    "LockMissingError",
    "LockfileError",
    "NotSyncedError",
    "PresetConflictError",
    "StaleLockError",
    "UnknownAliasError",
    "UnpinnedHandleError",
    "install",
    "load",
    "resolve",
]

if TYPE_CHECKING:
    from hubpin.runtime import (
        KerasLayer,
        Lock,
        PresetConflictError,
        UnpinnedHandleError,
        install,
        load,
        resolve,
    )

_RUNTIME = {
    "KerasLayer",
    "Lock",
    "PresetConflictError",
    "UnpinnedHandleError",
    "install",
    "load",
    "resolve",
}


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        from hubpin import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'hubpin' has no attribute {name!r}")
