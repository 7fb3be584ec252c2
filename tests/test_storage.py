"""The storage interface the lock protocol and the caches are written over: conditional writes
and ranged reads behave alike on a real file system and on a GCS emulator, and the scheme
table is the one place a scheme is decided."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project
from gcs_emulator import GcsServer
from hubserver import HubServer

from hubpin.errors import InputError
from hubpin.settings import Settings
from hubpin.storage import Conflict, Storage, storage_for


def _conditional_writes(storage: Storage, base: str) -> None:
    lock = f"{base}/k.lock"
    first = storage.put(lock, b"first", if_absent=True)
    with pytest.raises(Conflict):
        storage.put(lock, b"second", if_absent=True)
    found = storage.read(lock)
    assert found is not None and found[0] == b"first" and found[1].version == first.version
    second = storage.put(lock, b"second", if_version=first.version)
    assert second.version != first.version
    with pytest.raises(Conflict):  # a takeover judged on a version that is gone
        storage.put(lock, b"stale", if_version=first.version)
    found = storage.read(lock)
    assert found is not None and found[0] == b"second"
    assert storage.delete(lock, if_version=second.version)
    assert storage.read(lock) is None
    assert not storage.delete(lock)


def test_local_storage_honours_its_conditions(tmp_path: Path) -> None:
    base = tmp_path / "store"
    base.mkdir()
    storage = storage_for(str(base), Settings())
    _conditional_writes(storage, str(base))
    (base / "k.lock").write_bytes(b"held")
    version = storage.stat(str(base / "k.lock")).version  # type: ignore[union-attr]
    (base / "k.lock").unlink()
    (base / "k.lock").write_bytes(b"another holder")  # replaced meanwhile
    with pytest.raises(Conflict):
        storage.delete(str(base / "k.lock"), if_version=version)
    assert (base / "k.lock").read_bytes() == b"another holder"
    assert sorted(p.name for p in base.iterdir()) == ["k.lock"], "nothing left aside"


@pytest.mark.parametrize("gcs", ["fake-gcs-server"], indirect=True)  # the other ignores them
def test_gcs_storage_honours_its_conditions(gcs: GcsServer) -> None:
    _conditional_writes(storage_for(f"gs://{gcs.bucket()}/x", Settings()), f"gs://{gcs.bucket()}/x")


@pytest.mark.parametrize("gcs", ["fake-gcs-server"], indirect=True)
def test_ranged_reads_give_exactly_the_bytes_asked_for(tmp_path: Path, gcs: GcsServer) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB: more than one of the gs:// client's blocks
    url = f"gs://{gcs.bucket()}/blob"
    gcs.put(url, data)
    (tmp_path / "blob").write_bytes(data)
    for location in (str(tmp_path / "blob"), url):
        storage = storage_for(location, Settings())
        for start, end in ((0, None), (5, 17), (8 << 20, (8 << 20) + 3), (len(data) - 4, None)):
            got = b"".join(storage.open(location, start, end).chunks)
            assert got == data[start:end], (location, start, end)


def test_a_location_no_back_end_serves_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="ftp://host/x: not a location hubpin can store to"):
        storage_for("ftp://host/x", Settings())


def test_bundle_to_an_unknown_store_is_refused_in_one_line(
    project: Project, hub: HubServer
) -> None:
    project.models(double=hub.handle("google/double/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    code, _, err = project.run("bundle", "ftp://host/bundle")
    assert code == 2, err
    assert "ftp://host/bundle: a bundle is a folder, a .tar file or a store prefix (gs://" in err
    assert not Path("ftp:").exists(), "an unknown scheme is not a folder name"
