"""Hostile and broken archives, built here with tarfile: refused, nothing written outside the
work folder, nothing published; decompression bombs stopped at the pinned or configured size,
or as soon as they inflate past the compression ratio; tar headers, member counts and paths
bounded before they cost memory."""

from __future__ import annotations

import gzip
import hashlib
import re
import resource
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from conftest import Model, Project
from faultkit import (
    gzip_of_zeros,
    heavy_archive,
    leftovers,
    member,
    spawn_hubpin,
    tar_bytes,
    zero_bomb,
)
from hubserver import HubServer

from hubpin.unpack import RATIO_FLOOR

OUTSIDE = "hubpin-was-here.txt"


def _pax(records: dict[str, str], kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A pax header block and its records, as a tar writer would put them before a member."""
    body = b""
    for key, value in records.items():
        record = f" {key}={value}\n".encode()
        length = len(record) + 1
        while len(str(length)) + len(record) != length:
            length += 1
        body += str(length).encode() + record
    header = member("././@PaxHeader", kind, size=len(body)).tobuf(tarfile.USTAR_FORMAT)
    return header + body + bytes(-len(body) % 512)


def _plain(name: str, data: bytes) -> bytes:
    return member(name, size=len(data)).tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)


def _cases(outside: Path, good: bytes) -> dict[str, tuple[bytes, str]]:
    """name → (archive bytes, what the error must say)."""
    pb = b"\x08\x01" * 100
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    return {
        "absolute": (
            tar_bytes([(member(str(outside / OUTSIDE)), b"pwned")]),
            "has an absolute path",
        ),
        "dotdot": (tar_bytes([(member(f"../../{OUTSIDE}"), b"pwned")]), "points outside"),
        "dotdot-nested": (
            tar_bytes([(member("./assets/../../../" + OUTSIDE), b"pwned")]),
            "points outside",
        ),
        "symlink": (
            tar_bytes(
                [
                    (member("assets", tarfile.SYMTYPE, linkname=str(outside)), None),
                    (member(f"assets/{OUTSIDE}"), b"pwned"),
                ]
            ),
            "is a symlink; only files and folders are allowed",
        ),
        "hardlink": (
            tar_bytes(
                [(member("saved_model.pb", tarfile.LNKTYPE, linkname="/etc/hostname"), None)]
            ),
            "is a hard link",
        ),
        "chardev": (
            tar_bytes([(member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), None)]),
            "is a character device",
        ),
        "blockdev": (
            tar_bytes([(member("disk", tarfile.BLKTYPE, devmajor=8, devminor=0), None)]),
            "is a block device",
        ),
        "fifo": (tar_bytes([(member("pipe", tarfile.FIFOTYPE), None)]), "is a FIFO"),
        "sparse": (tar_bytes([(member("weights", tarfile.GNUTYPE_SPARSE), pb)]), "a sparse file"),
        "duplicate": (
            tar_bytes([(member("saved_model.pb"), pb), (member("./saved_model.pb"), b"swapped")]),
            "appears twice",
        ),
        "below-a-file": (
            tar_bytes([(member("variables"), pb), (member("variables/x"), pb)]),
            "is below a file",
        ),
        "folder-below-a-file": (  # before: pinned by lock, then sync "cannot write …/x"
            tar_bytes([(member("variables"), pb), (member("variables/x", tarfile.DIRTYPE), None)]),
            "is below a file",
        ),
        "not-utf8": (  # before: a UnicodeEncodeError traceback from the tree digest
            tar_bytes([(member("saved_model.pb"), pb), (member("caf\udcff.txt"), pb)]),
            "has a name that is not UTF-8",
        ),
        "control-chars": (tar_bytes([(member("saved\nmodel.pb"), pb)]), "control characters"),
        "long-path": (
            tar_bytes([(member(("d" * 200 + "/") * 25 + "saved_model.pb"), pb)]),
            "has a path of 5039 bytes, more than 4096",
        ),
        "deep-path": (
            tar_bytes([(member("d/" * 300 + "saved_model.pb"), pb)]),
            "is 301 levels deep, more than 256",
        ),
        "long-name-part": (
            tar_bytes([(member("assets/" + "n" * 300), pb)]),
            "has a name part of 300 bytes, more than the 255 a file system allows",
        ),
        "header-chain": (  # each pax header recurses in tarfile: 2,000 of them overflowed it
            gzip.compress(
                b"".join(_pax({"comment": "x"}) for _ in range(2000))
                + _plain("saved_model.pb", pb)
                + bytes(1024)
            ),
            "more than 64 tar header reads before one member",
        ),
        "garbage-sparse-map": (  # tarfile raised ValueError (a traceback) on this one
            gzip.compress(
                _pax({"GNU.sparse.map": "x,y", "GNU.sparse.size": "10"})
                + _plain("saved_model.pb", pb)
                + bytes(1024)
            ),
            "not a valid tar or tar.gz archive (bad header: ",
        ),
        "global-pax-keys": (
            gzip.compress(
                _pax({f"key{i}": "v" for i in range(100)}, tarfile.XGLTYPE)
                + _plain("saved_model.pb", pb)
                + bytes(1024)
            ),
            "global pax headers set more than 64 keys",
        ),
        "html": (b"<html><body>404 not found</body></html>\n" * 20, "not a valid tar"),
        "empty": (b"", "not a valid tar"),
        "random": (hashlib.sha512(b"x").digest() * 64, "not a valid tar"),
        "flipped-gzip": (bytes(flipped), "corrupt gzip data"),
        "cut-gzip": (good[: len(good) // 2], "corrupt gzip data"),
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Model]) -> dict:  # type: ignore[type-arg]
    outside = tmp_path_factory.mktemp("outside")
    return {"outside": outside, **_cases(outside, models["double"].archive)}


@pytest.mark.parametrize("name", list(_cases(Path("/x"), b"\x1f\x8b" + b"\0" * 64)))
@pytest.mark.parametrize("command", ["sync", "lock"])
def test_hostile_archive_is_refused_and_nothing_is_written(
    project: Project,
    cases: dict,
    name: str,
    command: str,  # type: ignore[type-arg]
) -> None:
    archive, message = cases[name]
    outside: Path = cases["outside"]
    (project.root / "mirror").mkdir()
    (project.root / "mirror" / "evil.tar.gz").write_bytes(archive)
    project.models(evil="mirror/evil.tar.gz")
    code, _, err = project.run(command)
    assert code == 1, err
    line = next(line for line in err.splitlines() if line.startswith("hubpin: error: evil ("))
    assert "evil (mirror/evil.tar.gz): " in line and message in line, line
    assert "Traceback" not in err
    assert not project.lock.exists()
    assert not project.entry("mirror/evil.tar.gz").exists()
    assert leftovers(project.cache) == []
    escaped = [
        p for p in (outside / OUTSIDE, project.root / OUTSIDE, project.root.parent / OUTSIDE)
    ]
    assert not any(p.exists() for p in escaped), "a member was written outside the work folder"
    assert not any(project.root.parent.rglob(OUTSIDE))


def test_hostile_archive_from_a_hub_server(project: Project, hub: HubServer, cases: dict) -> None:  # type: ignore[type-arg]
    hub.models["evil/model/1"] = cases["symlink"][0]
    project.models(evil=hub.handle("evil/model/1"))
    code, _, err = project.run("sync")
    assert code == 1 and "evil (" in err and "is a symlink" in err
    assert leftovers(project.cache) == []


def _bomb(files: int, size: int) -> bytes:
    zeros = bytes(size)
    return tar_bytes([(member(f"bomb-{i}.bin"), zeros) for i in range(files)])


def test_lock_stops_at_max_unpacked_size(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _bomb(8, 4 << 20)  # 32 MiB of zeros in a ~32 KiB archive
    assert len(bomb) < 100_000
    (project.root / "bomb.tar.gz").write_bytes(bomb)
    project.models(bomb="bomb.tar.gz")
    monkeypatch.setenv("HUBPIN_MAX_UNPACKED_SIZE", str(10 << 20))
    for command in ("lock", "sync"):
        code, _, err = project.run(command)
        assert code == 1
        assert f"unpacks to more than {10 << 20} bytes (at member 'bomb-2.bin')" in err
        assert "refused before writing it" in err
        assert not project.lock.exists() and not project.entry("bomb.tar.gz").exists()
        assert leftovers(project.cache) == []
    monkeypatch.setenv("HUBPIN_MAX_UNPACKED_SIZE", str(64 << 20))
    code, _, err = project.run("lock")
    assert code == 0, err
    assert "unpacked_size = 33554432" in project.lock.read_text()


def test_sync_never_unpacks_more_than_the_lock_pins(
    project: Project, hub: HubServer, models: dict[str, Model], tmp_path_factory
) -> None:
    real = heavy_archive(tmp_path_factory.getbasetemp(), models["double"].folder)
    hub.models["google/heavy/1"] = real
    handle = hub.handle("google/heavy/1")
    project.models(heavy=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    pinned = next(
        int(line.split("=")[1])
        for line in project.lock.read_text().splitlines()
        if line.startswith("unpacked_size")
    )
    bomb = _bomb(1, 64 << 20)
    assert len(bomb) < len(real), "the bomb must pass the archive-size check to test this one"
    hub.models["google/heavy/1"] = bomb  # upstream now serves a bomb under the pinned handle
    code, _, err = project.run("sync")
    assert code == 1
    assert f"unpacks to more than {pinned} bytes (at member 'bomb-0.bin')" in err
    assert "does not match the lock" in err and "nothing was published" in err
    assert not project.entry(handle).exists()
    assert leftovers(project.cache) == []


# ---------------------------------------------------------------- compression ratio

FSIZE_LIMIT = 256 << 20  # no file the refused process writes may grow past this


def _limit_file_size() -> None:
    """In the child: a write past FSIZE_LIMIT fails (EFBIG), so the disk shows how far it got."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


@pytest.fixture(scope="module")
def bomb_4g() -> bytes:
    """4 GiB of zeros behind a saved_model.pb, in about 4 MB: a valid tar.gz, CRC and all."""
    bomb = zero_bomb(4 << 30)
    assert len(bomb) < 5_000_000
    return bomb


def _refusal(err: str, alias: str) -> tuple[str, int]:
    """The one error line naming ``alias`` and the bytes it says were inflated."""
    lines = [line for line in err.splitlines() if alias in line and "decompression bomb" in line]
    assert len(lines) == 1, err
    found = re.search(
        r"decompression bomb: (\d+) bytes inflated from the first (\d+) bytes", lines[0]
    )
    assert found, lines[0]
    return lines[0], int(found[1])


@pytest.mark.parametrize("command", ["lock", "sync"])
def test_a_4gb_bomb_is_refused_after_inflating_a_fraction_of_it(
    project: Project, bomb_4g: bytes, command: str
) -> None:
    """The issue's case: before, `lock` hashed all 4 GiB and pinned it, and `sync` wrote 4 GiB."""
    (project.root / "bomb.tar.gz").write_bytes(bomb_4g)
    project.models(bomb="bomb.tar.gz")
    proc = spawn_hubpin(project.root, project.cache, command, preexec_fn=_limit_file_size)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "file too large" not in err, err
    line, inflated = _refusal(err, "bomb")
    assert line.startswith("hubpin: error: bomb (bomb.tar.gz): decompression bomb: "), line
    assert "above max_compression_ratio = 100); refused, nothing was published" in line
    assert line.endswith(
        "If the archive is trusted, raise max_compression_ratio in hubpin.toml "
        "or set HUBPIN_MAX_COMPRESSION_RATIO"
    )
    # Stopped within the first 256 MiB of 4 GiB: said so, and (for sync, which writes what it
    # inflates) no file grew past the file-size limit, or the error would be EFBIG's.
    assert RATIO_FLOOR < inflated < FSIZE_LIMIT
    assert not project.lock.exists()
    assert not project.entry("bomb.tar.gz").exists()
    assert leftovers(project.cache) == []


def test_sync_refuses_a_bomb_pinned_under_a_higher_ratio_until_the_setting_is_raised(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock made with a raised ratio (or by an older hubpin) does not get a bomb synced."""
    (project.root / "bomb.tar.gz").write_bytes(zero_bomb(256 << 20))  # about 1000:1
    project.models(bomb="bomb.tar.gz")
    monkeypatch.setenv("HUBPIN_MAX_COMPRESSION_RATIO", "5000")
    assert project.run("lock", "--no-fill")[0] == 0
    monkeypatch.delenv("HUBPIN_MAX_COMPRESSION_RATIO")
    code, _, err = project.run("sync", "--frozen")
    assert code == 1
    line, inflated = _refusal(err, "bomb")
    assert re.match(r"bomb +FAILED: \S+/bomb\.tar\.gz: decompression bomb: ", line), line
    assert "max_compression_ratio = 100)" in line and "does not match the lock" not in line
    assert inflated < 200 << 20
    assert not project.entry("bomb.tar.gz").exists()
    assert leftovers(project.cache) == []
    project.write("max_compression_ratio = 5000\n", "hubpin.toml")  # as the message says
    code, _, err = project.run("sync", "--frozen")
    assert code == 0, err
    assert (project.entry("bomb.tar.gz") / "saved_model.pb").exists()


# ---------------------------------------------------------------- tar headers and member counts


@pytest.mark.parametrize(
    "kind",
    [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK],
    ids=["pax", "pax-global", "gnu-longname", "gnu-longlink"],
)
def test_a_multi_gb_header_is_refused_unread(
    project: Project, monkeypatch: pytest.MonkeyPatch, kind: bytes
) -> None:
    """tarfile reads a pax or long-name header whole: before, this one was read into memory
    for as long as the archive lasted (256 MiB of it here, 8 GiB declared)."""
    declared = 8 * 2**30 - 1  # the largest size a tar header's octal field holds (read in blocks)
    header = member("././@LongLink", kind, size=declared).tobuf(tarfile.GNU_FORMAT)
    (project.root / "evil.tar.gz").write_bytes(gzip_of_zeros(header, 256 << 20))
    project.models(evil="evil.tar.gz")
    monkeypatch.setenv("HUBPIN_MAX_COMPRESSION_RATIO", "1000000")  # this test is about headers
    tracemalloc.start()
    try:
        code, _, err = project.run("lock")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 1
    assert (
        "hubpin: error: evil (evil.tar.gz): the tar header at byte 512 announces "
        f"{declared + 1} bytes of pax or GNU long-name data, more than the 1048576 bytes "
        "one member's headers may take (not read); refused, nothing was published."
    ) in err
    assert peak < 16 << 20, f"{peak} bytes held to refuse a header"
    assert not project.lock.exists()


def test_too_many_members_are_refused_until_max_members_is_raised(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tar_bytes([(member(f"assets/{i}.txt"), b"") for i in range(1001)])
    (project.root / "many.tar.gz").write_bytes(archive)
    project.models(many="many.tar.gz")
    monkeypatch.setenv("HUBPIN_MAX_MEMBERS", "1000")
    for command in ("lock", "sync"):
        code, _, err = project.run(command)
        assert code == 1
        assert (
            "hubpin: error: many (many.tar.gz): more than 1000 members (files and folders); "
            "refused, nothing was published. If the archive is trusted, raise max_members "
            "in hubpin.toml or set HUBPIN_MAX_MEMBERS\n"
        ) in err
        assert not project.lock.exists() and not project.entry("many.tar.gz").exists()
        assert leftovers(project.cache) == []
    monkeypatch.setenv("HUBPIN_MAX_MEMBERS", "1001")
    code, _, err = project.run("sync")
    assert code == 0, err
    assert "file_count = 1001" in project.lock.read_text()


def test_a_lock_pinning_more_files_than_max_members_is_refused_before_downloading(
    project: Project, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.models["google/many/1"] = tar_bytes([(member(f"assets/{i}.txt"), b"") for i in range(50)])
    project.models(many=hub.handle("google/many/1"))
    code, _, err = project.run("lock", "--no-fill")
    assert code == 0, err
    fetched = hub.archive_requests("google/many/1")
    monkeypatch.setenv("HUBPIN_MAX_MEMBERS", "40")
    code, _, err = project.run("sync", "--locked")
    assert code == 1
    assert (
        "more than 40 members (files and folders): the lock pins 50 files, so it was not "
        "downloaded; refused, nothing was published. If the archive is trusted, raise "
        "max_members in hubpin.toml or set HUBPIN_MAX_MEMBERS\n"
    ) in err
    assert hub.archive_requests("google/many/1") == fetched
    assert not project.entry(hub.handle("google/many/1")).exists()
    assert leftovers(project.cache) == []


def test_the_tree_keeps_its_size_as_members_are_added() -> None:
    """Unpacking asks the tree's size before every member: a running total, not a sum."""
    from hubpin.digests import Tree

    tree = Tree()
    for i in range(5):
        tree.add_file(f"a/b/{i}", i, "0" * 64)
    tree.add_file("a/b/4", 10, "1" * 64)  # replaced, as hash_tree never does but may
    assert tree.size == 0 + 1 + 2 + 3 + 10
    assert Tree(dict(tree.files), set(tree.dirs)).size == tree.size
    assert tree.dirs == {"a", "a/b"}
