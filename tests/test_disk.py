"""Full disks, exhausted inodes, file-size limits and read-only caches: a clean one-line error
and the previous state intact. Uses real mounts (tmpfs, read-only bind) when the test runs as
root, and RLIMIT_FSIZE in a subprocess otherwise."""

from __future__ import annotations

import resource
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Model, Project
from faultkit import heavy_archive, heavy_model, leftovers, snapshot, spawn_hubpin
from hubserver import HubServer


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a tmpfs or a read-only bind at a path; skipped where mounting is not allowed."""
    mounted: list[Path] = []

    def run(*argv: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(
                f"cannot mount here ({' '.join(argv)}: {result.stderr.strip()}); "
                "these faults need root or CAP_SYS_ADMIN"
            )

    def do(
        path: Path, *, size: str | None = None, inodes: int | None = None, read_only: bool = False
    ) -> Path:
        if read_only:
            run("mount", "--bind", str(path), str(path))
            mounted.append(path)
            run("mount", "-o", "remount,bind,ro", str(path))
            return path
        path.mkdir(parents=True, exist_ok=True)
        options = ",".join(
            o
            for o in (f"size={size}" if size else "", f"nr_inodes={inodes}" if inodes else "")
            if o
        )
        run("mount", "-t", "tmpfs", "-o", options or "size=16m", "tmpfs", str(path))
        mounted.append(path)
        return path

    yield do
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def _heavy(project: Project, models: dict[str, Model], base: Path, files: int = 12) -> str:
    """A local mirror archive of ~1.5 MiB unpacked, plus the small model 'double' as state."""
    (project.root / "mirror").mkdir(exist_ok=True)
    (project.root / "mirror" / "heavy.tar.gz").write_bytes(
        heavy_archive(base, models["double"].folder, files=files)
    )
    (project.root / "mirror" / "double.tar.gz").write_bytes(models["double"].archive)
    return "mirror/heavy.tar.gz"


def _only_error_line(err: str) -> list[str]:
    return [line for line in err.splitlines() if "FAILED" in line or "error:" in line]


def test_sync_refuses_a_model_that_cannot_fit_before_downloading(
    project: Project, hub: HubServer, models: dict[str, Model], mount, tmp_path_factory
) -> None:
    hub.models["google/heavy/1"] = heavy_archive(
        tmp_path_factory.getbasetemp(), models["double"].folder, files=12
    )
    heavy, double = hub.handle("google/heavy/1"), hub.handle("google/double/1")
    project.models(heavy=heavy, double=double)
    assert project.run("lock", "--no-fill")[0] == 0  # hash only: the lock knows the sizes
    mount(project.cache, size="1m")
    assert project.run("sync", "double")[0] == 0
    before = snapshot(project.cache)
    hub.requests.clear()
    code, _, err = project.run("sync")
    assert code == 1
    (line,) = _only_error_line(err)
    assert line.startswith("heavy ") and "not enough space in" in line
    assert "(unpacked_size in the lock) needs" in line and "hubpin prune" in line
    assert hub.archive_requests("google/heavy/1") == 0, "downloaded what could not fit"
    assert snapshot(project.cache) == before
    assert leftovers(project.cache) == []


@pytest.mark.parametrize("inodes", range(12, 28))
def test_running_out_of_inodes_anywhere_leaves_the_previous_state(
    project: Project, models: dict[str, Model], mount, tmp_path_factory, inodes: int
) -> None:
    """ENOSPC at whichever step the inodes run out: lock, work folder, member, descriptor."""
    heavy = _heavy(project, models, tmp_path_factory.getbasetemp(), files=6)
    project.models(double="mirror/double.tar.gz")
    mount(project.cache, size="64m", inodes=inodes)
    code, _, err = project.run("sync")
    if code != 0:
        pytest.skip(f"nr_inodes={inodes} cannot even hold the first model")
    before = snapshot(project.cache)
    project.models(double="mirror/double.tar.gz", heavy=heavy)
    code, _, err = project.run("sync")
    if code == 0:  # enough inodes after all: then it must be complete
        assert project.run("verify")[0] == 0
        return
    assert code == 1
    lines = _only_error_line(err)
    assert lines and all("Traceback" not in line for line in lines)
    assert any("no space left on the device" in line for line in lines), err
    assert any(line.startswith("hubpin: error: heavy (mirror/heavy.tar.gz)") for line in lines)
    assert {k: v for k, v in snapshot(project.cache).items() if k in before} == before
    entry = project.entry(heavy)
    if entry.exists():  # failed after the rename, writing hubpin's record: complete anyway
        folder = heavy_model(tmp_path_factory.getbasetemp(), models["double"].folder, files=6)
        assert snapshot(entry) == snapshot(folder)
    assert leftovers(project.cache) == []
    subprocess.run(["mount", "-o", "remount,nr_inodes=1000", str(project.cache)], check=True)
    code, _, err = project.run("sync")  # space freed: the rerun completes
    assert code == 0, err
    assert project.run("verify")[0] == 0


def test_a_file_size_limit_is_a_clean_error(
    project: Project, models: dict[str, Model], tmp_path_factory
) -> None:
    """RLIMIT_FSIZE makes writes fail with EFBIG (CPython ignores SIGXFSZ): needs no root."""
    heavy = _heavy(project, models, tmp_path_factory.getbasetemp())
    project.models(double="mirror/double.tar.gz", heavy=heavy)
    assert project.run("lock", "--no-fill")[0] == 0
    assert project.run("sync", "double")[0] == 0
    before = snapshot(project.cache)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = spawn_hubpin(project.root, project.cache, "sync", "--locked", preexec_fn=limit)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    (line,) = _only_error_line(err)
    assert line.startswith("heavy ") and "cannot write " in line
    assert "blob-0.bin: file too large for this file system or limit" in line
    assert "Traceback" not in err
    assert snapshot(project.cache) == before
    assert leftovers(project.cache) == []


def test_a_read_only_cache_serves_what_it_has_and_refuses_the_rest(
    project: Project, models: dict[str, Model], mount, tmp_path_factory
) -> None:
    heavy = _heavy(project, models, tmp_path_factory.getbasetemp(), files=2)
    project.models(double="mirror/double.tar.gz")
    assert project.run("sync")[0] == 0
    stale = project.cache / f"{'e' * 40}.{'0' * 32}.old"  # something prune would remove
    stale.mkdir()
    before = snapshot(project.cache)
    mount(project.cache, read_only=True)
    with pytest.raises(OSError):
        (project.cache / "probe").write_text("x")  # root ignores chmod, not a read-only mount

    code, out, err = project.run("sync")
    assert code == 0 and "1 already present" in out
    assert project.run("verify")[0] == 0

    project.models(double="mirror/double.tar.gz", heavy=heavy)
    code, _, err = project.run("sync")
    assert code == 1
    line = next(line for line in err.splitlines() if "error:" in line)
    assert line.startswith("hubpin: error: heavy (mirror/heavy.tar.gz): cannot write ")
    assert line.endswith(  # no sync can fill it: what to run is another cache folder
        "the file system is read-only; point TFHUB_CACHE_DIR (or --cache-dir, cache_dir in "
        "hubpin.toml) at a folder hubpin can write"
    ), line

    project.models(double="mirror/double.tar.gz")  # as synced: prune refuses a stale lock
    code, _, err = project.run("prune")
    assert code == 1
    assert (
        f"hubpin: error: could not remove {stale}: cannot write {stale}: "
        "the file system is read-only\n"
    ) in err
    assert err.strip().splitlines()[-1].endswith(f"1 path could not be removed: {stale}")
    assert snapshot(project.cache) == before
    assert "Traceback" not in err


def test_repair_on_a_read_only_cache_changes_nothing(
    project: Project, models: dict[str, Model], mount
) -> None:
    (project.root / "mirror").mkdir()
    (project.root / "mirror" / "double.tar.gz").write_bytes(models["double"].archive)
    project.models(double="mirror/double.tar.gz")
    assert project.run("sync")[0] == 0
    entry = project.entry("mirror/double.tar.gz")
    (entry / "saved_model.pb").write_bytes(b"damaged")
    before = snapshot(project.cache)
    mount(project.cache, read_only=True)
    code, _, err = project.run("verify", "--repair")
    assert code == 1
    assert "double               repair failed: cannot write " in err
    assert "the file system is read-only" in err
    assert snapshot(project.cache) == before
    shutil.rmtree(project.root / "mirror")


def test_lock_into_a_read_only_cache_pins_and_says_so_with_v(
    project: Project, models: dict[str, Model], mount, tmp_path_factory
) -> None:
    """`hubpin lock` fills the cache when it can; a read-only one only costs the filling."""
    heavy = _heavy(project, models, tmp_path_factory.getbasetemp(), files=2)
    project.models(double="mirror/double.tar.gz")
    assert project.run("sync")[0] == 0
    before = snapshot(project.cache)
    mount(project.cache, read_only=True)
    project.models(double="mirror/double.tar.gz", heavy=heavy)
    code, _, err = project.run("-v", "lock")
    assert code == 0, err
    assert "heavy" in project.lock.read_text()
    (line,) = [x for x in err.splitlines() if "not filling the cache" in x]
    assert line.startswith("hubpin: INFO: heavy: not filling the cache (cannot write ")
    assert "the file system is read-only" in line
    assert line.endswith("pinned without it, hubpin sync will fetch it")
    assert snapshot(project.cache) == before
    code, _, err = project.run("lock", "--check")
    assert code == 0, err


def test_a_read_only_project_folder_names_the_lock_or_manifest_and_the_way_out(
    project: Project, models: dict[str, Model], mount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """models.lock and models.toml that cannot be written: one line naming the file (not the
    temp file beside it), why, and what to run; the files stay as they were."""
    shutil.copytree(models["triple"].folder, project.root / "triple")
    project.models(mine="triple")
    before = project.manifest.read_bytes()
    mount(project.root, read_only=True)
    monkeypatch.chdir(project.root)  # into the mount (the working folder was the one below it)
    code, _, err = project.run("lock")
    assert (code, _only_error_line(err)) == (
        1,
        [
            f"hubpin: error: cannot write {project.lock}: the file system is read-only; run "
            "hubpin lock where its folder is writable, or write it elsewhere: --lock PATH"
        ],
    ), err
    code, _, err = project.run("add", "other", "https://tfhub.dev/google/other/1")
    assert (code, _only_error_line(err)) == (
        1,
        [
            f"hubpin: error: cannot write {project.manifest}: the file system is read-only; "
            "make it writable, or edit it where it can be written"
        ],
    ), err
    assert project.manifest.read_bytes() == before and not project.lock.exists()
