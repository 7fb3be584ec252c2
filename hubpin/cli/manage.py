"""``hubpin prune``, ``add``, ``remove``, ``bundle`` and ``env``."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import shlex
import sys
from pathlib import Path

from hubpin.bundle import write_bundle
from hubpin.cli.common import (
    _count,
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
    StaleLockError,
)
from hubpin.handlers import Removal, every
from hubpin.lockfile import differences
from hubpin.manifest import add_model
from hubpin.ops.remove import remove
from hubpin.owners import Recheck, prune_plan
from hubpin.paths import SETTINGS_FILE, find_upwards
from hubpin.project import Project
from hubpin.sources import bundle_file, unpack_then_sync

log = logging.getLogger("hubpin")


def cmd_prune(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    if project.manifest_path.exists():
        problems = differences(lock, project.manifest, project.settings)
        if problems:  # it would prune by pins the manifest no longer asks for
            raise StaleLockError(
                f"{project.lock_path.name} does not match {project.manifest_path.name}: "
                f"{'; '.join(problems)}; prune keeps what the lock pins, so run: hubpin lock, "
                "then hubpin prune"
            )
    cache = project.cache
    own_keys = {key for p in lock.models.values() for key in p.cache_keys()}
    recheck = Recheck(cache, project.lock_path, own_keys)
    plan = prune_plan(
        cache, project.lock_path, own_keys, all_unpinned=args.all_unpinned, foreign=args.foreign
    )
    own = [h.prunable(project, lock, args.all_unpinned) for h in every()]  # kinds' own caches
    entries: dict[str, list[Removal]] = {}  # an entry's folder, descriptor and record, by key
    removals = []  # leftovers of crashes
    for name, size in plan.remove:
        removal = Removal(name, size, functools.partial(cache.remove, name))
        base = name.rstrip("/").rsplit("/", 1)[-1]
        key = base.split(".")[0]
        if base in (key, f"{key}.descriptor.txt", f"{key}.hubpin.json"):
            entries.setdefault(key, []).append(removal)
        else:
            removals.append(removal)
    done = _Done(args)
    for removal in removals:
        done.remove(removal)
    kept = {cache.entry(key): why for key, why in plan.kept.items()}
    for key, parts in entries.items():
        if args.dry_run:
            for removal in parts:
                done.remove(removal)
            continue
        try:
            with cache.locked(key, project.settings.lock_timeout):  # as a sync holds it
                why = recheck.pinned_now(key)  # a project noted since the plan was made?
                if why is None:
                    for removal in parts:
                        done.remove(removal)
        except (HubpinError, OSError) as exc:
            done.failed += [removal.name for removal in parts]
            print(f"hubpin: error: could not remove {cache.entry(key)}: {exc}", file=sys.stderr)
            continue
        if why is not None:
            kept[cache.entry(key)] = why
    for removal in (r for found in own for r in found.remove):
        why = done.remove(removal)
        if why is not None:
            kept[removal.name] = why
    gone = [(u.where, functools.partial(cache.remove_note, u.note)) for u in plan.forget]
    gone += [(r.name, r.remove) for found in own for r in found.forget]
    for where, forget in gone:
        _say(
            args,
            f"{'would forget' if args.dry_run else 'forgot'} {where}: that lock no longer "
            "exists, so it pins nothing here (a moved project notes itself again at its next sync)",
        )
        if not args.dry_run:
            with contextlib.suppress(HubpinError, OSError):
                forget()
    kept |= {name: why for found in own for name, why in found.kept.items()}
    for name, why in kept.items():
        log.info("kept %s: %s", name, why)
    if kept:
        _say(args, _kept_summary(kept))
    verb = "would free" if args.dry_run else "freed"
    summary = f"{_count(done.removed, 'path')}, {verb} {_size(done.freed)}"
    if done.failed:
        failed = done.failed
        _say(
            args,
            f"{summary}; {_count(len(failed), 'path')} could not be removed: {', '.join(failed)}",
        )
        return 1
    _say(args, summary)
    return 0


class _Done:
    """What prune removed (or, with ``--dry-run``, would remove) so far, each path said."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.removed = 0
        self.freed = 0
        self.failed: list[str] = []

    def remove(self, removal: Removal) -> str | None:
        """Remove it (say so, count it); why it was kept instead, if its removal says."""
        name, size = removal.name, removal.size
        if self.args.dry_run:
            _say(self.args, f"would remove {name} ({_size(size)})")
        else:
            try:
                why = removal.remove()
            except (HubpinError, OSError) as exc:
                self.failed.append(name)
                print(f"hubpin: error: could not remove {name}: {exc}", file=sys.stderr)
                return None
            if why is not None:  # pinned since the plan was made
                return why
            _say(self.args, f"removed {name} ({_size(size)})")
        self.removed += 1
        self.freed += size
        return None


def _kept_summary(kept: dict[str, str]) -> str:
    """One line on the entries prune left because they are not this project's (-v lists them)."""
    pinned = sum(why.startswith("pinned by") for why in kept.values())
    foreign = sum(why == "not created by hubpin" for why in kept.values())
    other = len(kept) - pinned - foreign
    parts = []
    if pinned:
        parts.append(f"{pinned} pinned by other projects' locks")
    if other:
        parts.append(f"{other} created by other projects (--all-unpinned removes them)")
    if foreign:
        parts.append(f"{foreign} not created by hubpin (--foreign removes them)")
    noun = "entry" if len(kept) == 1 else "entries"
    return f"kept {len(kept)} {noun} this lock does not pin: {', '.join(parts)}"


def cmd_add(args: argparse.Namespace) -> int:
    path = getattr(args, "manifest", None) or Path("models.toml")
    add_model(path, args.alias, args.handle, args.model_format)
    _say(args, f"added {args.alias} to {path}; run: hubpin lock")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    project = _project(args)
    done = remove(project, args.aliases)
    _say(args, f"removed {', '.join(done.aliases)} from {' and '.join(done.files)}")
    if done.still_stale:
        stale = "; ".join(done.still_stale)
        _say(args, f"{project.lock_path.name} is still stale: {stale}; run: hubpin lock")
    if done.had_lock:
        _say(args, _prune_hint(project))
    return 0


def _prune_hint(project: Project) -> str:
    """What ``hubpin prune`` would free now, from the same plan prune makes."""
    try:
        lock = project.read_lock()
        keys = {k for p in lock.models.values() for k in p.cache_keys()}
        doomed = prune_plan(project.cache, project.lock_path, keys).remove
    except (HubpinError, OSError) as exc:
        return f"could not list what hubpin prune would free: {exc}"
    if not doomed:
        return f"nothing in {project.cache.location} for hubpin prune to free"
    return (
        f"hubpin prune would now free {_size(sum(size for _, size in doomed))} "
        f"({_count(len(doomed), 'path')} in {project.cache.location})"
    )


def cmd_bundle(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    aliases = list(_select(lock, args.aliases, project.lock_path))
    with _sources(project) as sources:
        written = write_bundle(lock, aliases, args.out, sources)
    kept = f" ({len(written.kept)} already there)" if written.kept else ""
    files = f", {_count(len(written.files), 'Hugging Face file')}" if written.files else ""
    if written.reference:  # an OCI artifact: its manifest digest, the result
        print(written.reference.rpartition("@")[2])
    if bundle_file(args.out):  # carried as one file: sync --from reads it extracted
        then = f"on each machine that syncs from it, {unpack_then_sync(args.out)}"
    else:
        then = f"on each machine that syncs from it run: hubpin sync --from {written.reference or args.out}"
    _say(
        args,
        f"wrote {args.out}: {_count(len(written.archives), 'archive')}{kept}{files} and "
        f"models.lock; {then}",
    )
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from hubpin.oci.image import build_image, environment

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
        f"{' '.join(v for v in environment() if not v.startswith('HUBPIN_'))} (the image sets "
        "them)",
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
