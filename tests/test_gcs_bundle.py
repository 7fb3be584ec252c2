"""GCS as the distribution engine, against gcp-storage-emulator: `hubpin bundle gs://…` once,
`hubpin sync --from gs://…` everywhere, with no upstream traffic; bundles that resume after a
kill; gs:// mirrors; and a bundle object that is not what the lock pins."""

from __future__ import annotations

import hashlib
import signal
import time

import pytest
from conftest import Model, Project, assert_holds, lock_two_models
from faultkit import heavy_archive, leftovers, spawn_hubpin
from gcs_emulator import Emulator
from hubserver import HubServer

pytestmark = pytest.mark.gcs

WRITES = ('"POST', '"PUT', '"PATCH', '"DELETE')


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _writes(gcs: Emulator, bucket: str, since: int) -> list[str]:
    """Requests that change something in ``bucket``, logged after the first ``since`` lines."""
    return [line for line in gcs.requests(f"/b/{bucket}/")[since:] if line.startswith(WRITES)]


def test_bundle_to_gs_once_then_sync_from_it_with_the_upstream_server_stopped(
    project: Project,
    hub: HubServer,
    gcs: Emulator,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    double, triple = lock_two_models(project, hub)
    bucket = gcs.bucket()
    url = f"gs://{bucket}/release/7"
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    assert f"wrote {url}: 2 archives and models.lock" in err
    assert f"hubpin sync --from {url}" in err
    listing = gcs.listing(url)
    assert set(listing) == {
        "models.lock",
        f"archives/{_sha(models['double'].archive)}",
        f"archives/{_sha(models['triple'].archive)}",
    }
    assert gcs.read(f"{url}/models.lock") == project.lock.read_bytes()
    for name in ("double", "triple"):
        key = f"archives/{_sha(models[name].archive)}"
        assert gcs.read(f"{url}/{key}") == models[name].archive
        assert listing[key]["metadata"]["hubpin-sha256"] == _sha(models[name].archive)
        assert listing[key]["metadata"]["hubpin-crc32c"] == listing[key]["crc32c"]

    # Idempotent: a second run reads nothing upstream and writes nothing but the lock.
    downloads = len(hub.requests)
    since = len(gcs.requests(f"/b/{bucket}/"))
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    assert "2 archives (2 already there) and models.lock" in err
    assert len(hub.requests) == downloads
    (lock_write,) = _writes(gcs, bucket, since)
    assert "name=release/7/models.lock" in lock_write
    again = gcs.listing(url)
    assert {k: v["generation"] for k, v in again.items() if k.startswith("archives/")} == {
        k: v["generation"] for k, v in listing.items() if k.startswith("archives/")
    }

    hub.stop()  # from here on, any upstream request would fail the sync
    for worker in ("a", "b"):
        cache = tmp_path / f"worker-{worker}"
        monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
        since = len(gcs.requests(f"/b/{bucket}/"))
        code, _, err = project.run("sync", "--locked", "--from", url)
        assert code == 0, err
        assert "2 fetched" in err
        assert _writes(gcs, bucket, since) == [], "sync wrote to the bundle"
        assert_holds(cache, models, {"double": double, "triple": triple})
        assert project.run("verify")[0] == 0
        assert leftovers(cache) == []

    code, _, err = project.run("sync", "--from", f"gs://{bucket}/no/such/bundle")
    assert code == 2
    assert (
        f"gs://{bucket}/no/such/bundle: not a hubpin bundle (no models.lock, which "
        "`hubpin bundle` writes last, so an interrupted run leaves none); make it with: "
        f"hubpin bundle gs://{bucket}/no/such/bundle"
    ) in err


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_a_damaged_bundle_object_publishes_nothing_and_names_alias_and_object(
    project: Project,
    hub: HubServer,
    gcs: Emulator,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
    damage: str,
) -> None:
    double, triple = lock_two_models(project, hub)
    url = f"gs://{gcs.bucket()}/bundle"
    assert project.run("bundle", url)[0] == 0
    obj = f"{url}/archives/{_sha(models['double'].archive)}"
    archive = models["double"].archive
    gcs.put(obj, models["triple"].archive if damage == "tampered" else archive[: len(archive) // 2])
    hub.stop()
    cache = tmp_path / "worker"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    code, _, err = project.run("sync", "--from", url)
    assert code == 1
    print("ERR>>", err)
    failed = [line for line in err.splitlines() if "FAILED" in line or "error" in line]
    assert len(failed) == 1, err
    (line,) = failed
    assert line.startswith("double               FAILED: ") and obj in line
    assert "nothing was published" in line
    assert line.endswith(f"make it again with: hubpin bundle {url}")
    assert "Traceback" not in err
    assert not (cache / hashlib.sha1(double.encode()).hexdigest()).exists()
    assert (cache / hashlib.sha1(triple.encode()).hexdigest() / "saved_model.pb").is_file()
    assert leftovers(cache) == []


def test_an_object_put_there_by_hand_is_checked_by_size_and_crc32c(
    project: Project, hub: HubServer, gcs: Emulator, models: dict[str, Model]
) -> None:
    """Without hubpin's note, an object is compared with the verified download: kept when its
    size and crc32c match, replaced when they differ."""
    lock_two_models(project, hub)
    url = f"gs://{gcs.bucket()}/by-hand"
    good = f"{url}/archives/{_sha(models['double'].archive)}"
    bad = f"{url}/archives/{_sha(models['triple'].archive)}"
    gcs.put(good, models["double"].archive)  # e.g. `gcloud storage cp`
    gcs.put(bad, models["double"].archive)  # the wrong bytes under triple's name
    before = gcs.listing(url)
    code, _, err = project.run("-v", "bundle", url)
    print("ERR>>", err)
    assert code == 0, err
    assert "2 archives (1 already there)" in err
    after = gcs.listing(url)
    good_key, bad_key = good.removeprefix(f"{url}/"), bad.removeprefix(f"{url}/")
    assert after[good_key]["generation"] == before[good_key]["generation"], "re-uploaded"
    assert after[bad_key]["generation"] != before[bad_key]["generation"]
    assert gcs.read(bad) == models["triple"].archive
    assert hub.archive_requests("google/double/1") == 2  # lock, then the check


def test_a_killed_bundle_claims_nothing_and_a_rerun_finishes_without_reuploading(
    project: Project, hub: HubServer, gcs: Emulator, models: dict[str, Model], tmp_path_factory
) -> None:
    heavy_bytes = heavy_archive(
        tmp_path_factory.getbasetemp(), models["double"].folder, files=48, size=1 << 20
    )
    hub.models["google/heavy/1"] = heavy_bytes
    project.models(double=hub.handle("google/double/1"), heavy=hub.handle("google/heavy/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    bucket = gcs.bucket()
    url = f"gs://{bucket}/fleet"
    heavy_name = f"fleet/archives/{_sha(heavy_bytes)}"
    double_key = f"archives/{_sha(models['double'].archive)}"

    proc = spawn_hubpin(project.root, project.cache, "-v", "bundle", url)
    deadline = time.monotonic() + 120
    while not any("upload_id=" in line for line in gcs.requests(f"name={heavy_name}")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the upload of the large archive never started"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # midway through the resumable upload
    proc.wait(timeout=30)
    first = gcs.listing(url)
    assert "models.lock" not in first, "an interrupted bundle must not claim to be complete"
    assert f"archives/{_sha(heavy_bytes)}" not in first, "killed before the last chunk"
    assert double_key in first
    code, _, err = project.run("sync", "--from", url)
    assert code == 2 and "not a hubpin bundle (no models.lock" in err

    downloads = hub.archive_requests("google/double/1")
    since = len(gcs.requests(f"/b/{bucket}/"))
    code, _, err = project.run("bundle", url)
    assert code == 0, err
    assert "2 archives (1 already there) and models.lock" in err
    assert hub.archive_requests("google/double/1") == downloads, "a complete archive re-read"
    second = gcs.listing(url)
    assert second[double_key]["generation"] == first[double_key]["generation"]
    writes = _writes(gcs, bucket, since)
    small = [w for w in writes if "uploadType=multipart" in w and "models.lock" not in w]
    assert not small, "the small archive re-uploaded"
    assert any(f"name={heavy_name}" in w for w in writes)
    assert "models.lock" in writes[-1], "the lock is written last"
    assert gcs.read(f"{url}/archives/{_sha(heavy_bytes)}") == heavy_bytes
    assert gcs.read(f"{url}/models.lock") == project.lock.read_bytes()


def test_gs_mirror_serves_archives_verified_against_the_lock(
    project: Project,
    hub: HubServer,
    gcs: Emulator,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
) -> None:
    """`[[mirrors]]` whose target is gs:// (a company copy of tfhub.dev in a bucket)."""
    mirror = f"gs://{gcs.bucket()}/tfhub"
    gcs.put(f"{mirror}/google/double/1", models["double"].archive)
    project.write(f'[[mirrors]]\nprefix = "{hub.url}/"\nreplace = "{mirror}/"\n', "hubpin.toml")
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    hub.stop()  # only the mirror can answer
    code, _, err = project.run("sync")
    assert code == 0, err
    assert (project.entry(handle) / "saved_model.pb").is_file()
    assert f'url = "{mirror}/google/double/1"' in project.lock.read_text()

    gcs.put(f"{mirror}/google/double/1", models["triple"].archive)  # the mirror goes wrong
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "other"))
    code, _, err = project.run("sync", "--locked")
    assert code == 1
    (line,) = [x for x in err.splitlines() if "FAILED" in x]
    assert line.startswith("double               FAILED: ")
    assert f"{mirror}/google/double/1 does not match the lock" in line
    assert not (tmp_path / "other" / hashlib.sha1(handle.encode()).hexdigest()).exists()


def test_missing_buckets_fail_bundle_at_once_and_only_skip_filling_for_lock(
    project: Project, hub: HubServer, gcs: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.models(double=hub.handle("google/double/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    code, _, err = project.run("bundle", "gs://no-such-bucket-here/b")
    assert code == 1
    assert err.strip() == (
        "hubpin: error: gs://no-such-bucket-here/b: bucket no-such-bucket-here does not exist; "
        "create it (gcloud storage buckets create gs://no-such-bucket-here) or fix the bundle's URL"
    )
    assert hub.archive_requests("google/double/1") == 1, "downloaded for a bundle it cannot write"

    monkeypatch.setenv("TFHUB_CACHE_DIR", "gs://no-such-bucket-here/cache")
    project.lock.unlink()
    code, _, err = project.run("-v", "lock")
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "not filling the cache" in x]
    assert "bucket no-such-bucket-here does not exist" in line
    assert project.lock.exists()


def test_dry_run_from_a_gs_bundle_names_the_archive_it_lacks(
    project: Project, hub: HubServer, gcs: Emulator, models: dict[str, Model]
) -> None:
    import json

    lock_two_models(project, hub)
    url = f"gs://{gcs.bucket()}/partial"
    assert project.run("bundle", url, "double")[0] == 0  # triple's archive is not in it
    code, out, err = project.run("sync", "--from", url, "--dry-run", "--json")
    assert code == 0, err
    plan = {m["alias"]: (m["action"], m["reason"]) for m in json.loads(out)["models"]}
    assert plan["double"] == ("download", f"not in the cache; from bundle {url}")
    assert plan["triple"] == (
        "fail",
        f"{url}: the bundle has no archive {_sha(models['triple'].archive)}; "
        f"make it again with: hubpin bundle {url}",
    )
    assert not project.cache.exists() or not any(project.cache.iterdir())
