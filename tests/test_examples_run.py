"""The Kaggle, BERT and Colab TPU examples run as their files and READMEs say, from a copy of
their folder, with only the hosts replaced, through settings a user would use: the Kaggle API
endpoint (``KAGGLE_API_ENDPOINT``), tfhub.dev mirrored to loopback by ``[[mirrors]]`` in a
``HUBPIN_CONFIG`` file, and a GCS emulator through ``STORAGE_EMULATOR_HOST``. The servers serve
models the suite builds."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from conftest import WORKTREE, Model, Project
from gcs_emulator import GcsServer
from hfserver import HfServer
from hubserver import HubServer
from kaggleserver import KaggleServer
from savedmodels import BERT_HIDDEN, bert_pooled, build_bert_encoder, build_bert_preprocess, pack

EXAMPLES = Path(__file__).parent.parent / "examples"


def _commands(readme: Path, fence: str) -> list[str]:
    """The lines of ``readme``'s first ``fence`` code block (indented in a list or not),
    without blank ones, exactly as a user copies them."""
    text = readme.read_text(encoding="utf-8")
    block = re.search(rf"^( *)```{fence}\n(.*?)^ *```", text, re.M | re.S)
    assert block, f"{readme}: no ```{fence} block"
    indent = block.group(1)
    return [line.removeprefix(indent) for line in block.group(2).splitlines() if line.strip()]


def _env(**extra: str) -> dict[str, str]:
    """A user's shell: this tree's hubpin (as installed from a clone), the suite's isolated
    caches and home (tests/conftest.py), TensorFlow quiet, plus ``extra``."""
    return {**os.environ, "PYTHONPATH": WORKTREE, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    hubpin = Path(cwd) / ".bin"  # `hubpin` on PATH runs this tree's CLI, as after pip install
    if not hubpin.exists():
        hubpin.mkdir()
        script = hubpin / "hubpin"
        script.write_text(f'#!/bin/sh\nexec {sys.executable} -m hubpin "$@"\n')
        script.chmod(0o755)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env={**env, "PATH": f"{hubpin}:{os.path.dirname(sys.executable)}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- Kaggle ------------------------------------------------------------------------------

MOBILENET = "google/mobilenet-v2/tensorFlow2/100-224-classification"
BERT = "tensorflow/bert/tensorFlow2/en-uncased-l-12-h-768-a-12"


@pytest.fixture
def kaggle(models: dict[str, Model]) -> Iterator[KaggleServer]:
    """The Kaggle stand-in publishing the example's two models: mobilenet at version 2 (the one
    its README names), BERT at version 4 (the one its manifest pins) of four."""
    server = KaggleServer().start()
    server.add(MOBILENET, models["double"].archive)
    server.bump(MOBILENET, models["triple"].archive)
    server.add(BERT, models["double"].archive)
    for _ in range(3):
        server.bump(BERT, models["quint"].archive)
    yield server
    server.stop()


def test_kaggle_example_runs_as_its_readme_says(
    tmp_path: Path, kaggle: KaggleServer, models: dict[str, Model]
) -> None:
    """examples/kaggle's README commands, line by line, in a copy of the folder: lock pins
    mobilenet's current version, sync fills every reader's cache, check.py finds each model
    through hubpin, tensorflow_hub and kagglehub without a request, outdated exits 1 once Kaggle
    publishes a newer version, and lock --upgrade && sync moves to it."""
    project = tmp_path / "kaggle"
    shutil.copytree(EXAMPLES / "kaggle", project)
    assert not (project / "models.lock").exists()
    commands = _commands(project / "README.md", "sh")
    assert [c.split("#")[0].strip() for c in commands] == [
        "hubpin lock",
        "hubpin sync --locked",
        "python check.py",
        "hubpin outdated",
        "hubpin lock --upgrade mobilenet && hubpin sync",
    ]
    env = _env(KAGGLE_API_ENDPOINT=kaggle.url)
    cache = Path(os.environ["TMPDIR"]) / "tfhub_modules"  # the default, tensorflow_hub's too
    said = {}
    for command in commands:
        if command.startswith("hubpin outdated"):
            kaggle.bump(MOBILENET, models["quint"].archive)  # Kaggle publishes version 3
        before = len(kaggle.requests)
        result = _shell(command, project, env)
        said[command.split("#")[0].strip()] = result
        expected = 1 if command.startswith("hubpin outdated") else 0
        assert result.returncode == expected, (command, result.stdout, result.stderr)
        if command.startswith("python check.py"):
            assert kaggle.requests[before:] == [], "check.py must find everything offline"
            _check_found(result.stdout.splitlines(), cache, models)

    outdated = said["hubpin outdated"].stdout
    assert re.search(r"^mobilenet\s+2\s+3\s+behind", outdated, re.M), outdated
    pins = tomllib.loads((project / "models.lock").read_text())["models"]
    assert (pins["mobilenet"]["kaggle_version"], pins["bert"]["kaggle_version"]) == (3, 4)
    for handle in (f"{MOBILENET_URL}/3", MOBILENET_URL):
        assert _holds(cache / hashlib.sha1(handle.encode()).hexdigest(), models["quint"])


MOBILENET_URL = f"https://www.kaggle.com/models/{MOBILENET}"


def _holds(folder: Path, model: Model) -> bool:
    """``folder`` holds ``model`` (its graph and its weights)."""
    return all(
        (folder / name).read_bytes() == (model.folder / name).read_bytes()
        for name in ("saved_model.pb", "variables/variables.data-00000-of-00001")
    )


def _check_found(lines: list[str], cache: Path, models: dict[str, Model]) -> None:
    """check.py's report: per alias its version, then hubpin.resolve, hub.resolve of the
    versioned URL and kagglehub.model_download, each a folder holding that version."""
    kagglehub_cache = Path(os.environ["KAGGLEHUB_CACHE"])
    for alias, slug, version, model, handle in (
        ("bert", BERT, 4, "quint", f"kaggle:{BERT}/4"),
        ("mobilenet", MOBILENET, 2, "triple", MOBILENET_URL),
    ):
        at = lines.index(f"{alias}: version {version}")
        paths = [line.split()[-1] for line in lines[at + 1 : at + 4]]
        versioned = f"https://www.kaggle.com/models/{slug}/{version}"
        assert paths == [
            str(cache / hashlib.sha1(handle.encode()).hexdigest()),  # the handle as written
            str(cache / hashlib.sha1(versioned.encode()).hexdigest()),
            str(kagglehub_cache / "models" / slug / str(version)),
        ], lines
        assert all(_holds(Path(path), models[model]) for path in paths), paths


# -- BERT --------------------------------------------------------------------------------

PREPROCESS = "tensorflow/bert_en_uncased_preprocess/3"
ENCODER = "tensorflow/bert_en_uncased_L-12_H-768_A-12/4"


@pytest.fixture(scope="session")
def bert_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The tiny BERT-shaped preprocessor and encoder (tests/savedmodels.py), packed as tfhub.dev
    packs them, by their tfhub.dev model path."""
    root = tmp_path_factory.mktemp("bert")
    return {
        PREPROCESS: pack(build_bert_preprocess(root / "preprocess")),
        ENCODER: pack(build_bert_encoder(root / "encoder")),
    }


def _mirror(folder: Path, hub: HubServer) -> Path:
    """tfhub.dev served by the loopback hub, the way a company mirror is configured."""
    path = folder / "hubpin.toml"
    path.write_text(f'[[mirrors]]\nprefix = "https://tfhub.dev/"\nreplace = "{hub.url}/"\n')
    return path


def test_bert_example_runs_as_its_readme_says(
    tmp_path: Path, bert_archives: dict[str, bytes]
) -> None:
    """examples/bert's README commands in a copy of the folder, tfhub.dev mirrored to the
    loopback hub through HUBPIN_CONFIG: `hubpin sync` locks and fills the cache (the encoder's
    Kaggle URL too), then, with the hub stopped, classify.py prints the shape of pooled_output
    and the cosine similarity the models compute for its two sentences."""
    import ast

    import numpy as np

    project = tmp_path / "bert"
    shutil.copytree(EXAMPLES / "bert", project)
    assert not (project / "models.lock").exists()
    commands = _commands(project / "README.md", "sh")
    assert [c.split("#")[0].strip() for c in commands] == ["hubpin sync", "python classify.py"]
    hub = HubServer(models=dict(bert_archives)).start()
    env = _env(HUBPIN_CONFIG=str(_mirror(tmp_path, hub)))
    try:
        synced = _shell(commands[0], project, env)
        assert synced.returncode == 0, synced.stderr
    finally:
        hub.stop()
    cache = Path(os.environ["TMPDIR"]) / "tfhub_modules"
    pins = tomllib.loads((project / "models.lock").read_text())["models"]
    for alias in ("preprocess", "bert"):
        handles = [pins[alias]["handle"], *pins[alias].get("also", [])]
        for handle in handles:
            entry = cache / hashlib.sha1(handle.encode()).hexdigest()
            assert (entry / "saved_model.pb").is_file(), (alias, handle)
    assert len(pins["bert"]["also"]) == 1

    ran = _shell(commands[1], project, env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    script = (project / "classify.py").read_text()
    (literal,) = re.findall(r"tf\.constant\((\[.*?\])\)", script)
    pooled = np.array([bert_pooled(sentence) for sentence in ast.literal_eval(literal)])
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    shape, similarity = ran.stdout.splitlines()
    assert shape == f"pooled_output shape: ({len(pooled)}, {BERT_HIDDEN})"
    label, value = similarity.split(": ")
    assert label == "cosine similarity" and abs(float(value) - unit[0] @ unit[1]) < 2e-4, value


# -- Colab TPU ---------------------------------------------------------------------------


@pytest.fixture
def adc(tmp_path: Path) -> Path:
    """Application-default credentials: an authorized-user file as google-auth writes one
    (``Credentials.to_json()``) holding an access token that is still valid, so google-auth
    uses it without asking Google's token endpoint (which it would for a refresh: an
    authorized-user file's ``token_uri`` is ignored, so no stand-in can answer that)."""
    import datetime
    import json

    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    path = tmp_path / "application_default_credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "token": "ya29.loopback-access-token",
                "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "client_id": "loopback.apps.googleusercontent.com",
                "client_secret": "loopback-secret",
                "refresh_token": "1//loopback-refresh",
            }
        )
    )
    return path


@pytest.mark.parametrize("gcs", ["fake-gcs-server"], indirect=True)  # it enforces preconditions
def test_colab_tpu_example_runs_as_its_readme_says(
    tmp_path: Path,
    bert_archives: dict[str, bytes],
    gcs: GcsServer,
    adc: Path,
) -> None:
    """examples/colab-tpu as its README says, against a GCS emulator (STORAGE_EMULATOR_HOST)
    with application-default credentials (GOOGLE_APPLICATION_CREDENTIALS, as gcs_token =
    "google_default" asks) and tfhub.dev mirrored to the loopback hub: the bucket set in
    hubpin.toml, `hubpin lock` once, then the notebook's first cell in a fresh runtime (no local
    cache): `hubpin sync --locked` finds both models in the bucket, and hubpin.resolve names the
    bucket's entry. The wheel lines need a release or gcloud, the TPU cell a TPU and TensorFlow
    reading real GCS (TensorFlow's gs:// reader has no emulator setting); they are not run."""
    import hubpin

    readme = EXAMPLES / "colab-tpu" / "README.md"
    project = tmp_path / "content" / "project"
    shutil.copytree(EXAMPLES / "colab-tpu", project)
    assert not (project / "models.lock").exists()
    bucket = gcs.bucket()  # step 1: a bucket the notebook can write, set in hubpin.toml
    settings = project / "hubpin.toml"
    assert 'cache_dir = "gs://my-bucket/tfhub-cache"' in settings.read_text()
    settings.write_text(settings.read_text().replace("gs://my-bucket/", f"gs://{bucket}/"))
    hub = HubServer(models=dict(bert_archives)).start()
    config = tmp_path / "hubpin.toml"  # the project's settings plus the company's mirror
    config.write_text(settings.read_text() + _mirror(tmp_path / "content", hub).read_text())
    env = _env(HUBPIN_CONFIG=str(config), GOOGLE_APPLICATION_CREDENTIALS=str(adc))
    root = f"gs://{bucket}/tfhub-cache"
    try:
        assert [c.split("#")[0].strip() for c in _commands(readme, "sh")] == ["hubpin lock"]
        locked = _shell("hubpin lock", project, env)  # step 2
        assert locked.returncode == 0, locked.stderr
        pins = tomllib.loads((project / "models.lock").read_text())["models"]
        for alias in ("bert", "preprocess"):
            key = hashlib.sha1(pins[alias]["handle"].encode()).hexdigest()
            listed = gcs.listing(f"{root}/{key}")
            assert "saved_model.pb" in listed, (alias, sorted(listed))

        cell = _commands(readme, "python")  # the notebook's first cell, in a fresh runtime
        wheel = f"hubpin-{hubpin.__version__}-py3-none-any.whl"
        assert [line.split("#")[0].strip() for line in cell] == [
            f"!gcloud storage cp gs://my-bucket/wheels/{wheel} /content/",
            f'!pip install "/content/{wheel}[gcs]"',
            "from google.colab import auth; auth.authenticate_user()",
            "%cd /content/project",
            "!hubpin sync --locked",
            "import hubpin",
            'print(hubpin.resolve("bert"))',
        ]
    finally:
        hub.stop()
    fresh = tmp_path / "runtime"  # a new Colab runtime: nothing of hubpin's on its disk
    runtime = {**env, **{var: str(fresh / var) for var in ("HOME", "XDG_CACHE_HOME", "TMPDIR")}}
    (fresh / "TMPDIR").mkdir(parents=True)
    synced = _shell(cell[4].removeprefix("!"), project, runtime)  # with the hub gone
    assert synced.returncode == 0, synced.stderr
    said = synced.stdout + synced.stderr  # results on stdout, diagnostics on stderr (#20 item 6)
    assert f"synced 2 models into {root}: 0 fetched, 2 already present" in said, said
    code = "\n".join(cell[5:])
    resolved = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=runtime, capture_output=True, text=True
    )
    assert resolved.returncode == 0, resolved.stderr
    key = hashlib.sha1(pins["bert"]["handle"].encode()).hexdigest()
    assert resolved.stdout == f"{root}/{key}\n"
    assert pins["bert"]["io_device"] == "/job:localhost"
    for tmp in (Path(os.environ["TMPDIR"]), fresh / "TMPDIR"):
        assert not (tmp / "tfhub_modules").exists()  # the cache is the bucket only


# -- KerasHub ----------------------------------------------------------------------------

KERAS_SLUG = "keras/bert/keras/bert_tiny_en_uncased"  # keras_hub 0.29 maps the name to /3


@pytest.mark.tf
def test_kerashub_example_runs_as_its_readme_says(
    tmp_path: Path, bert_presets: dict[int, Path]
) -> None:
    """examples/kerashub's README commands in a copy of the folder, against the Kaggle stand-in
    (KAGGLE_API_ENDPOINT) and the Hugging Face stand-in (HF_ENDPOINT), both serving tiny BERT
    presets keras_hub saved: lock pins version 3 and main's commit, sync --locked fills kagglehub's
    and Hugging Face's caches, and load.py, with both stand-ins stopped, loads all four presets
    (by name, hf:// handle and hubpin.resolve), the pinned folders among them."""
    project = tmp_path / "kerashub"
    shutil.copytree(EXAMPLES / "kerashub", project)
    assert not (project / "models.lock").exists()
    commands = _commands(project / "README.md", "sh")
    assert [c.split("#")[0].strip() for c in commands] == [
        "hubpin lock",
        "hubpin sync --locked",
        "python load.py",
    ]
    kaggle = KaggleServer().start()
    kaggle.add(KERAS_SLUG, pack(bert_presets[1]))
    kaggle.bump(KERAS_SLUG, pack(bert_presets[1]))
    kaggle.bump(KERAS_SLUG, pack(bert_presets[3]))
    kaggle.bump(KERAS_SLUG, pack(bert_presets[1]))  # Kaggle's current is 4; keras_hub names 3
    files = {
        str(f.relative_to(bert_presets[3])): f.read_bytes()
        for f in sorted(bert_presets[3].rglob("*"))
        if f.is_file()
    }
    hf = HfServer().start()
    commit = hf.add("keras/bert_tiny_en_uncased", {**files, "README.md": b"# tiny\n"})
    env = _env(KAGGLE_API_ENDPOINT=kaggle.url, HF_ENDPOINT=hf.url, HF_HUB_DISABLE_TELEMETRY="1")
    try:
        for command in commands[:2]:
            result = _shell(command, project, env)
            assert result.returncode == 0, (command, result.stderr)
    finally:
        kaggle.stop()
        hf.stop()
    pins = tomllib.loads((project / "models.lock").read_text())["models"]
    assert (
        pins["bert"]["kaggle_version"] == 3 and pins["bert_hf"]["huggingface"]["commit"] == commit
    )
    loaded = _shell(commands[2], project, env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    entry = hashlib.sha1(pins["bert"]["handle"].encode()).hexdigest()  # hard links of kagglehub's
    kaggle_folder = Path(os.environ["TMPDIR"]) / "tfhub_modules" / entry
    snapshot = (
        Path(os.environ["HF_HOME"]) / "hub" / "models--keras--bert_tiny_en_uncased" / "snapshots"
    )
    lines = loaded.stdout.splitlines()
    assert [line.rsplit(": ", 1)[0] for line in lines] == [
        "bert_tiny_en_uncased",
        "hf://keras/bert_tiny_en_uncased",
        str(kaggle_folder),
        str(snapshot / commit),
    ], lines
    assert len({line.rsplit(": ", 1)[1] for line in lines}) == 1, lines  # one architecture
    kagglehub = Path(os.environ["KAGGLEHUB_CACHE"]) / "models" / KERAS_SLUG / "3"
    for name in ("config.json", "model.weights.h5"):
        assert (kagglehub / name).read_bytes() == files[name] == (kaggle_folder / name).read_bytes()


def test_the_readme_first_commands_run_as_written(
    project: Project, models: dict[str, Model]
) -> None:
    """README's first block (`hubpin add bert https://tfhub.dev/…`, `hubpin lock`,
    `hubpin sync --locked`) as a new user types it, tfhub.dev served by the loopback hub
    through a `[[mirrors]]` entry: each command succeeds, the lock pins the handle, the sync
    finds what lock unpacked, and `hubpin.resolve("bert")` (the block's Python) is its entry."""
    readme = Path(WORKTREE) / "README.md"
    lines = _commands(readme, "console")
    typed = [line.removeprefix("$ ").split("#")[0].split() for line in lines if line[:2] == "$ "]
    assert [words[:2] for words in typed] == [
        ["hubpin", "add"],
        ["hubpin", "lock"],
        ["hubpin", "sync"],
    ]
    handle = typed[0][3]
    assert handle.startswith("https://tfhub.dev/"), handle
    hub = HubServer(models={handle.removeprefix("https://tfhub.dev/"): models["double"].archive})
    hub.start()
    try:
        project.write(
            f'[[mirrors]]\nprefix = "https://tfhub.dev/"\nreplace = "{hub.url}/"\n', "hubpin.toml"
        )
        for words in typed:
            code, _, err = project.run(*words[1:])
            assert code == 0, (words, err)
        assert f'handle = "{handle}"' in project.lock.read_text()
        assert hub.downloads(handle.removeprefix("https://tfhub.dev/")) == 1
        from hubpin.runtime import Lock

        assert Lock(project.lock).resolve(typed[0][2]) == str(project.entry(handle))
    finally:
        hub.stop()
