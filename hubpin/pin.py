"""``hubpin lock``: resolve each manifest entry once and pin what it resolved to.

An archive is streamed once: its sha256 and size, and the tree digest of what
it would unpack, come out of the same pass. When a work folder is given, the
archive is unpacked into it at the same time, so a sync that needs the lock
first does not download twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubpin.cache import Cache, Record
from hubpin.digests import Tree, hash_tree
from hubpin.errors import (
    ArchiveError,
    CacheError,
    FetchError,
    InputError,
    IntegrityError,
    LimitError,
)
from hubpin.handles import (
    Format,
    Kind,
    Source,
    archive_key,
    cache_key,
    local_path,
    relative_posix,
    source_for,
)
from hubpin.kaggle import configured
from hubpin.kinds import ArchivePin, FolderPin, GcsObject, GcsPin, HfPin, KagglePin, Pin
from hubpin.manifest import ModelSpec
from hubpin.owners import refuse_replacing
from hubpin.reader import HashingReader
from hubpin.settings import Settings
from hubpin.sources import Sources
from hubpin.storage.schemes import is_url
from hubpin.unpack import Unpacked, unpack

log = logging.getLogger("hubpin")


def pin_into_cache(
    alias: str,
    spec: ModelSpec,
    settings: Settings,
    sources: Sources,
    root: Path,
    cache: Cache | None,
    version: int | None = None,
    required: bool = True,
    commit: str | None = None,
) -> Pin:
    """Pin one entry; with a cache, an archive is unpacked into it in the same pass.

    What is published is the tree just hashed for the pin, so the entry matches
    the lock about to be written. When the cache is not ``required`` (``hubpin
    lock``, for which filling it is a bonus), one that cannot be written
    (read-only, full, unreachable) only costs the publishing: the model is pinned
    anyway, and ``-v`` says why it was not published. ``version`` is the Kaggle
    version an earlier lock pinned for an unversioned handle: re-pinning keeps it
    (only ``lock --upgrade`` passes None and moves on).
    """
    fmt = spec.effective_format(settings)
    if cache is None or source_for(spec.handle, fmt, root).kind is not Kind.ARCHIVE:
        return pin_model(spec, settings, sources, root, version=version, commit=commit)[0]
    key = _key_before_reading(spec.handle, root)
    if key is None:  # a local archive that cannot be read: pin_model says why
        return pin_model(spec, settings, sources, root, version=version, commit=commit)[0]
    pin: Pin | None = None
    try:
        with cache.locked(key, settings.lock_timeout) as work:
            pin, tree = pin_model(spec, settings, sources, root, work=work, version=version)
            if not isinstance(pin, ArchivePin) or pin.cache_key != key:
                raise FetchError(
                    f"{spec.handle} changed while it was read (its sha256 is not the one it "
                    "had a moment before); nothing was published. Run again: hubpin lock"
                )
            record = cache.read_record(key)
            refuse_replacing(cache, key, pin.tree_digest, spec.handle)
            if tree is not None and (record is None or record.tree_digest != pin.tree_digest):
                cache.publish(key, work, Record(spec.handle, pin.tree_digest, tree))
    except CacheError as exc:
        if required:
            raise
        if pin is None:  # failed before or while unpacking: hash it without the cache
            log.info(
                "%s: not filling the cache (%s); pinned without it, hubpin sync will fetch it",
                alias,
                exc,
            )
            return pin_model(spec, settings, sources, root, version=version)[0]
        log.info(
            "%s: pinned, but not published into the cache (%s); hubpin sync will fetch it",
            alias,
            exc,
        )
    assert pin is not None
    return pin


def _key_before_reading(handle: str, root: Path) -> str | None:
    """The cache key to lock and fill for an archive handle, before it is read.

    A local archive is keyed by its sha256 (:func:`hubpin.handles.archive_key`),
    so its file is hashed first: one extra read of a local file, where the
    unpacking it saves (``lock`` then ``sync``) costs far more. None when that
    file cannot be read.
    """
    local = local_path(handle, root)
    if local is None:
        return cache_key(handle)
    try:
        with open(local, "rb") as fh:
            sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    return archive_key(handle, sha256)


def pin_model(
    spec: ModelSpec,
    settings: Settings,
    sources: Sources,
    root: Path,
    work: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
    version: int | None = None,
    commit: str | None = None,
) -> tuple[Pin, Tree | None]:
    """Resolve one manifest entry into a pin, and the tree unpacked into ``work`` if any.

    ``commit`` is the one an earlier lock pinned for a Hugging Face handle (kept, as a
    Kaggle version is; None resolves the revision anew).
    """
    fmt = spec.effective_format(settings)
    source = source_for(spec.handle, fmt, root)
    if source.kind is Kind.HUGGINGFACE:
        return _huggingface_pin(spec, fmt, sources, commit), None
    kaggle = _kaggle_fields(spec, fmt, settings, sources, version)
    if kaggle:
        source = Source(Kind.ARCHIVE, kaggle.pop("location"))
    common = {
        "handle": spec.handle,
        "format": fmt,
        "io_device": spec.io_device,
        "tags": spec.tags,
        "expected_sha256": spec.sha256,
        "also": spec.also or None,
    }
    if source.kind is Kind.ARCHIVE:
        download = sources.open(source.location)
        reader = HashingReader.of(download, on_bytes=on_bytes)
        try:
            result = unpack(
                reader,
                work,
                max_unpacked=settings.max_unpacked_size,
                max_ratio=settings.max_compression_ratio,
                max_members=settings.max_members,
            )
        except ArchiveError as exc:
            if isinstance(exc, LimitError):
                raise  # it names the setting to raise; a re-lock would not help
            raise ArchiveError(
                f"{exc}; refused, nothing was published. Check that the handle points at "
                "the intended model archive, then run: hubpin lock"
            ) from None
        check_expected(spec.sha256, result)
        local = local_path(spec.handle, root)
        url = relative_posix(local, root) if local else download.final_url
        if local and is_url(spec.handle):  # a file:// URL is recorded as written
            url = spec.handle
        kind = KagglePin if kaggle else ArchivePin
        pin = kind(
            **common,
            kind=Kind.ARCHIVE,
            cache_key=archive_key(spec.handle, result.archive_sha256),
            url=url,
            archive_sha256=result.archive_sha256,
            archive_size=result.archive_size,
            tree_digest=result.tree.digest(),
            unpacked_size=result.tree.size,
            file_count=result.tree.file_count,
            **kaggle,
        )
        return pin, result.tree if work is not None else None
    if source.kind is Kind.FOLDER:
        folder = Path(source.location)
        if not folder.is_dir():
            raise FetchError(f"{folder}: folder not found (a path handle is read in place)")
        try:
            tree = hash_tree(folder)
        except OSError as exc:
            raise FetchError(f"{folder}: {exc}") from None
        pin = FolderPin(
            **common,
            kind=Kind.FOLDER,
            location=relative_posix(folder, root),
            tree_digest=tree.digest(),
            unpacked_size=tree.size,
            file_count=tree.file_count,
        )
        return pin, None
    from hubpin.gcs.pins import list_folder, objects_digest

    location = (
        sources.transport.ask_location(source.location) if source.ask_location else source.location
    )
    listing = list_folder(location, settings)
    pin = GcsPin(
        **common,
        kind=Kind.GCS,
        location=location,
        tree_digest=objects_digest(listing),
        unpacked_size=sum(o.size for o in listing),
        file_count=len(listing),
        objects=[GcsObject.model_validate(o.__dict__) for o in listing],
    )
    return pin, None


def _huggingface_pin(spec: ModelSpec, fmt: Format, sources: Sources, commit: str | None) -> HfPin:
    """The repository's commit and files, listed by the Hub's API; nothing is downloaded."""
    from hubpin.hfsync import api
    from hubpin.huggingface import pin_repo

    pinned = pin_repo(spec.handle, spec.include, spec.exclude, api(sources), commit)
    return HfPin(
        handle=spec.handle,
        format=fmt,
        kind=Kind.HUGGINGFACE,
        io_device=spec.io_device,
        tags=spec.tags,
        also=spec.also or None,
        include=spec.include,
        exclude=spec.exclude,
        location=f"hf://{pinned.repo}@{pinned.commit}",
        tree_digest=pinned.digest(),
        unpacked_size=sum(f.size for f in pinned.files),
        file_count=len(pinned.files),
        huggingface=pinned,
    )


def _kaggle_fields(
    spec: ModelSpec, fmt: Format, settings: Settings, sources: Sources, version: int | None
) -> dict[str, Any]:
    """For a Kaggle model: the exact version to fetch (as written, kept, or the current one
    Kaggle's API names) and the lock fields that pin it; empty for any other handle."""
    handle = configured(spec.handle, settings.kaggle_endpoint)
    if handle is None:
        return {}
    if fmt is Format.UNCOMPRESSED:
        raise InputError(
            "Kaggle models are served as archives, not read from gs:// in place; "
            'set format = "COMPRESSED" for this model'
        )
    exact = handle.with_version(handle.version or version or sources.kaggle.current_version(handle))
    return {
        "location": str(exact),
        "kaggle_version": exact.version,
        "versioned_handle": exact.model_url,
    }


def check_expected(expected: str | None, result: Unpacked) -> None:
    if expected and expected != result.archive_sha256:
        raise IntegrityError(
            f"archive sha256 is {result.archive_sha256}, the manifest expects {expected}; "
            "check the handle, or update sha256 in the manifest"
        )
