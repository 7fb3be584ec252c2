"""Ctrl-C at any moment of a command, from hubpin's first import to a download in progress, is
one line and exit 130 (while hubpin was still importing it was a 20-line traceback).

The moments are counted from when hubpin's ``main`` runs (its first import, hubpin.stamp, is
done: ``-X importtime`` says when). Before that the interpreter is starting (site, the
environment's .pth files) and runpy is finding ``hubpin.__main__``: a traceback there is
Python's own, in the few milliseconds before any of hubpin's code can catch it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from conftest import Model, Project
from faultkit import hubpin_env
from hubserver import Faults, HubServer

INTERRUPTED = "hubpin: interrupted; nothing half-written was published\n"


@pytest.mark.parametrize("after", [0.0, 0.02, 0.1, 0.3, 1.0])
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(
    project: Project, models: dict[str, Model], after: float
) -> None:
    hub = HubServer(
        models={"google/double/1": models["double"].archive},
        faults={"google/double/1": Faults(stall=5, stall_times=1)},  # a download in progress
    )
    hub.start()
    try:
        project.models(double=hub.handle("google/double/1"))
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "hubpin", "sync"],
            cwd=project.root,
            env=hubpin_env(project.cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        said = []
        for line in proc.stderr:  # until main() has imported its first module
            said.append(line)
            if line.startswith("import time:") and line.rstrip().endswith("| hubpin.stamp"):
                break
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        said += proc.stderr.readlines()
        proc.wait(timeout=60)
        err = "".join(line for line in said if not line.startswith("import time:"))
    finally:
        hub.stop()
    assert (proc.returncode, err) == (130, INTERRUPTED), err[-3000:]
    assert not project.lock.exists()  # nothing half-written


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_sync_removes_its_own_lock_files(
    project: Project, models: dict[str, Model], sig: signal.Signals, code: int
) -> None:
    """Ctrl-C or SIGTERM (``docker stop``) while downloads hold their keys' locks: each
    ``<key>.lock`` is removed on the way out, so tensorflow_hub's next ``hub.load`` does not
    wait for a lock nobody holds; the entries stay absent (nothing half-written)."""
    hub = HubServer(models={f"google/{n}/1": models[n].archive for n in ("double", "triple")})
    hub.start()
    try:
        project.models(**{n: hub.handle(f"google/{n}/1") for n in ("double", "triple")})
        assert project.run("lock", "--no-fill")[0] == 0
        for name in ("double", "triple"):  # each download stalls once it holds its lock
            hub.faults[f"google/{name}/1"] = Faults(stall=30, stall_times=1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubpin", "sync", "--frozen", "--jobs", "2"],
            cwd=project.root,
            env=hubpin_env(project.cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(list(project.cache.glob("*.lock"))) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the sync never took its locks"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)  # not when the stalls end: at once
    finally:
        hub.stop()
    assert (proc.returncode, err) == (code, INTERRUPTED), err[-3000:]
    assert sorted(p.name for p in project.cache.iterdir()) == []  # no lock, no work folder
