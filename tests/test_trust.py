"""Checks verify what they vouch for: a record edited to match a damaged entry, a no-op stamp
that lies, an entry that is a symlink out of the cache, a file nobody may read, a changed
pinned folder; and a record that cannot be read heals (re-hash or re-fetch, one line)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import Model, Project, hubpin_imports
from faultkit import (
    heavy_model,
    leftovers,
    snapshot,
    spawn_hubpin,
    without_root_overrides,
)
from hubserver import HubServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from savedmodels import pack

import hubpin

DOUBLE = "google/double/1"


def _synced(project: Project, hub: HubServer) -> tuple[Path, Path]:
    project.models(double=hub.handle(DOUBLE))
    assert project.run("sync")[0] == 0
    entry = project.entry(hub.handle(DOUBLE))
    return entry, entry.with_name(entry.name + ".hubpin.json")


def _state(project: Project) -> str:
    code, out, err = project.run("status", "--json")
    assert code == 0, err
    return json.loads(out)["models"][0]["state"]


def test_a_record_edited_to_drop_a_deleted_file_is_not_trusted(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    entry, record = _synced(project, hub)
    (entry / "saved_model.pb").unlink()
    data = json.loads(record.read_text())
    del data["files"]["saved_model.pb"]  # the tree digest still says what the lock pins
    record.write_text(json.dumps(data))
    assert _state(project) == "no hubpin record for the entry"  # before: "synced"
    with pytest.raises(hubpin.NotSyncedError):
        hubpin.Lock(project.lock).resolve("double")
    code, out, err = project.run("sync")
    assert code == 0 and "fetched" in out, err  # before: "already present"
    assert snapshot(entry) == snapshot(models["double"].folder)
    assert _state(project) == "synced"


@pytest.mark.parametrize("lie", ["no entries", "another cache", "another project's stamp"])
def test_a_stamp_that_lies_does_not_answer_a_sync(
    project: Project, hub: HubServer, lie: str
) -> None:
    entry, _ = _synced(project, hub)
    code, said, imported = hubpin_imports(project, "sync")  # leaves the stamp
    assert code == 0 and "1 already present" in said
    code, said, imported = hubpin_imports(project, "sync")
    assert code == 0 and "pydantic" not in imported, "the stamp answers an identical sync"
    (stamp,) = (Path(os.environ["XDG_CACHE_HOME"]) / "hubpin" / "noop").iterdir()
    data = json.loads(stamp.read_text())
    if lie == "no entries":
        data["entries"] = []
    elif lie == "another cache":
        other = project.root.parent / "intact-copy"
        shutil.copytree(project.cache, other)
        data["cache"] = str(other)
    else:  # a project elsewhere, with its own model in the same cache, and its stamp
        elsewhere = project.root.parent / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "models.toml").write_text(
            f'[models.triple]\nhandle = "{hub.handle("google/triple/1")}"\n'
        )
        before = set(stamp.parent.iterdir())
        for _ in range(2):
            assert hubpin_imports(Project(elsewhere, project.cache, project.capsys), "sync")[0] == 0
        (theirs,) = set(stamp.parent.iterdir()) - before
        data = json.loads(theirs.read_text())
    stamp.write_text(json.dumps(data))
    shutil.rmtree(entry)
    code, said, imported = hubpin_imports(project, "sync")
    assert code == 0 and "pydantic" in imported, said  # before: exit 0 from the stamp
    assert "double" in said and "fetched" in said and entry.is_dir()


def test_an_entry_that_is_a_symlink_out_of_the_cache_fails_verify(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    entry, _ = _synced(project, hub)
    outside = project.root.parent / "outside"
    shutil.move(entry, outside)
    entry.symlink_to(outside, target_is_directory=True)
    code, out, err = project.run("verify")
    assert code == 1, err  # before: "ok"
    assert f"  {entry.name} is a symlink to {outside}, not a folder hubpin published" in out
    assert _state(project).endswith(
        "is a symlink to " + str(outside) + ", not a folder hubpin published"
    )
    code, out, err = project.run("verify", "--repair")
    assert code == 0 and f"{'double':<20} repaired" in out, err
    assert entry.is_dir() and not entry.is_symlink()
    assert snapshot(entry) == snapshot(models["double"].folder)
    assert snapshot(outside) == snapshot(models["double"].folder), "the link's target is not ours"
    assert leftovers(project.cache) == [], "the swapped-out link left no .tmp behind"
    assert project.run("verify")[0] == 0

    shutil.rmtree(outside)  # a link to nothing: replaced the same way
    shutil.rmtree(entry)
    entry.symlink_to(outside, target_is_directory=True)
    code, out, err = project.run("sync")
    assert code == 0 and "fetched" in out, err
    assert entry.is_dir() and not entry.is_symlink() and leftovers(project.cache) == []


def test_a_model_file_nobody_may_read_is_not_synced(project: Project, hub: HubServer) -> None:
    entry, _ = _synced(project, hub)
    pb = entry / "saved_model.pb"
    pb.chmod(0)
    try:
        assert _state(project) == "saved_model.pb is not readable (mode 000)"  # before: synced
        code, out, err = project.run("verify")
        assert code == 1 and "saved_model.pb is not readable (mode 000)" in out, err
        code, out, err = project.run("sync")
        assert code == 0 and "fetched" in out, err
        assert pb.stat().st_mode & 0o444 and _state(project) == "synced"
        assert leftovers(project.cache) == []
    finally:
        with_mode = [
            p for p in entry.parent.rglob("saved_model.pb") if not p.stat().st_mode & 0o444
        ]
        for path in with_mode:
            path.chmod(0o644)


def test_repairing_an_entry_with_an_unreadable_folder_leaves_nothing_behind(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    """A folder inside the entry that its user may not read (mode 000, file modes obeyed as
    for any user): the entry is replaced and the swapped-out one removed, no ``.tmp`` left."""
    entry, _ = _synced(project, hub)
    locked = entry / "variables"
    locked.chmod(0)
    try:
        proc = spawn_hubpin(project.root, project.cache, "sync", preexec_fn=without_root_overrides)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "fetched" in out, err
        assert leftovers(project.cache) == [], "the old entry was left as a .tmp folder"
        assert snapshot(entry) == snapshot(models["double"].folder)
    finally:
        for path in project.cache.glob("*/variables"):
            path.chmod(0o755)


def test_load_with_verify_re_hashes_a_pinned_folder(
    project: Project, models: dict[str, Model]
) -> None:
    folder = project.root / "model"
    shutil.copytree(models["double"].folder, folder)
    project.models(local="model")
    assert project.run("lock")[0] == 0
    lock = hubpin.Lock(project.lock)
    assert lock.resolve("local", verify=True) == str(folder)
    variables = next((folder / "variables").glob("variables.data-*"))
    variables.write_bytes(bytes(b ^ 0xFF for b in variables.read_bytes()))  # same size
    assert lock.resolve("local") == str(folder)  # the cheap check is an existence check
    with pytest.raises(hubpin.DamagedEntryError, match=r"pinned folder .* holds tree-v1:"):
        lock.resolve("local", verify=True)  # before: returned the folder


BAD_RECORDS = {
    "nested 200,000 levels": "[" * 200_000 + "]" * 200_000,
    "a size of Infinity": None,  # built from the real record below
    "NaN": None,
    "not UTF-8": b"\xff\xfe{",
    "a list": "[]",
    "a size that is a string": None,
    "a size that is true": None,
}


def _bad(real: dict[str, object], name: str) -> str | bytes:
    files: dict[str, list[object]] = real["files"]  # type: ignore[assignment]
    first = sorted(files)[0]
    if name == "a size of Infinity":
        return json.dumps(real).replace(f'"{first}": [{files[first][0]}', f'"{first}": [Infinity')
    if name == "NaN":
        return json.dumps(real).replace(f'"{first}": [{files[first][0]}', f'"{first}": [NaN')
    if name == "a size that is a string":
        return json.dumps(
            real | {"files": files | {first: [str(files[first][0]), files[first][1]]}}
        )
    if name == "a size that is true":
        return json.dumps(real | {"files": files | {first: [True, files[first][1]]}})
    bad = BAD_RECORDS[name]
    assert bad is not None
    return bad


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_a_record_that_cannot_be_read_heals_instead_of_crashing(
    project: Project, hub: HubServer, name: str
) -> None:
    _, record = _synced(project, hub)
    bad = _bad(json.loads(record.read_text()), name)
    record.write_bytes(bad if isinstance(bad, bytes) else bad.encode())
    assert _state(project) == "no hubpin record for the entry"  # before: a traceback
    code, out, err = project.run("verify")
    assert code == 1 and "no hubpin record for the entry" in out and "Traceback" not in err
    with pytest.raises(hubpin.NotSyncedError):
        hubpin.Lock(project.lock).resolve("double")
    downloads = hub.archive_requests(DOUBLE)
    code, out, err = project.run("sync")
    assert code == 0 and "adopted" in out, err  # re-hashed, matched, recorded: no download
    assert hub.archive_requests(DOUBLE) == downloads
    assert _state(project) == "synced" and project.run("verify")[0] == 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(
        ["handle", "tree_digest", "files", "dirs", "created_by", "adopted", "crc32c", "version"]
    ),
    value=JSON,
)
def test_any_malformed_record_is_refused_with_a_value_error(field: str, value: object) -> None:
    """Every field replaced by any JSON value: parsed, or refused with ValueError, nothing else."""
    from hubpin.cache import Record, parse_record
    from hubpin.digests import Tree

    tree = Tree()
    tree.add_file("saved_model.pb", 3, "a" * 64)
    real = json.loads(Record("h", tree.digest(), tree).to_json())
    text = json.dumps(real | {field: value}, allow_nan=True)
    try:
        record, _ = parse_record(text)
    except ValueError:
        return
    assert record.tree.digest() == record.tree_digest


def _bytes_read() -> int:
    """Bytes this process has read so far, through any file (Linux's /proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_an_entry_tensorflow_hub_made_is_read_once_to_adopt_and_rechecked_if_it_changed(
    project: Project, hub: HubServer, models: dict[str, Model], tmp_path: Path
) -> None:
    """Entries without hubpin's record are hashed when the sync is planned; under each key's
    lock that hash is trusted only if the folder's stamp (every path's inode, size, mtime and
    ctime) is what it was: 16 MiB of model are read once, not twice, and a file rewritten
    between planning and the lock (same size, mtime put back) is caught and fetched again."""
    from hubpin.ops.common import open_sources, syncer
    from hubpin.project import Project as HubpinProject

    big = heavy_model(tmp_path, models["double"].folder, files=2, size=8 << 20)
    hub.models["google/big/1"] = pack(big)
    handles = {"big": hub.handle("google/big/1"), "double": hub.handle(DOUBLE)}
    project.models(**handles)
    assert project.run("lock", "--no-fill")[0] == 0
    for alias, folder in (("big", big), ("double", models["double"].folder)):
        entry = project.entry(handles[alias])  # as tensorflow_hub leaves one: no record
        shutil.copytree(folder, entry)
        entry.with_name(entry.name + ".descriptor.txt").write_text(f"Module: {handles[alias]}\n")
    time.sleep(2.1)  # settled: older than the coarsest file timestamps (see hash_stamped)
    mine = HubpinProject.discover(project.manifest)
    pins = dict(mine.read_lock().models)
    with open_sources(mine) as sources:
        run = syncer(mine, sources, offline=False, full_verify=False)
        start = _bytes_read()
        plan = run.plan(pins)
        planned = _bytes_read() - start
        assert [(s.alias, s.action.value) for s in plan.steps] == [
            ("big", "adopt"),
            ("double", "adopt"),
        ]
        victim = project.entry(handles["double"]) / "saved_model.pb"
        was = victim.stat()
        victim.write_bytes(bytes(was.st_size))  # a tool rewrote it in place, mtime put back
        os.utime(victim, ns=(was.st_atime_ns, was.st_mtime_ns))
        start = _bytes_read()
        outcomes = {o.alias: o.status for o in run.execute(plan, 2)}
        executed = _bytes_read() - start
    assert outcomes == {"big": "adopted", "double": "fetched"}
    assert victim.read_bytes() == (models["double"].folder / "saved_model.pb").read_bytes()
    assert planned >= 16 << 20, planned
    assert executed < 4 << 20, executed  # hashed twice, it read the 16 MiB again
    code, out, _ = project.run("verify")
    assert code == 0, out
