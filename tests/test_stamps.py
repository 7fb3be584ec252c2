"""Repeated ``status`` and ``lock --check`` are answered from a stamp without pydantic, and
must say exactly what the full path says; a lock edited by hand is always checked in full."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORKTREE, Model, Project
from hubserver import HubServer
from kaggleserver import KaggleServer
from test_kaggle_sync import SLUG, kaggle  # noqa: F401 - the Kaggle stand-in fixture


def _run(project: Project, *argv: str, stamps: Path | None = None) -> tuple[int, str, str, bool]:
    """``python -X importtime -m hubpin ARGV``: exit code, stdout, stderr without the
    timings, and whether pydantic was imported (the full path). ``stamps``: another
    XDG_CACHE_HOME, where no stamp is."""
    env = {**os.environ, "PYTHONPATH": WORKTREE, "TFHUB_CACHE_DIR": str(project.cache)}
    if stamps is not None:
        env["XDG_CACHE_HOME"] = str(stamps)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hubpin", *argv],
        cwd=project.root,
        capture_output=True,
        text=True,
        env=env,
    )
    lines = result.stderr.splitlines()
    said = "".join(f"{line}\n" for line in lines if not line.startswith("import time:"))
    full = any(line.rpartition("|")[2].strip() == "pydantic" for line in lines)
    return result.returncode, result.stdout, said, full


def _same_as_full_path(project: Project, *argv: str) -> tuple[int, str, str]:
    """Run ``argv`` from its stamp and on the full path (a fresh XDG_CACHE_HOME each time):
    the replay must not import pydantic and must print and exit alike."""
    code, out, err, full = _run(project, *argv)
    assert not full, f"{argv}: the stamp was not used: {err}"
    fresh = project.root.parent / f"fresh-{len(list(project.root.parent.iterdir()))}"
    expected = _run(project, *argv, stamps=fresh)
    assert expected[3], "the full path imports pydantic"
    assert (code, out, err) == expected[:3], argv
    return code, out, err


COMMANDS = [("status",), ("status", "--json"), ("lock", "--check"), ("-q", "lock", "--check")]


def test_status_and_lock_check_repeat_from_the_stamp_as_the_full_path_says(
    project: Project, hub: HubServer
) -> None:
    double, triple = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=double, triple=triple)
    assert project.run("sync")[0] == 0
    for argv in COMMANDS:
        code, out, err, full = _run(project, *argv)
        assert code == 0 and full, (argv, err)  # the first leaves the stamp
        code, out, err = _same_as_full_path(project, *argv)
        assert code == 0
    assert "double" in _same_as_full_path(project, "status")[1]
    assert "is up to date (2 models)" in _same_as_full_path(project, "lock", "--check")[1]

    # Each entry's state is checked again on every replay, as the full path checks it.
    (project.entry(double) / "saved_model.pb").unlink()
    (project.cache / f"{project.entry(triple).name}.hubpin.json").unlink()
    for argv in COMMANDS[:2]:
        code, out, err = _same_as_full_path(project, *argv)
        assert "missing file saved_model.pb" in out and "no hubpin record" in out, out
    shutil.rmtree(project.entry(double))
    out = _same_as_full_path(project, "status")[1]
    assert [line.split()[-2:] for line in out.splitlines() if "double" in line] == [
        ["not", "synced"]
    ], out


@pytest.mark.parametrize(
    "field, value, check",
    [
        ("cache_key", f'"{"0" * 40}"', 1),  # recomputed from the handle
        ("kind", '"folder"', 2),  # a folder pin has no cache_key
        ("format", '"UNCOMPRESSED"', 1),  # which would make it a gs:// pin
        ("handle", '"http://127.0.0.1:9/other/1"', 1),  # not the manifest's
        ("tree_digest", '"tree-v1:' + "0" * 64 + '"', 0),  # measured, not derived: sync's to find
    ],
)
def test_a_lock_edited_after_a_stamp_is_checked_in_full(
    project: Project, hub: HubServer, field: str, value: str, check: int
) -> None:
    project.models(double=hub.handle("google/double/1"))
    assert project.run("sync")[0] == 0
    for argv in (("lock", "--check"), ("status",)):
        _run(project, *argv)
        assert not _run(project, *argv)[3], "the stamp answers an identical command"
    text = project.lock.read_text()
    edited = "\n".join(
        f"{field} = {value}" if line.startswith(f"{field} = ") else line
        for line in text.splitlines()
    )
    assert edited != text
    project.lock.write_text(edited + "\n")
    code, _, err, full = _run(project, "lock", "--check")
    assert full and code == check and "Traceback" not in err, err
    named = err.startswith("hubpin: error: ") and "models.lock" in err and "double" in err
    assert check == 0 or named, err
    code, out, err, full = _run(project, "status")
    assert full and "Traceback" not in err, err
    if check:
        assert code == 2 and err.startswith("hubpin: error: ") and "models.lock" in err, err
    else:
        assert code == 0 and "the lock pins tree-v1:" + "0" * 64 in out, out
    project.lock.write_text(text)
    assert not _run(project, "lock", "--check")[3], "the lock's own bytes: the stamp again"


def test_what_a_check_reads_from_this_machine_is_read_again(
    project: Project, models: dict[str, Model]
) -> None:
    """A local archive or folder is kind and location recomputed from what is on disk, and a
    folder's status is whether it is there: neither is answered from a stamp."""
    (project.root / "double.tar.gz").write_bytes(models["double"].archive)
    shutil.copytree(models["triple"].folder, project.root / "triple")
    project.models(double="double.tar.gz", folder="triple")
    assert project.run("sync")[0] == 0
    for argv in (("lock", "--check"), ("status",)):
        for _ in range(2):
            code, _, err, full = _run(project, *argv)
            assert code == 0 and full, (argv, err)
    shutil.rmtree(project.root / "triple")
    code, out, err, full = _run(project, "status")
    assert code == 0 and [line.split()[-2:] for line in out.splitlines() if "folder" in line][
        -1
    ] == ["folder", "missing"], out


def test_a_local_archive_sync_is_stamped_under_its_own_entry(
    project: Project, models: dict[str, Model]
) -> None:
    """A path handle fills its archive's content key, not ``sha1(handle)``: the stamp checks
    that entry (before: it checked ``sha1(handle)``, so a sync was never answered from it, and
    an entry there, say one an older hubpin keyed by the path, answered for a deleted one)."""
    (project.root / "double.tar.gz").write_bytes(models["double"].archive)
    project.models(double="double.tar.gz")
    entry = project.entry("double.tar.gz")
    for _ in range(2):
        assert _run(project, "sync")[0] == 0
    code, out, err, full = _run(project, "sync")
    assert code == 0 and not full and "already present" in out, err
    by_path = project.cache / hashlib.sha1(b"double.tar.gz").hexdigest()
    shutil.copytree(entry, by_path)
    shutil.copy(f"{entry}.hubpin.json", f"{by_path}.hubpin.json")
    shutil.rmtree(entry)
    code, out, err, full = _run(project, "sync")
    assert code == 0 and full, err
    assert (entry / "saved_model.pb").is_file(), out


def test_a_kaggle_status_is_never_answered_from_a_stamp(
    project: Project,
    kaggle: KaggleServer,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """A Kaggle pin's state includes kagglehub's copy (what unmodified
    ``kagglehub.model_download`` reads), which the entry's stat check does not see (before:
    the stamp said ``synced`` for a copy with other bytes, the full path named the file)."""
    project.write(f'[models.affine]\nhandle = "kaggle:{SLUG}"\n')
    assert project.run("sync")[0] == 0
    for _ in range(2):
        assert _run(project, "status")[0] == 0
    copy = tmp_path / "kagglehub" / "models" / SLUG / "1" / "saved_model.pb"
    other = copy.with_name("other")
    other.write_bytes(copy.read_bytes() + b"x")
    other.replace(copy)
    code, out, err, full = _run(project, "status")
    assert code == 0 and full, err
    assert f"kagglehub's copy {copy}: other bytes" in out, out


def test_a_sync_notes_its_lock_again_after_another_projects_prune_forgot_it(
    project: Project, hub: HubServer
) -> None:
    """The stamp's replay writes nothing, so it must find this lock noted in the cache as the
    sync it stands for left it. Before: P's lock was away while Q pruned (Q forgot P's note),
    P's next sync was the stamp's "already present" without noting P again, and Q's next
    prune removed the entry P pins (P's status: not synced)."""
    triple = hub.handle("google/triple/1")
    other = project.root.parent / "other"  # project Q, same cache, creates the entry
    other.mkdir()
    (other / "models.toml").write_text(f'[models.triple]\nhandle = "{triple}"\n')
    q = ["-m", str(other / "models.toml")]
    assert project.run(*q, "sync")[0] == 0
    project.models(triple=triple)
    for _ in range(2):
        assert _run(project, "sync")[0] == 0
    assert not _run(project, "sync")[3], "the stamp answers a repeated sync"

    project.lock.rename(project.root / "away.lock")  # a checkout without it, say
    code, _, err = project.run(*q, "prune")
    assert code == 0 and f"forgot {project.lock}" in err, err
    (project.root / "away.lock").rename(project.lock)
    code, out, err, full = _run(project, "sync")
    assert code == 0 and full and "already present" in out, err

    (other / "models.toml").write_text("")  # Q drops the model and prunes
    assert project.run(*q, "lock")[0] == 0
    code, _, err = project.run(*q, "prune")
    assert code == 0 and "1 pinned by other projects' locks" in err, err
    assert (project.entry(triple) / "saved_model.pb").is_file()
    assert not _run(project, "sync")[3], "noted again: the stamp answers again"
