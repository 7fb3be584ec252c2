"""``hubpin prune``, ``add``, ``remove``, ``bundle`` and ``env``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from hubpin.bundle import write_bundle
from hubpin.cli.common import (
    _count,
    _known,
    _overrides,
    _project,
    _say,
    _select,
    _size,
    _sources,
)
from hubpin.errors import (
    HubpinError,
    ManifestError,
)
from hubpin.lockfile import Lock, differences, manifest_digest, write_lock
from hubpin.manifest import add_model, remove_models
from hubpin.paths import SETTINGS_FILE, find_upwards
from hubpin.project import Project


def cmd_prune(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    cache = project.cache
    doomed = cache.prunable({key for p in lock.models.values() for key in p.cache_keys()})
    for name, size in doomed:
        _say(args, f"{'would remove' if args.dry_run else 'removed'} {name} ({_size(size)})")
        if not args.dry_run:
            cache.remove(name)
    verb = "would free" if args.dry_run else "freed"
    _say(args, f"{_count(len(doomed), 'path')}, {verb} {_size(sum(size for _, size in doomed))}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    path = getattr(args, "manifest", None) or Path("models.toml")
    add_model(path, args.alias, args.handle, args.model_format)
    _say(args, f"added {args.alias} to {path}; run: hubpin lock")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    project = _project(args)
    manifest, settings = project.manifest, project.settings
    lock = project.lock_or_none()
    _known(
        args.aliases, set(manifest.models) | set(lock.models if lock else ()), project.manifest_path
    )
    doomed = set(args.aliases)
    in_manifest = sorted(doomed & set(manifest.models))
    if in_manifest:
        remove_models(project.manifest_path, in_manifest)
    files = [project.manifest_path.name] if in_manifest else []
    stale: list[str] = []
    if lock is not None and doomed & set(lock.models):
        from hubpin.manifest import load_manifest

        after = load_manifest(project.manifest_path)
        kept = {alias: pin for alias, pin in lock.models.items() if alias not in doomed}
        new = Lock(manifest_digest=manifest_digest(after, settings), models=kept)
        stale = differences(new, after, settings)
        if stale:  # stale before the removal, for other reasons: it must still say so
            new = Lock(manifest_digest=lock.manifest_digest, models=kept)
        write_lock(project.lock_path, new)
        files.append(project.lock_path.name)
    _say(args, f"removed {', '.join(sorted(doomed))} from {' and '.join(files)}")
    if stale:
        _say(args, f"{project.lock_path.name} is still stale: {'; '.join(stale)}; run: hubpin lock")
    if lock is not None:
        _say(args, _prune_hint(project))
    return 0


def _prune_hint(project: Project) -> str:
    """What ``hubpin prune`` would free now, from the cache's own prunable listing."""
    try:
        lock = project.read_lock()
        doomed = project.cache.prunable({k for p in lock.models.values() for k in p.cache_keys()})
    except (HubpinError, OSError) as exc:
        return f"could not list what hubpin prune would free: {exc}"
    if not doomed:
        return f"nothing in {project.cache.root} for hubpin prune to free"
    return (
        f"hubpin prune would now free {_size(sum(size for _, size in doomed))} "
        f"({_count(len(doomed), 'path')} in {project.cache.root})"
    )


def cmd_bundle(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    aliases = list(_select(lock, args.aliases, project.lock_path))
    with _sources(project) as sources:
        written = write_bundle(lock, aliases, args.out, sources)
    kept = f" ({len(written.kept)} already there)" if written.kept else ""
    if written.reference:  # an OCI artifact: its manifest digest, the result
        print(written.reference.rpartition("@")[2])
    _say(
        args,
        f"wrote {args.out}: {_count(len(written.archives), 'archive')}{kept} and models.lock; "
        f"on each machine that syncs from it run: hubpin sync --from "
        f"{written.reference or args.out}",
    )
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from hubpin.oci.image import TFHUB, build_image

    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    aliases = list(_select(lock, args.aliases, project.lock_path))
    with _sources(project) as sources:
        pushed = build_image(lock, aliases, args.out, project.cache, sources.transport)
    print(pushed.digest)
    _say(
        args,
        f"wrote {args.out}: {_count(len(pushed.aliases), 'model')} in one layer "
        f"({_size(pushed.layer_size)}, {pushed.layer}); mounted or copied at /models, "
        f"TFHUB_CACHE_DIR=/{TFHUB} (the image sets it)",
    )
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Works anywhere: outside a project, settings are flags, environment, defaults and the
    nearest hubpin.toml (or HUBPIN_CONFIG); HUBPIN_LOCK is printed only for a lock that exists."""
    try:
        project = _project(args, need_manifest=False)
    except ManifestError:  # neither a models.toml nor a models.lock here or above
        from hubpin.settings import load_settings

        found = find_upwards(SETTINGS_FILE)
        settings = load_settings(found.parent if found else Path.cwd(), _overrides(args))
        lock = None
    else:
        settings = project.settings
        lock = project.lock_path if project.lock_path.is_file() else None
    print(f"export TFHUB_CACHE_DIR={shlex.quote(settings.cache_root)}")
    if settings.format:
        print(f"export TFHUB_MODEL_LOAD_FORMAT={settings.format.value}")
    if lock is not None:
        print(f"export HUBPIN_LOCK={shlex.quote(str(lock))}")
    return 0
