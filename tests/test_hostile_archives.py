"""Hostile and broken archives, built here with tarfile: refused, nothing written outside the
work folder, nothing published; decompression bombs stopped at the pinned or configured size."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
from conftest import Model, Project
from faultkit import heavy_archive, leftovers, member, tar_bytes
from hubserver import HubServer

OUTSIDE = "hubpin-was-here.txt"


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
        "control-chars": (tar_bytes([(member("saved\nmodel.pb"), pb)]), "control characters"),
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
