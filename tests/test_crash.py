"""Crash safety: syncs killed with SIGKILL at random moments, and ``hubpin prune`` after them."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import Model, Project
from faultkit import heavy_archive, heavy_model, leftovers, snapshot, spawn_hubpin
from hubserver import Faults, HubServer


def _sizes(folder: Path) -> dict[str, int]:
    found = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            full = Path(dirpath, name)
            found[full.relative_to(folder).as_posix()] = full.stat().st_size
    return found


class Watcher(threading.Thread):
    """Looks at ``<key>/`` as often as it can: it must be absent or complete, never partial."""

    def __init__(self, entry: Path, expected: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.entry, self.expected = entry, expected
        self.guard = threading.Lock()  # held by the test while it removes the entry itself
        self.stop = threading.Event()
        self.looks = self.seen_complete = 0
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            with self.guard:
                if self.entry.exists():
                    found = _sizes(self.entry)
                    self.looks += 1
                    if found == self.expected:
                        self.seen_complete += 1
                    else:
                        self.violations.append(f"{len(found)}/{len(self.expected)} files")
            time.sleep(0.0005)

    def remove_entry(self) -> None:
        with self.guard:
            if self.entry.exists():
                aside = self.entry.with_name("removed-by-test")
                os.rename(self.entry, aside)
                shutil.rmtree(aside)


def test_sigkill_at_random_moments_never_exposes_a_partial_entry(
    project: Project, hub: HubServer, models: dict[str, Model], tmp_path_factory
) -> None:
    base = tmp_path_factory.getbasetemp()
    hub.models["google/heavy/1"] = heavy_archive(base, models["double"].folder)
    hub.faults["google/heavy/1"] = Faults(delay=0.02, chunk=16 << 10)  # about 1 s per download
    heavy, double = hub.handle("google/heavy/1"), hub.handle("google/double/1")
    project.models(heavy=heavy, double=double)
    assert project.run("lock", "--no-fill")[0] == 0
    assert project.run("sync", "double")[0] == 0  # the previous state that must survive
    before = snapshot(project.cache)

    watcher = Watcher(project.entry(heavy), _sizes(heavy_model(base, models["double"].folder)))
    watcher.start()
    start = time.monotonic()
    calibration = spawn_hubpin(project.root, project.cache, "sync")
    assert calibration.wait(timeout=60) == 0
    duration = time.monotonic() - start  # how long a whole sync takes here (not asserted)
    watcher.remove_entry()

    rng = random.Random(os.environ.get("HUBPIN_CRASH_SEED", "5"))
    killed = 0
    for round_ in range(8):
        command = ("sync",) if round_ % 2 else ("verify", "--repair")
        proc = spawn_hubpin(project.root, project.cache, *command)
        try:
            proc.wait(timeout=rng.uniform(0.1, 0.9 * duration))
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            killed += 1
            finished = False
        proc.communicate(timeout=60)
        assert {k: v for k, v in snapshot(project.cache).items() if k in before} == before
        if finished or round_ % 3 == 2:
            watcher.remove_entry()  # start some rounds from scratch, others from the wreck

    final = spawn_hubpin(project.root, project.cache, "sync")
    _, err = final.communicate(timeout=60)
    watcher.stop.set()
    watcher.join()
    assert final.returncode == 0, err
    assert watcher.violations == [], "a partly filled entry was visible"
    assert watcher.seen_complete > 0 and killed >= 4
    assert snapshot(project.entry(heavy)) == snapshot(heavy_model(base, models["double"].folder))
    assert project.run("verify")[0] == 0
    code, _, err = project.run("prune")
    assert code == 0, err
    assert leftovers(project.cache) == []
    assert {k: v for k, v in snapshot(project.cache).items() if k in before} == before


def test_prune_removes_what_crashes_leave_but_not_work_in_progress(
    project: Project, hub: HubServer
) -> None:
    keep, gone = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=keep, triple=gone)
    assert project.run("sync")[0] == 0
    project.models(double=keep)
    assert project.run("lock")[0] == 0
    cache, key = project.cache, project.entry(keep).name
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dead_task, live_task = uuid.uuid4().hex, uuid.uuid4().hex
    live = f"{host}.{os.getpid()}.{live_task}"

    other = "f" * 40  # a key being filled right now by a live process
    (cache / f"{other}.lock").write_text(live)
    (cache / f"{other}.{live_task}.tmp").mkdir()
    (cache / f"{other}.{live_task}.tmp" / "saved_model.pb").write_bytes(b"in progress")
    doomed = {
        f"{key}.lock": f"{host}.{dead}.{dead_task}",  # holder killed
        f"{key}.{dead_task}.tmp/": "",  # its work folder
        f"{key}.{uuid.uuid4().hex}.old/": "",  # moved aside, then killed
        f"{key}.lock.tmp{uuid.uuid4().hex}": f"{host}.{dead}.{uuid.uuid4().hex}",
        f"{key}.lock.{uuid.uuid4().hex}.stale": f"{host}.{dead}.{dead_task}",
        f".{key}.hubpin.json.{uuid.uuid4().hex}": "{",
        f"{key}.descriptor.txt.tmp{uuid.uuid4().hex}": "Module: ",
    }
    for name, text in doomed.items():
        if name.endswith("/"):
            (cache / name).mkdir()
            (cache / name / "saved_model.pb").write_bytes(b"partial")
        else:
            (cache / name).write_text(text)
    gone_entry = project.entry(gone).name
    expected = sorted(
        [n.rstrip("/") for n in doomed]
        + [gone_entry, f"{gone_entry}.descriptor.txt", f"{gone_entry}.hubpin.json"]
    )

    code, _, err = project.run("prune", "--dry-run")
    assert code == 0
    assert sorted(line.split()[2].rsplit("/", 1)[1] for line in err.splitlines()[:-1]) == expected
    assert all((cache / n.rstrip("/")).exists() for n in doomed)

    keep_before = snapshot(project.entry(keep))
    code, _, err = project.run("prune")
    assert code == 0, err
    assert f"{len(expected)} paths" in err.splitlines()[-1]
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [
            key,
            f"{key}.descriptor.txt",
            f"{key}.hubpin.json",
            f"{other}.lock",
            f"{other}.{live_task}.tmp",
            "hubpin-projects",
        ]
    )
    assert snapshot(project.entry(keep)) == keep_before
    assert project.run("verify")[0] == 0


@pytest.mark.parametrize("moment", ["between the renames", "before the record"])
def test_a_crash_inside_publish_is_recovered_without_download(
    project: Project, hub: HubServer, models: dict[str, Model], moment: str
) -> None:
    """The two states publish passes through, recreated by hand: the rerun copes with each."""
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    assert project.run("sync")[0] == 0
    entry = project.entry(handle)
    record = entry.with_name(entry.name + ".hubpin.json")
    if moment == "between the renames":  # old entry moved aside, new one not yet in place
        entry.rename(entry.with_name(f"{entry.name}.{uuid.uuid4().hex}.old"))
    record.unlink()  # publish drops the record before renaming
    downloads = hub.archive_requests("google/double/1")
    code, _, err = project.run("sync")
    assert code == 0, err
    assert snapshot(entry) == snapshot(models["double"].folder)
    fetched = hub.archive_requests("google/double/1") - downloads
    assert fetched == (1 if moment == "between the renames" else 0)
    assert project.run("prune")[0] == 0
    assert leftovers(project.cache) == []


def test_ctrl_c_stops_downloads_instead_of_finishing_them(
    project: Project, hub: HubServer, models: dict[str, Model], tmp_path_factory
) -> None:
    """SIGINT: the workers stop reading, nothing is published, exit 130, nothing left behind."""
    base = tmp_path_factory.getbasetemp()
    hub.models["google/heavy/1"] = heavy_archive(base, models["double"].folder)
    heavy = hub.handle("google/heavy/1")
    project.models(heavy=heavy)
    assert project.run("lock", "--no-fill")[0] == 0  # one download, to pin it
    hub.faults["google/heavy/1"] = Faults(delay=0.05, chunk=8 << 10)  # a download of seconds
    proc = spawn_hubpin(project.root, project.cache, "sync")
    deadline = time.monotonic() + 60
    while hub.archive_requests("google/heavy/1") < 2:  # the sync's download has started
        assert proc.poll() is None and time.monotonic() < deadline, "the sync never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; nothing half-written was published" in err
    assert not project.entry(heavy).exists(), "an interrupted sync must not finish and publish"
    assert leftovers(project.cache) == []
    assert hub.archive_requests("google/heavy/1") == 2, "no retry or resume after Ctrl-C"
