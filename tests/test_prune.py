"""``hubpin prune`` in a cache shared with other projects and with tensorflow_hub: it removes
only what its own lock created and no lock pins, refuses a stale lock, and finishes the rest
when one path cannot be removed."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

from conftest import Project
from faultkit import (
    snapshot,
    spawn_hubpin,
    spawn_waiting,
    sync_while_reading_a_note,
    sync_while_waiting,
    without_root_overrides,
)
from hubserver import HubServer
from test_disk import mount  # noqa: F401  (the fixture)

from hubpin.owners import note_name


def _key(handle: str) -> str:
    return hashlib.sha1(handle.encode()).hexdigest()


def _entries(cache: Path) -> dict[str, bytes]:
    """The cache's files but the projects' notes (a lock notes its keys again as it changes)."""
    return {k: v for k, v in snapshot(cache).items() if not k.startswith("hubpin-projects/")}


def _names(cache: Path, key: str) -> set[str]:
    return {p.name for p in cache.iterdir() if p.name.startswith(key)}


def test_prune_in_a_shared_cache_removes_only_its_own_unpinned_entries(
    project: Project, hub: HubServer
) -> None:
    double, triple, quint = (hub.handle(f"google/{m}/1") for m in ("double", "triple", "quint"))
    project.models(double=double, triple=triple)
    assert project.run("sync")[0] == 0  # P creates double and triple
    other = project.root.parent / "other"  # project Q, same cache
    other.mkdir()
    (other / "models.toml").write_text(
        f'[models.triple]\nhandle = "{triple}"\n\n[models.quint]\nhandle = "{quint}"\n'
    )
    q = ["-m", str(other / "models.toml")]
    code, _, err = project.run(*q, "sync")
    assert code == 0, err  # triple: P's entry; quint: created by Q's lock
    # What unmodified tensorflow_hub leaves: a folder and its descriptor, no hubpin record.
    theirs = _key("https://tfhub.dev/google/theirs/1")
    (project.cache / theirs).mkdir()
    (project.cache / theirs / "saved_model.pb").write_bytes(b"tensorflow_hub's download")
    (project.cache / f"{theirs}.descriptor.txt").write_text(
        "Module: https://tfhub.dev/google/theirs/1\n"
    )
    before = _entries(project.cache)

    project.models(double=double)  # P drops triple
    assert project.run("lock")[0] == 0
    code, _, err = project.run("prune")
    assert code == 0, err
    assert err.splitlines()[-2:] == [
        "kept 3 entries this lock does not pin: 2 pinned by other projects' locks, "
        "1 not created by hubpin (--foreign removes them)",
        "0 paths, freed 0 B",
    ], err  # before: P's prune removed Q's triple and tensorflow_hub's entry
    assert _entries(project.cache) == before
    assert project.run(*q, "verify")[0] == 0

    shutil.rmtree(other)  # Q is deleted: its lock pins nothing any more
    code, _, err = project.run("prune", "--dry-run")
    assert code == 0, err
    assert f"would forget {other / 'models.lock'}: that lock no longer exists" in err
    assert sorted(
        line.split()[2] for line in err.splitlines() if line.startswith("would remove")
    ) == [
        str(project.cache / f"{_key(triple)}{suffix}")
        for suffix in ("", ".descriptor.txt", ".hubpin.json")
    ]  # P created triple; Q's quint and tensorflow_hub's entry are not P's to remove
    assert "1 created by other projects (--all-unpinned removes them)" in err
    assert _entries(project.cache) == before, "--dry-run changes nothing"

    assert project.run("prune")[0] == 0
    assert _names(project.cache, _key(triple)) == set()
    assert (project.cache / _key(quint)).is_dir() and (project.cache / theirs).is_dir()
    code, _, err = project.run("prune", "--all-unpinned")
    assert code == 0, err
    assert _names(project.cache, _key(quint)) == set() and (project.cache / theirs).is_dir()
    code, _, err = project.run("prune", "--foreign")
    assert code == 0, err
    assert _names(project.cache, theirs) == set()
    assert sorted(p.name for p in project.cache.iterdir()) == sorted(
        [
            _key(double),
            f"{_key(double)}.descriptor.txt",
            f"{_key(double)}.hubpin.json",
            "hubpin-projects",
        ]
    )
    assert project.run("verify")[0] == 0


def test_prune_refuses_a_lock_that_no_longer_matches_the_manifest(
    project: Project, hub: HubServer
) -> None:
    double, triple = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=double, triple=triple)
    assert project.run("sync")[0] == 0
    project.models(double=double, quint=hub.handle("google/quint/1"))  # not locked yet
    before = snapshot(project.cache)
    code, _, err = project.run("prune")
    assert code == 1
    assert err.strip() == (
        "hubpin: error: models.lock does not match models.toml: "
        f"{err.split('models.toml: ', 1)[1].split('; prune keeps', 1)[0]}; prune keeps what "
        "the lock pins, so run: hubpin lock, then hubpin prune"
    )
    assert "triple" in err and "quint" in err
    assert snapshot(project.cache) == before


def test_prune_removes_the_rest_when_one_path_cannot_be_removed(
    project: Project,
    hub: HubServer,
    mount,  # noqa: F811
) -> None:
    double, triple = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=double, triple=triple)
    assert project.run("sync")[0] == 0
    project.models(double=double)
    assert project.run("lock")[0] == 0
    cache = project.cache
    outside = project.root.parent / "not-the-cache"
    outside.mkdir()
    (outside / "precious").write_text("not hubpin's")
    link = cache / f"{_key(double)}.{uuid.uuid4().hex}.old"  # a leftover that is a symlink
    link.symlink_to(outside, target_is_directory=True)
    stuck = cache / f"{_key(double)}.{uuid.uuid4().hex}.old"  # a leftover that cannot go
    stuck.mkdir()
    (stuck / "saved_model.pb").write_bytes(b"partial")
    mount(stuck, read_only=True)

    code, _, err = project.run("prune")
    assert code == 1, err
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("hubpin: error:")] == [
        f"hubpin: error: could not remove {stuck}: cannot write {stuck / 'saved_model.pb'}: "
        "the file system is read-only"
    ], err
    assert f"removed {link} (" in err and f"removed {stuck}" not in err
    assert lines[-1].endswith(f"; 1 path could not be removed: {stuck}"), err
    assert lines[-1].startswith("4 paths, freed "), err  # the link and triple's 3 paths
    assert not link.is_symlink() and (outside / "precious").read_text() == "not hubpin's"
    assert _names(cache, _key(triple)) == set()
    assert "Traceback" not in err


def test_prune_removes_a_leftover_holding_an_unreadable_folder(
    project: Project, hub: HubServer
) -> None:
    """As any user (file modes obeyed): a crashed sync's folder with a mode-000 folder inside."""
    double = hub.handle("google/double/1")
    project.models(double=double)
    assert project.run("sync")[0] == 0
    left = project.cache / f"{_key(double)}.{uuid.uuid4().hex}.old"
    (left / "variables").mkdir(parents=True)
    (left / "variables" / "variables.index").write_bytes(b"partial")
    (left / "variables").chmod(0)
    try:
        proc = spawn_hubpin(project.root, project.cache, "prune", preexec_fn=without_root_overrides)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err  # before: exit 1 after printing "removed …"
        *_, removed, summary = err.splitlines()
        assert removed.startswith(f"removed {left} (") and summary.startswith("1 path, freed"), err
        assert not left.exists()
    finally:
        if (left / "variables").exists():
            (left / "variables").chmod(0o755)


def _dropped_by_p(project: Project, hub: HubServer) -> tuple[str, Path, list[str]]:
    """P created triple's entry and no longer pins it (its prune's to remove); Q, a project
    on the same cache, pins the same model and has not synced yet. Returns triple's handle,
    Q's folder and the flags that run Q in this process."""
    triple = hub.handle("google/triple/1")
    project.models(triple=triple)
    assert project.run("sync")[0] == 0
    project.write("")
    assert project.run("lock")[0] == 0
    other = project.root.parent / "other"
    other.mkdir()
    (other / "models.toml").write_text(f'[models.triple]\nhandle = "{triple}"\n')
    return triple, other, ["-m", str(other / "models.toml")]


def test_a_project_synced_while_another_prunes_keeps_its_entry(
    project: Project, hub: HubServer
) -> None:
    """Q's sync finds the entry present and notes Q while P's prune is planning (held here
    in its read of a note, a FIFO, after it listed the notes). Before: P's prune went on
    from the notes it had listed and removed the entry, after Q's sync said "already
    present" (exit 0); Q's status: not synced."""
    triple, other, _ = _dropped_by_p(project, hub)
    fifo = project.cache / "hubpin-projects" / "0-held.json"
    code, out, q_err, err = sync_while_reading_a_note(fifo, project.root, project.cache, other)
    assert code == 0 and "already present" in out, q_err
    assert "1 pinned by other projects' locks" in err, err
    assert (project.entry(triple) / "saved_model.pb").is_file(), err


def test_prune_decides_under_the_entrys_lock_with_the_notes_as_they_are_then(
    project: Project, hub: HubServer
) -> None:
    """P's prune planned to remove the entry, then waits for its ``<key>.lock`` (held here, as
    a live sync would); Q's sync notes Q meanwhile and then waits for that lock to look at
    the entry again. Under the lock, prune reads the notes again and keeps the entry; Q's
    sync, its second look done, says "already present" (exit 0)."""
    triple, other, q = _dropped_by_p(project, hub)
    assert project.run(*q, "lock", "--no-fill")[0] == 0  # Q's sync: the entry is present
    key = project.entry(triple).name
    lock = project.cache / f"{key}.lock"
    prune, release = spawn_waiting(
        project.root, project.cache, lock, lambda task: project.cache / f"{key}.{task}.tmp", "prune"
    )
    sync = spawn_hubpin(other, project.cache, "sync")
    note = project.cache / "hubpin-projects" / note_name(other / "models.lock")
    out, err, prune_err = sync_while_waiting(prune, release, sync, note.exists)
    assert sync.returncode == 0 and "already present" in out, err
    assert prune.returncode == 0 and "1 pinned by other projects' locks" in prune_err, prune_err
    assert (project.entry(triple) / "saved_model.pb").is_file()
    out = project.run(*q, "status")[1]
    assert out.splitlines()[-1].split()[-1] == "synced", out
