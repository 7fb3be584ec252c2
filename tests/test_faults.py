"""Network faults on a real loopback server: retried, resumed, or reported with the alias."""

from __future__ import annotations

import io
import tarfile

import pytest
from conftest import Model, Project
from faultkit import heavy_archive, leftovers
from hubserver import Faults, HubServer

DOUBLE = "google/double/1"


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch, project: Project) -> Project:
    """Small retry budget and timeouts, so faults cost fractions of a second."""
    monkeypatch.setenv("HUBPIN_RETRIES", "3")
    monkeypatch.setenv("HUBPIN_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("HUBPIN_READ_TIMEOUT", "0.5")
    return project


def _locked(project: Project, hub: HubServer, path: str = DOUBLE) -> str:
    handle = hub.handle(path)
    project.models(double=handle)
    code, _, err = project.run("lock", "--no-fill")
    assert code == 0, err
    hub.requests.clear()
    return handle


def _ranges(hub: HubServer, path: str = DOUBLE) -> list[str | None]:
    return [h.get("Range") for _, p, h in hub.requests if p == f"/archives/{path}.tar.gz"]


def _assert_published(project: Project, handle: str, model: Model) -> None:
    assert (project.entry(handle) / "saved_model.pb").read_bytes() == (
        model.folder / "saved_model.pb"
    ).read_bytes()
    assert leftovers(project.cache) == []


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_statuses_are_retried(
    fast_retries: Project, hub: HubServer, models: dict[str, Model], status: int
) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(fail_times=2, fail_status=status)
    code, _, err = fast_retries.run("-v", "sync")
    assert code == 0, err
    assert f"HTTP {status}" in err and "retrying" in err
    assert hub.archive_requests(DOUBLE) == 3
    _assert_published(fast_retries, handle, models["double"])


def test_retries_are_bounded_and_the_error_names_the_alias(
    fast_retries: Project, hub: HubServer
) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(fail_times=100, fail_status=503)
    code, _, err = fast_retries.run("sync")
    assert code == 1
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith("double ")
    assert failed[0].endswith(
        "HTTP 503 Service Unavailable (gave up after 4 tries); the host is failing: try again later"
    ), failed[0]
    assert hub.archive_requests(DOUBLE) == 4  # 1 + HUBPIN_RETRIES
    assert not fast_retries.entry(handle).exists()
    assert leftovers(fast_retries.cache) == []


@pytest.mark.parametrize("status", [403, 404, 410])
def test_client_errors_fail_at_once(fast_retries: Project, hub: HubServer, status: int) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(fail_times=100, fail_status=status)
    code, _, err = fast_retries.run("sync")
    assert code == 1
    assert f"HTTP {status}" in err and "double" in err
    assert hub.archive_requests(DOUBLE) == 1, "a 4xx other than 429 must not be retried"
    assert not fast_retries.entry(handle).exists()


def test_lock_names_the_alias_on_a_client_error(fast_retries: Project, hub: HubServer) -> None:
    fast_retries.models(double=hub.handle("google/nonexistent/1"))
    code, _, err = fast_retries.run("lock")
    assert code == 1
    assert "double (" in err and "HTTP 404" in err
    assert not fast_retries.lock.exists()


def test_connection_resets_are_retried(
    fast_retries: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(reset_times=2)
    code, _, err = fast_retries.run("-v", "sync")
    assert code == 0, err
    assert err.count("retrying") == 2
    assert hub.archive_requests(DOUBLE) == 3
    _assert_published(fast_retries, handle, models["double"])


def test_read_timeouts_are_retried(
    fast_retries: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(stall=3.0, stall_times=1)  # longer than read_timeout = 0.5s
    code, _, err = fast_retries.run("-v", "sync")
    assert code == 0, err
    assert "no answer within read_timeout (0.5s); retrying (try 1 of 4 failed)" in err
    assert hub.archive_requests(DOUBLE) == 2
    _assert_published(fast_retries, handle, models["double"])


def test_a_server_that_is_down_is_said_once_with_what_to_check(
    fast_retries: Project, hub: HubServer
) -> None:
    _locked(fast_retries, hub)
    hub.stop()
    host = hub.url.removeprefix("http://")
    said = (
        f"cannot reach {host}: connection refused (gave up after 4 tries); check the network and "
        "any proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), that the host is up, or fetch from a copy "
        "with [[mirrors]] in hubpin.toml"
    )
    code, _, err = fast_retries.run("sync")
    assert code == 1
    alias, failed, rest = err.splitlines()[0].partition(" FAILED: ")
    assert (alias.rstrip(), failed, rest) == (
        "double",
        " FAILED: ",
        f"{hub.handle(DOUBLE)}: {said}",
    )
    assert len(err.splitlines()) == 1 and "retrying" not in err, err  # the summary is on stdout
    code, _, err = fast_retries.run("-v", "sync")
    assert code == 1 and err.count("connection refused; retrying (try ") == 3, err
    fast_retries.models(double=hub.handle(DOUBLE))
    fast_retries.lock.unlink()
    code, _, err = fast_retries.run("lock")
    assert (code, err.splitlines()[0]) == (
        1,
        f"hubpin: error: double ({hub.handle(DOUBLE)}): {said}",
    )


def test_interrupted_download_resumes_with_range(
    fast_retries: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(cut_after=1000, cut_times=2)
    code, _, err = fast_retries.run("-v", "sync")
    assert code == 0, err
    assert _ranges(hub) == [None, "bytes=1000-", "bytes=2000-"]
    assert "resuming at byte 1000" in err and "resuming at byte 2000" in err
    _assert_published(fast_retries, handle, models["double"])


def test_resume_against_a_server_that_ignores_range(
    fast_retries: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(cut_after=1500, cut_times=1, ignore_range=True)
    code, _, err = fast_retries.run("sync")
    assert code == 0, err
    assert _ranges(hub) == [None, "bytes=1500-"]
    _assert_published(fast_retries, handle, models["double"])


def test_large_download_resumes_where_it_stopped(
    fast_retries: Project, hub: HubServer, models: dict[str, Model], tmp_path_factory
) -> None:
    archive = heavy_archive(tmp_path_factory.getbasetemp(), models["double"].folder)
    hub.models["google/heavy/1"] = archive
    handle = _locked(fast_retries, hub, "google/heavy/1")
    cut = len(archive) // 2 + 12345
    hub.faults["google/heavy/1"] = Faults(cut_after=cut, cut_times=1)
    code, _, err = fast_retries.run("sync")
    assert code == 0, err
    assert _ranges(hub, "google/heavy/1") == [None, f"bytes={cut}-"]
    served = sum(
        len(archive) - int((h.get("Range") or "bytes=0-")[6:-1])
        for _, p, h in hub.requests
        if p == "/archives/google/heavy/1.tar.gz"
    )
    assert served - (len(archive) - cut) == len(archive), "resumed download re-fetched bytes"
    assert leftovers(fast_retries.cache) == []
    assert (fast_retries.entry(handle) / "assets" / "blob-5.bin").stat().st_size == 128 << 10


def test_cut_more_often_than_retries_is_reported_as_truncated(
    fast_retries: Project, hub: HubServer
) -> None:
    handle = _locked(fast_retries, hub)
    hub.faults[DOUBLE] = Faults(cut_after=100, cut_times=100, ignore_range=True)
    code, _, err = fast_retries.run("sync")
    assert code == 1
    line = next(line for line in err.splitlines() if "FAILED" in line)
    assert line.startswith("double ") and "download truncated: got 100 of" in line
    assert "mismatch" not in err
    assert not fast_retries.entry(handle).exists()
    assert leftovers(fast_retries.cache) == []


def test_short_body_with_consistent_length_is_truncated_not_a_mismatch(
    fast_retries: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    handle = _locked(fast_retries, hub)
    size = len(models["double"].archive)
    hub.faults[DOUBLE] = Faults(truncate_to=size - 700)  # a half-copied mirror file
    code, _, err = fast_retries.run("sync")
    assert code == 1
    line = next(line for line in err.splitlines() if "FAILED" in line)
    assert line.startswith("double ")
    assert f"download truncated: got {size - 700} of the {size} bytes pinned" in line
    assert "retry with: hubpin sync" in line
    assert "mismatch" not in err and "corrupt" not in err
    assert not fast_retries.entry(handle).exists()
    assert leftovers(fast_retries.cache) == []


def test_declared_checksums_are_checked_on_the_first_download_and_every_later_one(
    project: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    """tfhub.dev archives come from GCS signed URLs that declare X-Goog-Hash: a body that does not
    match it is a corrupt download, at lock time (nothing pinned) and at sync (nothing published)."""
    hub.goog_hash = True
    handle = hub.handle("google/double/1")
    project.models(double=handle)
    hub.faults["google/double/1"] = Faults(wrong_hash=True)
    code, _, err = project.run("lock")
    assert code == 1
    line = next(line for line in err.splitlines() if line.startswith("hubpin: error: double"))
    assert "corrupt download: the server declared" in line and "crc32c=" in line
    assert "nothing was pinned or published" in line and "Traceback" not in err
    assert not project.lock.exists() and not project.entry(handle).exists()

    del hub.faults["google/double/1"]
    assert project.run("lock", "--no-fill")[0] == 0  # a good body: pinned
    hub.faults["google/double/1"] = Faults(wrong_hash=True)
    code, _, err = project.run("sync", "--frozen")
    assert code == 1 and "double" in err and "corrupt download" in err
    assert not project.entry(handle).exists()
    assert leftovers(project.cache) == []
    del hub.faults["google/double/1"]
    assert project.run("sync", "--frozen")[0] == 0
    _assert_published(project, handle, models["double"])


def test_a_404_names_the_url_once_and_what_to_check(fast_retries: Project, hub: HubServer) -> None:
    handle = hub.handle("google/nonexistent/1")
    fast_retries.models(double=handle)
    code, _, err = fast_retries.run("lock")
    assert code == 1
    assert (
        f"hubpin: error: double ({handle}): HTTP 404 Not Found; nothing is there: check the "
        "handle (model name and version) in the manifest\n"
    ) in err
    assert err.count(handle) == 1, err


def _tiny_archive(data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("saved_model.pb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_host_that_is_down_stops_every_models_retries_and_is_said_once(
    fast_retries: Project, hub: HubServer, models: dict[str, Model]
) -> None:
    """Six models on one plain-http host that drops every connection unanswered, three jobs:
    once one download gave up on the host, the others stop retrying it and the ones not
    started make no request; what to check is said once; exit 1 as before."""
    paths = [f"google/m{i}/1" for i in range(6)]
    for i, path in enumerate(paths):  # six archives (one archive would be one download)
        hub.models[path] = _tiny_archive(f"model {i}".encode())
    fast_retries.models(**{f"m{i}": hub.handle(p) for i, p in enumerate(paths)})
    assert fast_retries.run("lock", "--no-fill")[0] == 0
    hub.requests.clear()
    for path in paths:
        hub.faults[path] = Faults(reset_times=100)
    code, _, err = fast_retries.run("sync", "--jobs", "3")
    host = hub.url.removeprefix("http://")
    assert code == 1, err
    assert err.count(f"cannot reach {host}: the connection was reset (gave up after 4 tries)") == 1
    assert err.count("that the host is up") == 1, err
    failed = sorted(line.split()[0] for line in err.splitlines() if " FAILED: " in line)
    assert failed == [f"m{i}" for i in range(6)], err
    assert err.count(f"not tried: {host} is down (the connection was reset)") == 5, err
    tried = sum(hub.archive_requests(p) for p in paths)
    assert tried <= 3 * 4, (tried, err)  # at most the three in flight; 24 when each retried alone
