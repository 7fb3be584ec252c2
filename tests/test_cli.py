"""CLI conventions: --version, remove, --dry-run, suggestions, and the README's command list."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import WORKTREE, Model, Project, run_python
from hubserver import HubServer

README = Path(__file__).parent.parent / "README.md"


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its size and mtime (folders too: a file made and
    removed again still changes its folder's mtime)."""
    found = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            found[str(path)] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return found


def _locked(project: Project, hub: HubServer, *names: str) -> dict[str, str]:
    handles = {name: hub.handle(f"google/{name}/1") for name in names}
    project.models(**handles)
    code, _, err = project.run("lock", "--no-fill")  # hash only: the cache stays empty
    assert code == 0, err
    return handles


# ---------------------------------------------------------------- --version


def test_version_prints_hubpin_and_with_v_what_decides_behaviour(project: Project) -> None:
    import hubpin

    try:
        expected = importlib.metadata.version("hubpin")
    except importlib.metadata.PackageNotFoundError:
        expected = hubpin.__version__
    code, out, err = project.run("--version")
    assert (code, out, err) == (0, f"hubpin {expected}\n", "")

    code, out, err = project.run("-v", "--version")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"hubpin {expected}"
    rows = dict(line.split(None, 1) for line in lines[1:])
    assert rows["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    for name in ("tensorflow-hub", "kagglehub", "isal", "gcsfs", "urllib3", "pydantic"):
        try:
            assert rows[name] == importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            assert rows[name] == "not installed"
    assert "google-crc32c" in rows
    assert project.run("--version", "-v")[1] == out, "-v works on either side"


def test_version_imports_neither_tensorflow_nor_kagglehub(project: Project) -> None:
    out = run_python(
        "import runpy, sys\nsys.argv = ['hubpin', '-v', '--version']\n"
        "try: runpy.run_module('hubpin', run_name='__main__')\n"
        "except SystemExit as e: assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tensorflow_hub', 'kagglehub', 'gcsfs', 'keras')))",
        cwd=project.root,
    )
    assert "tensorflow-hub" in out
    assert out.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- suggestions


def test_mistyped_command_gets_one_line_suggestion(project: Project) -> None:
    for typed, line in [
        ("synk", "hubpin: error: unknown command 'synk'; did you mean: sync?\n"),
        ("remvoe", "hubpin: error: unknown command 'remvoe'; did you mean: remove, resolve?\n"),
        (
            "xyzzy",
            "hubpin: error: unknown command 'xyzzy'; commands: lock, sync, verify, status, "
            "resolve, prune, add, remove, bundle, image, outdated, env, completion\n",
        ),
    ]:
        with pytest.raises(SystemExit) as exc:
            project.run(typed)
        assert exc.value.code == 2
        out, err = project.capsys.readouterr()
        assert (out, err) == ("", line)


@pytest.mark.parametrize(
    "argv",
    [
        ["lock", "dubble"],
        ["lock", "--dry-run", "dubble"],
        ["sync", "dubble"],
        ["sync", "--frozen", "dubble"],
        ["sync", "--dry-run", "dubble"],
        ["verify", "dubble"],
        ["resolve", "dubble"],
        ["bundle", "out", "dubble"],
        ["remove", "dubble"],
    ],
)
def test_every_command_that_takes_aliases_suggests(
    project: Project, hub: HubServer, argv: list[str]
) -> None:
    _locked(project, hub, "double")
    before = project.manifest.read_bytes(), project.lock.read_bytes()
    code, out, err = project.run(*argv)
    assert (code, out) == (2, ""), err
    assert re.fullmatch(
        r"hubpin: error: \S+models\.(toml|lock): no model with alias 'dubble'; did you mean double\?\n",
        err,
    ), err
    assert (project.manifest.read_bytes(), project.lock.read_bytes()) == before
    assert not (project.root / "out").exists()


# ---------------------------------------------------------------- remove

MANIFEST = """\
# Models for the app; run `hubpin lock` after editing.

# the doubler
[models.double]
handle = "{double}"   # pinned at v1
format = "COMPRESSED"
# format = "UNCOMPRESSED"  (kept for later)

# ---- more models ----

# the tripler, also reachable as a mirror handle
[models.triple]
handle = "{triple}"
also = [
  "{quint_mirror}",  # a mirror
]

[models.quint]
handle = "{quint}"
"""


def _commented_project(project: Project, hub: HubServer) -> dict[str, str]:
    handles = {n: hub.handle(f"google/{n}/1") for n in ("double", "triple", "quint")}
    handles["quint_mirror"] = hub.handle("google/mirror/1")
    project.write(MANIFEST.format(**handles))
    return handles


def test_remove_keeps_the_rest_of_the_manifest_byte_for_byte_and_a_checkable_lock(
    project: Project, hub: HubServer
) -> None:
    handles = _commented_project(project, hub)
    assert project.run("sync")[0] == 0
    entry = project.entry(handles["double"])
    assert entry.is_dir()
    requests = len(hub.requests)

    code, _, err = project.run("remove", "double")
    assert code == 0, err
    expected = MANIFEST.format(**handles)
    expected = expected.replace(
        expected[expected.index("# the doubler") : expected.index("# ---- more")], ""
    )
    assert project.manifest.read_text() == expected
    assert expected.startswith("# Models for the app; run `hubpin lock` after editing.\n\n# ----")
    lines = err.splitlines()
    assert lines[0] == "removed double from models.toml and models.lock"
    # What prune would free: the entry, its descriptor and its record, as prune itself lists.
    freed = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
    freed += sum(
        entry.with_name(entry.name + s).stat().st_size for s in (".descriptor.txt", ".hubpin.json")
    )
    hint = re.fullmatch(
        rf"hubpin prune would now free ((\S+) (\S+)) \(3 paths in {re.escape(str(project.cache))}\)",
        lines[1],
    )
    assert hint, lines[1]
    assert abs(freed - _parse_size(hint[2], hint[3])) <= 0.05 * freed + 1
    code, _, prune_err = project.run("prune", "--dry-run")
    assert prune_err.splitlines()[-1] == f"3 paths, would free {hint[1]}"

    code, out, err = project.run("lock", "--check")
    assert (code, out, err) == (0, "models.lock is up to date (2 models)\n", "")
    assert len(hub.requests) == requests, "remove and lock --check opened no connection"
    # The lock is the one `hubpin lock` would write for the new manifest, byte for byte.
    after_remove = project.lock.read_bytes()
    project.lock.unlink()
    assert project.run("lock")[0] == 0
    assert project.lock.read_bytes() == after_remove

    code, _, err = project.run("remove", "quint", "triple")
    assert code == 0, err
    assert project.manifest.read_text() == (
        "# Models for the app; run `hubpin lock` after editing.\n\n# ---- more models ----\n"
    )
    assert project.run("lock", "--check")[0] == 0
    code, _, err = project.run("prune")
    assert code == 0 and not entry.exists()
    # What is left: the note that this project uses the cache (what another project's prune reads).
    assert sorted(p.name for p in project.cache.iterdir()) == ["hubpin-projects"]


def _parse_size(number: str, unit: str) -> float:
    return float(number) * {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]


def test_remove_after_add_restores_the_file(project: Project) -> None:
    text = "# mine\n[models.a]\nhandle = 'https://example.invalid/a/1'  # quoted my way\n"
    project.write(text)
    assert project.run("add", "b", "https://example.invalid/b/1", "--format", "auto")[0] == 0
    assert project.manifest.read_text() != text
    code, _, err = project.run("remove", "b")
    assert (code, err) == (0, "removed b from models.toml\n"), "no lock: nothing about prune"
    assert project.manifest.read_text() == text


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (  # keys under [models], dotted and inline, with a multi-line array
            "[models]\n"
            'a.handle = "https://example.invalid/a/1"\n'
            "# b is the mirror\n"
            'b = { handle = "https://example.invalid/b/1", also = [\n'
            '  "https://example.invalid/b2/1",\n'
            "] }\n"
            'a.format = "AUTO"\n',
            '[models]\na.handle = "https://example.invalid/a/1"\na.format = "AUTO"\n',
        ),
        (  # a quoted alias with a dot; a comment right above the next table stays with it
            '[models."b.v2"]\nhandle = "https://example.invalid/b/2"\n'
            '# a next\n[models.a]\nhandle = "https://example.invalid/a/1"\n',
            '# a next\n[models.a]\nhandle = "https://example.invalid/a/1"\n',
        ),
    ],
)
def test_remove_handles_other_layouts(project: Project, before: str, after: str) -> None:
    project.write(before)
    alias = "b.v2" if "b.v2" in before else "b"
    code, _, err = project.run("remove", alias)
    assert code == 0, err
    assert project.manifest.read_text() == after


def test_remove_refuses_a_layout_it_cannot_edit_exactly(project: Project) -> None:
    text = (
        'models = { a = { handle = "https://example.invalid/a/1" }, '
        'b = { handle = "https://example.invalid/b/1" } }\n'
    )
    project.write(text)
    code, _, err = project.run("remove", "a")
    assert code == 2
    assert err == (
        f"hubpin: error: {project.manifest}: cannot remove a without disturbing the rest of the "
        "file (an unusual layout); delete the table by hand and run: hubpin lock\n"
    )
    assert project.manifest.read_text() == text


def test_remove_keeps_a_stale_lock_stale(project: Project, hub: HubServer) -> None:
    handles = _locked(project, hub, "double", "triple")
    project.models(double=handles["double"], triple=hub.handle("google/quint/1"))
    code, _, err = project.run("remove", "double")
    assert code == 0, err
    assert "models.lock is still stale: triple: handle is" in err
    code, _, err = project.run("lock", "--check")
    assert code == 1 and "triple: handle is" in err


def test_remove_an_alias_only_the_lock_names(project: Project, hub: HubServer) -> None:
    handles = _locked(project, hub, "double", "triple")
    project.models(double=handles["double"])  # triple deleted by hand
    manifest = project.manifest.read_bytes()
    code, _, err = project.run("remove", "triple")
    assert code == 0, err
    assert err.splitlines()[0] == "removed triple from models.lock"
    assert project.manifest.read_bytes() == manifest
    assert project.run("lock", "--check")[0] == 0


# ---------------------------------------------------------------- --dry-run


def _four_states(project: Project, hub: HubServer) -> dict[str, str]:
    """double: synced; triple: damaged; quint: not synced; adopted: an entry without a record."""
    hub.models["google/adopted/1"] = hub.models["google/double/1"]
    handles = _locked(project, hub, "double", "triple", "quint", "adopted")
    assert project.run("sync", "double", "triple", "adopted")[0] == 0
    pb = project.entry(handles["triple"]) / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:-1])
    adopted = project.entry(handles["adopted"])
    adopted.with_name(adopted.name + ".hubpin.json").unlink()  # as tensorflow_hub leaves it
    return handles


def test_sync_dry_run_reports_the_plan_writes_nothing_and_opens_nothing(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    handles = _four_states(project, hub)
    lock = project.lock.read_text()
    sizes = {
        alias: int(re.search(rf"\[models\.{alias}\][^\[]*?unpacked_size = (\d+)", lock, re.S)[1])  # type: ignore[index]
        for alias in handles
    }
    archives = {a: len(models["double" if a == "adopted" else a].archive) for a in handles}
    before, requests = _tree(project.root.parent), len(hub.requests)

    code, out, err = project.run("sync", "--dry-run")
    assert code == 0 and err == "", err
    assert _tree(project.root.parent) == before, "a dry run wrote something"
    assert len(hub.requests) == requests, "a dry run opened a connection"
    rows = out.splitlines()
    assert rows[0] == f"{'ALIAS':<20} {'ACTION':<9} {'DOWNLOAD':>10} {'SIZE':>10}  REASON"
    assert re.fullmatch(
        r"adopted +adopt +- +\S+ \S+  an entry without hubpin's record that matches the lock",
        rows[1],
    ), rows[1]
    assert re.fullmatch(r"double +keep +- +\S+ \S+  already present", rows[2]), rows[2]
    quint_url = handles["quint"]  # where the download starts (redirects are followed)
    assert re.fullmatch(
        rf"quint +download +\S+ \S+ +\S+ \S+  not in the cache; from {re.escape(quint_url)}",
        rows[3],
    ), rows[3]
    assert re.fullmatch(
        r"triple +replace +\S+ \S+ +\S+ \S+  cache entry: saved_model\.pb is \d+ bytes, "
        r"expected \d+; from http://\S+/google/triple/1",
        rows[4],
    ), rows[4]
    assert rows[5].startswith(
        "dry run: 1 to download, 1 to replace, 1 to adopt, 1 left as they are; "
    ) and rows[5].endswith(f" to unpack into {project.cache}; nothing written")
    assert len(rows) == 6

    code, out, err = project.run("sync", "--dry-run", "--json")
    assert code == 0 and err == ""
    assert _tree(project.root.parent) == before and len(hub.requests) == requests
    doc = json.loads(out)
    assert list(doc) == [
        "command",
        "dry_run",
        "lock",
        "cache_dir",
        "lock_first",
        "models",
        "totals",
    ]
    assert (doc["command"], doc["dry_run"], doc["lock_first"]) == ("sync", True, None)
    assert doc["lock"] == str(project.lock) and doc["cache_dir"] == str(project.cache)
    plan = {m["alias"]: m for m in doc["models"]}
    assert [m["alias"] for m in doc["models"]] == ["adopted", "double", "quint", "triple"]
    assert {a: (m["action"], m["size"], m["download_size"]) for a, m in plan.items()} == {
        "adopted": ("adopt", sizes["adopted"], 0),
        "double": ("keep", sizes["double"], 0),
        "quint": ("download", sizes["quint"], archives["quint"]),
        "triple": ("replace", sizes["triple"], archives["triple"]),
    }
    assert all(
        set(m) == {"alias", "action", "size", "download_size", "reason"} for m in plan.values()
    )
    assert doc["totals"] == {
        "models": 4,
        "download": 1,
        "replace": 1,
        "adopt": 1,
        "link": 0,
        "lock": 0,
        "keep": 1,
        "check": 0,
        "fail": 0,
        "download_size": archives["quint"] + archives["triple"],
        "write_size": sizes["quint"] + sizes["triple"],
    }

    code, out, err = project.run("sync", "--offline", "--dry-run", "quint", "double")
    assert code == 0
    assert re.search(
        r"^quint +fail +- +\S+ \S+  not in the cache, and --offline forbids downloading$", out, re.M
    ), out

    # The plan is what the sync then does.
    fetched = {m: hub.archive_requests(f"google/{m}/1") for m in handles}
    code, out, err = project.run("sync")
    assert code == 0, err
    assert re.search(r"^adopted +adopted \(verified\)", out, re.M)
    assert re.search(r"^double +already present", out, re.M)
    assert re.search(r"^quint +fetched", out, re.M)
    assert re.search(r"^triple +fetched .*replaced an entry", out, re.M)
    assert {m: hub.archive_requests(f"google/{m}/1") - fetched[m] for m in handles} == {
        "adopted": 0,
        "double": 0,
        "quint": 1,
        "triple": 1,
    }
    code, out, _ = project.run("sync", "--dry-run", "--json")
    assert {m["action"] for m in json.loads(out)["models"]} == {"keep"}


def test_sync_dry_run_with_a_stale_lock_says_it_would_lock_first_without_network(
    project: Project, hub: HubServer
) -> None:
    handles = _locked(project, hub, "double", "triple")
    assert project.run("sync")[0] == 0
    project.models(double=handles["double"], quint=hub.handle("google/quint/1"))
    before, requests = _tree(project.root.parent), len(hub.requests)

    code, out, err = project.run("sync", "--dry-run")
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0] == (
        "would lock first (quint: in the manifest but not in the lock; triple: in the lock but "
        "not in the manifest): would pin quint (network), drop triple"
    )
    assert re.fullmatch(r"double +keep +- +\S+ \S+  already present", rows[2]), rows[2]
    assert rows[3] == (
        f"{'quint':<20} {'lock':<9} {'?':>10} {'?':>10}  pinned and downloaded while locking: "
        "not in models.lock (network)"
    )
    assert rows[4].startswith("dry run: 1 to pin and download while locking, 1 left as they are; ")
    code, out, _ = project.run("sync", "--dry-run", "--json")
    doc = json.loads(out)
    assert doc["lock_first"] == {
        "reasons": [
            "quint: in the manifest but not in the lock",
            "triple: in the lock but not in the manifest",
        ],
        "pin": ["quint"],
        "drop": ["triple"],
    }
    assert doc["models"][1] == {
        "alias": "quint",
        "action": "lock",
        "size": None,
        "download_size": None,
        "reason": "pinned and downloaded while locking: not in models.lock (network)",
    }
    assert _tree(project.root.parent) == before and len(hub.requests) == requests

    # --locked and --offline refuse a stale lock as the real sync does.
    code, _, err = project.run("sync", "--locked", "--dry-run")
    assert code == 1 and "does not match models.toml and --locked was given" in err

    project.lock.unlink()
    code, out, err = project.run("sync", "--dry-run")
    assert code == 0 and out.startswith(
        "would lock first (models.lock does not exist): would pin double, quint (network)\n"
    )
    assert len(hub.requests) == requests


def test_sync_from_a_bundle_dry_run_names_the_bundle_or_what_it_lacks(
    project: Project, hub: HubServer
) -> None:
    _locked(project, hub, "double", "triple")
    assert project.run("bundle", "out", "double")[0] == 0
    before, requests = _tree(project.root.parent), len(hub.requests)
    code, out, _ = project.run("sync", "--from", "out", "--dry-run", "--json")
    assert code == 0
    plan = {m["alias"]: (m["action"], m["reason"]) for m in json.loads(out)["models"]}
    assert plan["double"] == ("download", "not in the cache; from bundle out")
    assert plan["triple"] == (
        "fail",
        f"out: the bundle has no archive {_sha(project, 'triple')}; "
        "make it again with: hubpin bundle out",
    )
    assert _tree(project.root.parent) == before and len(hub.requests) == requests


def _sha(project: Project, alias: str) -> str:
    text = project.lock.read_text()
    return re.search(rf"\[models\.{alias}\][^\[]*?archive_sha256 = \"(\w+)\"", text, re.S)[1]  # type: ignore[index]


def test_lock_dry_run(project: Project, hub: HubServer) -> None:
    handles = _locked(project, hub, "double", "triple")
    project.models(double=handles["double"], quint=hub.handle("google/quint/1"))
    project.write(
        project.manifest.read_text().replace(
            "[models.double]\n", '[models.double]\nformat = "UNCOMPRESSED"\n'
        )
    )
    before, requests = _tree(project.root.parent), len(hub.requests)
    code, out, err = project.run("lock", "--dry-run")
    assert code == 0, err
    assert out.splitlines() == [
        f"{'ALIAS':<20} {'ACTION':<8} {'SIZE':>10}  REASON",
        f"{'double':<20} {'pin':<8} {'?':>10}  format is 'UNCOMPRESSED' in the manifest, "
        "'COMPRESSED' in the lock (network)",
        f"{'quint':<20} {'pin':<8} {'?':>10}  not in models.lock (network)",
        out.splitlines()[3],
        "dry run: 2 to pin, 0 kept, 1 dropped; models.lock not written",
    ]
    assert re.fullmatch(
        r"triple +drop +\S+ \S+  in the lock but not in the manifest", out.splitlines()[3]
    )
    code, out, _ = project.run("lock", "--dry-run", "--json")
    doc = json.loads(out)
    assert doc["totals"] == {"pin": 2, "keep": 0, "drop": 1}
    assert [(m["alias"], m["action"]) for m in doc["models"]] == [
        ("double", "pin"),
        ("quint", "pin"),
        ("triple", "drop"),
    ]
    assert _tree(project.root.parent) == before and len(hub.requests) == requests

    project.models(double=handles["double"], triple=handles["triple"])
    code, out, _ = project.run("lock", "--dry-run", "--json", "triple")
    assert [(m["alias"], m["action"], m["reason"]) for m in json.loads(out)["models"]] == [
        ("double", "keep", "pinned, unchanged"),
        ("triple", "pin", "re-pin requested (network)"),
    ]


def test_lock_json_goes_with_dry_run(project: Project, hub: HubServer) -> None:
    """(``sync --json`` is a real sync that prints its outcomes: tests/test_plan.py.)"""
    _locked(project, hub, "double")
    code, out, err = project.run("lock", "--json")
    assert (code, out) == (2, "")
    assert err == "hubpin: error: --json goes with --dry-run; run: hubpin lock --dry-run --json\n"


# ---------------------------------------------------------------- README ↔ parser

_SYNOPSIS = re.compile(r"(?:\[|\]|\||/|…|--?[A-Za-z][\w-]*|[A-Z][A-Z_]*|\s)+")


def _documented() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From the README's block under "## Commands": flags and positionals per command
    ("" for the options before COMMAND)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Commands\n") :]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "no fenced block under ## Commands"
    flags: dict[str, set[str]] = {}
    positionals: dict[str, set[str]] = {}
    command = ""
    for line in block[1].splitlines():
        match = re.match(r"^  ([a-z][a-z-]*)(?: +(.*))?$", line)
        if match:
            command, rest = match[1], match[2] or ""
            synopsis = re.split(r"\s{2,}", rest.strip())[0]
            if not _SYNOPSIS.fullmatch(synopsis):
                synopsis = ""  # straight to the description (`env`)
        elif line.startswith("hubpin ") or (not command and line.startswith(" ")):
            synopsis = line.removeprefix("hubpin ")
        else:
            continue  # a description's continuation
        assert command not in flags or not match, f"{command} documented twice"
        tokens = re.findall(r"--?[A-Za-z][\w-]*|[A-Z][A-Z_]*|[\[\]|/]", synopsis)
        flags.setdefault(command, set())
        positionals.setdefault(command, set())
        for i, token in enumerate(tokens):
            if token.startswith("-"):
                flags[command].add(token)
            elif token[0].isalpha() and (i == 0 or not tokens[i - 1].startswith("-")):
                positionals[command].add(token)  # not a flag's own metavar (`--jobs N`)
    return flags, positionals


def _parser() -> tuple[dict[str, list[list[str]]], dict[str, set[str]]]:
    """From build_parser(): each option's strings and the positionals, per command."""
    import argparse

    from hubpin.cli import build_parser

    parser = build_parser()

    def options(p: argparse.ArgumentParser, skip: set[str]) -> list[list[str]]:
        return [
            a.option_strings
            for a in p._actions
            if a.option_strings
            and not isinstance(a, argparse._HelpAction)
            and not set(a.option_strings) & skip
        ]

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = options(parser, set())
    common = {s for strings in top for s in strings}
    found = {"": top}
    positionals = {"": {sub.metavar}}
    for name, p in sub.choices.items():
        found[name] = options(p, common)
        positionals[name] = {a.metavar for a in p._actions if not a.option_strings}
    return found, positionals


def test_readme_command_list_matches_the_parser() -> None:
    doc_flags, doc_positionals = _documented()
    parser_flags, parser_positionals = _parser()
    assert set(doc_flags) == set(parser_flags), "commands in the README vs in build_parser()"
    for command, options in parser_flags.items():
        where = f"hubpin {command}".strip()
        known = {s for strings in options for s in strings}
        if command:
            known |= {s for strings in parser_flags[""] for s in strings}  # the common options
        undocumented = [s for s in options if not set(s) & doc_flags[command]]
        assert not undocumented, f"README's command list lacks {undocumented} of {where}"
        unknown = doc_flags[command] - known
        assert not unknown, f"README documents {sorted(unknown)} for {where}; the parser has none"
        assert doc_positionals[command] == parser_positionals[command], where


def test_readme_check_can_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An undocumented flag (say a new `lock --refresh`) and a stale one both fail the check."""
    import hubpin.cli

    real = hubpin.cli.build_parser

    def with_upgrade():  # type: ignore[no-untyped-def]
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")
        sub.choices["lock"].add_argument("--refresh", action="store_true")
        return parser

    monkeypatch.setattr(hubpin.cli, "build_parser", with_upgrade)
    with pytest.raises(AssertionError, match=r"lacks \[\['--refresh'\]\] of hubpin lock"):
        test_readme_command_list_matches_the_parser()
    monkeypatch.setattr(hubpin.cli, "build_parser", real)
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text().replace("  env   ", "  upgrade [--json]\n  env   "))
    monkeypatch.setattr(sys.modules[__name__], "README", readme)
    with pytest.raises(AssertionError, match="commands in the README"):
        test_readme_command_list_matches_the_parser()


_ARGVS = [
    ["status"],
    ["-q", "status", "--json"],
    ["status", "-q", "-v"],
    ["lock", "--check"],
    ["-m", "x.toml", "lock", "--check", "-q"],
    ["lock", "--check", "--upgrade"],
    ["lock", "--dry-run", "--json", "a"],
    ["sync", "--frozen", "-j", "3", "a", "b"],
    ["sync", "--locked", "--frozen"],
    ["--lock", "sync", "status"],
    ["-m", "status", "status"],
    ["--cache-dir", "/c", "prune", "--dry-run"],
    ["--format-default", "bogus", "status"],
    ["--progress", "sync", "--from", "gs://b/p"],
    ["--no-progress", "verify", "--repair", "--json"],
    ["resolve", "bert"],
    ["resolve"],
    ["add", "bert", "h", "--format", "compressed"],
    ["remove"],
    ["bundle", "out", "-j", "2"],
    ["image", "oci://r/x:1"],
    ["outdated", "--json"],
    ["env"],
    ["completion", "bash"],
    ["status", "--bogus"],
    ["status", "extra"],
    ["-h"],
    ["status", "-h"],
    ["-h", "status"],
    ["--he", "status"],
    ["--version"],
    ["--ver", "-v"],
    ["status", "--version"],
    ["statu"],
    ["--json", "status"],
    [],
    ["-q"],
]


@pytest.mark.parametrize("argv", _ARGVS, ids=lambda argv: " ".join(argv) or "(nothing)")
def test_the_parser_of_one_command_parses_as_the_whole_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`hubpin CMD` builds CMD's parser alone; whatever argv is, it must say what the whole
    parser says: the same arguments, or the same help, message and exit code."""
    from hubpin.cli.parser import build_parser, parser_for

    def parse(parser: argparse.ArgumentParser) -> tuple[object, ...]:
        try:
            found = vars(parser.parse_args(argv))
        except SystemExit as exc:
            return ("exit", exc.code, *capsys.readouterr())
        found["func"] = getattr(found.get("func"), "name", None)
        found.pop("parser", None)  # completion's: the whole parser, to list every command
        return ("parsed", found, *capsys.readouterr())

    assert parse(parser_for(argv)) == parse(build_parser())


def test_a_command_builds_only_its_own_parser() -> None:
    from hubpin.cli.parser import parser_for

    def commands(argv: list[str]) -> set[str]:
        parser = parser_for(argv)
        return set(next(a for a in parser._actions if a.dest == "command").choices)

    assert commands(["-q", "status"]) == {"status"}
    assert commands(["lock", "--check"]) == {"lock"}
    assert len(commands(["-h", "status"])) == len(commands(["completion", "bash"])) > 10


# ---------------------------------------------------------------- a closed pipe


def test_a_reader_that_leaves_early_ends_hubpin_quietly(project: Project, hub: HubServer) -> None:
    """``hubpin status | head -1``: the reader closes the pipe before hubpin writes; hubpin
    stops as a tool killed by SIGPIPE does (141 in a shell), no traceback, on the full path
    and on the stamp's replay."""
    import subprocess

    _locked(project, hub, "double", "triple")
    for run in ("full path", "replay"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubpin", "status"],
            cwd=project.root,
            env={**os.environ, "PYTHONPATH": WORKTREE, "TFHUB_CACHE_DIR": str(project.cache)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before hubpin has started
        err = proc.stderr.read().decode()
        assert proc.wait() == 141, (run, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (run, err)


def test_output_that_cannot_be_written_is_one_line_not_a_traceback(
    project: Project, hub: HubServer
) -> None:
    """``hubpin resolve double > /dev/full``: the output is buffered until the end (no
    PYTHONUNBUFFERED), and its last flush fails; one line and exit 1."""
    import subprocess

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    _locked(project, hub, "double")
    code, _, err = project.run("sync", "--locked")
    assert code == 0, err
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "hubpin", "resolve", "double"],
            cwd=project.root,
            env=env | {"PYTHONPATH": WORKTREE, "TFHUB_CACHE_DIR": str(project.cache)},
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "hubpin: error: cannot write the output: [Errno 28]" in result.stderr


def test_every_command_argument_has_help_and_the_top_help_shows_the_first_steps() -> None:
    """`hubpin COMMAND --help` explains each positional and flag (a bare "ALIAS" said nothing
    of which aliases, or that none means all); `hubpin --help` ends with the first steps and
    the exit codes."""
    import argparse

    from hubpin.cli.parser import build_parser

    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [
        f"{name} {action.metavar or action.dest}"
        for name, command in sub.choices.items()
        for action in command._actions
        if not action.help and not isinstance(action, argparse._HelpAction)
    ]
    assert bare == []
    said = parser.format_help()
    assert "first steps:\n  hubpin add bert https://tfhub.dev/" in said, said
    assert "exit codes: 0 success, 1 a check or an operation failed, 2 bad usage" in said
    assert "commit (Hugging Face)" in sub.choices["outdated"].description


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["sync", "--lockd"],
            "hubpin: error: hubpin sync has no option --lockd; did you mean --locked?",
        ),
        (
            ["lock", "--chek"],
            "hubpin: error: hubpin lock has no option --chek; did you mean --check?",
        ),
        (
            ["sync", "--dryrun"],
            "hubpin: error: hubpin sync has no option --dryrun; did you mean --dry-run?",
        ),
        (
            ["--verbse", "status"],
            "hubpin: error: hubpin status has no option --verbse; did you mean --verbose?",
        ),
        (
            ["status", "extra"],
            "hubpin: error: hubpin status does not take extra; see: hubpin status --help",
        ),
        (
            ["sync", "--lock"],
            "hubpin sync: error: argument --lock: expected one argument; see: hubpin sync --help",
        ),
        (
            ["sync", "-j", "x"],
            "hubpin sync: error: argument --jobs/-j: invalid int value: 'x'; "
            "see: hubpin sync --help",
        ),
        (
            ["sync", "--locked", "--frozen"],
            "hubpin sync: error: argument --frozen: not allowed with argument --locked; "
            "see: hubpin sync --help",
        ),
    ],
)
def test_an_unknown_option_is_one_line_with_the_closest_of_the_command(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not argparse's top-level usage and 'unrecognized arguments: --lockd' (no suggestion),
    nor a command's whole usage block above a missing or mistyped value."""
    from hubpin.cli.parser import parser_for

    with pytest.raises(SystemExit) as exited:
        parser_for(argv).parse_args(argv)
    assert (exited.value.code, capsys.readouterr().err) == (2, f"{said}\n")
