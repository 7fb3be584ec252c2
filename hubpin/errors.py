"""hubpin's exceptions: one small hierarchy that both the CLI and user code catch.

Every message is meant to be read by a person on one line: it names the alias,
handle or file, what was expected, what was found, and the command that fixes it.
The CLI prints ``str(error)`` and exits with ``error.exit_code``; it never shows
a traceback for a subclass of :class:`HubpinError`.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from pathlib import Path

INTERRUPTED = "hubpin: interrupted; nothing half-written was published"


def reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (``hubpin status | head -1``):
    a BrokenPipeError from there is no failure of hubpin's, unlike one from a server's
    socket. A pipe with no reader polls as an error condition."""
    import select
    import sys

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or not a file
        return False


class HubpinError(Exception):
    """Base class of every error hubpin raises on purpose."""

    exit_code = 1


class InputError(HubpinError):
    """A file or command line written by a person is wrong (exit 2)."""

    exit_code = 2


class ManifestError(InputError):
    """models.toml cannot be read or does not follow the schema."""


class SettingsError(InputError):
    """hubpin.toml or a HUBPIN_* variable is wrong."""


class LockfileError(InputError):
    """models.lock cannot be read or was edited into something invalid."""


class LockMissingError(HubpinError):
    """There is no lock where one is needed."""


class StaleLockError(HubpinError):
    """The lock does not match the manifest any more."""


class UnknownAliasError(HubpinError, KeyError):
    """An alias that the lock (or manifest) does not name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FetchError(HubpinError):
    """A download or listing failed (network, HTTP status, missing file)."""

    status: int | None = None  # the HTTP status that said so, where one did


class MissingError(FetchError):
    """Nothing is at a location (no such file or object)."""


class TruncatedError(FetchError):
    """A download ended before the size the server or the lock announced."""


class IntegrityError(HubpinError):
    """Bytes differ from what the lock (or manifest) pins."""


class ArchiveError(IntegrityError):
    """An archive is not a safe, well-formed tar or tar.gz."""


class LimitError(ArchiveError):
    """An archive exceeds a limit a setting can raise (a decompression bomb, too many members).

    Its message names the setting and how to raise it, so callers add only where.
    """


class Interrupted(HubpinError):
    """The user pressed Ctrl-C (or sent SIGINT): downloads stop, nothing is published."""

    exit_code = 130


class MissingDependencyError(HubpinError, ModuleNotFoundError):
    """The runtime API needs TensorFlow (the ``tf`` extra), which this environment lacks.

    Still a ``ModuleNotFoundError``, so code that already catches the import failure keeps working.
    """


class CacheError(HubpinError):
    """The cache cannot be read or written (permissions, disk full, lock held)."""


class NotSyncedError(CacheError):
    """A pinned COMPRESSED model is not in the cache."""


class DamagedEntryError(CacheError):
    """A cache entry exists but its files differ from hubpin's record."""


def unknown_alias(what: str, alias: str, known: Iterable[str], otherwise: str) -> UnknownAliasError:
    """``what``, then the closest known aliases (typos are the usual cause), else ``otherwise``."""
    import difflib  # only for the message of a mistake

    close = difflib.get_close_matches(alias, list(known), n=3)
    return UnknownAliasError(
        f"{what}; " + (f"did you mean {', '.join(close)}?" if close else otherwise)
    )


def write_error(exc: OSError, where: Path | None) -> CacheError:
    """A one-line error for a failed write: disk full, read-only, permissions."""
    return CacheError(f"cannot write {exc.filename or where}: {write_reason(exc)}")


def project_write_error(exc: OSError, path: Path, fix: str) -> HubpinError:
    """A project file (models.lock, models.toml) that cannot be written: the file itself is
    named, not the temp file beside it that the write went to, and what makes it writable."""
    return HubpinError(f"cannot write {path}: {write_reason(exc)}; {fix}")


_UNWRITABLE = ("the file system is read-only", "permission denied")


def unwritable_cache(message: str, cache_root: str) -> str:
    """``message``, with the way out when it says the cache folder cannot be written at all
    (a read-only mount, another user's folder): no sync can fill it, so point it elsewhere."""
    if f"cannot write {cache_root}" in message and message.endswith(_UNWRITABLE):
        return (
            f"{message}; point TFHUB_CACHE_DIR (or --cache-dir, cache_dir in hubpin.toml) at a "
            "folder hubpin can write"
        )
    return message


def write_reason(exc: OSError) -> str:
    """Why a write failed, in a person's words."""
    return {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EFBIG: "file too large for this file system or limit",
    }.get(exc.errno or 0, exc.strerror or str(exc))


def install_hint(extra: str) -> str:
    """What to run for one of hubpin's extras: its published packages, read from hubpin's own
    metadata (so pyproject.toml stays the one list), and the extra as a clone installs it.

    ``pip install 'hubpin[gcs]'`` would name a package that is not published (or is someone
    else's), so the hint never does.
    """
    from importlib import metadata

    try:
        requires = metadata.requires("hubpin") or []
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        requires = []
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    packages = [
        f"'{spec.strip()}'"
        for spec, _, where in (req.partition(";") for req in requires)
        if marker.search(where)
    ]
    clone = f"in a clone of hubpin: pip install '.[{extra}]'"
    if not packages:
        return f"run, {clone}"
    return f"run: pip install {' '.join(packages)} (hubpin's {extra} extra; or, {clone})"


NETWORK_CHECK = "check the network and any proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)"
MIRRORS_CHECK = "that the host is up, or fetch from a copy with [[mirrors]] in hubpin.toml"


def unreachable(what: str, reason: str, tries: str, check: str = MIRRORS_CHECK) -> str:
    """The one line for a server that does not answer, said once after the last try (each
    try before it is logged under ``-v`` only): what was tried, why, and what to check, in
    the order a person checks it (this machine's network, a proxy, then the host or the
    setting that chose it)."""
    counted = f" ({tries})" if tries else ""
    return f"cannot reach {what}: {reason}{counted}; {NETWORK_CHECK}, {check}"


def some(names: list[str], limit: int = 5) -> str:
    """The first ``limit`` names and how many more: keeps a one-line message one line."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
