"""Where a pinned archive's bytes come from: the ordered places to try, first that opens wins.

A sync reads an archive from one of these, in order:

1. a bundle (``sync --from OUT``): ``OUT/archives/<sha256>``, and nothing else,
   since ``--from`` is for machines without a network;
2. each ``[[mirrors]]`` entry whose prefix matches the location, rewritten;
3. the host itself (the handle's own URL, gs:// object or file; for a Kaggle
   model, the pinned version through Kaggle's API).

Whatever is read is verified against the lock by the caller, so no source can
change a model; a source that fails is skipped with a warning, except the last.
A new place to read archives from is one more :class:`Origin` here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hubpin.errors import FetchError, InputError, MissingError
from hubpin.handles import local_path, strip_query
from hubpin.kaggle.api import KaggleApi
from hubpin.kinds import ArchivePin
from hubpin.lockfile import Lock
from hubpin.settings import Mirror, Settings
from hubpin.storage.schemes import known, scheme
from hubpin.transport import Transport

if TYPE_CHECKING:
    from hubpin.download import Download

log = logging.getLogger("hubpin")
ARCHIVES = "archives"  # a bundle's folder of archives named by sha256
BUNDLE_LOCK = "models.lock"  # written last by `hubpin bundle`: a bundle with it is complete


@dataclass(frozen=True)
class Candidate:
    """One location to try, how to name it when it fails, and what "missing" means there."""

    location: str
    label: str  # for the warning when it fails and a later candidate is tried
    missing: str | None = None  # the message when nothing is there (instead of the transport's)


class Origin(Protocol):
    """A place archives may be read from: the candidates it offers for one archive."""

    def candidates(self, location: str, sha256: str | None) -> list[Candidate]: ...


@dataclass(frozen=True)
class Bundle:
    """A ``hubpin bundle`` folder: archives by sha256, so any handle's archive is found."""

    base: str

    def check(self, transport: Transport) -> None:
        """Refuse what is not a complete bundle: no lock means no bundle, or an interrupted one."""
        spec = scheme(self.base)
        if spec is None or not spec.bundles:
            stores = ", ".join(s.example for s in known("bundles") if s.remote)
            raise InputError(
                f"--from {self.base}: a bundle is a folder or a store prefix ({stores}) that "
                "`hubpin bundle` wrote"
            )
        if bundle_file(self.base):
            raise InputError(f"{self.base}: a bundle file; {unpack_then_sync(self.base)}")
        if not transport.exists(bundle_lock(self.base)):
            raise InputError(
                f"{self.base}: not a hubpin bundle (no {BUNDLE_LOCK}, which `hubpin bundle` writes "
                f"last, so an interrupted run leaves none); make it with: hubpin bundle {self.base}"
            )

    def check_lock(self, transport: Transport, lock: Lock, aliases: list[str], name: str) -> None:
        """Refuse a bundle whose lock pins other archives than ``lock`` for ``aliases``.

        Only where the store publishes a bundle whole (an OCI artifact, whose lock is read
        with its manifest anyway); a folder or bucket bundle is not, as before: each archive
        is still verified against ``lock``.
        """
        transport.storage(self.base).check_bundle(self.base, lock, aliases, name)

    def candidates(self, location: str, sha256: str | None) -> list[Candidate]:
        if not sha256:
            return []
        return [
            Candidate(
                bundle_archive(self.base, sha256),
                f"bundle {self.base}",
                f"{self.base}: the bundle has no archive {sha256}; "
                f"make it again with: hubpin bundle {self.base}",
            )
        ]


@dataclass(frozen=True)
class Mirrors:
    """``[[mirrors]]``: URL prefixes rewritten, in the order hubpin.toml lists them."""

    mirrors: tuple[Mirror, ...]

    def candidates(self, location: str, sha256: str | None) -> list[Candidate]:
        return [
            Candidate(target, f"mirror {strip_query(target)}")
            for mirror in self.mirrors
            if location.startswith(mirror.prefix)
            for target in [mirror.replace + location[len(mirror.prefix) :]]
        ]


@dataclass(frozen=True)
class Host:
    """Where the handle itself points."""

    def candidates(self, location: str, sha256: str | None) -> list[Candidate]:
        return [Candidate(location, strip_query(location))]


def bundle_file(base: str) -> bool:
    """Whether ``base`` is a bundle written as one file (``hubpin bundle OUT.tar``)."""
    local = local_path(base, Path.cwd())
    return local is not None and local.is_file()


def unpack_then_sync(tar: str) -> str:
    """What to run for a bundle carried as one ``.tar``: ``sync --from`` reads a folder."""
    return f"extract it first (mkdir b && tar xf {tar} -C b) and run: hubpin sync --from b"


def bundle_archive(base: str, sha256: str) -> str:
    """Where a bundle keeps the archive with this sha256 (in a folder, under a store prefix,
    or as a registry's blob: each store's back-end maps the name)."""
    return f"{base.rstrip('/')}/{ARCHIVES}/{sha256}"


def bundle_lock(base: str) -> str:
    """Where a bundle keeps its lock, the last thing `hubpin bundle` writes."""
    return f"{base.rstrip('/')}/{BUNDLE_LOCK}"


class Sources:
    """The origins of one command, in order, over one :class:`Transport`."""

    def __init__(
        self, settings: Settings, transport: Transport, root: Path, bundle: str | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.root = root
        self.origins: list[Origin] = (
            [Bundle(bundle)] if bundle is not None else [Mirrors(tuple(settings.mirrors)), Host()]
        )

    def candidates(self, location: str, sha256: str | None = None) -> list[Candidate]:
        found = [c for origin in self.origins for c in origin.candidates(location, sha256)]
        if not found:  # a bundle holds only archives the lock pins by sha256
            raise FetchError(f"{strip_query(location)}: no archive source can serve it")
        return found

    @property
    def kaggle(self) -> KaggleApi:
        """Kaggle's API, for resolving an unversioned Kaggle handle at lock time."""
        return self.transport.kaggle

    def location_of(self, pin: ArchivePin) -> str:
        """The host's location for a pinned archive: as tensorflow_hub would fetch it, or for a
        Kaggle model exactly the pinned version (``kaggle:o/m/f/v/N``), never "latest"."""
        return pin.source(self.settings, self.root)

    def open_pin(self, pin: ArchivePin) -> Download:
        return self.open(self.location_of(pin), pin.archive_sha256)

    def open(self, location: str, sha256: str | None = None) -> Download:
        """Open the first candidate that answers; each failure but the last is a warning."""
        *first, last = self.candidates(location, sha256)
        for candidate in first:
            try:
                return self._open(candidate)
            except FetchError as exc:
                log.warning("%s failed (%s); trying the next source", candidate.label, exc)
        return self._open(last)

    def _open(self, candidate: Candidate) -> Download:
        try:
            return self.transport.open(candidate.location)
        except MissingError:
            if candidate.missing is None:
                raise
            raise FetchError(candidate.missing) from None
