"""Several ``hubpin sync`` processes and tensorflow_hub racing on one cache, and lock holders
that are alive, dead, remote or stuck."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from conftest import Model, Project
from faultkit import heavy_archive, hubpin_env, leftovers, snapshot, spawn_hubpin
from hubserver import Faults, HubServer


@pytest.fixture
def slow_hub(hub: HubServer, models: dict[str, Model], tmp_path_factory) -> HubServer:
    """The hub serving a ~0.8 MB model slowly, so that every racer overlaps with the first."""
    hub.models["google/heavy/1"] = heavy_archive(
        tmp_path_factory.getbasetemp(), models["double"].folder
    )
    for path in ("google/heavy/1", "google/double/1"):
        hub.faults[path] = Faults(delay=0.02, chunk=16 << 10)
    return hub


def test_racing_syncs_and_tensorflow_hub_download_each_archive_once(
    project: Project, slow_hub: HubServer, models: dict[str, Model]
) -> None:
    heavy, double = slow_hub.handle("google/heavy/1"), slow_hub.handle("google/double/1")
    project.models(heavy=heavy, double=double)
    assert project.run("lock", "--no-fill")[0] == 0
    slow_hub.requests.clear()

    tf_hub = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, tensorflow_hub as hub\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            f"print(hub.resolve({heavy!r})); print(hub.resolve({double!r}))\n",
        ],
        env=hubpin_env(project.cache),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tf_hub.stdout is not None and tf_hub.stdin is not None
    assert tf_hub.stdout.readline().strip() == "ready"
    syncs = [spawn_hubpin(project.root, project.cache, "sync", "--locked") for _ in range(4)]
    tf_hub.stdin.write("go\n")
    tf_hub.stdin.flush()

    results = [p.communicate(timeout=120) for p in syncs]
    tf_out, tf_err = tf_hub.communicate(timeout=120)
    for proc, (_, err) in zip(syncs, results, strict=True):
        assert proc.returncode == 0, err
    assert tf_hub.returncode == 0, tf_err[-2000:]
    assert tf_out.split() == [str(project.entry(heavy)), str(project.entry(double))]
    assert slow_hub.archive_requests("google/heavy/1") == 1
    assert slow_hub.archive_requests("google/double/1") == 1
    assert leftovers(project.cache) == []
    assert snapshot(project.entry(double)) == snapshot(models["double"].folder)
    code, _, err = project.run("verify")
    assert code == 0, err


def _holder(pid: int, host: str | None = None) -> str:
    return f"{host or socket.gethostname()}.{pid}.{uuid.uuid4().hex}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock_for(project: Project, handle: str, holder: str) -> tuple:  # type: ignore[type-arg]
    entry = project.entry(handle)
    project.cache.mkdir(parents=True, exist_ok=True)
    lock = entry.with_name(entry.name + ".lock")
    lock.write_text(holder)
    work = entry.with_name(f"{entry.name}.{holder.rsplit('.', 1)[1]}.tmp")
    work.mkdir()
    (work / "saved_model.pb").write_bytes(b"half a model")
    return lock, work


def test_a_dead_holders_lock_is_taken_over_at_once(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    holder = _holder(_dead_pid())
    lock, work = _lock_for(project, handle, holder)
    code, _, err = project.run("sync")
    assert code == 0, err
    assert f"taking over {lock.name} from dead process {holder}" in err
    assert not work.exists() and not lock.exists()
    assert snapshot(project.entry(handle)) == snapshot(models["double"].folder)
    assert leftovers(project.cache) == []


def test_a_live_holder_is_waited_for_and_named(project: Project, hub: HubServer) -> None:
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    holder = _holder(os.getpid())  # this test process: alive, on this host
    lock, work = _lock_for(project, handle, holder)
    sync = spawn_hubpin(project.root, project.cache, "sync", env={"HUBPIN_LOCK_TIMEOUT": "600"})
    assert sync.stderr is not None
    line = sync.stderr.readline()
    assert f"waiting for {lock.name}, held by {holder}" in line
    assert f"running process {os.getpid()} on this host" in line and "lock_timeout" in line
    assert sync.poll() is None, "gave up on a live holder"
    lock.unlink()  # the holder finishes (without publishing)
    work.rename(work.with_suffix(".gone"))
    _, err = sync.communicate(timeout=60)
    assert sync.returncode == 0, err
    assert (project.entry(handle) / "saved_model.pb").stat().st_size > len(b"half a model")


def test_a_holder_making_progress_is_not_timed_out(project: Project, hub: HubServer) -> None:
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    lock, work = _lock_for(project, handle, _holder(os.getpid()))
    sync = spawn_hubpin(project.root, project.cache, "sync", env={"HUBPIN_LOCK_TIMEOUT": "1"})
    assert sync.stderr is not None
    assert "waiting for" in sync.stderr.readline()
    for i in range(15):  # 3 s of steady progress, three times lock_timeout
        (work / f"part-{i}").write_bytes(b"x" * 1000)
        time.sleep(0.2)
        assert sync.poll() is None, "timed out a holder that was making progress"
    lock.unlink()
    _, err = sync.communicate(timeout=60)
    assert sync.returncode == 0, err


def test_a_stuck_remote_holder_times_out_with_a_clear_error(
    project: Project, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    holder = _holder(4242, host="build-host-7")
    lock, _ = _lock_for(project, handle, holder)
    monkeypatch.setenv("HUBPIN_LOCK_TIMEOUT", "0.3")
    code, _, err = project.run("sync")
    assert code == 1
    line = next(line for line in err.splitlines() if "FAILED" in line)
    assert line.startswith("double ") and f"held by {holder}" in line
    assert "process 4242 on host build-host-7" in line and "raise lock_timeout" in line
    assert lock.read_text() == holder, "a remote holder's lock must never be deleted"
    assert not project.entry(handle).exists()
