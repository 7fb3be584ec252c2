"""``hubpin remove`` as a function: drop aliases from the manifest and from the lock,
keeping the lock as fresh (or as stale) as it was for every other model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hubpin.lockfile import Lock, differences, manifest_digest, write_lock
from hubpin.manifest import load_manifest, remove_models
from hubpin.ops.common import known
from hubpin.project import Project


@dataclass
class Removed:
    aliases: list[str]
    files: list[str] = field(default_factory=list)  # the names of the files rewritten
    still_stale: list[str] = field(default_factory=list)  # why the lock stays stale
    had_lock: bool = False


def remove(project: Project, aliases: Sequence[str]) -> Removed:
    """Remove ``aliases`` from the manifest and the lock; an alias in neither is bad usage."""
    manifest, settings = project.manifest, project.settings
    lock = project.lock_or_none()
    known(aliases, set(manifest.models) | set(lock.models if lock else ()), project.manifest_path)
    doomed = set(aliases)
    done = Removed(sorted(doomed), had_lock=lock is not None)
    in_manifest = sorted(doomed & set(manifest.models))
    if in_manifest:
        remove_models(project.manifest_path, in_manifest)
        done.files.append(project.manifest_path.name)
    if lock is not None and doomed & set(lock.models):
        after = load_manifest(project.manifest_path)
        kept = {alias: pin for alias, pin in lock.models.items() if alias not in doomed}
        new = Lock(manifest_digest=manifest_digest(after, settings), models=kept)
        done.still_stale = differences(new, after, settings)
        if done.still_stale:  # stale before the removal, for other reasons: it must still say so
            new = Lock(manifest_digest=lock.manifest_digest, models=kept)
        write_lock(project.lock_path, new)
        done.files.append(project.lock_path.name)
    return done
