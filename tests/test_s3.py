"""S3 for real, against moto's S3 server on loopback: an s3:// cache (status, verify,
repair, prune, the record-last commit, hubpin.load staging a verified local copy),
s3:// archive handles, `hubpin bundle s3://…` and `sync --from s3://…`, s3:// mirrors.
Races and dead lock holders are in test_s3_faults.py."""

from __future__ import annotations

import base64
import hashlib

import pytest
from conftest import Model, Project
from hubserver import HubServer
from moto_s3 import MotoS3

pytestmark = pytest.mark.s3
WRITES = ('"PUT', '"POST', '"DELETE')


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _key(handle: str) -> str:
    return hashlib.sha1(handle.encode()).hexdigest()


def _writes(s3: MotoS3, bucket: str, since: int) -> list[str]:
    return [line for line in s3.requests(f" /{bucket}/")[since:] if line.startswith(WRITES)]


def test_hubpin_load_from_an_s3_cache_stages_a_verified_copy_and_reuses_it(
    project: Project,
    hub: HubServer,
    s3: MotoS3,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    """TensorFlow cannot read s3://: the first load copies the committed entry into
    stage_dir, checked against the lock, and later loads ask S3 nothing. (What the s3://
    cache shares with gs:// -- layout, status, verify, repair, prune -- is test_stores.py.)"""
    import tensorflow as tf

    import hubpin

    bucket = s3.bucket()
    root = f"s3://{bucket}/fleet/tfhub"
    monkeypatch.setenv("TFHUB_CACHE_DIR", root)
    handle = hub.handle("google/double/1")
    key = _key(handle)
    project.models(double=handle)
    code, _, err = project.run("sync")
    assert code == 0, err

    stage = tmp_path / "stage"
    monkeypatch.setenv("HUBPIN_STAGE_DIR", str(stage))
    lock = hubpin.Lock(project.lock)
    staged = stage / "s3" / root.removeprefix("s3://") / key
    assert lock.resolve("double") == str(staged)
    pb = (models["double"].folder / "saved_model.pb").read_bytes()
    assert (staged / "saved_model.pb").read_bytes() == pb
    since = len(s3.requests(f" /{bucket}"))
    again = hubpin.Lock(project.lock)  # as another process would: nothing shared but the disk
    model = again.load("double")
    assert model(tf.constant([1.0, 2.0])).numpy().tolist() == models["double"].expected([1.0, 2.0])
    assert s3.requests(f" /{bucket}")[since:] == [], "the staged copy is reused, S3 not asked"


def test_s3_cache_commits_with_the_record_last_and_publishes_nothing_unverified(
    project: Project,
    hub: HubServer,
    s3: MotoS3,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = s3.bucket()
    root = f"s3://{bucket}/fleet/tfhub"
    monkeypatch.setenv("TFHUB_CACHE_DIR", root)
    handle = hub.handle("google/quint/1")
    entry = f"/{bucket}/fleet/tfhub/{_key(handle)}"
    project.models(quint=handle)
    assert project.run("lock", "--no-fill")[0] == 0
    hub.models["google/quint/1"] = models["double"].archive  # upstream changed under the handle
    code, _, err = project.run("sync", "--locked")
    assert code == 1 and "does not match the lock" in err
    assert s3.listing(root) == {}, "a failed sync leaves no entry, record, lock or upload folder"

    hub.models["google/quint/1"] = models["quint"].archive
    since = len(s3.requests(entry))
    assert project.run("sync", "--locked")[0] == 0
    log = s3.requests(entry)[since:]

    def last(text: str) -> int:
        return max(i for i, line in enumerate(log) if line.startswith(text))

    lock = last(f'"PUT {entry}.lock ')
    copies = [
        i
        for i, x in enumerate(log)
        if x.startswith(f'"PUT {entry}/') and not x.split(" ")[1].endswith("/")  # not a folder
    ]
    pb = last(f'"PUT {entry}/saved_model.pb ')
    descriptor = last(f'"PUT {entry}.descriptor.txt ')
    record = last(f'"PUT {entry}.hubpin.json ')
    release = last(f'"DELETE {entry}.lock ')
    assert lock < min(copies) and max(copies) == pb, "saved_model.pb is copied into <key>/ last"
    assert pb < descriptor < record < release, "the record is the last write, the commit"


def test_s3_archive_handle_locks_and_syncs_and_a_lying_checksum_pins_nothing(
    project: Project, s3: MotoS3, models: dict[str, Model]
) -> None:
    bucket = s3.bucket()
    handle = f"s3://{bucket}/mirror/quint.tar.gz"
    archive = models["quint"].archive
    s3.put(handle, archive, ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(_sha(b"lie")))
    project.models(quint=handle)
    code, _, err = project.run("lock", "--no-fill")
    assert code == 1 and "corrupt download" in err and handle in err
    assert not project.lock.exists()

    s3.put(handle, archive, ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(_sha(archive)))
    code, _, err = project.run("lock", "--no-fill")
    assert code == 0, err
    assert f'url = "{handle}"' in project.lock.read_text()
    assert _sha(archive) in project.lock.read_text()
    code, out, err = project.run("sync", "--locked")
    assert code == 0 and "quint                fetched" in out, err
    assert (project.entry(handle) / "saved_model.pb").is_file()


def test_objects_over_s3_part_size_go_up_in_parts_that_a_rerun_and_readers_trust(
    project: Project, hub: HubServer, s3: MotoS3, models: dict[str, Model], tmp_path_factory
) -> None:
    """A multipart upload (S3 takes at most 5 GiB in one PUT): each part with its SHA-256,
    the object made by the final request; S3 keeps only a digest of the parts' digests, so
    hubpin notes the whole SHA-256 beside it, and a rerun and every reader still check it."""
    from faultkit import heavy_archive

    heavy = heavy_archive(tmp_path_factory.getbasetemp(), models["double"].folder, 2, 6 << 20)
    hub.models["google/heavy/1"] = heavy
    handle = hub.handle("google/heavy/1")
    project.models(heavy=handle)
    part = 5 << 20
    project.write(f"s3_part_size = {part}\n", "hubpin.toml")
    assert project.run("lock", "--no-fill")[0] == 0
    bucket = s3.bucket()
    url = f"s3://{bucket}/release/9"
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    obj = f"{url}/archives/{_sha(heavy)}"
    assert s3.read(obj) == heavy
    key = obj.removeprefix(f"s3://{bucket}/")
    parts = [
        x for x in s3.requests(f"/{bucket}/{key}?") if x.startswith('"PUT') and "partNumber=" in x
    ]
    assert len(parts) == -(-len(heavy) // part) == 3
    assert s3.head(obj)["ETag"].endswith('-3"'), "one object, made of parts"

    downloads, since = len(hub.requests), len(s3.requests(f" /{bucket}/"))
    code, _, err = project.run("bundle", url)
    assert code == 0 and "(1 already there)" in err, err
    assert len(hub.requests) == downloads, "the noted sha256 vouches for the object"
    assert [w for w in _writes(s3, bucket, since) if "/archives/" in w] == []

    # A cache whose files are over the part size; then workers read the bundle's object.
    cache = f"s3://{bucket}/cache"
    code, _, err = project.run("--cache-dir", cache, "sync", "--locked")
    assert code == 0, err
    assert s3.head(f"{cache}/{_key(handle)}/assets/blob-0.bin")["ETag"].endswith('-2"')
    assert project.run("--cache-dir", cache, "verify")[0] == 0
    hub.stop()
    worker = str(project.root / "worker")
    code, out, err = project.run("--cache-dir", worker, "sync", "--locked", "--from", url)
    assert code == 0 and "heavy                fetched" in out, err
    assert project.run("--cache-dir", worker, "verify")[0] == 0

    s3.put(obj, heavy[:-1] + bytes([heavy[-1] ^ 1]))  # other bytes; the notes are gone with them
    other = str(project.root / "worker-2")
    code, _, err = project.run("--cache-dir", other, "sync", "--from", url)
    assert code == 1 and "does not match the lock" in err
