"""What the operations share: choosing aliases, and the objects one command holds open."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hubpin.errors import HubpinError, StaleLockError, unknown_alias

# What fetches (the transport, the sources, the syncer) is imported by the commands that
# fetch, when they open it: `status`, `resolve` and `lock --check` never load urllib3,
# the unpacker or the stores.
if TYPE_CHECKING:
    from hubpin.lockfile import Lock, Pin
    from hubpin.plan import Outcome
    from hubpin.project import Project
    from hubpin.sources import Sources
    from hubpin.sync import Syncer


@contextlib.contextmanager
def open_sources(project: Project, bundle: str | None = None) -> Iterator[Sources]:
    """Where this command reads archives from (a bundle, else mirrors and hosts)."""
    from hubpin.sources import Sources
    from hubpin.transport import Transport

    transport = Transport(project.settings)
    try:
        yield Sources(project.settings, transport, project.root, bundle)
    finally:
        transport.close()


def register_use(project: Project, lock: Lock, outcomes: list[Outcome] | None = None) -> None:
    """Note in the cache that this lock uses it, so other projects' prune keeps its entries
    (once something of it is there: a sync that failed throughout leaves the cache as it was)."""
    if outcomes is not None and all(o.status == "failed" for o in outcomes):
        return
    from hubpin.handlers import handler
    from hubpin.owners import register

    keys = {k for p in lock.models.values() for k in p.cache_keys()}
    if keys:
        register(project.cache, project.lock_path, keys)
    for kind in {type(k): k for k in map(handler, lock.models.values())}.values():
        kind.note_use(project, lock)  # in a cache of the kind's own (Hugging Face's)


def syncer(project: Project, sources: Sources, offline: bool, full_verify: bool) -> Syncer:
    from hubpin.sync import Syncer

    return Syncer(project.cache, project.settings, sources, project.root, offline, full_verify)


def select(
    lock: Lock, aliases: Sequence[str], lock_path: Path, project: Project | None = None
) -> dict[str, Pin]:
    """The pins of ``aliases`` (all when empty); an unknown alias is bad usage (exit 2).
    With ``project``, an alias its manifest names but the lock does not is a stale lock
    (exit 1, ``run: hubpin lock``), not a typo."""
    if project is not None:
        unpinned(aliases, lock, project)
    known(aliases, lock.models, lock_path)
    return {a: lock.models[a] for a in aliases} if aliases else dict(lock.models)


def unpinned(aliases: Sequence[str], lock: Lock, project: Project) -> None:
    """Raise StaleLockError for the first of ``aliases`` the manifest names and the lock
    does not (a model added to models.toml without re-locking)."""
    missing = [a for a in aliases if a not in lock.models]
    if not missing or not project.manifest_path.is_file():
        return
    try:
        named = project.manifest.models
    except HubpinError:  # a manifest that does not read: the unknown alias is the news
        return
    for alias in missing:
        if alias in named:
            raise StaleLockError(
                f"{alias}: in {project.manifest_path} but not pinned in {project.lock_path}; "
                "run: hubpin lock"
            )


def known(aliases: Sequence[str], models: Iterable[str], where: Path) -> None:
    for alias in aliases:
        if alias not in models:
            error = unknown_alias(
                f"{where}: no model with alias {alias!r}",
                alias,
                models,
                f"known: {', '.join(sorted(models)) or 'none'}",
            )
            error.exit_code = 2  # on the command line, an unknown alias is bad usage
            raise error
