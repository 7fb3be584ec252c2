"""What every shared store keeps, tested once on each (gs:// and s3:// emulators, through
tests/stores.py): `hubpin bundle` once, idempotent, the lock written last, `sync --from`
with the upstream server stopped and a damaged object named; mirrors verified against the
lock; a missing bucket said at once; four syncs racing on one cache, and a holder that lost
its lock committing nothing. What only one store does is in test_gcs*.py and test_s3*.py."""

from __future__ import annotations

import hashlib
import re

import pytest
from conftest import (
    Model,
    Project,
    assert_holds,
    lock_two_models,
    on_each_locking_store,
    on_each_store,
)
from faultkit import heavy_archive, leftovers, spawn_hubpin
from hubserver import Faults, HubServer
from stores import Store, b64
from test_gcs_faults import BOUND, _finish, _line, _only_entries

pytestmark = [pytest.mark.gcs, pytest.mark.s3]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(handle: str) -> str:
    return hashlib.sha1(handle.encode()).hexdigest()


@on_each_store
def test_bundle_once_then_sync_from_it_with_the_upstream_server_stopped(
    project: Project,
    hub: HubServer,
    store: Store,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    double, triple = lock_two_models(project, hub)
    bucket = store.bucket()
    url = store.url(bucket, "release/7")
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    assert f"wrote {url}: 2 archives and models.lock" in err
    assert f"hubpin sync --from {url}" in err
    listing = store.listing(url)
    archives = {name: f"archives/{_sha(models[name].archive)}" for name in ("double", "triple")}
    assert set(listing) == {"models.lock", *archives.values()}
    assert store.read(f"{url}/models.lock") == project.lock.read_bytes()
    for name, key in archives.items():
        assert store.read(f"{url}/{key}") == models[name].archive
        if store.scheme == "gs":  # the verified sha256 and crc32c noted beside the object
            assert listing[key]["metadata"]["hubpin-sha256"] == _sha(models[name].archive)
            assert listing[key]["metadata"]["hubpin-crc32c"] == listing[key]["crc32c"]
        else:  # S3 keeps (and checks) the lock's sha256 itself
            head = store.server.head(f"{url}/{key}")
            assert head["ChecksumSHA256"] == b64(_sha(models[name].archive))
    assert store.writes(bucket)[-1].key == "release/7/models.lock", "the lock is written last"

    # Idempotent: a second run reads nothing upstream and writes nothing but the lock.
    downloads = len(hub.requests)
    since = len(store.requests(bucket))
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    assert "2 archives (2 already there) and models.lock" in err
    assert len(hub.requests) == downloads
    assert [w.key for w in store.writes(bucket, since)] == ["release/7/models.lock"]

    hub.stop()  # from here on, any upstream request would fail the sync
    for worker in ("a", "b"):
        cache = tmp_path / f"worker-{worker}"
        monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
        since = len(store.requests(bucket))
        code, out, err = project.run("sync", "--locked", "--from", url)
        assert code == 0, err
        assert "2 fetched" in out
        assert store.writes(bucket, since) == [], "sync wrote to the bundle"
        assert_holds(cache, models, {"double": double, "triple": triple})
        assert project.run("verify")[0] == 0
        assert leftovers(cache) == []

    # A tampered or truncated object publishes nothing and is named; the other model syncs.
    obj = f"{url}/{archives['double']}"
    archive = models["double"].archive
    for damage, bad in (("tampered", models["triple"].archive), ("truncated", archive[:999])):
        store.put(obj, bad)
        cache = tmp_path / f"worker-{damage}"
        monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
        code, _, err = project.run("sync", "--from", url)
        assert code == 1
        failed = [line for line in err.splitlines() if "FAILED" in line or "error" in line]
        assert len(failed) == 1, err
        (line,) = failed
        assert line.startswith("double               FAILED: ") and obj in line
        assert "nothing was published" in line, line
        assert line.endswith(f"make it again with: hubpin bundle {url}")
        assert "Traceback" not in err
        assert not (cache / _key(double)).exists()
        assert (cache / _key(triple) / "saved_model.pb").is_file()
        assert leftovers(cache) == []

    missing = store.url(bucket, "no/such/bundle")
    code, _, err = project.run("sync", "--from", missing)
    assert code == 2
    assert (
        f"{missing}: not a hubpin bundle (no models.lock, which `hubpin bundle` writes last, "
        f"so an interrupted run leaves none); make it with: hubpin bundle {missing}"
    ) in err


@on_each_store
def test_a_mirror_on_the_store_serves_archives_verified_against_the_lock(
    project: Project, hub: HubServer, store: Store, models: dict[str, Model]
) -> None:
    """`[[mirrors]]` whose target is a bucket (a company copy of tfhub.dev)."""
    mirror = store.url(store.bucket(), "tfhub")
    store.put(f"{mirror}/google/double/1", models["double"].archive)
    project.write(f'[[mirrors]]\nprefix = "{hub.url}/"\nreplace = "{mirror}/"\n', "hubpin.toml")
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    hub.stop()  # only the mirror can answer
    code, _, err = project.run("sync")
    assert code == 0, err
    assert (project.entry(handle) / "saved_model.pb").is_file()
    assert f'url = "{mirror}/google/double/1"' in project.lock.read_text()

    store.put(f"{mirror}/google/double/1", models["triple"].archive)  # the mirror goes wrong
    other = project.root / "other-cache"
    code, _, err = project.run("--cache-dir", str(other), "sync", "--locked")
    assert code == 1
    (line,) = [x for x in err.splitlines() if "FAILED" in x]
    assert line.startswith("double               FAILED: ")
    assert f"{mirror}/google/double/1 does not match the lock" in line
    assert not (other / _key(handle)).exists()


@on_each_store
def test_a_missing_bucket_fails_bundle_and_sync_at_once_and_only_skips_filling_for_lock(
    project: Project, hub: HubServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.models(double=hub.handle("google/double/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    bundle = store.url("no-such-bucket-here", "b")
    code, _, err = project.run("bundle", bundle)
    assert code == 1
    assert err.strip() == (
        f"hubpin: error: {bundle}: {store.no_bucket('no-such-bucket-here')} or fix the bundle's URL"
    )
    assert hub.archive_requests("google/double/1") == 1, "downloaded for a bundle it cannot write"

    monkeypatch.setenv("TFHUB_CACHE_DIR", store.url("no-such-bucket-here", "cache"))
    code, _, err = project.run("sync", "--locked")
    assert code == 1
    assert store.no_bucket("no-such-bucket-here") in err and "Traceback" not in err
    project.lock.unlink()
    code, _, err = project.run("-v", "lock")
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "not filling the cache" in x]
    assert "bucket no-such-bucket-here does not exist" in line
    assert project.lock.exists()


@pytest.fixture
def heavy_hub(
    hub: HubServer, models: dict[str, Model], store: Store, tmp_path_factory
) -> HubServer:
    """The hub serving a model of 6 files of noise as heavy/1: 8 MiB each on GCS (resumable
    uploads), 4 MiB on S3 (moto is slower and S3 has no second upload path below 5 GiB)."""
    size = 8 << 20 if store.scheme == "gs" else 4 << 20
    hub.models["google/heavy/1"] = heavy_archive(
        tmp_path_factory.getbasetemp(), models["double"].folder, files=6, size=size
    )
    return hub


@on_each_locking_store
def test_four_syncs_racing_on_one_cache_download_upload_and_commit_each_model_once(
    project: Project, heavy_hub: HubServer, store: Store
) -> None:
    bucket = store.bucket()
    root = store.url(bucket, "fleet/tfhub")
    handles = {n: heavy_hub.handle(f"google/{n}/1") for n in ("heavy", "double", "triple")}
    keys = {alias: _key(h) for alias, h in handles.items()}
    project.models(**handles)
    assert project.run("lock", "--no-fill")[0] == 0
    heavy_hub.requests.clear()
    since = len(store.requests(bucket))

    racers = [spawn_hubpin(project.root, root, "sync", "--locked") for _ in range(4)]  # type: ignore[arg-type]
    results = _finish(racers)
    for code, err in results:
        assert code == 0, err
        assert "Traceback" not in err

    writes = store.writes(bucket, since)
    for alias, key in keys.items():
        said = [_line(err, alias) for _, err in results]
        assert sum(" fetched " in x for x in said) == 1, said
        assert sum(x.endswith("already present") for x in said) == 3, said
        assert heavy_hub.downloads(f"google/{alias}/1") == 1, "downloaded once"
        entry = f"fleet/tfhub/{key}"
        work = re.compile(rf"{entry}\.([0-9a-f]{{32}})\.tmp/")
        folders = {m[1] for w in writes if w.key and (m := work.match(w.key))}
        assert len(folders) == 1, f"{alias}: uploaded into {len(folders)} work folders"
        copies = [w for w in writes if w.key == f"{entry}/saved_model.pb"]
        assert len(copies) == 1, copies
        commits = [w.status for w in writes if w.key == f"{entry}.hubpin.json"]
        assert commits == [200], "one commit per entry"
    lock = f"fleet/tfhub/{keys['heavy']}.lock"
    assert [w for w in writes if w.key == lock and w.status == 412], "the race was not provoked"
    blob = re.compile(r"\.tmp/assets/blob-\d\.bin$")
    started = [
        w.key
        for w in writes
        if w.method != "DELETE" and w.key and blob.search(w.key) and "upload_id=" not in w.query
    ]
    assert len(started) == 6, "each large file of the heavy model uploaded once"

    assert _only_entries(sorted(store.listing(root)), list(keys.values())) == []
    code, _, err = project.run("--cache-dir", root, "prune")
    assert code == 0, err
    code, _, err = project.run("--cache-dir", root, "verify")
    assert code == 0, err
    assert _only_entries(sorted(store.listing(root)), list(keys.values())) == []


@on_each_locking_store
def test_a_sync_whose_lock_was_taken_over_commits_nothing(
    project: Project, hub: HubServer, store: Store
) -> None:
    """What a takeover looks like to a holder that was only slow: its lease's next
    conditional rewrite is refused, and it publishes no record."""
    import time

    root = store.url(store.bucket(), "fleet/tfhub")
    delay = 0.5 if store.scheme == "gs" else 0.25  # ~4 s (~2 s) to download: past lock_timeout
    hub.faults["google/double/1"] = Faults(delay=delay, chunk=512)
    handle = hub.handle("google/double/1")
    key = _key(handle)
    project.models(double=handle)
    project.write("lock_timeout = 1\n", "hubpin.toml")
    assert project.run("lock", "--no-fill")[0] == 0
    sync = spawn_hubpin(project.root, root, "sync", "--locked")  # type: ignore[arg-type]
    deadline = time.monotonic() + BOUND
    while f"{key}.lock" not in store.listing(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    other = f"fleet-worker-9.4242.{'9' * 32}"
    store.put(f"{root}/{key}.lock", other.encode())  # as that worker's takeover leaves it

    ((code, err),) = _finish([sync])
    assert code == 1, err
    assert f"{root}/{key}.lock: lost the lock to {other}" in err
    assert _line(err, "double").endswith(
        f"{root}/{key}.lock: taken over by {other} while this sync held it (it saw no "
        "progress for lock_timeout); nothing was committed; run: hubpin sync"
    )
    names = store.listing(root)
    assert not [n for n in names if n.startswith(f"{key}/")], "nothing copied into the entry"
    assert f"{key}.hubpin.json" not in names, "no commit"
    assert store.read(f"{root}/{key}.lock").decode() == other, "the new holder's lock is left"


on_every_store = pytest.mark.parametrize(
    "store", ["gcp-storage-emulator", "fake-gcs-server", "s3"], indirect=True
)


@on_every_store
def test_a_cache_on_the_store_holds_entries_that_status_verify_repair_and_prune_work_on(
    project: Project,
    hub: HubServer,
    store: Store,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    import json
    import threading

    root = store.url(store.bucket(), "fleet/tfhub")
    monkeypatch.setenv("TFHUB_CACHE_DIR", root)
    handle = hub.handle("google/double/1")
    key = _key(handle)
    project.models(double=handle)

    code, out, err = project.run("sync")
    assert code == 0, err
    assert f"into {root}:" in out
    objects = store.listing(root)
    local = {
        p.relative_to(models["double"].folder).as_posix(): p.read_bytes()
        for p in models["double"].folder.rglob("*")
        if p.is_file()
    }
    files = {name[len(key) + 1 :] for name in objects if name.startswith(f"{key}/")}
    assert files == set(local) | {"assets/"}, "every file, and the empty assets/ folder"
    for rel, data in local.items():
        assert store.read(f"{root}/{key}/{rel}") == data
        if store.scheme == "s3":  # each file carries its sha256, which S3 checks on arrival
            assert store.server.head(f"{root}/{key}/{rel}")["ChecksumSHA256"] == b64(_sha(data))
    notes = {name for name in objects if name.startswith("hubpin-projects/")}
    assert len(notes) == 1, "the sync noted which lock uses the cache (what prune reads)"
    assert set(objects) - {f"{key}/{f}" for f in files} - notes == {
        f"{key}.descriptor.txt",
        f"{key}.hubpin.json",
    }, "no lock or upload folder may be left behind"
    assert store.read(f"{root}/{key}.descriptor.txt").decode().startswith(f"Module: {handle}\n")
    record = json.loads(store.read(f"{root}/{key}.hubpin.json"))
    assert record["tree_digest"] in project.lock.read_text()
    if store.scheme == "gs":  # GCS lists crc32c: the record keeps it for the quick check
        assert record["crc32c"]["saved_model.pb"] == objects[f"{key}/saved_model.pb"]["crc32c"]
    assert not project.cache.exists(), "a cache dir on a store must not write the local default"

    code, out, _ = project.run("status", "--json")
    report = json.loads(out)
    assert report["cache_dir"] == root
    assert report["models"][0]["state"] == "synced"
    assert report["models"][0]["path"] == f"{root}/{key}"
    code, out, _ = project.run("status")
    assert code == 0 and "warning" not in out
    assert project.run("verify")[0] == 0
    code, out, err = project.run("sync")
    assert code == 0 and "1 already present" in out
    store.put(f"{root}/{key}.hubpin.json", b"{not json")
    code, out, _ = project.run("status", "--json")
    assert json.loads(out)["models"][0]["state"] == "no hubpin record for the entry"
    code, out, err = project.run("sync")
    assert code == 0 and "adopted (verified)" in out, err
    assert (
        json.loads(store.read(f"{root}/{key}.hubpin.json"))["tree_digest"]
        == (record["tree_digest"])
    )

    index = "variables/variables.index"
    damaged = bytearray(local[index])
    damaged[-1] ^= 0xFF
    store.put(f"{root}/{key}/{index}", bytes(damaged))
    code, out, _ = project.run("status", "--json")
    state = json.loads(out)["models"][0]["state"]
    assert state.startswith(f"{index} changed"), state
    if store.scheme == "gs":
        assert state.startswith(f"{index} changed (crc32c "), state
    code, out, err = project.run("verify")
    assert code == 1 and "double               DAMAGED" in out and f"  changed {index}" in out
    # A reader during the repair finds the entry with its record throughout (the record of
    # the same tree stays while the files are put back), never without one.
    from hubpin.cache.store import StoreCache
    from hubpin.settings import Settings

    reader, looks, done = StoreCache.at(root, Settings()), [], threading.Event()

    def look() -> None:
        while not done.is_set():
            looks.append(reader.read_record(key) is not None)

    watcher = threading.Thread(target=look)
    watcher.start()
    try:
        code, out, err = project.run("verify", "--repair")
    finally:
        done.set()
        watcher.join()
    assert code == 0 and "repaired" in out, err
    assert looks and all(looks), f"{looks.count(False)} of {len(looks)} looks found no record"
    assert store.read(f"{root}/{key}/{index}") == local[index]
    assert project.run("verify")[0] == 0

    triple = hub.handle("google/triple/1")
    project.models(double=handle, triple=triple)
    assert project.run("sync")[0] == 0
    project.models(double=handle)  # triple dropped: its entry is this project's to prune
    assert project.run("lock")[0] == 0
    code, _, err = project.run("prune")
    assert code == 0, err
    names = set(store.listing(root))
    assert not [n for n in names if n.startswith(_key(triple))]
    assert f"{key}.hubpin.json" in names and project.run("verify")[0] == 0
