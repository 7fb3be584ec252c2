"""Helpers shared by the fault tests: leftovers, archives built by hand, hubpin in a subprocess."""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from savedmodels import pack

WORKTREE = Path(__file__).resolve().parent.parent
LEFTOVER_SUFFIXES = (".tmp", ".lock", ".old", ".stale")


def leftovers(cache: Path) -> list[str]:
    """Names in the cache that are not an entry, its descriptor or its hubpin record."""
    if not cache.is_dir():
        return []
    return sorted(
        p.name
        for p in cache.iterdir()
        if p.name.endswith(LEFTOVER_SUFFIXES) or p.name.startswith(".") or ".tmp" in p.name
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative POSIX path → bytes), to compare states."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def heavy_model(base: Path, source: Path, files: int = 6, size: int = 128 << 10) -> Path:
    """A real SavedModel plus incompressible assets, so downloads and unpacking take a while."""
    folder = base / f"heavy-{files}x{size}"
    if not folder.exists():
        shutil.copytree(source, folder)
        rng = random.Random(files * size)
        (folder / "assets").mkdir(exist_ok=True)
        for i in range(files):
            (folder / "assets" / f"blob-{i}.bin").write_bytes(rng.randbytes(size))
    return folder


_ARCHIVES: dict[Path, bytes] = {}


def heavy_archive(base: Path, source: Path, files: int = 6, size: int = 128 << 10) -> bytes:
    """:func:`heavy_model` packed as tfhub.dev packs it, once per folder per session: gzip -9
    of 48 MiB of noise costs a core about a second each time, and no test changes the folder."""
    folder = heavy_model(base, source, files, size)
    if folder not in _ARCHIVES:
        _ARCHIVES[folder] = pack(folder)
    return _ARCHIVES[folder]


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = True) -> bytes:
    """A tar(.gz) with exactly these members, however hostile."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def gzip_of_zeros(head: bytes, zeros: int, tail: bytes = b"", block: int = 1 << 20) -> bytes:
    """A valid gzip of ``head``, ``zeros`` zero bytes (a multiple of ``block``) and ``tail``.

    Built in milliseconds without compressing the zeros: deflate output after a full
    flush refers to nothing before it, so one compressed block of zeros, repeated,
    inflates to that many zeros again (4 GiB in about 4 MiB). The CRC is the real one.
    """
    assert zeros % block == 0
    try:
        from isal.isal_zlib import crc32  # about ten times zlib's speed
    except ImportError:  # pragma: no cover
        crc32 = zlib.crc32
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    plain = bytes(block)
    repeated = deflate.compress(plain) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.compress(tail) + deflate.flush()
    crc = crc32(head)
    for _ in range(zeros // block):
        crc = crc32(plain, crc)
    crc = crc32(tail, crc)
    size = (len(head) + zeros + len(tail)) & 0xFFFFFFFF
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + start
        + repeated * (zeros // block)
        + end
        + struct.pack("<II", crc, size)
    )


def zero_bomb(unpacked: int, name: str = "variables/variables.data-00000-of-00001") -> bytes:
    """A real tar.gz holding a saved_model.pb and one file of ``unpacked`` zero bytes."""
    pb = member("saved_model.pb")
    pb.size = 100
    big = member(name)
    big.size = unpacked
    head = (
        pb.tobuf(tarfile.GNU_FORMAT) + b"\x08\x01" * 50 + bytes(412) + big.tobuf(tarfile.GNU_FORMAT)
    )
    return gzip_of_zeros(head, unpacked, bytes(-unpacked % 512 + 1024))


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def hubpin_env(cache: Path, **extra: str) -> dict[str, str]:
    """Environment for a hubpin subprocess that imports this worktree's code."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HUBPIN_", "TFHUB_", "PYTHONPATH"))
    }
    env.update(
        PYTHONPATH=str(WORKTREE), TFHUB_CACHE_DIR=str(cache), TF_CPP_MIN_LOG_LEVEL="3", **extra
    )
    return env


def spawn_hubpin(
    cwd: Path, cache: Path, *argv: str, env: dict[str, str] | None = None, **popen: object
) -> subprocess.Popen[str]:
    """``python -m hubpin ARGV`` in its own process (so it can be killed or raced)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hubpin", *argv],
        cwd=cwd,
        env={**hubpin_env(cache), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def spawn_waiting(
    cwd: Path, cache: Path, lock: Path, work: Callable[[str], Path], *argv: str
) -> tuple[subprocess.Popen[str], Callable[[], None]]:
    """Hold ``lock`` as a live sync of this process would (its work folder ``work(task)``),
    then run ``hubpin ARGV`` and return once it says it waits for that lock; with the
    function that releases the lock."""
    import socket
    import uuid

    task = uuid.uuid4().hex
    lock.write_text(f"{socket.gethostname()}.{os.getpid()}.{task}")
    work(task).mkdir()
    proc = spawn_hubpin(cwd, cache, *argv)
    assert proc.stderr is not None
    said = proc.stderr.readline()
    if not said.startswith("hubpin: WARNING: waiting for "):
        proc.kill()
        raise AssertionError(said + proc.stderr.read())

    def release() -> None:
        lock.unlink(missing_ok=True)
        if work(task).exists():
            work(task).rmdir()

    return proc, release


def sync_while_waiting(
    waiting: subprocess.Popen[str],
    release: Callable[[], None],
    sync: subprocess.Popen[str],
    noted: Callable[[], bool],
) -> tuple[str, str, str]:
    """Let ``sync`` run until ``noted()`` (it noted its project), then release the lock
    ``waiting`` (from :func:`spawn_waiting`) waits for; the sync's stdout and stderr and
    the waiting process's stderr, both ended."""
    import time

    try:
        deadline = time.monotonic() + 60
        while not noted() and sync.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert noted(), "the sync did not note its project"
        release()
        out, err = sync.communicate(timeout=120)
        _, waited = waiting.communicate(timeout=120)
    finally:
        waiting.kill()
        release()
    return out, err, waited


def sync_while_reading_a_note(
    fifo: Path, cwd: Path, cache: Path, other: Path
) -> tuple[int, str, str, str]:
    """Run ``hubpin prune`` in ``cwd`` and hold it in its read of ``fifo`` (a note it has
    listed, made a FIFO here) while the project in ``other`` syncs to its end, then let
    prune read every note and finish (it must exit 0). The sync's exit code, stdout and
    stderr, and prune's stderr."""
    import time

    os.mkfifo(fifo)
    prune = spawn_hubpin(cwd, cache, "prune")
    try:
        held = None
        while held is None and prune.poll() is None:  # prune opened the FIFO: it reads it now
            try:
                held = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.002)
        assert held is not None, prune.communicate()
        sync = spawn_hubpin(other, cache, "sync")
        out, err = sync.communicate(timeout=120)
        os.close(held)  # prune reads the note's end, and every later read at once
        while prune.poll() is None:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                time.sleep(0.002)
        _, pruned = prune.communicate(timeout=120)
    finally:
        prune.kill()
    assert prune.returncode == 0, pruned
    return sync.returncode, out, err, pruned


def without_root_overrides() -> None:
    """``preexec_fn``: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so a
    root process after exec obeys file modes like any user (a mode-000 folder is unreadable)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
