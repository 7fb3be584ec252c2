"""The rows of ``bench.py`` that measure how hubpin scales (issue 24): start-up, the
inflate limit, members, many models.

Kept apart from ``bench.py`` so that file stays about the peers. Every function here
measures its contenders interleaved in one call, so machine noise hits them alike;
read the ratios.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

MB = 1 << 20


def bare_start() -> float:
    """Wall time of a bare interpreter start (``python -c pass``)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def inflate_limit(archive: Path) -> float:
    """What no tool can beat for a cold sync of ``archive``: a bare interpreter start plus a
    one-thread ISA-L inflate of the archive (read from the page cache, output discarded)."""
    from isal import isal_zlib

    bare = bare_start()
    start = time.perf_counter()
    inflater = isal_zlib.decompressobj(wbits=31)
    with archive.open("rb") as f:
        while chunk := f.read(1 << 20):
            inflater.decompress(chunk)
    inflater.flush()
    return bare + time.perf_counter() - start


def members_archive(root: Path, count: int) -> Path:
    """A ``.tar.gz`` of ``count`` tiny distinct files, 200 to a folder, built once.

    200 to a folder at every count, so that the row measures hubpin and not the file
    system: on ext4 writing 100,000 files into 100 folders costs 7.4× the CPU of 20,000
    (plain ``open``/``write``, no hubpin), as each folder grows."""
    path = root / f"members-{count}-v2.tar.gz"
    folders = max(1, count // 200)
    if path.exists():
        return path
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar:
        for i in range(count):
            data = f"member {i}\n".encode()
            info = tarfile.TarInfo(f"./variables/d{i % folders}/f{i}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(raw.getvalue())
    tmp.rename(path)
    return path


def unpack_seconds(archive: Path, dest: Path) -> float:
    """CPU-bound wall time of hubpin's unpacker over ``archive`` into ``dest`` (in process)."""
    from hubpin.reader import HashingReader
    from hubpin.unpack import unpack

    data = archive.read_bytes()
    chunks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    dest.mkdir(parents=True)
    start = time.perf_counter()
    unpack(
        HashingReader(chunks),
        dest,
        max_unpacked=1 << 40,
        max_ratio=1e9,  # 100,000 tiny members compress far beyond the default 100:1
        max_members=1 << 30,
    )
    seconds = time.perf_counter() - start
    shutil.rmtree(dest)
    return seconds


def members(root: Path, counts: tuple[int, int], runs: int, scratch: Path) -> dict[int, float]:
    """Median unpack time per member count, interleaved."""
    archives = {n: members_archive(root, n) for n in counts}
    times: dict[int, list[float]] = {n: [] for n in counts}
    for i in range(runs):
        for n in counts:
            times[n].append(unpack_seconds(archives[n], scratch / f"members-{n}-{i}"))
            os.sync()
        print(
            f"  run {i + 1}/{runs}: " + ", ".join(f"{n}: {t[-1]:.2f}s" for n, t in times.items()),
            file=sys.stderr,
            flush=True,
        )
    return {n: statistics.median(t) for n, t in times.items()}


def many_models(
    run: Callable[..., tuple[float, int]],
    project: Path,
    cache: Path,
    runs: int,
    scratch: Path,
) -> dict[str, float]:
    """Medians over a synced project: the no-op sync, ``status`` and ``lock --check``, each
    repeated (answered from its stamp) and on the full path (no stamp: a fresh
    XDG_CACHE_HOME each run; keys ``full``, ``status-full``, ``check-full``), their peak RSS
    (the largest), a bare interpreter and ``import hubpin.cli``; ``run`` is bench's run_hubpin."""
    stamps = str(scratch / "stamps")
    for argv in (("sync", "--frozen"), ("status",), ("lock", "--check")):
        run(project, cache, *argv, XDG_CACHE_HOME=stamps)  # leaves the stamp
    times: dict[str, list[float]] = {}
    rss = 0

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    for i in range(runs):
        add("bare", bare_start())
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import hubpin.cli"],
            check=True,
            cwd=project,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
        )
        add("import", time.perf_counter() - start)
        add("noop", run(project, cache, "sync", "--frozen", XDG_CACHE_HOME=stamps)[0])
        fresh = str(scratch / f"xdg-{i}")
        seconds, peak = run(project, cache, "sync", "--frozen", rss=True, XDG_CACHE_HOME=fresh)
        add("full", seconds)
        rss = max(rss, peak)
        seconds, peak = run(project, cache, "status", rss=True, XDG_CACHE_HOME=fresh)
        add("status-full", seconds)
        rss = max(rss, peak)
        add("check-full", run(project, cache, "lock", "--check", XDG_CACHE_HOME=fresh)[0])
        shutil.rmtree(fresh, ignore_errors=True)  # (the full paths above left their stamps)
        add("status", run(project, cache, "status", XDG_CACHE_HOME=stamps)[0])
        add("check", run(project, cache, "lock", "--check", XDG_CACHE_HOME=stamps)[0])
    result = {k: statistics.median(v) for k, v in times.items()}
    result["rss"] = rss * 1024
    return result


# Where the CPU time of one whole first-run process goes, in stages: the interpreter's start;
# `import hubpin.cli` (the slim start every command pays, no pydantic); pydantic's import; the
# pydantic model classes hubpin's schema modules create (body and metaclass) and the rest
# of those modules; the other modules the command imports; pydantic's plugin loader (it
# imports importlib.metadata even with PYDANTIC_DISABLE_PLUGINS set); building the schemas
# of the lock, manifest and settings; then the command's own work. Milliseconds, as JSON.
_PHASES = r"""
import gc, time
gc.disable()  # as hubpin.__main__ starts
out = {"interpreter": time.process_time() * 1000}
mark = time.process_time()
import importlib, json, os, sys
names = json.loads(sys.argv[1])
def stage(label, less=0.0):
    global mark
    now = time.process_time()
    out[label] = (now - mark - less) * 1000
    mark = now
def load(prefixes, exclude=()):
    for name in names:
        if name.startswith(prefixes) and not name.startswith(exclude):
            try:
                importlib.import_module(name)
            except Exception:
                pass  # a module that only imports as part of its parent's import
import hubpin.__main__, hubpin.cli, hubpin.stamp
stage("import hubpin.cli")
load(("pydantic",), ("pydantic.plugin._loader",))
stage("pydantic import")
import builtins
from pydantic import BaseModel
build, spent = builtins.__build_class__, [0.0]
def timed(body, name, *bases, **kwargs):
    if not any(isinstance(b, type) and issubclass(b, BaseModel) for b in bases):
        return build(body, name, *bases, **kwargs)
    start = time.process_time()  # the class body (Field(...), validators) and the metaclass
    try:
        return build(body, name, *bases, **kwargs)
    finally:
        spent[0] += time.process_time() - start
builtins.__build_class__ = timed
load(("hubpin.lockfile", "hubpin.manifest", "hubpin.settings", "hubpin.kinds", "hubpin.huggingface"))
builtins.__build_class__ = build
stage("hubpin schema modules, less their classes", spent[0])
out["pydantic model classes"] = spent[0] * 1000
load(("hubpin",))
stage("other modules the command imports")
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
import pydantic.plugin._loader
stage("pydantic plugin loader")
from hubpin.lockfile import Lock
from hubpin.manifest import Manifest
from hubpin.settings import Settings
for model in (Lock, Manifest, Settings):
    model.model_rebuild()
stage("schema build")
sys.argv = ["hubpin", *sys.argv[2:]]
devnull = os.open(os.devnull, os.O_WRONLY)
saved = os.dup(1)
os.dup2(devnull, 1)
from hubpin.__main__ import main
code = main()
sys.stdout.flush()
os.dup2(saved, 1)
stage("the command's work")
assert code == 0, code
print(json.dumps(out))
"""
_MODULES = (
    "import json, runpy, sys\n"
    "sys.argv = ['hubpin', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('hubpin', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('\\nMODULES=' + json.dumps(list(sys.modules)) + '\\n')\n"
)


def phases(env: dict[str, str], project: Path, argv: list[str], runs: int) -> dict[str, float]:
    """Median CPU milliseconds of each stage of one whole ``hubpin ARGV`` process in
    ``project`` (see :data:`_PHASES`), each run with a fresh XDG_CACHE_HOME: the full path."""
    import json
    import tempfile

    def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="hubpin-phases-") as xdg:
            return subprocess.run(
                [sys.executable, "-c", code, *args],
                cwd=project,
                env=env | {"XDG_CACHE_HOME": xdg},
                capture_output=True,
                text=True,
                check=True,
            )

    names = run(_MODULES, *argv).stderr.rpartition("MODULES=")[2]
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        done = run(_PHASES, names, *argv)
        for label, value in json.loads(done.stdout.splitlines()[-1]).items():
            stages.setdefault(label, []).append(value)
    return {label: statistics.median(values) for label, values in stages.items()}
