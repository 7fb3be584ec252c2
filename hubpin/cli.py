"""The ``hubpin`` command. It never imports TensorFlow.

Reports go to stderr (like uv and Cargo); what a script asks for (``status``,
``resolve``, ``env``, ``--json``) goes to stdout. Every HubpinError ends in one
line and its exit code: 1 for a failed check or operation, 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hubpin import stamp
from hubpin.bundle import write_bundle
from hubpin.errors import (
    HubpinError,
    InputError,
    ManifestError,
    NotSyncedError,
    StaleLockError,
    unknown_alias,
)
from hubpin.handles import Format
from hubpin.kaggle import configured
from hubpin.kinds import ArchivePin, FolderPin, GcsPin, KagglePin
from hubpin.lockfile import Lock, Pin, differences, manifest_digest, write_lock
from hubpin.locking import lock_plan, lock_project
from hubpin.manifest import add_model, remove_models
from hubpin.paths import SETTINGS_FILE, find_upwards
from hubpin.project import Project
from hubpin.sources import Bundle, Sources
from hubpin.sync import Outcome, Step, Syncer
from hubpin.transport import Transport

log = logging.getLogger("hubpin")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args)
    if args.version:
        print("\n".join(_versions(getattr(args, "verbose", False))))
        return 0
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except HubpinError as exc:
        print(f"hubpin: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"hubpin: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hubpin: interrupted; nothing half-written was published", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("project options")
    g.add_argument(
        "-m", "--manifest", type=Path, default=argparse.SUPPRESS, help="models.toml to use"
    )
    g.add_argument(
        "--lock",
        type=Path,
        default=argparse.SUPPRESS,
        help="lock file (default: <manifest stem>.lock)",
    )
    g.add_argument(
        "--cache-dir",
        "--tfhub_cache_dir",
        dest="cache_dir",
        default=argparse.SUPPRESS,
        help="cache folder (default: TFHUB_CACHE_DIR, hubpin.toml, $TMPDIR/tfhub_modules)",
    )
    g.add_argument(
        "--tfhub_model_load_format",
        "--format-default",
        dest="load_format",
        type=_format,
        default=argparse.SUPPRESS,
        help="default format for models that set none (COMPRESSED, UNCOMPRESSED, AUTO)",
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only"
    )
    g.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="more detail"
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="progress bars (default: when stderr is a terminal)",
    )

    parser = _Parser(
        prog="hubpin",
        parents=[common],
        description="Pin TensorFlow Hub models in a lock and sync them into tensorflow_hub's cache.",
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="print hubpin's version (with -v, also those of the packages that decide its behaviour)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("lock", cmd_lock, "pin every model of the manifest into the lock")
    check = p.add_mutually_exclusive_group()
    check.add_argument(
        "--check", action="store_true", help="exit 1 if the lock is missing or stale (no network)"
    )
    _dry_run_flags(p, check, "what would be pinned, kept or dropped (no network, writes nothing)")
    check.add_argument(
        "--upgrade",
        action="store_true",
        help="move unversioned Kaggle handles to their current version (ALIAS…: only these)",
    )
    p.add_argument(
        "--fill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also unpack what is downloaded into the cache, so a later sync has nothing to fetch "
        "(default: the lock_fills_cache setting, true); --no-fill only hashes",
    )
    p.add_argument(
        "aliases", nargs="*", metavar="ALIAS", help="re-pin only these (default: new or changed)"
    )

    p = command("sync", cmd_sync, "make the cache match the lock (locking first if needed)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--locked", action="store_true", help="fail (exit 1) instead of updating a stale lock"
    )
    mode.add_argument(
        "--frozen", action="store_true", help="use the lock as is, without reading the manifest"
    )
    p.add_argument("--offline", action="store_true", help="never open a network connection")
    p.add_argument("--jobs", "-j", type=int, default=None, help="models synced at once")
    p.add_argument(
        "--verify", action="store_true", help="re-hash present entries instead of the size check"
    )
    p.add_argument(
        "--from",
        dest="bundle",
        default=None,
        metavar="BUNDLE",
        help="take archives only from what `hubpin bundle` wrote (a folder or gs://bucket/prefix), "
        "verified against the lock; never from upstream",
    )
    _dry_run_flags(
        p,
        p,
        "what would be downloaded, adopted, replaced or left (no network if locked; writes nothing)",
    )
    p.add_argument("aliases", nargs="*", metavar="ALIAS")

    p = command("verify", cmd_verify, "re-hash cached models against the lock")
    p.add_argument("--repair", action="store_true", help="re-fetch whatever is damaged")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("aliases", nargs="*", metavar="ALIAS")

    p = command("status", cmd_status, "one row per alias: format, size, cache state")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")

    p = command(
        "resolve", cmd_resolve, "print the local path (COMPRESSED) or gs:// location of an alias"
    )
    p.add_argument("alias", metavar="ALIAS")

    p = command("prune", cmd_prune, "remove cache entries and leftovers the lock does not name")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    p = command("add", cmd_add, "add a model to the manifest")
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("handle", metavar="HANDLE")
    p.add_argument("--format", type=_format, default=None, dest="model_format")

    p = command("remove", cmd_remove, "remove models from the manifest and the lock")
    p.add_argument("aliases", nargs="+", metavar="ALIAS")

    p = command(
        "bundle",
        cmd_bundle,
        "write the locked archives and the lock to a folder, a .tar or gs://bucket/prefix, "
        "for `hubpin sync --from OUT` (air-gapped machines, fleets)",
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="a folder, a .tar file or gs://bucket/prefix; rerunning finishes an interrupted "
        "bundle and writes only what is missing",
    )
    p.add_argument("aliases", nargs="*", metavar="ALIAS")

    p = command(
        "outdated",
        cmd_outdated,
        "locked vs current version of each Kaggle-hosted model; exit 1 if any is behind",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")

    command("env", cmd_env, "print shell exports that point tensorflow_hub at this cache")
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, with a one-line suggestion for a mistyped command (``synk`` → sync)."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            names = list(action.choices)
            close = difflib.get_close_matches(value, names, n=3)
            hint = (
                f"did you mean: {', '.join(close)}?" if close else f"commands: {', '.join(names)}"
            )
            self.exit(2, f"{self.prog}: error: unknown command {value!r}; {hint}\n")
        super()._check_value(action, value)


def _dry_run_flags(
    p: argparse.ArgumentParser, group: argparse._ActionsContainer, help: str
) -> None:
    group.add_argument("--dry-run", action="store_true", help=help)
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON on stdout")


# Versions that decide hubpin's behaviour, read from package metadata (never imported:
# the CLI must not import TensorFlow).
_VERSIONED = (
    "tensorflow",
    "tensorflow-hub",
    "kagglehub",
    "isal",
    "gcsfs",
    "urllib3",
    "pydantic",
    "google-crc32c",
)


def _versions(verbose: bool) -> list[str]:
    import importlib.metadata
    import platform

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    from hubpin import __version__

    lines = [f"hubpin {version('hubpin') or __version__}"]
    if verbose:
        python = (
            f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})"
        )
        lines.append(f"  {'python':<15} {python}")
        lines.append(f"  {'platform':<15} {platform.platform()}")
        for name in _VERSIONED:
            lines.append(f"  {name:<15} {version(name) or 'not installed'}")
    return lines


# ---------------------------------------------------------------- commands


def cmd_lock(args: argparse.Namespace) -> int:
    project = _project(args)
    manifest = project.manifest
    _known(args.aliases, manifest.models, project.manifest_path)
    _json_needs_dry_run(args)
    if args.dry_run:
        return _print_lock_plan(args, project, lock_plan(project, set(args.aliases)))
    if args.check:
        lock = project.read_lock()
        problems = differences(lock, manifest, project.settings)
        if problems:
            raise StaleLockError(
                f"{project.lock_path.name} is stale: {'; '.join(problems)}; run: hubpin lock"
            )
        _say(args, f"{project.lock_path.name} is up to date ({_count(len(lock.models), 'model')})")
        return 0
    fill = project.settings.lock_fills_cache if args.fill is None else args.fill
    at_start = stamp.sources_state(project)
    with _sources(project) as sources:
        lock, changed = _lock(
            args,
            project,
            sources,
            set(args.aliases),
            fill=fill,
            must_fill=False,
            upgrade=args.upgrade,
        )
    if lock is not None and fill:
        _stamp_after_lock(project, args.argv, lock, at_start)
    return 0 if changed is not None else 1


def cmd_sync(args: argparse.Namespace) -> int:
    bundle = args.bundle
    if bundle is not None:
        args.offline = True  # archives come from the bundle alone: no upstream, no locking
    _json_needs_dry_run(args)
    project = _project(args, need_manifest=not args.frozen)
    at_start = stamp.inputs(args.argv, project)
    relock: dict[str, Any] | None = None  # --dry-run: the lock that would come first
    with _sources(project, bundle) as sources:
        if bundle is not None:
            Bundle(bundle).check(sources.transport)
        if args.frozen:
            lock = project.read_lock()
        else:
            lock = project.lock_or_none()
            manifest = project.manifest
            _known(args.aliases, manifest.models, project.manifest_path)
            problems = (
                differences(lock, manifest, project.settings)
                if lock
                else [f"{project.lock_path.name} does not exist"]
            )
            if problems and args.locked:
                raise StaleLockError(
                    f"{project.lock_path.name} does not match {project.manifest_path.name} "
                    f"and --locked was given: {'; '.join(problems)}; run: hubpin lock"
                )
            if problems and args.offline:
                raise StaleLockError(
                    f"{project.lock_path.name} is stale and --offline forbids locking: "
                    f"{'; '.join(problems)}; run: hubpin lock"
                )
            if problems and args.dry_run:
                relock = {"reasons": problems, "plan": lock_plan(project, set())}
            elif problems:
                lock, _ = _lock(args, project, sources, set(), fill=True, must_fill=True)
                if lock is None:
                    return 1
        pins = _select(lock, args.aliases, project.lock_path) if relock is None else {}
        syncer = _syncer(project, sources, offline=args.offline, full_verify=args.verify)
        syncer.bundle = bundle
        if args.dry_run:
            return _print_sync_plan(args, project, syncer, lock, pins, relock)
        with _progress(args, project, pins) as bar:
            if bar is not None:
                syncer.on_bytes = bar.update
                syncer.on_done = lambda outcome: bar.set_postfix_str(
                    f"{outcome.alias} {outcome.status}", refresh=True
                )
            outcomes = syncer.run(pins, args.jobs or project.settings.jobs)
    code = _report(args, outcomes, project)
    if code == 0:
        _stamp(args.argv, project, pins, outcomes, at_start)
    return code


def _stamp(
    argv: list[str],
    project: Project,
    pins: dict[str, Pin],
    outcomes: list[Outcome],
    at_start: str | None,
) -> None:
    """After a clean sync of local archives, let the next identical one skip pydantic."""
    if project.cache.local_root is None or any(
        not isinstance(p, ArchivePin) or isinstance(p, KagglePin) for p in pins.values()
    ):
        return  # the stamp stat-checks local tensorflow_hub entries only (not kagglehub's cache)
    if any(o.status not in ("fetched", "present", "adopted") for o in outcomes):
        return
    entries = [(key, pin.tree_digest) for pin in pins.values() for key in pin.cache_keys()]
    as_noop = [Outcome(o.alias, "present", "", o.size) for o in outcomes]
    output = (
        ""
        if "-q" in argv or "--quiet" in argv
        else "".join(f"{line}\n" for _, line in _report_lines(as_noop, project))
    )
    stamp.write(at_start, argv, project, entries, output)


def _stamp_after_lock(project: Project, argv: list[str], lock: Lock, at_start: str | None) -> None:
    """A lock that filled the cache answers the plain syncs that follow it, as a sync would.

    Each stamp holds every entry of the lock, so its replay stat-checks them all:
    a model the lock could not publish sends that sync down the full path.
    """
    if at_start is None or stamp.sources_state(project) != at_start:
        return  # the manifest or settings changed while locking: the lock may be stale
    pins = dict(sorted(lock.models.items()))
    present = [Outcome(alias, "present", "", pin.unpacked_size) for alias, pin in pins.items()]
    for sync_argv in stamp.after_lock(argv):
        _stamp(sync_argv, project, pins, present, stamp.inputs(sync_argv, project))


def cmd_verify(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    pins = _select(lock, args.aliases, project.lock_path)
    with _sources(project) as sources:
        syncer = _syncer(project, sources, offline=True, full_verify=True)
        report: dict[str, list[str]] = {}
        for alias, pin in pins.items():
            if isinstance(pin, ArchivePin):
                report[alias] = syncer.verify_entry(pin)
            else:
                report[alias] = [
                    o.detail for o in [syncer.sync_one(alias, pin)] if o.status == "failed"
                ]
        damaged = {a: p for a, p in report.items() if p}
        repaired: dict[str, Outcome] = {}
        if args.repair and damaged:
            syncer.offline = False
            outcomes = syncer.run({a: pins[a] for a in damaged}, project.settings.jobs)
            repaired = {o.alias: o for o in outcomes}
    if args.json:
        models = {}
        for alias, problems in sorted(report.items()):
            models[alias] = {"ok": not problems, "problems": problems}
            if alias in repaired:
                outcome = repaired[alias]
                models[alias]["repaired"] = outcome.status != "failed"
                if outcome.status == "failed":
                    models[alias]["error"] = outcome.detail
        print(json.dumps({"cache_dir": project.cache.location, "models": models}, indent=2))
    else:
        for alias, problems in sorted(report.items()):
            _say(args, f"{alias:<20} {'ok' if not problems else 'DAMAGED'}")
            for problem in problems:
                _say(args, f"  {problem}")
            outcome = repaired.get(alias)
            if outcome is not None and outcome.status == "failed":
                print(f"{alias:<20} repair failed: {outcome.detail}", file=sys.stderr)
            elif outcome is not None:
                _say(args, f"{alias:<20} repaired (fetched and verified before publishing)")
    if damaged and not args.repair:
        _say(
            args,
            f"{len(damaged)} of {len(report)} models damaged in {project.cache.location}; "
            "run: hubpin verify --repair",
        )
        return 1
    return 1 if any(o.status == "failed" for o in repaired.values()) else 0


def cmd_outdated(args: argparse.Namespace) -> int:
    """Ask Kaggle for each pinned model's current version; download nothing."""
    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    rows = []
    with _sources(project) as sources:
        for alias, pin in sorted(lock.models.items()):
            row: dict[str, Any] = {"alias": alias, "handle": pin.handle, "locked": None}
            row |= {"current": None, "state": "unknown"}
            if not isinstance(pin, KagglePin):
                row["note"] = "not hosted on Kaggle: its host cannot tell"
                rows.append(row)
                continue
            handle = configured(pin.handle, project.settings.kaggle_endpoint)
            assert handle is not None  # a Kaggle pin's handle (else sources.location_of raises)
            row["locked"] = pin.kaggle_version
            try:
                row["current"] = sources.kaggle.current_version(handle)
            except HubpinError as exc:
                row |= {"state": "failed", "note": str(exc)}
                rows.append(row)
                continue
            if row["current"] <= pin.kaggle_version:
                row["state"] = "current"
            elif handle.version is None:
                row |= {"state": "behind", "note": f"run: hubpin lock --upgrade {alias}"}
            else:
                row |= {
                    "state": "behind",
                    "note": f"the manifest pins version {handle.version}; edit its handle",
                }
            rows.append(row)
    behind = sum(r["state"] == "behind" for r in rows)
    failed = sum(r["state"] == "failed" for r in rows)
    if args.json:
        print(json.dumps({"lock": str(project.lock_path), "models": rows}, indent=2))
    else:
        print(f"{'ALIAS':<20} {'LOCKED':>7} {'CURRENT':>8}  STATE")
        for r in rows:
            note = f" ({r['note']})" if r.get("note") else ""
            locked = "-" if r["locked"] is None else str(r["locked"])
            current = "-" if r["current"] is None else str(r["current"])
            print(f"{r['alias']:<20} {locked:>7} {current:>8}  {r['state']}{note}")
        _say(args, f"{_count(behind, 'model')} behind, {failed} could not be checked")
    return 1 if behind or failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    lock = project.read_lock()
    lock_state = "missing manifest"
    if project.manifest_path.exists():
        problems = differences(lock, project.manifest, project.settings)
        lock_state = "up to date" if not problems else "stale: " + "; ".join(problems)
    rows = []
    for alias, pin in sorted(lock.models.items()):
        rows.append(
            {
                "alias": alias,
                "format": pin.format.value,
                "kind": pin.kind.value,
                "size": pin.unpacked_size,
                "state": _state(project, pin),
                "path": _where(project, pin),
            }
        )
    cache_root = project.settings.cache_root
    if args.json:
        print(
            json.dumps(
                {
                    "lock": str(project.lock_path),
                    "lock_state": lock_state,
                    "cache_dir": cache_root,
                    "models": rows,
                },
                indent=2,
            )
        )
        return 0
    print(f"lock:  {project.lock_path} ({lock_state})")
    print(f"cache: {cache_root}")
    if _under_temp(cache_root):
        print(
            "       warning: the cache is under a temporary folder that cleaners may empty; "
            "set TFHUB_CACHE_DIR or cache_dir in hubpin.toml"
        )
    print(f"{'ALIAS':<20} {'FORMAT':<13} {'SIZE':>10}  STATE")
    for row in rows:
        print(f"{row['alias']:<20} {row['format']:<13} {_size(row['size']):>10}  {row['state']}")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    pin = _select(project.read_lock(), [args.alias], project.lock_path)[args.alias]
    if isinstance(pin, ArchivePin):
        problems = project.cache.quick_check(pin.cache_key, pin.tree_digest)
        if problems:
            raise NotSyncedError(
                f"{args.alias}: {problems[0]} in {project.cache.location}; run: hubpin sync"
            )
    print(_where(project, pin))
    return 0


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
    _say(
        args,
        f"wrote {args.out}: {_count(len(written.archives), 'archive')}{kept} and models.lock; "
        f"on each machine that syncs from it run: hubpin sync --from {args.out}",
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


# ---------------------------------------------------------------- locking


# ---------------------------------------------------------------- locking


def _lock(
    args: argparse.Namespace,
    project: Project,
    sources: Sources,
    force: set[str],
    *,
    fill: bool,
    must_fill: bool,
    upgrade: bool = False,
) -> tuple[Lock | None, bool | None]:
    """Run :func:`hubpin.locking.lock_project`, saying what it pins; (lock, changed) or (None, None)."""
    done = lock_project(
        project,
        sources,
        force,
        fill_cache=fill,
        must_fill=must_fill,
        upgrade=upgrade,
        on_pinned=lambda alias, pin: _say(args, f"pinned {alias} → {_describe(pin)}"),
        on_failed=lambda exc: print(f"hubpin: error: {exc}", file=sys.stderr),
    )
    name = project.lock_path.name
    if done.failures:
        _say(args, f"{name} not written: {len(done.failures)} of {done.pinned} models failed")
        if max(f.exit_code for f in done.failures) == 2:
            raise InputError(
                f"{len(done.failures)} model(s) could not be pinned; fix the manifest and run: hubpin lock"
            )
        return None, None
    assert done.lock is not None
    _say(
        args,
        f"{'wrote' if done.changed else 'unchanged'} {name}: {_count(len(done.lock.models), 'model')} "
        f"({done.pinned} pinned, {done.kept} kept)",
    )
    return done.lock, done.changed


# ---------------------------------------------------------------- dry runs

_LOCK_ACTIONS = ("pin", "keep", "drop")
_SYNC_ACTIONS = ("download", "replace", "adopt", "link", "lock", "keep", "check", "fail")
_SYNC_WORDS = {
    "download": "to download",
    "replace": "to replace",
    "adopt": "to adopt",
    "link": "to hard-link",
    "lock": "to pin and download while locking",
    "keep": "left as they are",
    "check": "checked in place",
    "fail": "that would fail",
}


def _print_lock_plan(args: argparse.Namespace, project: Project, rows: list[dict[str, Any]]) -> int:
    totals = {action: sum(r["action"] == action for r in rows) for action in _LOCK_ACTIONS}
    if args.json:
        doc = {
            "command": "lock",
            "dry_run": True,
            "lock": str(project.lock_path),
            "models": rows,
            "totals": totals,
        }
        print(json.dumps(doc, indent=2))
        return 0
    _say(args, f"{'ALIAS':<20} {'ACTION':<8} {'SIZE':>10}  REASON")
    for r in rows:
        size = "?" if r["size"] is None else _size(r["size"])
        _say(args, f"{r['alias']:<20} {r['action']:<8} {size:>10}  {r['reason']}")
    _say(
        args,
        f"dry run: {totals['pin']} to pin, {totals['keep']} kept, {totals['drop']} dropped; "
        f"{project.lock_path.name} not written",
    )
    return 0


def _print_sync_plan(
    args: argparse.Namespace,
    project: Project,
    syncer: Syncer,
    lock: Lock | None,
    pins: dict[str, Pin],
    relock: dict[str, Any] | None,
) -> int:
    """``sync --dry-run``: the plan per model from :meth:`Syncer.plan`, then the totals."""
    steps: list[Step] = []
    lock_first = None
    if relock is None:
        steps = [syncer.plan(alias, pin) for alias, pin in sorted(pins.items())]
    else:
        repin = {r["alias"]: r for r in relock["plan"] if r["action"] == "pin"}
        lock_first = {
            "reasons": relock["reasons"],
            "pin": sorted(repin),
            "drop": sorted(r["alias"] for r in relock["plan"] if r["action"] == "drop"),
        }
        for alias in sorted(args.aliases or project.manifest.models):
            if alias in repin:
                reason = f"pinned and downloaded while locking: {repin[alias]['reason']}"
                steps.append(Step(alias, "lock", None, None, reason))
            else:
                assert lock is not None
                steps.append(syncer.plan(alias, lock.models[alias]))
    rows = [
        {
            "alias": step.alias,
            "action": step.action,
            "size": step.size,
            "download_size": step.download,
            "reason": step.reason,
        }
        for step in steps
    ]
    totals: dict[str, int] = {"models": len(rows)}
    totals |= {action: sum(r["action"] == action for r in rows) for action in _SYNC_ACTIONS}
    totals["download_size"] = sum(r["download_size"] or 0 for r in rows)
    totals["write_size"] = sum(
        r["size"] or 0 for r in rows if r["action"] in ("download", "replace")
    )
    if args.json:
        doc = {
            "command": "sync",
            "dry_run": True,
            "lock": str(project.lock_path),
            "cache_dir": project.settings.cache_root,
            "lock_first": lock_first,
            "models": rows,
            "totals": totals,
        }
        print(json.dumps(doc, indent=2))
        return 0
    if lock_first is not None:
        pin = ", ".join(lock_first["pin"]) or "none"
        _say(
            args,
            f"would lock first ({'; '.join(lock_first['reasons'])}): would pin {pin} (network)"
            + (f", drop {', '.join(lock_first['drop'])}" if lock_first["drop"] else ""),
        )
    _say(args, f"{'ALIAS':<20} {'ACTION':<9} {'DOWNLOAD':>10} {'SIZE':>10}  REASON")
    for r in rows:
        download = (
            "?"
            if r["download_size"] is None
            else _size(r["download_size"])
            if r["download_size"]
            else "-"
        )
        size = "?" if r["size"] is None else _size(r["size"])
        _say(args, f"{r['alias']:<20} {r['action']:<9} {download:>10} {size:>10}  {r['reason']}")
    counts = [f"{totals[a]} {_SYNC_WORDS[a]}" for a in _SYNC_ACTIONS if totals[a]] or ["no models"]
    _say(
        args,
        f"dry run: {', '.join(counts)}; {_size(totals['download_size'])} to download, "
        f"{_size(totals['write_size'])} to unpack into {project.settings.cache_root}; nothing written",
    )
    return 0


def _json_needs_dry_run(args: argparse.Namespace) -> None:
    if args.json and not args.dry_run:
        raise InputError(f"--json goes with --dry-run; run: hubpin {args.command} --dry-run --json")


# ---------------------------------------------------------------- helpers


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cache_dir": getattr(args, "cache_dir", None),
        "format": getattr(args, "load_format", None),
        "jobs": getattr(args, "jobs", None),
    }


def _project(args: argparse.Namespace, need_manifest: bool = True) -> Project:
    return Project.discover(
        getattr(args, "manifest", None),
        getattr(args, "lock", None),
        _overrides(args),
        need_manifest,
    )


@contextlib.contextmanager
def _sources(project: Project, bundle: str | None = None) -> Iterator[Sources]:
    """Where this command reads archives from (a bundle, else mirrors and hosts)."""
    transport = Transport(project.settings)
    try:
        yield Sources(project.settings, transport, project.root, bundle)
    finally:
        transport.close()


def _syncer(project: Project, sources: Sources, offline: bool, full_verify: bool) -> Syncer:
    return Syncer(project.cache, project.settings, sources, project.root, offline, full_verify)


def _select(lock: Lock, aliases: Sequence[str], lock_path: Path) -> dict[str, Pin]:
    _known(aliases, lock.models, lock_path)
    return {a: lock.models[a] for a in aliases} if aliases else dict(lock.models)


def _known(aliases: Sequence[str], models: Iterable[str], where: Path) -> None:
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


def _report(args: argparse.Namespace, outcomes: list[Outcome], project: Project) -> int:
    for failed, line in _report_lines(outcomes, project):
        if failed:
            print(line, file=sys.stderr)
        else:
            _say(args, line)
    errors = [o.error for o in outcomes if o.error]
    return max((e.exit_code for e in errors), default=0)


def _report_lines(outcomes: list[Outcome], project: Project) -> list[tuple[bool, str]]:
    """A line per model and a summary, each with whether it reports a failure."""
    words = {
        "fetched": "fetched",
        "present": "already present",
        "adopted": "adopted (verified)",
        "checked": "checked",
        "failed": "FAILED",
    }
    lines = []
    for o in outcomes:
        extra = f" {_size(o.size)} in {o.seconds:.1f}s" if o.status == "fetched" else ""
        detail = f": {o.detail}" if o.detail else ""
        lines.append((o.status == "failed", f"{o.alias:<20} {words[o.status]}{extra}{detail}"))
    counts = {s: sum(o.status == s for o in outcomes) for s in words}
    summary = (
        f"synced {_count(len(outcomes), 'model')} into {project.settings.cache_root}: "
        f"{counts['fetched']} fetched, {counts['present'] + counts['adopted']} already present, "
        f"{counts['checked']} checked in place, {counts['failed']} failed"
    )
    return [*lines, (False, summary)]


@contextlib.contextmanager
def _progress(args: argparse.Namespace, project: Project, pins: dict[str, Pin]) -> Iterator[Any]:
    """A tqdm bar of the bytes still to fetch (on a terminal, or with --progress), else None."""
    show = getattr(args, "progress", None)
    if show is None:
        show = sys.stderr.isatty() and not getattr(args, "quiet", False)
    if not show:
        yield None
        return
    from tqdm import tqdm

    todo = [
        p
        for p in pins.values()
        if isinstance(p, ArchivePin) and project.cache.quick_check(p.cache_key, p.tree_digest)
    ]
    with tqdm(
        total=sum(p.archive_size for p in todo) or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"{_count(len(todo), 'model')} to fetch",
        file=sys.stderr,
        leave=False,
    ) as bar:
        yield bar


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hubpin: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(
        logging.ERROR
        if getattr(args, "quiet", False)
        else logging.DEBUG
        if getattr(args, "verbose", False)
        else logging.WARNING
    )


def _state(project: Project, pin: Pin) -> str:
    if isinstance(pin, GcsPin):
        return "remote (gs://, read in place)"
    if isinstance(pin, FolderPin):
        return "local folder" if pin.folder(project.root).is_dir() else "folder missing"
    assert isinstance(pin, ArchivePin)  # the kinds that are neither are read in place
    problems = project.cache.quick_check(pin.cache_key, pin.tree_digest)
    return "synced" if not problems else problems[0]


def _where(project: Project, pin: Pin) -> str:
    if isinstance(pin, ArchivePin):
        return project.cache.entry(pin.cache_key)
    if isinstance(pin, FolderPin):
        return str(pin.folder(project.root))
    assert isinstance(pin, GcsPin)
    return pin.location


def _describe(pin: Pin) -> str:
    return f"{pin.describe()} ({pin.file_count} files, {_size(pin.unpacked_size)})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _under_temp(root: str) -> bool:
    if "://" in root:
        return False
    try:
        return Path(root).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    except (OSError, ValueError):
        return False


def _format(value: str) -> Format:
    try:
        return Format(value.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a format (expected COMPRESSED, UNCOMPRESSED or AUTO)"
        ) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
