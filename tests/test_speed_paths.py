"""The fast paths must give exactly the plain path's results, and the CLI must stay slim."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WORKTREE, Model, Project, hubpin_imports
from hubserver import HubServer

from hubpin.digests import hash_tree
from hubpin.errors import ArchiveError
from hubpin.reader import HashingReader
from hubpin.unpack import gunzip_isal, unpack


def _archive(model: Model, extra: Path) -> bytes:
    """A real SavedModel plus a 3 MiB file of random weights, so decoders cross many blocks."""
    from savedmodels import pack

    shutil.copytree(model.folder, extra / "model")
    (extra / "model" / "assets" / "weights.bin").write_bytes(os.urandom(3 << 20))
    return pack(extra / "model")


@pytest.mark.parametrize("background", [True, False], ids=["background", "inline"])
@pytest.mark.parametrize("decoder", ["isal", "stdlib"])
def test_every_decompressor_writes_the_same_bytes(
    models: dict[str, Model], tmp_path: Path, decoder: str, background: bool
) -> None:
    data = _archive(models["double"], tmp_path)
    chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
    gunzip = (
        gunzip_isal if decoder == "isal" else (lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"))
    )
    result = unpack(
        HashingReader(chunks),
        tmp_path / "out",
        max_unpacked=1 << 30,
        gunzip=gunzip,
        background=background,
    )
    assert (
        result.tree.digest()
        == hash_tree(tmp_path / "model").digest()
        == hash_tree(tmp_path / "out").digest()
    )
    assert result.archive_size == len(data)
    for path in result.tree.files:
        assert (tmp_path / "out" / path).read_bytes() == (tmp_path / "model" / path).read_bytes()
    only_hashed = unpack(
        HashingReader(iter([data])),
        None,
        max_unpacked=1 << 30,
        gunzip=gunzip,
        background=background,
    )
    assert only_hashed.tree.digest() == result.tree.digest(), "lock (hash only) and sync must agree"


def test_hashing_reader_holds_only_the_chunk_being_read() -> None:
    """`hubpin bundle` reads archives through it: a 1 GB archive must not pile up unhashed."""
    import hashlib
    import tracemalloc

    expected = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            chunk = os.urandom(1 << 20)
            expected.update(chunk)
            yield chunk

    reader = HashingReader(chunks())
    tracemalloc.start()
    try:
        while reader.read(1 << 20):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes held while reading 64 MiB"
    assert reader.hexdigest() == expected.hexdigest()


def test_a_lone_unpack_inflates_on_a_thread_that_never_reads_the_download(
    models: dict[str, Model], tmp_path: Path
) -> None:
    """Inflating one stream is a sync's longest path: receiving and hashing go on beside it."""
    import threading

    data = _archive(models["double"], tmp_path)
    pulled_by: list[int] = []
    inflated_by: set[int] = set()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            pulled_by.append(threading.get_ident())
            yield data[i : i + 65536]

    class Watched:
        def __init__(self, raw: io.RawIOBase) -> None:
            self._inner = gunzip_isal(raw)

        def readinto(self, buffer: memoryview) -> int | None:
            inflated_by.add(threading.get_ident())
            return self._inner.readinto(buffer)

        def close(self) -> None:
            self._inner.close()

    result = unpack(HashingReader(chunks()), tmp_path / "out", max_unpacked=1 << 30, gunzip=Watched)
    assert result.tree.digest() == hash_tree(tmp_path / "model").digest()
    assert result.archive_size == len(data) and len(pulled_by) > 40
    assert threading.get_ident() not in inflated_by, "inflated in the caller's thread"
    assert not inflated_by & set(pulled_by[1:]), "the inflating thread read the download"


@pytest.mark.parametrize("background", [True, False], ids=["background", "inline"])
def test_a_download_failing_midway_or_an_early_bad_member_stop_reading_alike(
    models: dict[str, Model], tmp_path: Path, background: bool
) -> None:
    """What the source raises arrives after the bytes before it; a refusal stops the reading."""
    import tarfile
    import threading

    from hubpin.errors import FetchError

    data = _archive(models["double"], tmp_path)
    before = threading.active_count()

    def cut() -> Iterator[bytes]:
        yield from (data[i : i + 65536] for i in range(0, len(data) // 2, 65536))
        raise FetchError("the server went away")

    with pytest.raises(FetchError, match="went away"):
        unpack(HashingReader(cut()), tmp_path / "cut", max_unpacked=1 << 30, background=background)
    assert threading.active_count() == before

    link = tarfile.TarInfo("./escape")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    deflate = zlib.compressobj(wbits=31)  # gzip: the symlink, then random bytes for ever
    sent: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[bytes]:
        try:
            yield deflate.compress(link.tobuf()) + deflate.flush(zlib.Z_SYNC_FLUSH)
            while len(sent) < 1000:
                sent.append(1)
                yield deflate.compress(os.urandom(65536)) + deflate.flush(zlib.Z_SYNC_FLUSH)
        finally:
            closed.set()

    with pytest.raises(ArchiveError, match="symlink"):
        unpack(
            HashingReader(endless()), tmp_path / "bad", max_unpacked=1 << 30, background=background
        )
    assert threading.active_count() == before
    assert len(sent) < 1000, "read to the end of a refused archive"
    if background:
        assert closed.is_set(), "the download was left open"
    assert not (tmp_path / "bad" / "escape").exists()


def test_multi_member_gzip_is_read_like_gzipfile(models: dict[str, Model], tmp_path: Path) -> None:
    """Some mirrors concatenate gzip members; both decoders must read all of them."""
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(models["triple"].folder, arcname=".")
    plain = raw.getvalue()
    half = len(plain) // 2
    data = gzip.compress(plain[:half]) + gzip.compress(plain[half:])
    result = unpack(HashingReader(iter([data])), tmp_path / "out", max_unpacked=1 << 30)
    assert result.tree.digest() == hash_tree(models["triple"].folder).digest()


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
@pytest.mark.parametrize("background", [True, False], ids=["background", "inline"])
def test_tar_formats_long_names_and_odd_sizes_unpack_exactly(
    tmp_path: Path, fmt: str, background: bool
) -> None:
    """Headers are parsed by tarfile, data is taken from the stream: every layout must line up."""
    import tarfile

    source = tmp_path / "model"
    deep = source / ("d" * 60) / ("é" * 30)  # past ustar's 100-byte name field once joined
    deep.mkdir(parents=True)
    (source / "empty").write_bytes(b"")
    (source / "block").write_bytes(os.urandom(512))
    (source / "odd").write_bytes(os.urandom((2 << 20) + 511))  # spans buffers, unaligned end
    (deep / ("w" * 40 + ".bin")).write_bytes(os.urandom(1025))
    raw = io.BytesIO()
    tar_format = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT}.get(
        fmt, tarfile.PAX_FORMAT
    )
    with tarfile.open(fileobj=raw, mode="w", format=tar_format) as tar:
        tar.add(source, arcname=".")
    data = gzip.compress(raw.getvalue(), compresslevel=1)
    chunks = (data[i : i + 70001] for i in range(0, len(data), 70001))
    (tmp_path / "out").mkdir()
    result = unpack(
        HashingReader(chunks), tmp_path / "out", max_unpacked=1 << 30, background=background
    )
    assert (
        result.tree.digest() == hash_tree(source).digest() == hash_tree(tmp_path / "out").digest()
    )
    assert result.archive_size == len(data)
    assert (tmp_path / "out" / "odd").read_bytes() == (source / "odd").read_bytes()


def test_noop_sync_imports_no_tensorflow_http_client_or_gcsfs(
    project: Project, hub: HubServer
) -> None:
    project.models(double=hub.handle("google/double/1"))
    assert project.run("sync")[0] == 0
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hubpin", "sync", "--frozen"],
        cwd=project.root,
        capture_output=True,
        text=True,
        env={**os.environ, "TFHUB_CACHE_DIR": str(project.cache), "PYTHONPATH": WORKTREE},
    )
    assert result.returncode == 0, result.stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "hubpin" in imported
    assert not imported & {"tensorflow", "tensorflow_hub", "keras", "gcsfs", "httpx", "urllib3"}


# What a first `status` or `lock --check` of a lock of archives has no use for: a sync's
# machinery (its plan, downloads, checksums, the cache's lock protocol), Hugging Face's
# cache, the writers of files (TOML, renameat2 by ctypes) and the suggestions for a mistake.
_NOT_FOR_READING = {
    "hubpin.download",
    "hubpin.checksums",
    "hubpin.fetch",
    "hubpin.httpfaults",
    "hubpin.sync",
    "hubpin.plan",
    "hubpin.cache.lock",
    "hubpin.cache.huggingface",
    "tomli_w",
    "ctypes",
    "difflib",
}


# What a sync with nothing to fetch does not need: the download, checksum and unpack path and
# the pinning path (tarfile alone is ~2.5 ms of such a process).
_NOT_FOR_A_NOOP_SYNC = {
    "hubpin.download",
    "hubpin.checksums",
    "hubpin.fetch",
    "hubpin.reader",
    "hubpin.unpack",
    "hubpin.locking",
    "hubpin.cli.lock",
    "tarfile",
}


@pytest.mark.parametrize(
    ("argv", "says", "needed", "unused"),
    [
        (("status",), "synced", "hubpin.lockfile", _NOT_FOR_READING),
        (("lock", "--check"), "", "hubpin.lockfile", _NOT_FOR_READING),
        (("sync",), "1 already present", "hubpin.sync", _NOT_FOR_A_NOOP_SYNC),
        (("sync", "--frozen"), "1 already present", "hubpin.sync", _NOT_FOR_A_NOOP_SYNC),
    ],
    ids=["status", "check", "sync", "frozen"],
)
def test_a_first_run_imports_only_what_its_work_needs(
    project: Project,
    hub: HubServer,
    argv: tuple[str, ...],
    says: str,
    needed: str,
    unused: set[str],
) -> None:
    project.models(double=hub.handle("google/double/1"))
    assert project.run("lock")[0] == 0  # fills the cache
    fresh = {"XDG_CACHE_HOME": str(project.root.parent / "no-stamps")}  # the full path
    code, said, imported = hubpin_imports(project, *argv, env=fresh, full=True)
    assert code == 0 and says in said, said
    assert "pydantic" in imported and needed in imported
    assert not imported & unused, sorted(imported & unused)


def test_a_sync_of_a_pin_with_also_handles_is_replayed_from_its_stamp(
    project: Project, hub: HubServer
) -> None:
    """The stamp's entries include each ``also`` handle's key, which needs the pin's
    archive_sha256: a sync that dumped its pins without it left no stamp at all."""
    main, copy = hub.handle("google/double/1"), hub.handle("google/copy/1")
    project.write(f'[models.double]\nhandle = "{main}"\nalso = ["{copy}"]\n')
    assert project.run("lock", "--no-fill")[0] == 0
    code, said, imported = hubpin_imports(project, "sync", "--frozen")
    assert code == 0 and "pydantic" in imported and "fetched" in said, said
    code, said, imported = hubpin_imports(project, "sync", "--frozen")
    assert code == 0 and "already present" in said, said
    assert "pydantic" not in imported, "no stamp was left"


def test_repeated_sync_is_checked_from_the_stamp_without_pydantic(
    project: Project, hub: HubServer
) -> None:
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    code, first, imported = hubpin_imports(project, "sync", "--frozen")
    assert code == 0 and "pydantic" in imported and "fetched" in first
    downloads = hub.archive_requests("google/double/1")
    code, fast, imported = hubpin_imports(project, "sync", "--frozen")
    assert code == 0 and "pydantic" not in imported, "the stamp was not used"
    elsewhere = {"XDG_CACHE_HOME": str(project.root.parent / "no-stamps")}
    code, full, imported = hubpin_imports(project, "sync", "--frozen", env=elsewhere)
    assert code == 0 and "pydantic" in imported and "2 already present" in full
    assert fast == full, "the stamp must print what the full path prints"
    assert hub.archive_requests("google/double/1") == downloads

    # A damaged entry is not taken on the stamp's word: the full path refetches it.
    damaged = project.entry(hub.handle("google/double/1")) / "saved_model.pb"
    damaged.unlink()
    code, said, imported = hubpin_imports(project, "sync", "--frozen")
    assert code == 0 and "pydantic" in imported and "double" in said and "fetched" in said
    assert damaged.is_file()

    # Another cache, another lock, another command line: each is another input.
    other = project.root.parent / "other-cache"
    code, said, imported = hubpin_imports(
        project, "sync", "--frozen", env={"TFHUB_CACHE_DIR": str(other)}
    )
    assert (
        code == 0
        and "pydantic" in imported
        and (other / project.entry(hub.handle("google/double/1")).name).is_dir()
    )
    code, said, imported = hubpin_imports(project, "-m", "models.toml", "sync", "--frozen")
    assert code == 0 and "pydantic" in imported
    lock = project.root / "models.lock"
    lock.write_text(lock.read_text() + "\n")
    code, said, imported = hubpin_imports(project, "sync", "--frozen")
    assert code == 0 and "pydantic" in imported


def test_a_stamp_folder_that_cannot_be_written_costs_only_speed(
    project: Project, hub: HubServer
) -> None:
    project.models(double=hub.handle("google/double/1"))
    blocker = project.root.parent / "not-a-folder"
    blocker.write_text("a file where the stamp folder would go")
    for _ in range(2):
        code, said, imported = hubpin_imports(project, "sync", env={"XDG_CACHE_HOME": str(blocker)})
        assert code == 0 and "Traceback" not in said and "pydantic" in imported
    assert project.entry(hub.handle("google/double/1")).is_dir()


def test_a_stale_lock_is_never_passed_by_a_stamp(project: Project, hub: HubServer) -> None:
    """`sync --locked` checks the manifest; a stamp made before the manifest changed must not hide that."""
    project.models(double=hub.handle("google/double/1"))
    assert project.run("lock")[0] == 0
    for _ in range(2):
        assert hubpin_imports(project, "sync", "--locked")[0] == 0
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    code, said, _ = hubpin_imports(project, "sync", "--locked")
    assert code == 1 and "--locked" in said and "triple" in said


def test_a_manifest_edited_during_a_sync_is_not_stamped_as_synced(
    project: Project, hub: HubServer
) -> None:
    """The outcome belongs to the inputs the sync started with, not to what is on disk at its end."""
    import time

    from faultkit import spawn_hubpin
    from hubserver import Faults

    project.models(double=hub.handle("google/double/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    hub.faults["google/double/1"] = Faults(delay=0.05, chunk=1 << 10)  # a second or more
    proc = spawn_hubpin(project.root, project.cache, "sync", "--locked")
    deadline = time.monotonic() + 30
    while not hub.archive_requests("google/double/1") > 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # the lock's own download was the first request
    project.models(double=hub.handle("google/double/1"), triple=hub.handle("google/triple/1"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # checked against the manifest as it was at the start
    code, said, _ = hubpin_imports(project, "sync", "--locked")
    assert code == 1 and "triple" in said, "a stamp hid that the lock is now stale"


@pytest.mark.parametrize("background", [True, False], ids=["background", "inline"])
def test_damaged_gzip_fails_alike_on_both_paths_and_leaves_no_thread(
    models: dict[str, Model], tmp_path: Path, background: bool
) -> None:
    import threading

    data = bytearray(_archive(models["quint"], tmp_path))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(
        64
    )  # zeros in the middle of the deflate stream
    before = threading.active_count()
    with pytest.raises(ArchiveError, match=r"corrupt gzip data|not a valid tar"):
        unpack(
            HashingReader(iter([bytes(data)])),
            tmp_path / "out",
            max_unpacked=1 << 30,
            background=background,
        )
    assert threading.active_count() == before


def test_slow_single_connection_switches_to_ranges_with_identical_bytes(
    project: Project,
    hub: HubServer,
    models: dict[str, Model],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A per-connection bandwidth cap on a real server; smaller thresholds so the archive can be small."""
    import hashlib
    import re

    from hubpin import fetch

    for name, value in {"RANGED_MIN": 1 << 20, "PROBE": 256 << 10, "SEGMENT": 256 << 10}.items():
        monkeypatch.setattr(fetch, name, value)
    data = _archive(models["double"], tmp_path)  # about 3 MiB of random weights
    hub.models["google/big/1"] = data
    hub.rate = 8 << 20  # bytes per second per connection
    handle = hub.handle("google/big/1")
    project.models(big=handle)
    code, _, err = project.run("sync")
    assert code == 0, err
    assert f'archive_sha256 = "{hashlib.sha256(data).hexdigest()}"' in project.lock.read_text()
    assert hash_tree(project.entry(handle)).digest() == hash_tree(tmp_path / "model").digest()
    ranges = [
        headers.get("Range", "")
        for _, path, headers in hub.requests
        if path == "/archives/google/big/1.tar.gz"
    ]
    closed = [r for r in ranges if re.fullmatch(r"bytes=\d+-\d+", r)]
    assert len(closed) >= 4, ranges  # the rest came as parallel closed ranges

    hub.rate = None  # a fast connection stays single
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "other-cache"))
    before = len(hub.requests)
    assert project.run("sync", "--frozen")[0] == 0
    assert all("Range" not in headers for _, _, headers in hub.requests[before:])
