"""A hubpin bundle as an OCI artifact: the locked archives as blobs, the lock, one manifest.

``hubpin bundle oci://registry/repository:tag`` pushes::

    manifest   artifactType application/vnd.hubpin.bundle.v1, config the empty
               descriptor (OCI 1.1), annotations naming every alias bundled
    layers     one per locked archive: digest sha256:<archive_sha256> (the lock's
               digest *is* the blob digest, so nothing is hashed again and the
               registry itself refuses bytes that do not match), title
               archives/<sha256>, dev.hubpin.aliases naming who uses it;
               last, models.lock (application/vnd.hubpin.lock.v1+toml)

Titles make ``oras pull`` of the artifact a folder bundle (``archives/<sha256>``
and ``models.lock``). Blobs the repository already holds are not sent again, and
where the registry allows, they are mounted from another repository of it
(``oci_mount_from``). The manifest is written last, so a tag that names one
names a complete bundle.

``hubpin sync --from oci://…:tag`` (or ``@sha256:<digest>``) reads the manifest
once, refuses an artifact whose lock differs from the worker's own for the
aliases being synced (naming each difference), and then reads each archive
blob by digest, verified against the worker's lock exactly as any download.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hubpin.errors import (
    FetchError,
    InputError,
    IntegrityError,
    LockfileError,
    MissingError,
    StaleLockError,
)
from hubpin.lockfile import Lock
from hubpin.oci.client import OCI_MANIFEST, RegistryClient
from hubpin.oci.reference import Reference

log = logging.getLogger("hubpin")
ARTIFACT_TYPE = "application/vnd.hubpin.bundle.v1"
ARCHIVE_TYPE = "application/vnd.hubpin.archive.v1"
LOCK_TYPE = "application/vnd.hubpin.lock.v1+toml"
TITLE = "org.opencontainers.image.title"
ALIASES = "dev.hubpin.aliases"
EMPTY_CONFIG = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
    "data": "e30=",
}


def bundle_manifest(lock: Lock, lock_text: str, archives: list[str]) -> bytes:
    """The artifact's manifest: byte-for-byte the same for the same lock and archives."""
    users: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for alias, pin in sorted(lock.models.items()):
        for sha, size in pin.archives().items():
            if sha in archives:
                users.setdefault(sha, []).append(alias)
                sizes[sha] = size
    layers = [
        {
            "mediaType": ARCHIVE_TYPE,
            "digest": f"sha256:{sha}",
            "size": sizes[sha],
            "annotations": {TITLE: f"archives/{sha}", ALIASES: ",".join(users[sha])},
        }
        for sha in sorted(users)
    ]
    data = lock_text.encode("utf-8")
    layers.append(
        {
            "mediaType": LOCK_TYPE,
            "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
            "size": len(data),
            "annotations": {TITLE: "models.lock"},
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": EMPTY_CONFIG,
        "layers": layers,
        "annotations": {ALIASES: ",".join(a for sha in sorted(users) for a in users[sha])},
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")


def push_artifact(
    registry: RegistryClient, ref: Reference, lock_text: str, archives: list[str]
) -> str:
    """Upload the lock and the empty config, then tag the manifest naming ``archives`` (the
    blobs already in the repository): the manifest's digest. Pushed last, so a tag names
    a complete bundle or none."""
    data = lock_text.encode("utf-8")
    lock = _parse_lock(lock_text, Path(f"{ref}#models.lock"))
    registry.upload(f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), data)
    registry.upload(str(EMPTY_CONFIG["digest"]), 2, b"{}")
    body = bundle_manifest(lock, lock_text, archives)
    assert ref.tag
    return registry.put_manifest(ref.tag, body)


@dataclass(frozen=True)
class Artifact:
    """What ``sync --from oci://…`` found: the manifest's digest, its archives and lock."""

    ref: Reference  # pinned to the manifest's digest
    archives: dict[str, int]  # sha256 -> size
    lock: Lock
    lock_text: str

    def refuse_unless_matches(self, mine: Lock, aliases: list[str], lock_name: str) -> None:
        """Refuse (exit 1) when, for an alias being synced, the artifact's lock pins another
        archive than this machine's lock, or the artifact lacks the archive."""
        problems = []
        for alias in aliases:
            pin, theirs = mine.models[alias], self.lock.models.get(alias)
            wanted = pin.archives()
            if not wanted:
                continue  # not fetched as an archive: nothing of it is in a bundle
            if theirs is None:
                problems.append(f"{alias} is not in the artifact's lock")
                continue
            ours, other = pin.model_dump(mode="json"), theirs.model_dump(mode="json")
            differ = [
                f"{alias}: {key} is {other.get(key)!r} in the artifact, {ours.get(key)!r} in "
                f"{lock_name}"
                for key in sorted(set(ours) | set(other))
                if ours.get(key) != other.get(key)
            ]
            if not differ:
                differ = [
                    f"{alias}: the artifact has no archive sha256:{sha}"
                    for sha, size in wanted.items()
                    if self.archives.get(sha) != size
                ]
            problems += differ
        if problems:
            raise StaleLockError(
                f"{self.ref}: its lock differs from {lock_name}: {'; '.join(problems)}; "
                f"bundle this lock (hubpin bundle oci://{self.ref.registry}/"
                f"{self.ref.repository}:<tag>) or sync with the lock the artifact was made from"
            )


def read_artifact(ref: Reference, registry: RegistryClient) -> Artifact | None:
    """The bundle artifact ``ref`` names, its manifest and lock checked; None when the
    registry has no manifest there (a bundle run that was stopped leaves none: the tag is
    pushed last); InputError if it is not a bundle (exit 2: the --from argument is wrong)."""
    try:
        body, digest = registry.get_manifest()
    except MissingError:
        return None
    try:
        manifest = json.loads(body)
        layers = manifest["layers"]
        kind = manifest.get("artifactType") or manifest.get("config", {}).get("mediaType")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(
            f"{ref}: not a hubpin bundle (its manifest is not an OCI image manifest)"
        ) from None
    if kind != ARTIFACT_TYPE:
        raise InputError(
            f"{ref}: not a hubpin bundle (artifactType {kind!r}, expected {ARTIFACT_TYPE}); "
            f"make one with: hubpin bundle {ref}"
        )
    archives, lock_digest = {}, None
    for layer in layers:
        if layer.get("mediaType") == LOCK_TYPE:
            lock_digest = layer["digest"]
        elif layer.get("mediaType") == ARCHIVE_TYPE:
            archives[str(layer["digest"]).removeprefix("sha256:")] = int(layer["size"])
    pinned = Reference(ref.registry, ref.repository, ref.tag, digest)
    if lock_digest is None:
        raise InputError(f"{pinned}: the artifact holds no models.lock")
    text = registry.read_blob(lock_digest).decode("utf-8", "replace")
    try:
        lock = _parse_lock(text, Path(f"{pinned}#models.lock"))
    except LockfileError as exc:
        raise FetchError(f"the artifact's lock is not one this hubpin reads: {exc}") from None
    return Artifact(pinned, archives, lock, text)


def _parse_lock(text: str, name: Path) -> Lock:
    """A lock's text as a :class:`Lock`; IntegrityError for TOML that does not parse."""
    from hubpin.tomlfile import tomllib, validate

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IntegrityError(f"{name}: invalid TOML: {exc}") from None
    return validate(Lock, data, name, text, LockfileError)
