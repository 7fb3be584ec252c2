"""hubpin against tensorflow_hub, side by side, on real SavedModels served over loopback.

Run from the repository root:

    PYTHONPATH=. python benchmarks/bench.py [--quick] [--runs N]

It builds its fixtures once (SavedModels with random float32 weights, packed as
``.tar.gz`` with ``./`` member names like tfhub.dev's) under ``~/.cache/hubpin-bench``,
serves them from a separate process with the test suite's tfhub.dev server (a
separate process so that the server's work never shares a GIL with what is
measured), and measures, interleaving the contenders so that machine noise hits
them alike:

- cold-cache ``hubpin sync --frozen`` (the whole process, interpreter start
  included) against in-process ``tensorflow_hub.resolve`` (TensorFlow's import
  not counted) and ``curl | tar xz``, for 1×200 MB and 8×50 MB;
- the same 1×200 MB on a slow link (a per-connection bandwidth cap in the server),
  where one connection is slow and hubpin adds ranged ones;
- what checking the host's declared checksums costs: the same cold 1×200 MB sync from
  a server that declares ``X-Goog-Hash`` (crc32c checked) and from one that declares none;
- ``hubpin lock && hubpin sync --locked`` (lock fills the cache) against one plain
  ``hubpin sync`` (locks and fills in one pass), and the hash-only ``lock --no-fill``
  that downloads twice, each a fresh project and a cold cache;
- a fleet: ``hubpin bundle gs://…`` once, then 8 concurrent ``hubpin sync --from gs://…``
  processes against gcp-storage-emulator, each into its own cache, each through a
  loopback TCP relay of its own that counts the bytes it read from the bucket, with
  the upstream server counting what it sent (nothing, if the bundle serves all);
- the same fleet from an OCI registry: ``hubpin bundle oci://…`` once, then 8 concurrent
  ``hubpin sync --from oci://…`` against the CNCF Distribution registry (Debian's
  ``docker-registry``) on loopback, each through its own counting relay; and from S3
  (``s3://…``) against moto's S3 server;
- start-up (``import hubpin.cli``), a no-op ``hubpin sync --frozen``, ``status`` and
  ``lock --check`` over 50 and 2,000 pinned, cached models, peak RSS, and the full-path
  no-op (no stamp); and where a first run's CPU goes, stage by stage, for ``status`` and
  ``lock --check`` of 50 models (how much of it is pydantic: import, model classes,
  plugin loader, schema build);
- the limit of a cold 1×200 MB sync: a one-thread ISA-L inflate of the archive plus a
  bare interpreter start, measured in the same runs;
- unpacking 100,000 members against 20,000 (linear, or not);
- peak RSS of a sync of one big archive;
- ``hubpin.load(alias)`` against ``tf.saved_model.load(path)``.

It prints a markdown table of medians and ratios and writes it, with the
machine it ran on, to ``benchmarks/RESULTS.md``. Times are wall-clock medians:
these machines are noisy, so read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubserver import HubServer

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))  # hubserver and savedmodels, shared with the test suite
sys.path.insert(0, str(REPO / "benchmarks"))
import peers  # noqa: E402 - the other peers (kagglehub), beside this file
import scale  # noqa: E402 - the rows about scale, beside this file

MB = 1 << 20
NOOP_MODELS = 50
MANY_MODELS = 2000


@dataclass(frozen=True)
class Fixture:
    """One benchmark archive: a SavedModel of ``mb`` MiB of random float32 weights."""

    name: str
    mb: int
    seed: int

    @property
    def path(self) -> str:
        """Its model path on the benchmark server (handle = server URL + path)."""
        return f"bench/{self.name}/1"

    def archive(self, root: Path) -> Path:
        return root / f"{self.name}-{self.mb}mb-v1.tar.gz"


BIG = Fixture("big", 200, 1)
EIGHT = [Fixture(f"m{i}", 50, 10 + i) for i in range(8)]
HUGE = Fixture("huge", 1024, 99)
FLEET = EIGHT[:2]  # what every fleet worker syncs (modest: the machine is shared)
FLEET_WORKERS = 8
# (--only name, scheme, what is read, what besides the archives, the server) of each fleet row.
FLEET_ROWS = [
    (
        "fleet",
        "gs",
        "bucket",
        "each archive once, plus HTTP",
        "gcp-storage-emulator (serves one request at a time)",
    ),
    (
        "fleet-s3",
        "s3",
        "bucket",
        "each archive once, plus HTTP",
        "moto's S3 server (threaded, in memory)",
    ),
    (
        "fleet-oci",
        "oci",
        "registry",
        "each blob once, plus manifest, lock and HTTP",
        "CNCF Distribution (docker-registry) on loopback, plain http",
    ),
]
TINY = Fixture("tiny", 0, 0)  # the test suite's affine model, served under 50 paths


# ---------------------------------------------------------------- fixtures


def _Weights(arrays: list) -> object:
    """A tf.Module holding ``arrays`` as variables (32 MiB each, like large layers)."""
    import tensorflow as tf

    class Weights(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = [tf.Variable(a, name=f"w{i}") for i, a in enumerate(arrays)]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return x * self.weights[0][0]

    return Weights()


def build_fixture(fixture: Fixture, root: Path) -> Path:
    """Build and pack a fixture once; later runs reuse the archive on disk."""
    target = fixture.archive(root)
    if target.exists():
        return target
    import numpy as np
    import tensorflow as tf
    from savedmodels import build_affine, pack_into

    root.mkdir(parents=True, exist_ok=True)
    print(f"building fixture {target.name} (once) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        folder = Path(tmp) / "model"
        if fixture.mb == 0:
            build_affine(folder, 2.0, 1.0)
        else:
            rng = np.random.default_rng(fixture.seed)
            sizes = [32 * MB // 4] * (fixture.mb // 32) + [fixture.mb % 32 * MB // 4]
            module = _Weights([rng.standard_normal(n, dtype=np.float32) for n in sizes if n])
            tf.saved_model.save(module, str(folder))
            del module
        partial = Path(tmp) / "archive.tar.gz"
        with open(partial, "wb") as fh:
            pack_into(fh, folder, level=6)  # gzip's default level, as `tar czf` uses
        os.replace(partial, target)
    return target


def serve(root: Path, names: list[str], rate: int | None, goog_hash: bool = False) -> None:
    """``--serve``: the tfhub.dev server in its own process; prints its URL, stops at EOF."""
    from hubserver import HubServer

    fixtures = {f.name: f for f in [BIG, *EIGHT, HUGE, TINY]}
    models = {}
    for name in names:
        data = fixtures[name].archive(root).read_bytes()
        if name == TINY.name:
            models.update({f"bench/tiny{i}/1": data for i in range(MANY_MODELS)})
        models[fixtures[name].path] = data
    peers.serve_until_eof(HubServer(models=models, rate=rate, goog_hash=goog_hash).start())


def server_process(
    root: Path, names: list[str], rate: int | None = None, goog_hash: bool = False
) -> contextlib.AbstractContextManager[str]:
    args = ["--serve", ",".join(names), "--fixtures", str(root)]
    if rate:
        args += ["--rate", str(rate)]
    if goog_hash:
        args.append("--goog-hash")
    return peers.server_process(args, "benchmark server")


# ---------------------------------------------------------------- contenders


# hubpin's no-op stamps go here, one folder per benchmark run, never the user's ~/.cache.
XDG_CACHE = Path(tempfile.mkdtemp(prefix="hubpin-bench-xdg-"))


def hubpin_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBPIN_", "TFHUB_"))}
    base = {
        "PYTHONPATH": str(REPO),
        "TFHUB_CACHE_DIR": str(cache),
        "XDG_CACHE_HOME": str(XDG_CACHE),
    }
    return env | base | extra


# Peak RSS must be read from a child forked by a small process: Linux carries the
# parent's high-water mark across fork+exec, and this process holds TensorFlow.
_RSS_PROBE = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'\\nmaxrss_kib={usage.ru_maxrss}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_hubpin(
    project: Path, cache: Path, *args: str, rss: bool = False, **env: str
) -> tuple[float, int]:
    """Wall time of one whole ``python -m hubpin`` process, and its peak RSS (KiB) if ``rss``."""
    start = time.perf_counter()
    proc = start_hubpin(project, cache, *args, rss=rss, **env)
    err = finish_hubpin(proc, args)
    elapsed = time.perf_counter() - start
    peak = err.rpartition("maxrss_kib=")[2].strip() if rss else ""
    return elapsed, int(peak) if peak.isdigit() else 0


def start_hubpin(
    project: Path, cache: Path, *args: str, rss: bool = False, **env: str
) -> subprocess.Popen[bytes]:
    """``python -m hubpin -q ARGS`` started in ``project`` with its own cache."""
    probe = [sys.executable, "-c", _RSS_PROBE] if rss else [sys.executable]
    return subprocess.Popen(
        [*probe, "-m", "hubpin", "-q", *args],
        cwd=project,
        env=hubpin_env(cache, **env),
        stdout=subprocess.DEVNULL,  # status tables; what is measured is the whole process
        stderr=subprocess.PIPE,
    )


def finish_hubpin(proc: subprocess.Popen[bytes], args: tuple[str, ...]) -> str:
    """Wait for a hubpin process; its stderr, or RuntimeError if it failed."""
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"hubpin {' '.join(args)} failed: {err[-2000:]}")
    return err


def make_project(where: Path, url: str, fixtures: list[Fixture], cache: Path) -> Path:
    """A project pinning ``fixtures``; locked once (the lock step is not what is measured)."""
    where.mkdir(parents=True)
    (where / "models.toml").write_text(
        "".join(f'[models.{f.name}]\nhandle = "{url}/{f.path}"\n\n' for f in fixtures)
    )
    run_hubpin(where, cache, "lock", "--no-fill")
    return where


def tfhub_resolve(handles: list[str], cache: Path) -> None:
    """tensorflow_hub's own download path, in this process (TF already imported)."""
    import tensorflow_hub as hub

    os.environ["TFHUB_CACHE_DIR"] = str(cache)
    for handle in handles:
        hub.resolve(handle)


def curl_tar(handles: list[str], dest: Path) -> None:
    script = "set -eo pipefail\n" + "".join(
        f"mkdir -p {dest}/{i} && curl -sSfL '{h}?tf-hub-format=compressed' | tar xzf - -C {dest}/{i}\n"
        for i, h in enumerate(handles)
    )
    subprocess.run(["bash", "-c", script], check=True)


@dataclass
class Timings:
    """Wall times per contender, collected over interleaved runs."""

    runs: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.runs.setdefault(name, []).append(seconds)

    def median(self, name: str) -> float | None:
        values = self.runs.get(name)
        return statistics.median(values) if values else None


def interleaved(
    contenders: dict[str, Callable[[Path], float | None]], runs: int, scratch: Path
) -> Timings:
    """Run every contender ``runs`` times, round-robin, each on a fresh empty cache."""
    timings = Timings()
    for i in range(runs):
        for n, (name, contender) in enumerate(contenders.items()):
            cache = scratch / f"cache-{n}-{i}"
            start = time.perf_counter()
            measured = contender(cache)
            timings.add(name, measured if measured is not None else time.perf_counter() - start)
            shutil.rmtree(cache, ignore_errors=True)
            os.sync()  # the file system settles between contenders, so none pays for another's writes
        print(f"  run {i + 1}/{runs}: " + _fmt_last(timings), file=sys.stderr, flush=True)
    return timings


def _fmt_last(timings: Timings) -> str:
    return ", ".join(f"{k} {v[-1]:.2f}s" for k, v in timings.runs.items())


def cold_sync(
    url: str,
    fixtures: list[Fixture],
    runs: int,
    scratch: Path,
    with_curl: bool = True,
    limit: Path | None = None,
    **env: str,
) -> Timings:
    project = make_project(scratch / "project", url, fixtures, scratch / "lock-cache")
    handles = [f"{url}/{f.path}" for f in fixtures]
    contenders: dict[str, Callable[[Path], float | None]] = {
        "hubpin": lambda cache: run_hubpin(project, cache, "sync", "--frozen", **env)[0],
        "tensorflow_hub": lambda cache: tfhub_resolve(handles, cache),
    }
    if with_curl:
        contenders["curl | tar xz"] = lambda cache: curl_tar(handles, cache)
    if limit is not None:
        contenders["limit"] = lambda cache: scale.inflate_limit(limit)
    try:
        return interleaved(contenders, runs, scratch)
    finally:
        shutil.rmtree(project, ignore_errors=True)


def checksum_cost(plain: str, hashed: str, runs: int, scratch: Path) -> Timings:
    """A cold 1×200 MB sync from a server declaring X-Goog-Hash (checked: crc32c and length)
    against the same sync from one that declares nothing; interleaved, fresh caches."""
    bare = make_project(scratch / "bare", plain, [BIG], scratch / "lock-cache")
    declared = make_project(scratch / "declared", hashed, [BIG], scratch / "lock-cache")
    return interleaved(
        {
            "hubpin, X-Goog-Hash checked": lambda c: run_hubpin(declared, c, "sync", "--frozen")[0],
            "hubpin, nothing declared": lambda c: run_hubpin(bare, c, "sync", "--frozen")[0],
        },
        runs,
        scratch,
    )


def lock_then_sync(url: str, fixtures: list[Fixture], runs: int, scratch: Path) -> Timings:
    """The README's `lock && sync --locked` against a plain `sync`, and the hash-only lock
    of before; each run a fresh project (no lock yet) and a cold cache."""
    manifest = "".join(f'[models.{f.name}]\nhandle = "{url}/{f.path}"\n\n' for f in fixtures)
    env = {"XDG_CACHE_HOME": str(scratch / "xdg")}  # no-op stamps stay in the scratch space

    def steps(*commands: tuple[str, ...]) -> Callable[[Path], float]:
        def run(cache: Path) -> float:
            project = scratch / f"project-{cache.name}"
            project.mkdir()
            (project / "models.toml").write_text(manifest)
            try:
                return sum(run_hubpin(project, cache, *command, **env)[0] for command in commands)
            finally:
                shutil.rmtree(project, ignore_errors=True)

        return run

    contenders = {
        "sync": steps(("sync",)),
        "lock && sync --locked": steps(("lock",), ("sync", "--locked")),
        "lock --no-fill && sync --locked": steps(("lock", "--no-fill"), ("sync", "--locked")),
    }
    return interleaved(contenders, runs, scratch)


def relay(target: str) -> None:
    """``--relay HOST:PORT``: a loopback TCP relay to ``target``, in a process of its own (one
    per worker, copying nothing in Python: a threaded one in Python doubled the wall time of 8 workers). Prints its port; at EOF on
    stdin, the bytes it relayed from ``target`` to its clients."""
    import fcntl
    import socket
    import threading

    host, port = target.rsplit(":", 1)
    received = 0
    guard = threading.Lock()

    def pump(src: socket.socket, dst: socket.socket, count: bool) -> None:
        """Move bytes with splice(2) through a pipe: they never enter Python."""
        nonlocal received
        pipe_out, pipe_in = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, 1 << 20)
        try:
            while got := os.splice(src.fileno(), pipe_in, 1 << 20):
                left = got
                while left:
                    left -= os.splice(pipe_out, dst.fileno(), left)
                if count:
                    with guard:
                        received += got
        except OSError:
            pass
        finally:
            os.close(pipe_in)
            os.close(pipe_out)
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def serve(listener: socket.socket) -> None:
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection((host, int(port)))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    print(listener.getsockname()[1], flush=True)
    sys.stdin.read()
    print(received, flush=True)


@dataclass
class FleetRun:
    workers: int
    wall: float
    from_bucket: list[int]  # bytes each worker read from the bucket (on the wire, per relay)
    from_upstream: int  # archive bytes the upstream server sent while the workers ran
    archives: int  # the bundle's archive bytes: what each worker needs once


@contextlib.contextmanager
def bucket_store(scratch: Path) -> Iterator[tuple[str, str, Callable[[int], dict[str, str]]]]:
    """gcp-storage-emulator: (bundle URL, host:port to relay, each worker's (URL, env) by port)."""
    from gcs_emulator import Emulator

    emulator = Emulator().start(scratch / "emulator.log")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
    url = f"gs://{emulator.bucket()}/models/v1"
    try:
        yield (
            url,
            emulator.url.removeprefix("http://"),
            lambda port: {"url": url, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"},
        )
    finally:
        emulator.stop()
        del os.environ["STORAGE_EMULATOR_HOST"]


@contextlib.contextmanager
def registry_store(scratch: Path) -> Iterator[tuple[str, str, Callable[[int], dict[str, str]]]]:
    """The CNCF Distribution registry (Debian's docker-registry), plain http on loopback."""
    from oci_registry import Registry

    registry = Registry(scratch / "registry", None, {}, auth="none").start()
    try:
        yield (
            f"oci://{registry.host}/fleet/models:v1",
            registry.host,
            lambda port: {"url": f"oci://127.0.0.1:{port}/fleet/models:v1"},
        )
    finally:
        registry.stop()


@contextlib.contextmanager
def s3_store(scratch: Path) -> Iterator[tuple[str, str, Callable[[int], dict[str, str]]]]:
    """moto's S3 server, reached as AWS tools reach a store (endpoint and keys in the
    environment; each worker's endpoint is its relay)."""
    from moto_s3 import KEY_ID, SECRET, MotoS3

    server = MotoS3().start(scratch / "moto.log")
    env = {
        "AWS_ENDPOINT_URL_S3": server.url,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(scratch / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    url = f"s3://{server.bucket()}/models/v1"
    try:
        yield (
            url,
            server.url.removeprefix("http://"),
            lambda port: {"url": url, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"},
        )
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def fleet(
    root: Path, fixtures: list[Fixture], workers: int, scratch: Path, scheme: str = "gs"
) -> tuple[float, FleetRun, FleetRun]:
    """``bundle gs://…`` (or ``s3://…``, ``oci://…``) once, as CI would; then one worker
    alone and ``workers`` at once, each through its own relay that counts what it read."""
    from hubserver import HubServer

    archives = {f.path: f.archive(root).read_bytes() for f in fixtures}
    hub = HubServer(models=archives).start()  # in-process: the workers must never reach it
    store = {"gs": bucket_store, "s3": s3_store, "oci": registry_store}[scheme]
    with store(scratch) as (url, relayed, worker_env):
        try:
            return _fleet_runs(hub, archives, fixtures, workers, scratch, url, relayed, worker_env)
        finally:
            hub.stop()


def _fleet_runs(
    hub: HubServer,
    archives: dict[str, bytes],
    fixtures: list[Fixture],
    workers: int,
    scratch: Path,
    url: str,
    relayed: str,
    worker_env: Callable[[int], dict[str, str]],
) -> tuple[float, FleetRun, FleetRun]:
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    gcs = {"STORAGE_EMULATOR_HOST": emulator} if emulator else {}
    project = scratch / "fleet"
    project.mkdir()
    (project / "models.toml").write_text(
        "".join(f'[models.{f.name}]\nhandle = "{hub.url}/{f.path}"\n\n' for f in fixtures)
    )
    run_hubpin(project, scratch / "ci-cache", "lock", "--no-fill")
    bundle_seconds = run_hubpin(project, scratch / "ci-cache", "bundle", url, **gcs)[0]

    def run(count: int) -> FleetRun:
        cmd = [sys.executable, __file__, "--relay", relayed]
        relays = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        ports = [int(r.stdout.readline()) for r in relays if r.stdout is not None]
        sent = hub.sent
        envs = [worker_env(port) for port in ports]
        start = time.perf_counter()
        procs = [
            start_hubpin(
                project,
                scratch / f"worker-{count}-{i}",
                "sync",
                "--locked",
                "--from",
                env.pop("url"),
                XDG_CACHE_HOME=str(scratch / "xdg"),
                **env,
            )
            for i, env in enumerate(envs)
        ]
        for proc in procs:
            finish_hubpin(proc, ("sync", "--locked", "--from"))
        wall = time.perf_counter() - start
        received = []
        for r in relays:
            assert r.stdin is not None and r.stdout is not None
            r.stdin.close()
            received.append(int(r.stdout.readline()))
            r.wait(timeout=30)
        for i in range(count):
            shutil.rmtree(scratch / f"worker-{count}-{i}", ignore_errors=True)
        total = sum(len(a) for a in archives.values())
        return FleetRun(count, wall, received, hub.sent - sent, total)

    alone = run(1)
    print(f"  1 worker: {alone.wall:.2f}s", file=sys.stderr, flush=True)
    many = run(workers)
    print(f"  {workers} workers: {many.wall:.2f}s", file=sys.stderr, flush=True)
    return bundle_seconds, alone, many


def peak_rss(url: str, fixture: Fixture, scratch: Path) -> int:
    """Peak RSS (bytes) of a cold ``hubpin sync --frozen`` of one archive."""
    project = make_project(scratch / "rss", url, [fixture], scratch / "rss-lock-cache")
    cache = scratch / "rss-cache"
    try:
        return run_hubpin(project, cache, "sync", "--frozen", rss=True)[1] * 1024
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(project, ignore_errors=True)


def load_overhead(
    url: str, fixture: Fixture, runs: int, scratch: Path
) -> tuple[float, float] | str:
    """Median seconds of ``hubpin.load(alias)`` and of ``tf.saved_model.load(path)``."""
    try:
        from hubpin import runtime  # written on another branch; absent until merged
    except ImportError:
        return "hubpin.runtime is not in this tree yet"
    if not Path(runtime.__file__).resolve().is_relative_to(REPO):
        # an editable install of another checkout can leak its modules into ours
        return "hubpin.runtime is not in this tree yet (another checkout's was found)"
    import tensorflow as tf

    project = make_project(scratch / "load", url, [fixture], scratch / "load-cache")
    cache = scratch / "load-cache"
    run_hubpin(project, cache, "sync", "--frozen")
    os.environ.update({"HUBPIN_LOCK": str(project / "models.lock"), "TFHUB_CACHE_DIR": str(cache)})
    path = cache / hashlib.sha1(f"{url}/{fixture.path}".encode()).hexdigest()
    contenders = {
        "ours": lambda: runtime.load(fixture.name),
        "theirs": lambda: tf.saved_model.load(str(path)),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for load in contenders.values():  # warm up: the first load in a process traces functions
        load()
    for i in range(max(runs, 10)):
        order = list(contenders) if i % 2 == 0 else list(reversed(contenders))  # no order bias
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["ours"]), statistics.median(times["theirs"])


# ---------------------------------------------------------------- report


def machine() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for dist in ("tensorflow", "tensorflow-hub", "urllib3", "isal", "pydantic"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores (nproc); {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        f"- hubpin commit {commit or 'unknown'}; server: tests/hubserver.py on 127.0.0.1 "
        "in a separate process",
        "- load average at the end (1/5/15 min): "
        + " / ".join(f"{x:.2f}" for x in os.getloadavg())
        + " (other work on the machine shares its cores)",
    ]


def secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def ratio_row(
    label: str, t: Timings, target: float | None, note: str = "", ours: str = "hubpin"
) -> str:
    h, tf, curl = t.median(ours), t.median("tensorflow_hub"), t.median("curl | tar xz")
    r = h / tf if h and tf else None
    met = "—" if target is None or r is None else ("yes" if r <= target else "**no**")
    goal = f"≤ {target:.2f}×" if target else "—"
    ratio = f"**{r:.2f}×**" if r else "—"
    return (
        f"| {label} | {secs(h)} | {secs(tf)} | {secs(curl)} | {ratio} | {goal} | {met} | {note} |"
    )


def compile_hubpin() -> None:
    """Write hubpin's bytecode before any timing, as ``pip install`` does for a user.

    Every process runs hubpin from this checkout; with no ``__pycache__`` (a fresh
    clone, or an environment with PYTHONDONTWRITEBYTECODE=1, as these machines
    have) each process would compile every module it imports from source again
    (about 60 ms a run, measured), which no installed hubpin does. tensorflow_hub
    and the other peers are installed, so theirs is compiled already.
    """
    import compileall

    if not compileall.compile_dir(REPO / "hubpin", quiet=1):
        raise SystemExit("could not compile hubpin's modules")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, no 1 GiB fixture")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement")
    parser.add_argument("--fixtures", type=Path, default=Path.home() / ".cache" / "hubpin-bench")
    parser.add_argument(
        "--only",
        default="",
        help="comma list: big,eight,slow,crc,lockfill,fleet,fleet-s3,fleet-oci,noop,many,members,"
        "kaggle,hf,rss,load",
    )
    parser.add_argument("--goog-hash", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-kaggle", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-hf", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--relay", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--slow-rate", type=int, default=40, help="MB/s per connection (slow)")
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.fixtures, args.serve.split(","), args.rate, args.goog_hash)
    if args.relay is not None:
        return relay(args.relay)
    if args.serve_kaggle is not None:
        return peers.serve_kaggle(args.fixtures / args.serve_kaggle)
    if args.serve_hf is not None:
        return peers.serve_hf(args.fixtures / args.serve_hf)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    runs = args.runs or (3 if args.quick else 7)
    only = set(filter(None, args.only.split(","))) or {
        "big",
        "eight",
        "slow",
        "crc",
        "lockfill",
        "fleet",
        "fleet-s3",
        "fleet-oci",
        "noop",
        "many",
        "members",
        "kaggle",
        "hf",
        "rss",
        "load",
    }
    compile_hubpin()
    rss_fixture = BIG if args.quick else HUGE
    for fixture in [BIG, *EIGHT, TINY, rss_fixture]:
        build_fixture(fixture, args.fixtures)
    import tensorflow as tf  # noqa: F401 - imported before any timing, as a user's process has it
    import tensorflow_hub  # noqa: F401

    names = [BIG.name, *(f.name for f in EIGHT), TINY.name, rss_fixture.name]
    rows: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="hubpin-bench-") as tmp,
        server_process(args.fixtures, sorted(set(names))) as url,
    ):
        scratch = Path(tmp)

        def fresh(name: str) -> Path:
            folder = scratch / name
            folder.mkdir()
            return folder

        if "big" in only:
            print("cold sync, 1×200 MB", file=sys.stderr)
            t = cold_sync(url, [BIG], runs, fresh("big"), limit=BIG.archive(args.fixtures))
            rows.append(ratio_row("cold sync, 1×200 MB", t, 0.45, f"median of {runs}"))
            rows.append(limit_row(t, runs))
        if "eight" in only:
            print("cold sync, 8×50 MB", file=sys.stderr)
            t = cold_sync(url, EIGHT, runs, fresh("eight"))
            rows.append(ratio_row("cold sync, 8×50 MB", t, 0.35, f"median of {runs}"))
        if "slow" in only:
            rate = args.slow_rate * 10**6
            slow_runs = max(1, runs // 3)
            print(f"slow link, 1×200 MB at {args.slow_rate} MB/s per connection", file=sys.stderr)
            with server_process(args.fixtures, [BIG.name], rate) as slow_url:
                t = cold_sync(slow_url, [BIG], slow_runs, fresh("slow"), False)
                note = f"median of {slow_runs}; hubpin opens ranged connections after a slow probe"
                rows.append(
                    ratio_row(
                        f"cold sync, 1×200 MB, {args.slow_rate} MB/s per connection", t, None, note
                    )
                )
        if "crc" in only:
            print("the host's checksums: 1×200 MB with and without X-Goog-Hash", file=sys.stderr)
            with server_process(args.fixtures, [BIG.name], goog_hash=True) as hashed_url:
                t = checksum_cost(url, hashed_url, runs, fresh("crc"))
            checked = t.median("hubpin, X-Goog-Hash checked")
            bare = t.median("hubpin, nothing declared")
            assert checked and bare
            met = "yes" if checked / bare <= 1.03 else "**no**"
            rows.append(
                f"| cold sync, 1×200 MB, X-Goog-Hash checked (crc32c + length) | {secs(checked)} "
                f"| — | — | **{checked / bare:.2f}×** of the same sync with nothing declared "
                f"({secs(bare)}) | ≤ 1.03× | {met} | median of {runs}; google-crc32c; md5 only "
                "where no crc32c is declared |"
            )
        if "lockfill" in only:
            print("lock && sync --locked against sync, 8×50 MB", file=sys.stderr)
            t = lock_then_sync(url, EIGHT, runs, fresh("lockfill"))
            ours, plain = t.median("lock && sync --locked"), t.median("sync")
            before = t.median("lock --no-fill && sync --locked")
            assert ours and plain and before
            met = "yes" if ours / plain <= 1.15 else "**no**"
            rows.append(
                f"| `lock && sync --locked`, 8×50 MB | {secs(ours)} | — | — "
                f"| **{ours / plain:.2f}×** of plain `sync` ({secs(plain)}) | ≤ 1.15× | {met} "
                f"| median of {runs}, cold cache, fresh project; each archive downloaded once. "
                f"Hash-only `lock --no-fill && sync --locked` (two downloads): {secs(before)}, "
                f"{before / plain:.2f}× |"
            )
        for row, scheme, where, besides, backend in FLEET_ROWS:
            if row not in only:
                continue
            mb = sum(f.mb for f in FLEET)
            print(
                f"fleet: {FLEET_WORKERS} × sync --from {scheme}://, {len(FLEET)}×50 MB",
                file=sys.stderr,
            )
            bundle_seconds, alone, many = fleet(
                args.fixtures, FLEET, FLEET_WORKERS, fresh(row), scheme
            )
            per = many.from_bucket
            rows.append(
                f"| fleet: {many.workers} × `sync --from {scheme}://…` at once, "
                f"{len(FLEET)}×{mb // len(FLEET)} MB "
                f"| {secs(many.wall)} | — | — | — | — | — "
                f"| wall time, each worker its own cache; one worker alone {secs(alone.wall)}. Read from "
                f"the {where} per worker: {min(per):,}–{max(per):,} B for {many.archives:,} B of "
                f"archives ({max(per) / many.archives:.4f}×: {besides}); from "
                f"the upstream server: {many.from_upstream + alone.from_upstream} B. "
                f"{backend}; `bundle` once: {secs(bundle_seconds)} |"
            )
        if "noop" in only:
            print(f"start-up and no-op, {NOOP_MODELS} models", file=sys.stderr)
            noop = fresh("noop")
            few = many_models(url, NOOP_MODELS, max(runs, 5), noop)
            rows += startup_rows(few)
            rows += phase_rows(noop, max(runs, 5))
        if "many" in only:
            print(f"{MANY_MODELS} models", file=sys.stderr)
            # Each run of the 2,000-model rows takes ~3 s; with 3 they swung more between
            # bench runs than the 50-model rows (0.25 vs 0.32 s for one code): 11 or more.
            many_runs = max(2 * runs + 1, 11)
            lots = many_models(url, MANY_MODELS, many_runs, fresh("many"))
            rows += scale_rows(lots, few if "noop" in only else None, many_runs)
        if "members" in only:
            print("members: 20,000 and 100,000", file=sys.stderr)
            m = scale.members(args.fixtures, (20_000, 100_000), max(runs // 2, 3), fresh("members"))
            r = m[100_000] / m[20_000]
            rows.append(
                f"| unpack, 100,000 members vs 20,000 | {secs(m[100_000])} | — | — "
                f"| **{r:.2f}×** of 20,000 ({secs(m[20_000])}) | ≤ 5× | {'yes' if r <= 5 else '**no**'} "
                "| in process (hubpin.unpack), tiny files 200 to a folder, hashed and written; "
                "max_compression_ratio raised (the archive inflates beyond 100:1) |"
            )
        if "kaggle" in only:
            print("kagglehub.model_download vs hubpin, 1×200 MB", file=sys.stderr)
            name = BIG.archive(args.fixtures).name
            with peers.kaggle_process(args.fixtures, name):
                k = peers.kagglehub_vs_hubpin(run_hubpin, interleaved, fresh("kaggle"), runs)
            assert isinstance(k, Timings)
            ours, theirs = k.median("hubpin"), k.median("kagglehub")
            assert ours and theirs
            met = "yes" if ours / theirs <= 0.15 else "**no**"
            rows.append(
                f"| cold sync, 1×200 MB from Kaggle (stand-in) | {secs(ours)} | — | — "
                f"| **{ours / theirs:.2f}×** of kagglehub.model_download ({secs(theirs)}) "
                f"| ≤ 0.15× | {met} | median of {runs}; tests/kaggleserver.py in its own process; "
                "kagglehub in process, hubpin as a whole process; both fill KAGGLEHUB_CACHE |"
            )
        if "hf" in only:
            print("huggingface_hub.snapshot_download vs hubpin, 1×200 MB", file=sys.stderr)
            name = BIG.archive(args.fixtures).name
            with peers.hf_process(args.fixtures, name) as hf_url:
                h = peers.snapshot_download_vs_hubpin(
                    run_hubpin, interleaved, hf_url, fresh("hf"), runs
                )
            assert isinstance(h, Timings)
            ours, theirs = h.median("hubpin"), h.median("huggingface_hub")
            assert ours and theirs
            met = "yes" if ours / theirs <= 1.0 else "**no**"
            rows.append(
                f"| cold sync, 200 MB Hugging Face repository (stand-in) | {secs(ours)} | — | — "
                f"| **{ours / theirs:.2f}×** of huggingface_hub.snapshot_download ({secs(theirs)}) "
                f"| ≤ 1.0× | {met} | median of {runs}; tests/hfserver.py in its own process; "
                "hubpin checks every file's sha256 (whole process), snapshot_download sizes only "
                "(in process) |"
            )
        if "rss" in only:
            print(f"peak RSS, {rss_fixture.mb} MB archive", file=sys.stderr)
            rss = peak_rss(url, rss_fixture, fresh("rss"))
            met = "yes" if rss < 150 * MB else "**no**"
            rows.append(
                f"| peak RSS, sync of a {rss_fixture.mb} MB model | {rss / MB:.0f} MiB | — | — "
                f"| — | < 150 MB | {met} | whole `hubpin` process (getrusage) |"
            )
        if "load" in only:
            print("hubpin.load overhead", file=sys.stderr)
            result = load_overhead(url, EIGHT[0], runs, fresh("load"))
            if isinstance(result, str):
                rows.append(
                    f"| `hubpin.load` vs `tf.saved_model.load` | skipped | — | — | — | — | — | {result} |"
                )
            else:
                ours, theirs = result
                rows.append(
                    f"| `hubpin.load` vs `tf.saved_model.load`, 50 MB | {secs(ours)} | "
                    f"{secs(theirs)} (tf.saved_model.load) | — | {ours / theirs:.2f}× | — | — "
                    f"| overhead {1000 * (ours - theirs):+.0f} ms |"
                )

    header = [
        "| benchmark | hubpin | tensorflow_hub | curl \\| tar xz | hubpin ÷ tf_hub | target | met | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header + rows))
    results = REPO / "benchmarks" / "RESULTS.md"
    about = machine()
    if args.only and results.exists():  # a partial run replaces its own rows, keeps the rest
        rows, about = merge_rows(results.read_text(), rows, args.only, about)
    results.write_text(
        "# hubpin benchmark results\n\n"
        "Produced by `PYTHONPATH=. python benchmarks/bench.py"
        f"{' --quick' if args.quick else ''}`; wall-clock medians, loopback server.\n"
        "hubpin is timed as a whole process (`python -m hubpin sync --frozen`, cold cache);\n"
        "tensorflow_hub as `hub.resolve` in-process, TensorFlow's import not counted.\n\n"
        + "\n".join(header + rows)
        + "\n\nMachine:\n\n"
        + "\n".join(about)
        + "\n"
    )
    print(f"\nwritten to {results.relative_to(REPO)}", file=sys.stderr)


def limit_row(t: Timings, runs: int) -> str:
    """hubpin's whole-process cold sync against the inflate limit measured beside it."""
    h, limit, tf = t.median("hubpin"), t.median("limit"), t.median("tensorflow_hub")
    assert h and limit and tf
    met = "yes" if h / limit <= 1.15 else "**no**"
    return (
        f"| limit: cold sync 1×200 MB vs one-thread ISA-L inflate + bare interpreter | {secs(h)} "
        f"| {secs(tf)} | — | **{h / tf:.2f}×**; **{h / limit:.2f}×** of the limit ({secs(limit)}) "
        f"| ≤ 1.15× of the limit | {met} | median of {runs}, same runs as the row above |"
    )


def many_models(url: str, count: int, runs: int, scratch: Path) -> dict[str, float]:
    """A synced project of ``count`` tiny models, timed by :func:`scale.many_models`."""
    project = scratch / f"p{count}"
    project.mkdir()
    (project / "models.toml").write_text(
        "".join(f'[models.tiny{i}]\nhandle = "{url}/bench/tiny{i}/1"\n\n' for i in range(count))
    )
    cache = scratch / f"c{count}"
    run_hubpin(project, cache, "sync")
    return scale.many_models(run_hubpin, project, cache, runs, scratch)


def startup_rows(few: dict[str, float]) -> list[str]:
    def ms(v: float) -> str:
        return f"{v * 1000:.0f} ms"

    bare = few["bare"]
    extra = few["import"] - bare
    rows = [
        f"| start-up: `import hubpin.cli` | {ms(few['import'])} | — | — | — "
        f"| ≤ 80 ms above bare | {'yes' if extra <= 0.080 else '**no**'} "
        f"| {ms(extra)} above a bare `python -c pass` ({ms(bare)}) |",
        f"| no-op `sync --frozen`, {NOOP_MODELS} cached models | {ms(few['noop'])} | — | — | — "
        f"| < 150 ms | {'yes' if few['noop'] < 0.150 else '**no**'} "
        f"| whole process, from the stamp; bare `python -c pass`: {ms(bare)} |",
    ]
    for key, what in (("status", "`status`"), ("check", "`lock --check`")):
        for suffix, how in (("", "repeated (stamp)"), ("-full", "first run (full path)")):
            value = few[key + suffix]
            rows.append(
                f"| {what}, {NOOP_MODELS} models, {how} | {ms(value)} | — | — | — | ≤ 150 ms "
                f"| {'yes' if value <= 0.150 else '**no**'} | whole process |"
            )
    return rows


def phase_rows(scratch: Path, runs: int) -> list[str]:
    """Where a first run's CPU time goes, stage by stage (:func:`scale.phases`): how much of
    ``status`` and ``lock --check`` is pydantic (its import, the model classes, its plugin
    loader and the schema build) and how much everything else."""
    project, cache = scratch / f"p{NOOP_MODELS}", scratch / f"c{NOOP_MODELS}"
    rows = []
    for argv, what in (("status",), "`status`"), (("lock", "--check"), "`lock --check`"):
        stages = scale.phases(hubpin_env(cache), project, ["-q", *argv], runs)
        total = sum(stages.values())
        ours = (
            "pydantic import",
            "pydantic model classes",
            "pydantic plugin loader",
            "schema build",
        )
        pydantic = sum(stages[label] for label in ours)
        detail = ", ".join(f"{label} {value:.0f}" for label, value in stages.items())
        rows.append(
            f"| {what}, {NOOP_MODELS} models, first run: CPU by stage | {total:.0f} ms | — | — "
            f"| pydantic {pydantic:.0f} ms ({pydantic / total:.0%}) | — | — | {detail} "
            f"(CPU ms, medians of {runs}, each stage imported before the next) |"
        )
    return rows


def scale_rows(lots: dict[str, float], few: dict[str, float] | None, runs: int) -> list[str]:
    def grow(key: str) -> str:
        where = f"whole process, median of {runs}"
        if few is None:
            return where
        return (
            f"{where}; {NOOP_MODELS} models: {few[key]:.2f} s "
            f"({lots[key] / few[key]:.1f}× for 40× the models)"
        )

    targets = (
        ("noop", "no-op `sync --frozen` (stamp)", 0.3),
        ("full", "full-path no-op `sync --frozen`", 0.6),
        ("status", "`status`, repeated (stamp)", 0.5),
        ("status-full", "`status`, first run (full path)", 0.5),
    )
    rows = [
        f"| {what}, {MANY_MODELS} models | {secs(lots[key])} | — | — | — | ≤ {target} s "
        f"| {'yes' if lots[key] <= target else '**no**'} | {grow(key)} |"
        for key, what, target in targets
    ]
    for key, what in (("check", "repeated (stamp)"), ("check-full", "first run (full path)")):
        rows.append(
            f"| `lock --check`, {MANY_MODELS} models, {what} | {secs(lots[key])} | — | — | — "
            f"| — | — | {grow(key)} |"
        )
    rows.append(
        f"| peak RSS, {MANY_MODELS} models (full-path no-op, status) | {lots['rss'] / MB:.0f} MiB "
        f"| — | — | — | ≤ 150 MB | {'yes' if lots['rss'] <= 150 * MB else '**no**'} | getrusage |"
    )
    return rows


def merge_rows(
    previous: str, rows: list[str], only: str, about: list[str]
) -> tuple[list[str], list[str]]:
    """The previous RESULTS.md's rows with those measured now replaced (by label) or added,
    and its machine notes plus one line saying which rows this run measured, and where."""

    def label(row: str) -> str:
        return row.split(" | ")[0].removeprefix("| ")

    lines = previous.splitlines()
    old = [x for x in lines if x.startswith("| ") and not x.startswith("| benchmark |")]
    new = {label(row): row for row in rows}
    merged = [new.pop(label(row), row) for row in old] + list(new.values())
    notes = [x for x in lines[lines.index("Machine:") + 1 :] if x.startswith("- ")]
    commit = next(x for x in about if x.startswith("- hubpin commit")).split(";")[0]
    load = next(x for x in about if x.startswith("- load average"))
    notes.append(
        f"- rows {'; '.join(repr(label(r)) for r in rows)}: measured with `--only {only}` at "
        f"{commit.removeprefix('- ')}; {load.removeprefix('- ')}"
    )
    return merged, notes


if __name__ == "__main__":
    main()
