"""``hubpin verify``, ``outdated``, ``status`` and ``resolve``: what the cache and hosts hold."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from hubpin.cli.common import (
    _count,
    _project,
    _register,
    _say,
    _select,
    _size,
    _sources,
    _syncer,
)
from hubpin.errors import (
    HubpinError,
    NotSyncedError,
)
from hubpin.kaggle import configured
from hubpin.kinds import ArchivePin, FolderPin, GcsPin, KagglePin
from hubpin.lockfile import Pin, differences
from hubpin.project import Project
from hubpin.sync import Outcome


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
            _register(project, lock, outcomes)
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


def _under_temp(root: str) -> bool:
    if "://" in root:
        return False
    try:
        return Path(root).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    except (OSError, ValueError):
        return False
