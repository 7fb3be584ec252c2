"""GCS as the distribution engine, against gcp-storage-emulator: `hubpin bundle gs://…` once,
`hubpin sync --from gs://…` everywhere, with no upstream traffic; bundles that resume after a
kill; gs:// mirrors; and a bundle object that is not what the lock pins."""

from __future__ import annotations

import hashlib
import signal
import time

import pytest
from conftest import Model, Project, lock_two_models
from faultkit import heavy_archive, spawn_hubpin
from gcs_emulator import Emulator
from hubserver import HubServer

pytestmark = pytest.mark.gcs

WRITES = ('"POST', '"PUT', '"PATCH', '"DELETE')


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _writes(gcs: Emulator, bucket: str, since: int) -> list[str]:
    """Requests that change something in ``bucket``, logged after the first ``since`` lines."""
    return [line for line in gcs.requests(f"/b/{bucket}/")[since:] if line.startswith(WRITES)]


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
