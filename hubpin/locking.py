"""``hubpin lock`` over a whole manifest: which aliases to pin, keep or drop, and the new lock.

A pin is kept while the manifest fields it was made from are unchanged (so a
plain ``lock`` never moves a Kaggle version); new, changed and forced aliases are
pinned in parallel (:func:`hubpin.pin.pin_into_cache`); the lock is written only
when every alias pinned, byte for byte the same when nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hubpin.errors import CacheError, HubpinError, InputError, MissingError, unwritable_cache
from hubpin.handlers import for_handle, handler
from hubpin.handles import meant_as_url
from hubpin.lockfile import (
    REWRITE,
    Lock,
    Pin,
    input_changes,
    key_conflicts,
    manifest_digest,
    preset_moved,
    spec_inputs,
    write_lock,
)
from hubpin.manifest import ModelSpec
from hubpin.pin import pin_into_cache
from hubpin.project import Project
from hubpin.sources import Sources

log = logging.getLogger("hubpin")


@dataclass
class Locked:
    """What a lock run did: the lock (None when an alias failed), whether its bytes changed."""

    lock: Lock | None
    changed: bool | None
    pinned: int
    kept: int
    failures: list[HubpinError] = field(default_factory=list)


def previous_lock(project: Project) -> Lock | None:
    """The lock as it is, to keep what is still current; an unreadable one is pinned anew."""
    try:
        return project.lock_or_none(checked=False)  # partition re-pins what does not hold
    except InputError as exc:
        why = str(exc).removesuffix(f"; {REWRITE}")  # what lock is doing now
        log.warning("ignoring unreadable lock (writing it anew): %s", why)
        return None


def lock_project(
    project: Project,
    sources: Sources,
    force: set[str],
    *,
    fill_cache: bool,
    must_fill: bool,
    upgrade: bool = False,
    on_pinned: Callable[[str, Pin], None] = lambda alias, pin: None,
    on_failed: Callable[[HubpinError], None] = lambda error: None,
) -> Locked:
    """Pin new, changed and forced aliases; keep the rest; write the lock unless one failed.

    With ``fill_cache``, what is downloaded is also unpacked into the cache, under
    its lock protocol; unless ``must_fill``, a cache that cannot be written only
    means nothing is published (``-v`` says why). A Kaggle model pinned from an
    unversioned handle keeps its version when it is re-pinned; with ``upgrade``,
    those of ``force`` (all, when empty) move to the version Kaggle calls current,
    and the ones already there are kept as they are.
    """
    manifest, settings = project.manifest, project.settings
    old = previous_lock(project)
    carried: dict[str, dict[str, Any]] = {}  # alias → what its pin keeps or moves to
    if upgrade:
        carried = current_versions(project, old, force, sources)
        force = set(carried)
    kept, todo = partition(project, old, force)
    for alias in todo:
        pin = old.models.get(alias) if old else None
        if alias in carried or pin is None or pin.handle != todo[alias].handle:
            continue
        carried[alias] = handler(pin).keeps(project, pin)
    versions = {alias: fields.get("version") for alias, fields in carried.items()}

    cache = project.cache if fill_cache and todo else None
    if cache is not None and not must_fill:
        try:
            cache.ensure_root()  # once, so an unreachable cache costs its timeout once
        except CacheError as exc:
            log.info("not filling the cache: %s; pinning only", exc)
            cache = None

    def pin_one(alias: str) -> Pin:
        spec = todo[alias]
        try:
            return pin_into_cache(
                alias,
                spec,
                settings,
                sources,
                project.root,
                cache,
                required=must_fill,
                adopt=alias not in force,  # re-pinning asked for: resolve it anew
                **carried.get(alias, {}),
            )
        except HubpinError as exc:
            raise named(exc, alias, spec.handle, settings.cache_root) from None

    failures: list[HubpinError] = []
    pinned: dict[str, Pin] = dict(kept)
    follows = shared_downloads(project, todo, versions)
    pool = ThreadPoolExecutor(max_workers=settings.jobs)
    try:
        futures = {
            alias: pool.submit(pin_one, alias) for alias in sorted(todo) if alias not in follows
        }
        for alias in sorted(todo):
            try:
                leader = pinned.get(follows.get(alias, ""))
                if leader is not None:
                    pinned[alias] = handler(leader).follow(leader, alias, todo[alias], settings)
                elif alias in follows:  # its leader failed: pin it alone, for its own message
                    pinned[alias] = pin_one(alias)
                else:
                    pinned[alias] = futures[alias].result()
                on_pinned(alias, pinned[alias])
            except HubpinError as exc:
                failures.append(exc)
                on_failed(exc)
    except BaseException:
        # Ctrl-C: leave now, not when the downloads in flight end (a stalled one waits for
        # read_timeout). A worker stopped mid-way has published nothing half-written: an
        # entry appears by one rename, and what was published is adopted by the next lock.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    for clash in key_conflicts(pinned) if not failures else []:
        failures.append(InputError(clash))
        on_failed(failures[-1])
    if failures:
        return Locked(None, None, len(todo), len(kept), failures)
    lock = Lock(manifest_digest=manifest_digest(manifest, settings), models=pinned)
    return Locked(lock, write_lock(project.lock_path, lock), len(todo), len(kept), failures)


def shared_downloads(
    project: Project, todo: dict[str, ModelSpec], versions: dict[str, int | None]
) -> dict[str, str]:
    """Aliases whose handles name one download (:meth:`hubpin.handlers.Handler.download`:
    say ``…/1`` and ``kaggle:…/1`` of one Kaggle variation), each → the first of them by
    name: that one is downloaded, the others pinned from it (``Handler.follow``)."""
    settings = project.settings
    first: dict[tuple[object, ...], str] = {}
    follows: dict[str, str] = {}
    for alias in sorted(todo):
        spec = todo[alias]
        fmt = spec.effective_format(settings)
        kind = for_handle(spec.handle, fmt, project.root, settings)
        found = kind.download(spec, fmt, versions.get(alias), settings)
        if found is None:
            continue
        same = (type(kind).__name__, *found)
        if same in first:
            follows[alias] = first[same]
        else:
            first[same] = alias
    return follows


def current_versions(
    project: Project, old: Lock | None, aliases: set[str], sources: Sources
) -> dict[str, dict[str, Any]]:
    """For ``lock --upgrade``: each alias (of ``aliases``, or all) whose host calls another
    version current than the one locked (an unversioned Kaggle handle, a Hugging Face
    branch that moved), with what to pin it at (:meth:`hubpin.handlers.Handler.upgrade`)."""
    moving: dict[str, dict[str, Any]] = {}
    for alias, spec in sorted(project.manifest.models.items()):
        if aliases and alias not in aliases:
            continue
        pin = old.models.get(alias) if old else None
        fmt = spec.effective_format(project.settings)
        kind = for_handle(spec.handle, fmt, project.root, project.settings)
        try:
            fields = kind.upgrade(project, spec, pin, sources)
        except HubpinError as exc:
            raise named(exc, alias, spec.handle) from None
        if fields is not None:
            moving[alias] = fields
    return moving


def partition(
    project: Project, old: Lock | None, force: set[str]
) -> tuple[dict[str, Pin], dict[str, ModelSpec]]:
    """The pins a lock keeps (unchanged in the manifest, not forced) and the models it pins."""
    kept: dict[str, Pin] = {}
    todo: dict[str, ModelSpec] = {}
    for alias, spec in project.manifest.models.items():
        pin = old.models.get(alias) if old else None
        if (
            pin is not None
            and alias not in force
            and pin.inputs() == spec_inputs(spec, project.settings)
            and not preset_moved(spec, pin)
            and not untrusted(project, alias, pin)
        ):
            kept[alias] = pin
        else:
            todo[alias] = spec
    return kept, todo


def untrusted(project: Project, alias: str, pin: Pin) -> list[str]:
    """Why a pin of the old lock is not one hubpin could have made (then it is pinned anew,
    never carried forward); empty when it holds."""
    problems = pin.derived_problems(project.root, project.settings)
    if problems:
        log.warning("%s: re-pinning, the lock's pin does not hold: %s", alias, "; ".join(problems))
    return problems


def lock_plan(project: Project, force: set[str]) -> list[dict[str, Any]]:
    """What ``hubpin lock`` would do per alias, as ``lock_project`` decides it; no network."""
    old = previous_lock(project)
    kept, todo = partition(project, old, force)
    rows = []
    for alias in sorted(set(kept) | set(todo) | set(old.models if old else ())):
        pin = old.models.get(alias) if old else None
        size = pin.unpacked_size if pin else None
        if alias in kept:
            rows.append(
                {"alias": alias, "action": "keep", "size": size, "reason": "pinned, unchanged"}
            )
            continue
        if alias not in todo:
            reason = "in the lock but not in the manifest"
            rows.append({"alias": alias, "action": "drop", "size": size, "reason": reason})
            continue
        if pin is None:
            reason = f"not in {project.lock_path.name}"
        else:
            changed = input_changes(todo[alias], pin, project.settings)
            changed = changed or pin.derived_problems(project.root, project.settings)
            reason = "; ".join(changed) or "re-pin requested"
        rows.append(
            {"alias": alias, "action": "pin", "size": None, "reason": f"{reason} (network)"}
        )
    return rows


def named(exc: HubpinError, alias: str, handle: str, cache_root: str = "") -> HubpinError:
    """``exc`` prefixed with the alias and handle it is about, the handle said once: an
    error that already starts with it (an HTTP error names the URL it got) keeps only one."""
    text = str(exc)
    if text.startswith(f"{handle}: "):
        text = text[len(handle) + 2 :]
    url = meant_as_url(handle) if isinstance(exc, MissingError) else None
    if url is not None:  # not a path that names nothing, but a URL written wrong: bad input
        return InputError(
            f"{alias} ({handle}): {text}; the handle is read as a path relative to the "
            f'manifest: if it is a URL, write handle = "{url}" in the manifest'
        )
    if cache_root:
        text = unwritable_cache(text, cache_root)
    return type(exc)(f"{alias} ({handle}): {text}")
