"""S3 for real, against moto's S3 server on loopback: an s3:// cache (status, verify,
repair, prune, the record-last commit, hubpin.load staging a verified local copy),
s3:// archive handles, `hubpin bundle s3://…` and `sync --from s3://…`, s3:// mirrors.
Races and dead lock holders are in test_s3_faults.py."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from conftest import Model, Project
from faultkit import leftovers
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


def test_s3_cache_holds_entries_that_status_verify_repair_prune_and_load_work_on(
    project: Project,
    hub: HubServer,
    s3: MotoS3,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    bucket = s3.bucket()
    root = f"s3://{bucket}/fleet/tfhub"
    monkeypatch.setenv("TFHUB_CACHE_DIR", root)
    handle = hub.handle("google/double/1")
    key = _key(handle)
    project.models(double=handle)

    code, _, err = project.run("sync")
    assert code == 0, err
    objects = s3.listing(root)
    local = {
        p.relative_to(models["double"].folder).as_posix(): p.read_bytes()
        for p in models["double"].folder.rglob("*")
        if p.is_file()
    }
    files = {name[len(key) + 1 :] for name in objects if name.startswith(f"{key}/")}
    assert files == set(local) | {"assets/"}, "every file, and the empty assets/ folder"
    for rel, data in local.items():
        assert s3.read(f"{root}/{key}/{rel}") == data
        assert s3.head(f"{root}/{key}/{rel}")["ChecksumSHA256"] == _b64(_sha(data))
    notes = {name for name in objects if name.startswith("hubpin-projects/")}
    assert len(notes) == 1, "the sync noted which lock uses the cache (what prune reads)"
    assert set(objects) - {f"{key}/{f}" for f in files} - notes == {
        f"{key}.descriptor.txt",
        f"{key}.hubpin.json",
    }, "no lock or upload folder may be left behind"
    assert s3.read(f"{root}/{key}.descriptor.txt").decode().startswith(f"Module: {handle}\n")
    record = json.loads(s3.read(f"{root}/{key}.hubpin.json"))
    assert record["tree_digest"] in project.lock.read_text()
    assert not project.cache.exists(), "an s3:// cache dir must not write the local default"

    code, out, _ = project.run("status", "--json")
    report = json.loads(out)
    assert report["cache_dir"] == root
    assert report["models"][0]["state"] == "synced"
    assert project.run("verify")[0] == 0
    code, _, err = project.run("sync")
    assert code == 0 and "1 already present" in err

    # hubpin.load stages a verified local copy (TensorFlow cannot read s3://) and reuses it
    import tensorflow as tf

    import hubpin

    stage = tmp_path / "stage"
    monkeypatch.setenv("HUBPIN_STAGE_DIR", str(stage))
    lock = hubpin.Lock(project.lock)
    staged = stage / "s3" / root.removeprefix("s3://") / key
    assert lock.resolve("double") == str(staged)
    assert (staged / "saved_model.pb").read_bytes() == local["saved_model.pb"]
    since = len(s3.requests(f" /{bucket}"))
    again = hubpin.Lock(project.lock)  # as another process would: nothing shared but the disk
    model = again.load("double")
    assert model(tf.constant([1.0, 2.0])).numpy().tolist() == models["double"].expected([1.0, 2.0])
    assert s3.requests(f" /{bucket}")[since:] == [], "the staged copy is reused, S3 not asked"

    index = "variables/variables.index"
    damaged = bytearray(local[index])
    damaged[-1] ^= 0xFF
    s3.put(f"{root}/{key}/{index}", bytes(damaged))
    code, out, _ = project.run("status", "--json")
    assert json.loads(out)["models"][0]["state"].startswith(f"{index} changed")
    code, _, err = project.run("verify")
    assert code == 1 and "double               DAMAGED" in err and f"  changed {index}" in err
    code, _, err = project.run("verify", "--repair")
    assert code == 0 and "repaired" in err, err
    assert s3.read(f"{root}/{key}/{index}") == local[index]
    assert project.run("verify")[0] == 0

    triple = hub.handle("google/triple/1")
    project.models(double=handle, triple=triple)
    assert project.run("sync")[0] == 0
    project.models(double=handle)  # triple dropped: its entry is this project's to prune
    assert project.run("lock")[0] == 0
    code, _, err = project.run("prune")
    assert code == 0, err
    names = set(s3.listing(root))
    assert not [n for n in names if n.startswith(_key(triple))]
    assert f"{key}.hubpin.json" in names and project.run("verify")[0] == 0


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
    code, _, err = project.run("sync", "--locked")
    assert code == 0 and "quint                fetched" in err, err
    assert (project.entry(handle) / "saved_model.pb").is_file()


def test_bundle_to_s3_once_then_sync_from_it_with_the_upstream_server_stopped(
    project: Project,
    hub: HubServer,
    s3: MotoS3,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    double, triple = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=double, triple=triple)
    assert project.run("lock", "--no-fill")[0] == 0
    bucket = s3.bucket()
    url = f"s3://{bucket}/release/7"
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    assert f"wrote {url}: 2 archives and models.lock" in err
    listing = s3.listing(url)
    assert set(listing) == {
        "models.lock",
        f"archives/{_sha(models['double'].archive)}",
        f"archives/{_sha(models['triple'].archive)}",
    }
    for name in ("double", "triple"):
        obj = f"{url}/archives/{_sha(models[name].archive)}"
        assert s3.read(obj) == models[name].archive
        assert s3.head(obj)["ChecksumSHA256"] == _b64(_sha(models[name].archive))
    writes = _writes(s3, bucket, 0)
    assert "/release/7/models.lock " in writes[-1], "the lock is written last"

    # Idempotent: a second run reads nothing upstream and writes nothing but the lock.
    downloads = len(hub.requests)
    since = len(s3.requests(f" /{bucket}/"))
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    assert "2 archives (2 already there) and models.lock" in err
    assert len(hub.requests) == downloads
    (lock_write,) = _writes(s3, bucket, since)
    assert "/release/7/models.lock " in lock_write

    hub.stop()  # from here on, any upstream request would fail the sync
    cache = tmp_path / "worker"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    since = len(s3.requests(f" /{bucket}/"))
    code, _, err = project.run("sync", "--locked", "--from", url)
    assert code == 0, err
    assert "2 fetched" in err
    assert _writes(s3, bucket, since) == [], "sync wrote to the bundle"
    assert project.run("verify")[0] == 0
    assert leftovers(cache) == []

    # A tampered object publishes nothing and is named; the other model syncs.
    obj = f"{url}/archives/{_sha(models['double'].archive)}"
    s3.put(obj, models["triple"].archive)
    other = tmp_path / "worker-2"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(other))
    code, _, err = project.run("sync", "--from", url)
    assert code == 1
    (line,) = [x for x in err.splitlines() if "FAILED" in x]
    assert line.startswith("double               FAILED: ") and obj in line
    assert line.endswith(f"make it again with: hubpin bundle {url}")
    assert not (other / _key(double)).exists()
    assert (other / _key(triple) / "saved_model.pb").is_file()

    code, _, err = project.run("sync", "--from", f"s3://{bucket}/no/such/bundle")
    assert code == 2
    assert f"s3://{bucket}/no/such/bundle: not a hubpin bundle (no models.lock" in err


def test_s3_mirror_serves_archives_verified_against_the_lock(
    project: Project, hub: HubServer, s3: MotoS3, models: dict[str, Model], monkeypatch, tmp_path
) -> None:
    mirror = f"s3://{s3.bucket()}/tfhub"
    s3.put(f"{mirror}/google/double/1", models["double"].archive)
    project.write(f'[[mirrors]]\nprefix = "{hub.url}/"\nreplace = "{mirror}/"\n', "hubpin.toml")
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    hub.stop()  # only the mirror can answer
    code, _, err = project.run("sync")
    assert code == 0, err
    assert (project.entry(handle) / "saved_model.pb").is_file()

    s3.put(f"{mirror}/google/double/1", models["triple"].archive)  # the mirror goes wrong
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "other"))
    code, _, err = project.run("sync", "--locked")
    assert code == 1
    (line,) = [x for x in err.splitlines() if "FAILED" in x]
    assert f"{mirror}/google/double/1 does not match the lock" in line


def test_missing_buckets_fail_at_once_in_one_line(
    project: Project, hub: HubServer, s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.models(double=hub.handle("google/double/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    code, _, err = project.run("bundle", "s3://no-such-bucket-here/b")
    assert code == 1
    assert err.strip() == (
        "hubpin: error: s3://no-such-bucket-here/b: bucket no-such-bucket-here does not exist; "
        "create it (aws s3 mb s3://no-such-bucket-here) or fix the bundle's URL"
    )
    monkeypatch.setenv("TFHUB_CACHE_DIR", "s3://no-such-bucket-here/cache")
    code, _, err = project.run("sync", "--locked")
    assert code == 1
    assert "bucket no-such-bucket-here does not exist; create it (aws s3 mb" in err
    assert "Traceback" not in err
