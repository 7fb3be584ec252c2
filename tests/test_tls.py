"""TLS as company networks need it: a CA bundle setting, tensorflow_hub's opt-out, no downgrades."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Model, Project
from hubserver import HubServer
from tlscerts import make_certificates

from hubpin.handles import Format, source_for


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_hub(
    models: dict[str, Model], certificates: tuple[Path, Path, Path]
) -> Iterator[HubServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates[1], certificates[2])
    server = HubServer(models={"google/double/1": models["double"].archive}, tls=context).start()
    yield server
    server.stop()


def test_untrusted_certificate_fails_in_one_line(project: Project, https_hub: HubServer) -> None:
    project.models(double=https_hub.handle("google/double/1"))
    code, _, err = project.run("lock")
    assert code == 1
    assert "double (https://127.0.0.1:" in err and "CERTIFICATE_VERIFY_FAILED" in err
    assert "set ca_bundle in hubpin.toml" in err and "retrying" not in err
    assert "Traceback" not in err and not project.lock.exists()


def test_ca_bundle_setting_trusts_a_company_ca(
    project: Project, https_hub: HubServer, certificates: tuple[Path, Path, Path]
) -> None:
    project.write(f'ca_bundle = "{certificates[0]}"\n', "hubpin.toml")
    project.models(double=https_hub.handle("google/double/1"))
    code, _, err = project.run("sync")
    assert code == 0, err
    assert f'url = "{https_hub.url}/archives/google/double/1.tar.gz"' in project.lock.read_text()
    project.write('ca_bundle = "/nowhere/ca.pem"\n', "hubpin.toml")
    assert project.run("lock", "double")[0] == 2


def test_tfhub_disable_cert_validation_is_honoured_with_a_warning(
    project: Project, https_hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFHUB_DISABLE_CERT_VALIDATION", "true")
    project.models(double=https_hub.handle("google/double/1"))
    code, _, err = project.run("sync")
    assert code == 0, err
    assert "TLS certificates are not checked" in err


def test_https_to_http_redirect_is_refused(
    project: Project, https_hub: HubServer, hub: HubServer, certificates: tuple[Path, Path, Path]
) -> None:
    project.write(f'ca_bundle = "{certificates[0]}"\n', "hubpin.toml")
    https_hub.redirects["google/sneaky/1"] = f"{hub.url}/archives/google/double/1.tar.gz"
    project.models(sneaky=https_hub.handle("google/sneaky/1"))
    code, _, err = project.run("lock")
    assert code == 1 and "refused redirect from https to plain http" in err
    assert hub.archive_requests("google/double/1") == 0


def test_china_mirror_handles_map_like_tensorflow_hub() -> None:
    source = source_for(
        "https://hub.tensorflow.google.cn/google/bert/4", Format.COMPRESSED, Path(".")
    )
    assert source.location == "https://gcs.tensorflow.google.cn/tfhub-modules/google/bert/4.tar.gz"
    source = source_for("https://tfhub.dev/google/bert/4?x=1", Format.COMPRESSED, Path("."))
    assert source.location == "https://tfhub.dev/google/bert/4?x=1&tf-hub-format=compressed"
