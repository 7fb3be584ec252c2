"""One download per model: `hubpin lock` unpacks what it hashes into the cache, so the
README's `lock && sync --locked` fetches each archive once; hash-only locking stays a
flag and a setting away, and a cache that cannot be written is no reason to fail a lock."""

from __future__ import annotations

import json
import signal
import time

import pytest
from conftest import Model, Project, hubpin_imports
from faultkit import spawn_hubpin
from hubserver import Faults, HubServer


def test_lock_fills_the_cache_so_sync_locked_downloads_nothing(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    double, triple = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=double, triple=triple)
    code, _, err = project.run("lock")
    assert code == 0, err
    assert hub.archive_requests("google/double/1") == 1
    assert hub.archive_requests("google/triple/1") == 1
    for handle, name in ((double, "double"), (triple, "triple")):
        entry = project.entry(handle)
        assert (entry / "saved_model.pb").read_bytes() == (
            models[name].folder / "saved_model.pb"
        ).read_bytes()
        record = json.loads(entry.with_name(entry.name + ".hubpin.json").read_text())
        assert record["handle"] == handle
    assert not [p.name for p in project.cache.iterdir() if p.name.endswith((".tmp", ".lock"))]

    hub.stop()  # the lock's pass was the only download: sync needs no network
    code, out, err = project.run("sync", "--locked")
    assert code == 0, err
    assert "0 fetched, 2 already present" in out
    code, _, err = project.run("verify")  # what lock published is what the lock pins
    assert code == 0, err
    assert hub.archive_requests("google/double/1") == 1
    assert hub.archive_requests("google/triple/1") == 1


def test_lock_then_sync_fetches_each_archive_once_when_an_entry_is_replaced(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    """Re-pinning a model whose upstream changed replaces its entry in the same pass."""
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("lock")[0] == 0
    hub.models["google/double/1"] = models["triple"].archive
    code, _, err = project.run("lock", "double")
    assert code == 0, err
    assert hub.archive_requests("google/double/1") == 2
    code, out, err = project.run("sync", "--locked")
    assert code == 0 and "1 already present" in out, err
    assert (project.entry(handle) / "saved_model.pb").read_bytes() == (
        models["triple"].folder / "saved_model.pb"
    ).read_bytes()
    assert hub.archive_requests("google/double/1") == 2


@pytest.mark.parametrize(
    "how", ["--no-fill", "setting", "environment"], ids=["flag", "setting", "env"]
)
def test_hash_only_lock_by_flag_setting_or_environment(
    project: Project, hub: HubServer, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    handle = hub.handle("google/quint/1")
    project.models(quint=handle)
    argv = ["lock"]
    if how == "--no-fill":
        argv.append("--no-fill")
    elif how == "setting":
        project.write("lock_fills_cache = false\n", "hubpin.toml")
    else:
        monkeypatch.setenv("HUBPIN_LOCK_FILLS_CACHE", "false")
    code, _, err = project.run(*argv)
    assert code == 0, err
    assert project.lock.exists()
    assert not project.cache.exists() or not any(project.cache.iterdir())
    code, out, err = project.run("sync", "--locked")
    assert code == 0 and "1 fetched" in out, err
    assert hub.archive_requests("google/quint/1") == 2, "hash-only: sync downloads again"
    if how != "--no-fill":  # the flag wins over the setting
        project.entry(handle).with_name(project.entry(handle).name + ".hubpin.json").unlink()
        project.lock.unlink()
        code, _, err = project.run("lock", "--fill")
        assert code == 0, err
        assert "quint" in project.lock.read_text()
        code, out, err = project.run("sync", "--locked")
        assert code == 0 and "1 already present" in out, err


def test_lock_into_an_unusable_cache_pins_anyway_and_says_so_with_v(
    project: Project, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache folder that cannot be created (its parent is a file) skips publishing."""
    blocker = project.root / "not-a-folder"
    blocker.write_text("a file where the cache's parent should be")
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(blocker / "cache"))
    project.models(double=hub.handle("google/double/1"))
    code, _, err = project.run("lock")
    assert code == 0, err
    assert project.lock.exists() and "error" not in err and "INFO" not in err
    project.lock.unlink()
    code, _, err = project.run("-v", "lock")
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "not filling the cache" in x]
    assert line.startswith("hubpin: INFO: not filling the cache: cannot write ")
    assert str(blocker / "cache") in line and line.endswith("; pinning only")
    assert project.lock.exists()
    code, _, err = project.run("sync", "--locked")  # sync, by contrast, needs the cache
    assert code == 1 and "double" in err and "cannot write" in err


def test_the_sync_after_a_filling_lock_is_answered_from_a_stamp(
    project: Project, hub: HubServer
) -> None:
    """`lock && sync --locked`: the lock leaves the stamps a clean sync would, so the sync
    is stat checks without pydantic, and prints what the full path prints."""
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    code, _, imported = hubpin_imports(project, "lock")
    assert code == 0 and project.lock.exists()
    for argv in (["sync", "--locked"], ["sync"], ["-q", "sync", "--frozen"]):
        code, fast, imported = hubpin_imports(project, *argv)
        assert code == 0 and "pydantic" not in imported, f"{argv}: the stamp was not used"
        elsewhere = {"XDG_CACHE_HOME": str(project.root.parent / f"no-stamps-{len(argv)}")}
        code, full, imported = hubpin_imports(project, *argv, env=elsewhere)
        assert code == 0 and "pydantic" in imported
        assert fast == full, "the stamp must print what the full path prints"
    assert "0 fetched, 2 already present" in full or argv[0] == "-q"
    assert hub.archive_requests("google/double/1") == 1

    # The stamps vouch for nothing they do not check: a damaged entry is refetched.
    (project.entry(hub.handle("google/double/1")) / "saved_model.pb").unlink()
    code, said, imported = hubpin_imports(project, "sync", "--locked")
    assert code == 0 and "pydantic" in imported and "1 fetched" in said
    # A hash-only lock leaves none (another stamp folder and cache: nothing from above).
    fresh = {
        "XDG_CACHE_HOME": str(project.root.parent / "fresh-stamps"),
        "TFHUB_CACHE_DIR": str(project.root.parent / "fresh-cache"),
    }
    project.lock.unlink()
    code, _, _ = hubpin_imports(project, "lock", "--no-fill", env=fresh)
    assert code == 0
    code, said, imported = hubpin_imports(project, "sync", "--locked", env=fresh)
    assert code == 0 and "pydantic" in imported and "2 fetched" in said


def test_a_manifest_edited_during_a_lock_leaves_no_stamp(project: Project, hub: HubServer) -> None:
    """The lock was made from the manifest as it was; a stamp must not call the new one synced."""
    project.models(double=hub.handle("google/double/1"))
    hub.faults["google/double/1"] = Faults(delay=0.05, chunk=1 << 10)  # a second or more
    proc = spawn_hubpin(project.root, project.cache, "lock")
    deadline = time.monotonic() + 30
    while not hub.archive_requests("google/double/1") and time.monotonic() < deadline:
        time.sleep(0.01)
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    code, said, _ = hubpin_imports(project, "sync", "--locked")
    assert code == 1 and "triple" in said, "a stamp hid that the lock is stale"


@pytest.mark.parametrize("signal_", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_a_lock_interrupted_after_publishing_adopts_that_entry_next_time(
    project: Project, hub: HubServer, models: dict[str, Model], signal_: signal.Signals
) -> None:
    """Killed with one model published and the other still downloading: no lock was
    written; the next lock re-hashes the published entry instead of downloading it again."""
    double, triple = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=double, triple=triple)
    hub.faults["google/triple/1"] = Faults(stall=20.0, stall_times=1)
    record = project.entry(double).with_name(project.entry(double).name + ".hubpin.json")
    lock = spawn_hubpin(project.root, project.cache, "lock", env={"HUBPIN_JOBS": "2"})
    deadline = time.monotonic() + 60

    def killable() -> bool:  # one model published, the other's download stalled at the hub
        return record.exists() and hub.downloads("google/triple/1") == 1

    while not killable() and lock.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert killable() and lock.poll() is None, lock.communicate()
    lock.send_signal(signal_)
    _, err = lock.communicate(timeout=30)
    assert lock.returncode == (130 if signal_ is signal.SIGINT else -signal.SIGKILL), err
    assert not project.lock.exists()
    assert (hub.downloads("google/double/1"), hub.downloads("google/triple/1")) == (1, 1)

    hub.faults.clear()
    code, _, err = project.run("-v", "lock")
    assert code == 0, err
    assert (
        f"double: adopted {project.entry(double).name}, which an interrupted lock published" in err
    )
    assert (hub.downloads("google/double/1"), hub.downloads("google/triple/1")) == (1, 2)
    assert project.run("lock", "--check")[0] == 0
    code, _, err = project.run("verify")
    assert code == 0, err
    adopted = project.lock.read_text()
    project.lock.unlink()  # what a lock that downloads both writes: the same bytes
    assert project.run("lock", "double", "triple")[0] == 0
    assert project.lock.read_text() == adopted
    assert hub.downloads("google/double/1") == 2, "an alias named on the command line is re-pinned"
