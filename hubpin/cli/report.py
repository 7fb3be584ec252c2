"""``hubpin verify``, ``outdated``, ``status`` and ``resolve``, rendered from :mod:`hubpin.ops`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from hubpin import stamp
from hubpin.cli.common import _count, _project, _result, _say, _size
from hubpin.cli.render import print_json, print_table
from hubpin.ops.status import StatusReport, resolve, status

if TYPE_CHECKING:
    from hubpin.ops.verify import VerifyReport

NOT_SYNCED = "not synced"  # the one problem of an entry that is not there at all


def cmd_verify(args: argparse.Namespace) -> int:
    from hubpin.ops.verify import verify  # it fetches (--repair): imported when run

    project = _project(args, need_manifest=False)
    report = verify(project, args.aliases, args.repair)
    if args.json:
        models = {}
        for m in report.models:
            models[m.alias] = {"ok": not m.problems, "problems": m.problems}
            if m.repair is not None:
                models[m.alias]["repaired"] = m.repair.status != "failed"
                if m.repair.status == "failed":
                    models[m.alias]["error"] = m.repair.detail
        print_json({"cache_dir": report.cache_dir, "models": models})
    else:
        for m in report.models:  # the findings are the result; a failed repair is an error
            if m.problems == [NOT_SYNCED]:  # never synced, or removed whole: nothing damaged
                _result(args, f"{m.alias:<20} {NOT_SYNCED}")
            else:
                _result(args, f"{m.alias:<20} {'ok' if not m.problems else 'DAMAGED'}")
                for problem in m.problems:
                    _result(args, f"  {problem}")
            if m.repair is not None and m.repair.status == "failed":
                print(f"{m.alias:<20} repair failed: {m.repair.detail}", file=sys.stderr)
            elif m.repair is not None:
                _result(args, f"{m.alias:<20} repaired (fetched and verified before publishing)")
    if report.damaged and not args.repair:
        _say(args, _verify_hint(report))
    return report.exit_code


def _verify_hint(report: VerifyReport) -> str:
    """What the damage adds up to and the command for it: a cache that was never synced
    needs ``hubpin sync``, not a repair of damage it does not have."""
    absent = sum(m.problems == [NOT_SYNCED] for m in report.damaged)
    damaged = len(report.damaged) - absent
    of = f"{len(report.damaged)} of {len(report.models)} models"
    if not any(m.repairable for m in report.damaged):  # read in place: nothing to fetch
        return f"{of} damaged; each is read in place, so its line says what to do"
    if not damaged:
        return f"{of} not synced into {report.cache_dir}; run: hubpin sync"
    if absent:
        return (
            f"{of} damaged or missing in {report.cache_dir} ({damaged} damaged, {absent} not "
            "synced); run: hubpin verify --repair"
        )
    return f"{of} damaged in {report.cache_dir}; run: hubpin verify --repair"


def cmd_outdated(args: argparse.Namespace) -> int:
    """Ask Kaggle for each pinned model's current version; download nothing."""
    from hubpin.ops.outdated import outdated  # it asks Kaggle: imported when run

    project = _project(args, need_manifest=False)
    report = outdated(project)
    if args.json:
        print_json(report.doc())
        return report.exit_code
    rows = [
        (
            m.alias,
            "-" if m.locked is None else str(m.locked),
            "-" if m.current is None else str(m.current),
            m.state + (f" ({m.note})" if m.note else ""),
        )
        for m in report.models
    ]
    print_table(_OUTDATED, rows)
    _say(args, f"{_count(report.behind, 'model')} behind, {report.failed} could not be checked")
    return report.exit_code


_OUTDATED = (("ALIAS", "<20"), ("LOCKED", ">12"), ("CURRENT", ">12"), ("STATE", ""))
_STATUS = (("ALIAS", "<20"), ("FORMAT", "<13"), ("SIZE", ">10"), ("STATE", ""))


def cmd_status(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    at_start = stamp.inputs(args.argv, project)
    report = status(project)
    show_status(report, args.json)
    from hubpin.cli.stamps import _stamp_status

    _stamp_status(args.argv, project, report, at_start)
    return 0


def show_status(report: StatusReport, as_json: bool) -> None:
    """Print a status report; the stamp's replay prints through here too."""
    if as_json:
        print_json(report.doc())
        return
    print(f"lock:  {report.lock} ({report.lock_state})")
    print(f"cache: {report.cache_dir}")
    if report.cache_under_temp:
        print(  # as the logger says a warning; the stamp's replay runs before logging is set up
            "hubpin: WARNING: the cache is under a temporary folder that cleaners may empty; "
            "set TFHUB_CACHE_DIR or cache_dir in hubpin.toml",
            file=sys.stderr,
        )
    print_table(_STATUS, [(m.alias, m.format, _size(m.size), m.state) for m in report.models])


def cmd_resolve(args: argparse.Namespace) -> int:
    project = _project(args, need_manifest=False)
    print(resolve(project, args.alias))
    return 0
