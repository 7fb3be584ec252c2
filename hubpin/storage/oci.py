"""``oci://`` (an OCI registry) as a :class:`hubpin.storage.Storage`, for bundles.

A registry keeps blobs by digest and manifests by tag, not objects by name, so this
back-end serves exactly the two names of a bundle (:mod:`hubpin.sources`) below an
``oci://registry/repository:tag`` (or ``@sha256:…``) reference:

``<ref>/archives/<sha256>``
    the blob ``sha256:<sha256>`` of the repository. The name is the digest, so the
    store's checksum is a sha256 the registry itself checks on upload, and a rerun of
    ``bundle`` trusts a HEAD alone. A blob another repository of the registry holds is
    mounted rather than uploaded (:meth:`OciStorage.adopt`).
``<ref>/models.lock``
    the artifact's lock. Reading it reads the tag's manifest (an OCI artifact, see
    :mod:`hubpin.oci.artifact`); writing it uploads the lock and the empty config and
    then pushes the manifest naming every archive this command put or found there,
    so a tag names a complete bundle or none.

Every other storage operation (listing, deleting, copying) has no meaning for a
registry here and is refused: an ``oci://`` location is never a ``cache_dir``.
One client per repository and command, shared by its threads; the one that writes
(:meth:`OciStorage.root_problem`, which ``bundle`` asks first) logs in for push.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from hubpin.download import Download
from hubpin.errors import FetchError, HubpinError, MissingError
from hubpin.fetch import Fetcher
from hubpin.settings import Settings
from hubpin.storage import Stat, Storage

if TYPE_CHECKING:
    from hubpin.lockfile import Lock
    from hubpin.oci.artifact import Artifact
    from hubpin.oci.client import RegistryClient
    from hubpin.oci.reference import Reference

_NAME = re.compile(r"(?P<base>.+?)/(?:archives/(?P<sha>[0-9a-f]{64})|(?P<lock>models\.lock))")


class OciStorage(Storage):
    """Bundles in an OCI registry (see the module docstring)."""

    checksum_name = "sha256"
    shared = True

    def __init__(self, settings: Settings, error: type[HubpinError] = FetchError) -> None:
        super().__init__(settings, error)
        self.http = Fetcher(settings)
        self._clients: dict[tuple[str, str, bool], RegistryClient] = {}  # (.., may push)
        self._artifacts: dict[str, Artifact | None] = {}
        self._pushed: dict[str, str] = {}  # base -> the manifest digest this command tagged
        self._held: dict[str, set[str]] = {}  # base -> archive sha256s put or found this command
        self._lock = threading.Lock()

    # -- names -------------------------------------------------------------------------------

    def _split(self, location: str) -> tuple[str, str | None]:
        """``(base, archive sha256)``, or ``(base, None)`` for the bundle's lock."""
        found = _NAME.fullmatch(location)
        if found is None:
            raise self.error(
                f"{location}: an OCI registry holds hubpin bundles here, as "
                "oci://registry/repository:tag (its archives and models.lock); nothing else"
            )
        return found["base"], found["sha"]

    def _client(self, base: str, push: bool = False) -> RegistryClient:
        """The repository's client; one that may push serves reads too (one login for bundle)."""
        from hubpin.oci.client import client
        from hubpin.oci.reference import parse

        ref = parse(base, need_tag=push)
        writer = (ref.registry, ref.repository, True)
        with self._lock:  # connecting under it: the threads of a command share one login
            if writer in self._clients:
                return self._clients[writer]
            key = writer if push else (ref.registry, ref.repository, False)
            if key not in self._clients:
                self._clients[key] = client(ref, self.http, "pull,push" if push else "pull")
            return self._clients[key]

    def _ref(self, base: str) -> Reference:
        from hubpin.oci.reference import parse

        return parse(base)

    def artifact(self, base: str) -> Artifact | None:
        """The bundle artifact the reference names, read once; None when the tag has none."""
        from hubpin.oci.artifact import read_artifact

        if base not in self._artifacts:
            self._artifacts[base] = read_artifact(self._ref(base), self._client(base))
        return self._artifacts[base]

    # -- reading -----------------------------------------------------------------------------

    def open(
        self, location: str, start: int = 0, end: int | None = None, version: str | None = None
    ) -> Download:
        base, sha = self._split(location)
        if sha is None:
            found = self.read(location)
            if found is None:
                raise MissingError(f"{location}: not found (the tag names no hubpin bundle)")
            return Download(location, len(found[0]), iter([found[0]]))
        if (start, end) != (0, None):
            self._unsupported(location, "a range of a blob")
        return self._client(base).open_blob(f"sha256:{sha}")

    def stat(self, location: str) -> Stat | None:
        base, sha = self._split(location)
        if sha is None:
            found = self.read(location)
            return None if found is None else found[1]
        size = self._client(base).blob_size(f"sha256:{sha}")
        if size is None:
            return None
        self._hold(base, sha)
        return Stat(location, size, f"sha256:{sha}", sha)

    def read(self, location: str) -> tuple[bytes, Stat] | None:
        base, sha = self._split(location)
        if sha is not None:
            return super().read(location)
        artifact = self.artifact(base)
        if artifact is None:
            return None
        data = artifact.lock_text.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        return data, Stat(location, len(data), str(artifact.ref.digest), digest)

    def check_bundle(self, base: str, lock: Lock, aliases: list[str], lock_name: str) -> None:
        """The artifact's lock must pin what ``lock`` pins for ``aliases`` (exit 1 naming each
        difference): the manifest is read once anyway, and names exactly what it holds."""
        artifact = self.artifact(base)
        if artifact is not None:
            artifact.refuse_unless_matches(lock, aliases, lock_name)

    # -- writing -----------------------------------------------------------------------------

    def root_problem(self, location: str) -> str | None:
        """Connect for push before ``bundle`` reads anything upstream: a missing tag, no
        credentials or a refused login are said now (the registry itself always exists)."""
        self._client(location.rstrip("/"), push=True)
        return None

    def adopt(self, location: str, sha256: str) -> Stat | None:
        """Mount the blob from another repository of the registry (``oci_mount_from``, then
        wherever the registry finds it); None where it cannot."""
        base, sha = self._split(location)
        if sha != sha256:
            return None
        registry = self._client(base, push=True)
        if not registry.mount(f"sha256:{sha}"):
            return None
        return self.stat(location)

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
        """An archive as its blob (the registry refuses bytes of another digest), or the lock
        and then the manifest. ``checksum``, when given, must be the name's sha256."""
        base, sha = self._split(location)
        if if_absent or if_version is not None:
            self._unsupported(location, "a conditional write")
        registry = self._client(base, push=True)
        if sha is None:
            body = data.read_bytes() if isinstance(data, Path) else data
            return self._finish(base, registry, body)
        if checksum is not None and checksum != sha:
            raise self.error(f"{location}: bytes of sha256 {checksum} cannot be blob {sha}")
        digest = f"sha256:{sha}"
        if isinstance(data, Path):
            with data.open("rb") as fh:
                size = data.stat().st_size
                registry.upload(digest, size, fh)
        else:
            size = len(data)
            registry.upload(digest, size, data)
        self._hold(base, sha)
        return Stat(location, size, digest, sha)

    def _finish(self, base: str, registry: RegistryClient, lock_text: bytes) -> Stat:
        from hubpin.oci.artifact import push_artifact

        with self._lock:
            held = sorted(self._held.get(base, ()))
        digest = push_artifact(registry, self._ref(base), lock_text.decode("utf-8"), held)
        self._artifacts.pop(base, None)
        self._pushed[base] = digest
        return Stat(
            f"{base}/models.lock", len(lock_text), digest, hashlib.sha256(lock_text).hexdigest()
        )

    def _hold(self, base: str, sha: str) -> None:
        with self._lock:
            self._held.setdefault(base, set()).add(sha)

    def sha256_checksum(self, sha256: str) -> str:
        return sha256

    def pinned(self, location: str) -> str | None:
        """``oci://registry/repository@sha256:…`` of the manifest this command tagged."""
        from hubpin.oci.reference import Reference

        base = location.rstrip("/")
        if base not in self._pushed:
            return None
        ref = self._ref(base)
        return str(Reference(ref.registry, ref.repository, None, self._pushed[base]))

    # -- what a registry does not do here ----------------------------------------------------

    def _unsupported(self, location: str, what: str) -> NoReturn:
        raise self.error(f"{location}: an OCI registry does not support {what} here")

    def list(self, prefix: str) -> list[Stat]:
        self._unsupported(prefix, "listing")

    def copy(self, source: str, target: str) -> Stat:
        self._unsupported(target, "copying")

    def delete(self, location: str, if_version: str | None = None) -> bool:
        self._unsupported(location, "deleting")
