"""``hubpin lock``: resolve each manifest entry once and pin what it resolved to.

Which kind of pin an entry becomes is :func:`hubpin.kinds.expected_kind`'s answer;
how it is resolved is that kind's handler's (:meth:`hubpin.handlers.Handler.pin`).
An archive is streamed once: its sha256 and size, and the tree digest of what it
would unpack, come out of the same pass. When a cache is given, the archive is
unpacked into it at the same time, so a sync that needs the lock first does not
download twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hubpin.cache import Cache
from hubpin.digests import Tree
from hubpin.handlers import PinRequest, for_handle
from hubpin.handles import source_for
from hubpin.kinds import Pin
from hubpin.manifest import ModelSpec
from hubpin.settings import Settings
from hubpin.sources import Sources


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
    adopt: bool = True,
) -> Pin:
    """Pin one entry; with a cache, an archive is unpacked into it in the same pass.

    With ``adopt``, an entry this project's ``lock`` published for the same manifest
    entry (a lock interrupted before it wrote models.lock) is pinned from its record
    once it re-hashes to the tree recorded, instead of being downloaded again.

    What is published is the tree just hashed for the pin, so the entry matches
    the lock about to be written. When the cache is not ``required`` (``hubpin
    lock``, for which filling it is a bonus), one that cannot be written
    (read-only, full, unreachable) only costs the publishing: the model is pinned
    anyway, and ``-v`` says why it was not published. ``version`` is the Kaggle
    version an earlier lock pinned for an unversioned handle: re-pinning keeps it
    (only ``lock --upgrade`` passes None and moves on); ``commit`` likewise for a
    Hugging Face revision.
    """
    request = _request(spec, settings, sources, root, None, None, version, commit)
    request.adopt = adopt
    kind = for_handle(spec.handle, request.format, root, settings)
    return kind.pin_into(alias, request, cache, required)


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
    request = _request(spec, settings, sources, root, work, on_bytes, version, commit)
    return for_handle(spec.handle, request.format, root, settings).pin(request)


def _request(
    spec: ModelSpec,
    settings: Settings,
    sources: Sources,
    root: Path,
    work: Path | None,
    on_bytes: Callable[[int], None] | None,
    version: int | None,
    commit: str | None,
) -> PinRequest:
    fmt = spec.effective_format(settings)
    return PinRequest(
        spec,
        fmt,
        source_for(spec.handle, fmt, root),
        settings,
        sources,
        root,
        work,
        on_bytes,
        version,
        commit,
    )
