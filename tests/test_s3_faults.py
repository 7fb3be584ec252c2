"""The s3:// cache under races and dead lock holders, on moto's server (which enforces
If-None-Match and If-Match): ``hubpin`` in real subprocesses, bounded by subprocess
timeouts (never by timed assertions)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import pytest
from conftest import Model, Project
from faultkit import heavy_archive, hubpin_env, spawn_hubpin
from hubserver import Faults, HubServer
from moto_s3 import MotoS3
from test_gcs_faults import BOUND, _finish, _line, _only_entries, _unshare_uts, _victim

pytestmark = pytest.mark.s3


def _key(handle: str) -> str:
    return hashlib.sha1(handle.encode()).hexdigest()


@pytest.fixture
def heavy_hub(hub: HubServer, models: dict[str, Model], tmp_path_factory) -> HubServer:
    """The hub serving a ~24 MB model (6 × 4 MiB of noise) as heavy/1."""
    hub.models["google/heavy/1"] = heavy_archive(
        tmp_path_factory.getbasetemp(), models["double"].folder, files=6, size=4 << 20
    )
    return hub


def test_a_lock_left_by_a_sigkilled_sync_is_taken_over(
    project: Project, heavy_hub: HubServer, s3: MotoS3
) -> None:
    """The dead process is seen at once (a dead holder on another host, taken over after
    lock_timeout without progress, is the lock protocol's, tested on gs://; its lease is
    what test_a_live_holder_on_another_host_… proves on S3)."""
    root = f"s3://{s3.bucket()}/fleet/tfhub"
    handle = heavy_hub.handle("google/heavy/1")
    key = _key(handle)
    project.models(heavy=handle)
    project.write("lock_timeout = 2\n", "hubpin.toml")
    assert project.run("lock", "--no-fill")[0] == 0

    holder = _victim(project, root, key, lambda: s3.listing(root), s3.read)
    left = s3.listing(root)
    assert f"{key}.lock" in left and [n for n in left if ".tmp/" in n], left

    ((code, err),) = _finish([spawn_hubpin(project.root, root, "sync", "--locked")])  # type: ignore[arg-type]
    assert code == 0, err
    assert f"taking over {root}/{key}.lock from dead process {holder}" in err
    assert "heavy                fetched" in err
    assert _only_entries(sorted(s3.listing(root)), [key]) == [], "the dead sync's upload folder"
    code, _, err = project.run("--cache-dir", root, "verify")
    assert code == 0, err


def test_a_live_holder_on_another_host_is_waited_for_while_its_lease_moves(
    project: Project, hub: HubServer, s3: MotoS3
) -> None:
    """The lease rewrites the same ``host.pid.uuid`` (so the same ETag, an MD5 of the bytes):
    waiters must still see it move, or they would take a slow, live holder's lock after
    lock_timeout. The holder runs under another hostname, so only its lease speaks for it."""
    root = f"s3://{s3.bucket()}/fleet/tfhub"
    hub.faults["google/double/1"] = Faults(delay=0.75, chunk=512)  # ~6 s: past lock_timeout
    handle = hub.handle("google/double/1")
    key = _key(handle)
    project.models(double=handle)
    project.write("lock_timeout = 1\n", "hubpin.toml")
    assert project.run("lock", "--no-fill")[0] == 0
    hub.requests.clear()
    argv = [sys.executable, "-m", "hubpin", "sync", "--locked"]
    shell = f"hostname fleet-worker-3 && exec {' '.join(argv)}"
    holder = subprocess.Popen(
        [*_unshare_uts(), "sh", "-c", shell],
        cwd=project.root,
        env=hubpin_env(root),  # type: ignore[arg-type]
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + BOUND
    while f"{key}.lock" not in s3.listing(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    waiter = spawn_hubpin(project.root, root, "sync", "--locked")  # type: ignore[arg-type]

    (held, held_err), (waited, waited_err) = _finish([holder, waiter])
    assert held == 0, held_err
    assert waited == 0, waited_err
    assert "taking over" not in waited_err and "lost the lock" not in held_err
    assert "double               fetched" in held_err
    assert _line(waited_err, "double").endswith("already present")
    assert hub.archive_requests("google/double/1") == 1
