"""UNCOMPRESSED models on GCS: a folder pinned per object, and checked for drift at sync.

tensorflow_hub reads such a model in place at load time, so hubpin downloads
nothing: ``lock`` lists the folder and pins every object's size, checksums and
generation; ``sync`` lists it again and names every object that changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hubpin.errors import FetchError, IntegrityError, some
from hubpin.gcs.client import errors, filesystem, folder_prefix, list_all, split_url
from hubpin.settings import Settings

if TYPE_CHECKING:
    from hubpin.kinds import GcsPin

GCS_DIGEST_VERSION = "gcs-v1"


@dataclass
class RemoteObject:
    """One object below a gs:// folder, as listed (the lock's GcsObject is made from it)."""

    path: str  # relative to the folder, POSIX
    size: int
    generation: str
    crc32c: str | None
    md5: str | None


class _Pinned(Protocol):
    path: str
    size: int
    generation: str
    crc32c: str | None
    md5: str | None


def remote(item: dict[str, Any], prefix: str) -> RemoteObject:
    return RemoteObject(
        path=item["name"][len(prefix) :],
        size=int(item["size"]),
        generation=str(item["generation"]),
        crc32c=item.get("crc32c"),
        md5=item.get("md5Hash"),
    )


def list_objects(location: str, settings: Settings) -> list[RemoteObject]:
    bucket, name = split_url(location)
    prefix = folder_prefix(name)
    fs = filesystem(settings)
    with errors(location):
        try:
            items, _ = list_all(fs, bucket, prefix)
        except FileNotFoundError:
            raise FetchError(f"{location}: bucket {bucket} not found (HTTP 404)") from None
    # "folder/" placeholders some tools write hold no bytes and mean nothing to TensorFlow.
    found = [remote(item, prefix) for item in items if not item["name"].endswith("/")]
    return sorted(found, key=lambda o: o.path.encode("utf-8"))


def list_folder(location: str, settings: Settings) -> list[RemoteObject]:
    """The objects of an UNCOMPRESSED model folder, sorted; FetchError unless it is a SavedModel."""
    listing = list_objects(location, settings)
    if not listing:
        raise FetchError(
            f"{location}: no objects below this gs:// location; expected a SavedModel folder"
        )
    top = {o.path for o in listing if "/" not in o.path}
    if not top & {"saved_model.pb", "saved_model.pbtxt"}:
        shown = ", ".join(o.path for o in listing[:5]) + (", …" if len(listing) > 5 else "")
        raise FetchError(
            f"{location}: expected saved_model.pb at the top of the folder, found {len(listing)} "
            f"objects ({shown}); check the handle"
        )
    return listing


def objects_digest(listing: Iterable[_Pinned]) -> str:
    """A GCS folder's identity: exactly these objects at exactly these generations.

    Canonical form, version 1 (``gcs-v1:<sha256 hex>``): the sha256 of the text

        hubpin-gcs-v1\\n
        o <path> <size> <generation> <crc32c> <md5>\\n     for every object

    sorted by path (bytes of its UTF-8), paths relative to the folder and POSIX,
    checksums as GCS reports them (base64), ``-`` for a missing md5 (composite
    objects have none). GCS forbids CR and LF in object names and the four
    fields after the path hold no spaces, so the form is unambiguous. Unlike the
    tree digest of an archive, it includes generations: an UNCOMPRESSED model is
    read in place at load time, so a re-upload, even of the same bytes, is a
    change the lock must notice.
    """
    lines = sorted(
        (f"o {o.path} {o.size} {o.generation} {o.crc32c or '-'} {o.md5 or '-'}" for o in listing),
        key=lambda line: line[2:].encode("utf-8"),
    )
    text = "\n".join([f"hubpin-{GCS_DIGEST_VERSION}", *lines]) + "\n"
    return f"{GCS_DIGEST_VERSION}:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_folder(pin: GcsPin, settings: Settings) -> None:
    """Re-list a pinned gs:// folder; IntegrityError naming every object that drifted."""
    location = pin.location
    now = {o.path: o for o in list_objects(location, settings)}
    pinned = {o.path: o for o in pin.objects}
    changed = [
        f"{p} (generation {pinned[p].generation} → {now[p].generation})"
        if pinned[p].generation != now[p].generation
        else f"{p} (checksum or size differs at the same generation)"
        for p in sorted(pinned.keys() & now.keys())
        if _fingerprint(pinned[p]) != _fingerprint(now[p])
    ]
    added = sorted(now.keys() - pinned.keys())
    deleted = sorted(pinned.keys() - now.keys())
    if not (changed or added or deleted):
        return
    parts = [
        f"{word} {some(names)}"
        for word, names in (("changed", changed), ("added", added), ("deleted", deleted))
        if names
    ]
    raise IntegrityError(
        f"{location} differs from the lock: {'; '.join(parts)}; "
        "if the model changed upstream on purpose, run: hubpin lock"
    )


def _fingerprint(o: _Pinned) -> tuple[int, str, str | None, str | None]:
    return (o.size, o.generation, o.crc32c, o.md5)
