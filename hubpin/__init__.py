"""hubpin: pin TensorFlow Hub models in a lock, sync them into tensorflow_hub's cache.

``import hubpin`` is light: the runtime API below is imported on first use, and
TensorFlow only when a model is loaded.
"""

from __future__ import annotations

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
    "StaleLockError",
    "UnknownAliasError",
    "UnpinnedHandleError",
    "install",
    "load",
    "resolve",
]

if TYPE_CHECKING:
    from hubpin.runtime import KerasLayer, Lock, UnpinnedHandleError, install, load, resolve

_RUNTIME = {"KerasLayer", "Lock", "UnpinnedHandleError", "install", "load", "resolve"}


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        from hubpin import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'hubpin' has no attribute {name!r}")
