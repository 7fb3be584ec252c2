"""OCI registries as the distribution engine, against the real CNCF Distribution registry on
loopback (TLS with a test CA; htpasswd basic auth, and the bearer-token challenge): `hubpin
bundle oci://…` once, `hubpin sync --from oci://…` everywhere with no upstream traffic; every
artifact read back by skopeo, an independent client."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import time
from pathlib import Path

import pytest
from conftest import Model, Project, assert_holds, lock_two_models
from faultkit import heavy_archive, spawn_hubpin
from hubserver import HubServer
from oci_registry import PASSWORD, USER, CuttingProxy, OciLogin, Registry


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_bundle_to_a_registry_then_sync_fleet_from_it_with_upstream_stopped(
    project: Project,
    hub: HubServer,
    locked_for_registry: tuple[str, str],
    registry: Registry,
    models: dict[str, Model],
    oci_login: OciLogin,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    double, triple = locked_for_registry
    target = f"oci://{registry.host}/team/models:v1"
    code, out, err = project.run("bundle", target)
    assert code == 0, err
    digest = out.strip()
    assert digest.startswith("sha256:") and len(digest) == 71
    assert f"hubpin sync --from oci://{registry.host}/team/models@{digest}" in err
    assert PASSWORD not in out + err

    # An independent client sees an OCI artifact whose blobs are the locked archives.
    raw = oci_login.skopeo("inspect", "--raw", f"docker://{registry.host}/team/models:v1")
    assert _sha(raw.encode()) == digest.removeprefix("sha256:")
    manifest = json.loads(raw)
    assert manifest["artifactType"] == "application/vnd.hubpin.bundle.v1"
    assert manifest["annotations"]["dev.hubpin.aliases"] == ",".join(
        sorted(("double", "triple"), key=lambda n: _sha(models[n].archive))
    )
    archives = {layer["digest"]: layer for layer in manifest["layers"][:-1]}
    for name in ("double", "triple"):
        layer = archives[f"sha256:{_sha(models[name].archive)}"]
        assert layer["size"] == len(models[name].archive)
        assert layer["annotations"]["dev.hubpin.aliases"] == name
    copied = tmp_path / "copied"
    oci_login.skopeo("copy", f"docker://{registry.host}/team/models:v1", f"dir:{copied}")
    assert (copied / _sha(models["double"].archive)).read_bytes() == models["double"].archive
    lock_layer = manifest["layers"][-1]
    assert lock_layer["annotations"]["org.opencontainers.image.title"] == "models.lock"
    assert (copied / lock_layer["digest"].removeprefix("sha256:")).read_bytes() == (
        project.lock.read_bytes()
    )

    # Idempotent: nothing read upstream, no blob uploaded again, the same digest.
    downloads, uploads = len(hub.requests), registry.requests("PUT", "/blobs/uploads/")
    code, out, err = project.run("bundle", target)
    assert code == 0, err
    assert out.strip() == digest and "2 archives (2 already there)" in err
    assert len(hub.requests) == downloads
    assert registry.requests("PUT", "/blobs/uploads/") == uploads

    hub.stop()  # from here on, any upstream request would fail the sync
    for worker, source in (("a", target), ("b", f"oci://{registry.host}/team/models@{digest}")):
        cache = tmp_path / f"worker-{worker}"
        monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
        code, out, err = project.run("sync", "--locked", "--from", source)
        assert code == 0, err
        assert "2 fetched" in out
        assert_holds(cache, models, {"double": double, "triple": triple})
        assert project.run("verify")[0] == 0

    code, _, err = project.run("sync", "--from", f"oci://{registry.host}/team/models:v9")
    assert code == 2
    assert (
        f"oci://{registry.host}/team/models:v9: not a hubpin bundle (no models.lock, which "
        "`hubpin bundle` writes last, so an interrupted run leaves none); "
        f"make it with: hubpin bundle oci://{registry.host}/team/models:v9"
    ) in err
    code, out, err = project.run("sync", "--dry-run", "--from", target)
    assert code == 0, err
    assert "Traceback" not in err


def test_an_artifact_whose_lock_differs_is_refused_naming_what_differs(
    project: Project,
    locked_for_registry: tuple[str, str],
    registry: Registry,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    target = f"oci://{registry.host}/team/other:v1"
    assert project.run("bundle", target)[0] == 0
    text = project.lock.read_text()
    project.lock.write_text(
        text.replace(_sha(models["double"].archive), _sha(models["quint"].archive))
    )
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "worker"))
    code, _, err = project.run("sync", "--frozen", "--from", target)
    assert code == 1
    assert f"oci://{registry.host}/team/other:v1@sha256:" in err
    assert "its lock differs from models.lock: double: archive_sha256 is " in err
    assert f"{_sha(models['double'].archive)!r} in the artifact" in err
    assert "Traceback" not in err
    assert not (tmp_path / "worker").exists() or not any((tmp_path / "worker").iterdir())


def test_without_credentials_a_one_line_error_says_how_to_log_in(
    project: Project,
    hub: HubServer,
    registry: Registry,
    oci_login: OciLogin,
) -> None:
    lock_two_models(project, hub)
    code, _, err = project.run("bundle", f"oci://{registry.host}/team/models:v1")
    assert code == 1
    assert "the registry asks for credentials and none were found" in err
    assert f"log in with: skopeo login {registry.host}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bearer_token_registry_and_a_mount_from_another_repository(
    project: Project,
    hub: HubServer,
    token_registry: Registry,
    oci_login: OciLogin,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    oci_login.allow(token_registry)
    lock_two_models(project, hub)
    host = token_registry.host
    code, out, err = project.run("bundle", f"oci://{host}/base/models:v1")
    assert code == 0, err
    assert PASSWORD not in out + err
    assert token_registry.token_server is not None
    assert "repository:base/models:pull,push" in token_registry.token_server.requests

    # Another repository of the same registry: the archives are mounted, not uploaded.
    project.write(
        project.root.joinpath("hubpin.toml").read_text() + 'oci_mount_from = ["base/models"]\n',
        "hubpin.toml",
    )
    uploads = token_registry.requests("PUT", "/blobs/uploads/")
    code, out, err = project.run("bundle", f"oci://{host}/app/models:v1")
    assert code == 0, err
    assert token_registry.requests("PUT", "/blobs/uploads/") == uploads + 2  # lock and config
    assert token_registry.requests("POST", "mount=sha256") >= 2
    raw = oci_login.skopeo("inspect", "--raw", f"docker://{host}/app/models:v1")
    assert _sha(raw.encode()) == out.strip().removeprefix("sha256:")

    hub.stop()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "worker"))
    code, out, err = project.run("sync", "--locked", "--from", f"oci://{host}/app/models:v1")
    assert code == 0, err
    assert "2 fetched" in out


def test_docker_config_is_read_and_a_refused_password_is_never_shown(
    project: Project,
    hub: HubServer,
    registry: Registry,
    oci_login: OciLogin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock_two_models(project, hub)
    target = f"oci://{registry.host}/team/docker:v1"
    oci_login.allow(registry, password="wrong-Pa55word")  # REGISTRY_AUTH_FILE comes first
    code, out, err = project.run("bundle", target)
    assert code == 1
    assert f"the registry refused the credentials from {oci_login.auth}" in err
    assert "wrong-Pa55word" not in out + err and "Traceback" not in err

    docker = tmp_path / "docker"
    docker.mkdir()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(
        json.dumps({"auths": {f"https://{registry.host}": {"auth": token}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    code, out, err = project.run("bundle", target)
    assert code == 0, err
    assert PASSWORD not in out + err


def test_plain_http_only_after_https_fails_and_only_on_loopback(
    project: Project, hub: HubServer, oci_login: OciLogin, tmp_path: Path
) -> None:
    plain = Registry(tmp_path / "plain", None, {}, auth="none").start()
    try:
        lock_two_models(project, hub)
        code, _, err = project.run("-v", "bundle", f"oci://{plain.host}/team/plain:v1")
        assert code == 0, err
        assert "https failed" in err and "trying plain http" in err
        assert plain.requests("PUT", "/manifests/v1") == 1
    finally:
        plain.stop()


def test_a_killed_bundle_leaves_the_tag_as_it_was_and_a_rerun_uploads_only_the_rest(
    project: Project,
    hub: HubServer,
    registry: Registry,
    models: dict[str, Model],
    oci_login: OciLogin,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    oci_login.allow(registry)
    heavy = heavy_archive(
        tmp_path_factory.getbasetemp(), models["double"].folder, files=16, size=1 << 20
    )
    hub.models["google/heavy/1"] = heavy
    project.models(double=hub.handle("google/double/1"), heavy=hub.handle("google/heavy/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    hub.rate = 2 << 20  # 16 MB take seconds to read upstream: time to kill the bundle
    target = f"oci://{registry.host}/team/killed:v1"

    proc = spawn_hubpin(project.root, project.cache, "bundle", target)
    deadline = time.monotonic() + 120
    small = f"sha256:{_sha(models['double'].archive)}"
    while registry.requests("PUT", "/team/killed/blobs/uploads/") < 1:  # double is up
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the first archive was never uploaded"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # while the heavy archive is read and uploaded
    proc.wait(timeout=30)
    hub.rate = None
    assert registry.requests("PUT", "/team/killed/manifests/") == 0
    code, _, err = project.run("sync", "--from", target)
    assert code == 2 and "not a hubpin bundle (no models.lock, which `hubpin bundle` writes" in err

    uploads = registry.requests("PUT", "/team/killed/blobs/uploads/")
    code, _, err = project.run("bundle", target)
    assert code == 0, err
    assert "2 archives (1 already there)" in err
    # heavy, the lock and the empty config went up; double, already there, did not
    assert registry.requests("PUT", "/team/killed/blobs/uploads/") == uploads + 3
    manifest = json.loads(oci_login.skopeo("inspect", "--raw", f"docker{target[3:]}"))
    assert {layer["digest"] for layer in manifest["layers"][:-1]} == {
        small,
        f"sha256:{_sha(heavy)}",
    }


def test_a_blob_the_registry_serves_wrong_publishes_nothing_and_names_alias_and_blob(
    project: Project,
    hub: HubServer,
    locked_for_registry: tuple[str, str],
    registry: Registry,
    models: dict[str, Model],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The registry's storage altered behind its back (it does not re-hash what it serves):
    each blob is verified against the worker's lock exactly as a download."""
    double, triple = locked_for_registry
    target = f"oci://{registry.host}/team/tampered:v1"
    assert project.run("bundle", target)[0] == 0
    sha = _sha(models["double"].archive)
    stored = registry.folder / "data/docker/registry/v2/blobs/sha256" / sha[:2] / sha / "data"
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    hub.stop()
    cache = tmp_path / "worker"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    try:
        code, _, err = project.run("sync", "--from", target)
    finally:  # blobs are shared by every repository of the session's registry
        stored.write_bytes(models["double"].archive)
    assert code == 1
    (line,) = [line for line in err.splitlines() if "FAILED" in line]
    assert line.startswith("double               FAILED: ")
    assert f"oci://{registry.host}/team/tampered@sha256:{sha} does not match the lock" in line
    assert "nothing was published" in line and "Traceback" not in err
    assert not (cache / hashlib.sha1(double.encode()).hexdigest()).exists()
    assert (cache / hashlib.sha1(triple.encode()).hexdigest() / "saved_model.pb").is_file()


def test_a_blob_over_oci_chunk_size_goes_up_in_chunks_and_reads_back_whole(
    project: Project,
    hub: HubServer,
    registry: Registry,
    models: dict[str, Model],
    oci_login: OciLogin,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """POST, a PATCH per chunk, the closing PUT (the distribution spec's chunked push), so no
    request carries more than a chunk past a proxy's body limit; smaller blobs stay one PUT."""
    oci_login.allow(registry)
    heavy = heavy_archive(tmp_path_factory.getbasetemp(), models["double"].folder, 3, 1 << 20)
    hub.models["google/heavy/1"] = heavy
    project.models(double=hub.handle("google/double/1"), heavy=hub.handle("google/heavy/1"))
    assert project.run("lock", "--no-fill")[0] == 0
    chunk = 1 << 20
    settings = project.root / "hubpin.toml"
    project.write(settings.read_text() + f"oci_chunk_size = {chunk}\n", "hubpin.toml")
    target = f"oci://{registry.host}/team/chunked:v1"
    code, _, err = project.run("bundle", target)
    assert code == 0, err
    assert registry.requests("PATCH", "/team/chunked/blobs/uploads/") == -(-len(heavy) // chunk)
    # double (smaller than a chunk) in one PUT, heavy's closing PUT, the lock, the config
    assert registry.requests("PUT", "/team/chunked/blobs/uploads/") == 4
    copied = tmp_path / "copied"
    oci_login.skopeo("copy", f"docker://{registry.host}/team/chunked:v1", f"dir:{copied}")
    assert (copied / _sha(heavy)).read_bytes() == heavy

    hub.stop()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "worker"))
    code, out, err = project.run("sync", "--locked", "--from", target)
    assert code == 0 and "2 fetched" in out, err


def test_an_upload_cut_mid_chunk_is_never_finished_with_other_bytes(
    project: Project,
    hub: HubServer,
    registry: Registry,
    models: dict[str, Model],
    oci_login: OciLogin,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The connection drops in the middle of a chunk, after the registry kept part of it
    (Distribution appends what arrived): sending the chunk again from its start would make a
    blob of the wrong digest. The upload asks the session where it stands; Distribution
    cannot say for a session in that state, so the blob goes up again in a new one."""
    from types import SimpleNamespace

    proxy = CuttingProxy(registry.host)
    try:
        oci_login.allow(SimpleNamespace(host=proxy.host))  # type: ignore[arg-type]
        heavy = heavy_archive(tmp_path_factory.getbasetemp(), models["double"].folder, 3, 1 << 20)
        hub.models["google/heavy/1"] = heavy
        project.models(heavy=hub.handle("google/heavy/1"))
        assert project.run("lock", "--no-fill")[0] == 0
        settings = project.root / "hubpin.toml"
        project.write(settings.read_text() + "oci_chunk_size = 1048576\njobs = 1\n", "hubpin.toml")
        proxy.cut_after = 1_600_000  # past the first chunk, in the middle of the second
        target = f"oci://{proxy.host}/team/cut:v1"
        code, _, err = project.run("-v", "bundle", target)
        assert code == 0, err
        assert proxy.cuts == 1
        assert "asking the upload where it stands" in err
        assert "the upload cannot go on; starting it again" in err
        oci_login.allow(registry)
        copied = tmp_path / "copied"
        oci_login.skopeo("copy", f"docker://{registry.host}/team/cut:v1", f"dir:{copied}")
        assert (copied / _sha(heavy)).read_bytes() == heavy
    finally:
        proxy.stop()


def test_a_bearer_token_the_registry_refuses_is_renewed_once(
    project: Project,
    hub: HubServer,
    token_registry: Registry,
    oci_login: OciLogin,
) -> None:
    """A token refused with 401 before its stated expiry (revoked, or the token server's
    clock behind): one fresh token and the request again; a second refusal is one line."""
    from hubpin.fetch import Fetcher
    from hubpin.oci.client import client
    from hubpin.oci.reference import parse
    from hubpin.settings import Settings

    oci_login.allow(token_registry)
    lock_two_models(project, hub)
    server, host = token_registry.token_server, token_registry.host
    assert server is not None
    scope = "repository:renew/models:pull,push"
    server.stale = 1
    before = len(server.requests)
    code, out, err = project.run("bundle", f"oci://{host}/renew/models:v1")
    assert code == 0, err
    assert PASSWORD not in out + err
    assert [r for r in server.requests[before:] if scope in r] == [scope, scope]

    # Reading a blob with a refused token (sync --from's reads): renewed the same way.
    rc = client(
        parse(f"oci://{host}/renew/models:v1"), Fetcher(Settings(ca_bundle=str(oci_login.ca)))
    )
    server.stale = 1
    rc._authenticate()  # the token the registry will refuse
    lock = project.lock.read_bytes()
    assert rc.read_blob(f"sha256:{_sha(lock)}") == lock

    server.stale = 1000  # every token refused: renewed once, then one line, no loop
    before = len(server.requests)
    code, out, err = project.run("bundle", f"oci://{host}/renew/models:v2")
    server.stale = 0
    assert code == 1
    assert f"the registry refused the credentials from {oci_login.auth}" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert [r for r in server.requests[before:] if scope in r] == [scope, scope]
