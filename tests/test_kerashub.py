"""KerasHub presets from Kaggle: ``keras-hub:<preset>`` pinned to the version keras_hub maps it
to, synced into kagglehub's cache with a completion marker per file, and loaded by unmodified
``from_preset`` with the stand-in stopped.

The presets are real: a tiny BertBackbone and BertTokenizer saved by keras_hub's own
``save_to_preset``, served by the Kaggle stand-in as Kaggle serves Keras models (the
archive whole, or one file at a time with ``path``), and the stand-in is first checked
against the real kagglehub and keras_hub.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from conftest import WORKTREE, Project, hubpin_imports
from kaggleserver import KaggleServer, start_isolated
from kerasmodels import outputs_in_process
from savedmodels import pack

PRESET = "bert_tiny_en_uncased"  # keras_hub maps it to kaggle://keras/bert/keras/<it>/3
SLUG = f"keras/bert/keras/{PRESET}"


def _serve(server: KaggleServer, presets: dict[int, Path]) -> None:
    server.add(SLUG, pack(presets[1]))
    server.bump(SLUG, pack(presets[1]))
    server.bump(SLUG, pack(presets[3]))  # version 3, the one keras_hub names


@pytest.fixture
def kaggle(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KaggleServer]:
    server = start_isolated(tmp_path, monkeypatch)
    yield server
    server.stop()


def test_preset_name_resolves_to_keras_hubs_versioned_handle_without_importing_tensorflow(
    project: Project, kaggle: KaggleServer, tmp_path: Path
) -> None:
    """The lock pins version 3 (keras_hub's mapping), though Kaggle's current version is 4."""
    if importlib.util.find_spec("keras_hub") is None:  # found, not imported: that costs 20 s
        pytest.skip("needs keras_hub installed (the test extra)")
    for version in (1, 2, 3, 4):
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"version": {version}}}')
        if version == 1:
            kaggle.add(SLUG, pack(folder))
        else:
            kaggle.bump(SLUG, pack(folder))
    project.models(bert=f"keras-hub:{PRESET}", typo="keras-hub:bert_tiny_en_uncasd")
    env = {"HUBPIN_KAGGLE_ENDPOINT": kaggle.url}
    code, err, _ = hubpin_imports(project, "lock", env=env)
    assert code == 2, err
    assert "keras-hub:bert_tiny_en_uncasd: not a built-in preset of keras_hub 0." in err
    assert "did you mean: bert_tiny_en_uncased" in err and "Traceback" not in err

    project.models(bert=f"keras-hub:{PRESET}")
    code, err, imported = hubpin_imports(project, "sync", env=env)
    assert code == 0, err
    assert not imported & {"tensorflow", "keras", "keras_hub", "tf_keras"}
    pin = tomllib.loads(project.lock.read_text())["models"]["bert"]
    assert (pin["handle"], pin["kaggle_version"]) == (f"keras-hub:{PRESET}", 3)
    assert not [r for r in kaggle.log("api") if r.path.endswith("GetModelInstance")]
    entry = Path(os.environ["KAGGLEHUB_CACHE"]) / "models" / SLUG / "3"
    assert (entry / "config.json").read_text() == '{"version": 3}'
    assert (entry.parent / ".complete" / "3" / "config.json.complete").is_file()
    code, out, _ = project.run("lock", "--check")
    assert code == 0, out

    # a keras_hub that maps the preset to another version (as an upgrade would)
    moved = tmp_path / "upgraded" / "keras_hub"
    (moved / "src" / "models" / "bert").mkdir(parents=True)
    (moved / "__init__.py").write_text("")
    (moved / "src" / "models" / "bert" / "bert_presets.py").write_text(
        f"backbone_presets = {{{PRESET!r}: {{'kaggle_handle': 'kaggle://{SLUG}/4'}}}}\n"
    )
    env |= {"PYTHONPATH": os.pathsep.join([str(moved.parent), WORKTREE])}
    code, err, _ = hubpin_imports(project, "lock", "--check", env=env)
    assert code == 1
    assert f"maps keras-hub:{PRESET} to kaggle:{SLUG}/4, the lock pins" in err, err
    assert hubpin_imports(project, "lock", env=env)[0] == 0  # re-pins it: version 4
    assert tomllib.loads(project.lock.read_text())["models"]["bert"]["kaggle_version"] == 4


@pytest.mark.tf
def test_synced_preset_loads_offline_in_unmodified_keras_hub(
    project: Project,
    kaggle: KaggleServer,
    bert_presets: dict[int, Path],
    tmp_path: Path,
) -> None:
    """After sync, with the stand-in stopped, from_preset by name and by kaggle:// handle
    load version 3 file by file from kagglehub's cache, and compute what version 3 computes."""
    _serve(kaggle, bert_presets)
    project.models(bert=f"keras-hub:{PRESET}")
    code, _, err = project.run("sync")
    assert code == 0, err
    pin = tomllib.loads(project.lock.read_text())["models"]["bert"]
    assert pin["kaggle_version"] == 3
    assert pin["versioned_handle"] == f"https://www.kaggle.com/models/{SLUG}/3"
    kaggle.stop()

    want = outputs_in_process(str(bert_presets[3]))
    assert want != outputs_in_process(str(bert_presets[1]))  # the two versions differ
    got = outputs_in_process(PRESET, f"kaggle://{SLUG}/3")
    assert got == want * 2
    version_folder = tmp_path / "kagglehub" / "models" / SLUG
    assert (version_folder / ".complete" / "3" / "config.json.complete").is_file()
    assert (
        version_folder / ".complete" / "3" / "assets/tokenizer/vocabulary.txt.complete"
    ).is_file()

    # sync again: kept, nothing downloaded; lock --check stays green
    assert project.run("sync")[0] == 0
    assert project.run("lock", "--check")[0] == 0


@pytest.fixture
def via_test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KaggleServer]:
    """The stand-in on an ephemeral port, reached by the real kagglehub as its TEST environment.

    kagglesdk's KAGGLE_API_ENVIRONMENT=TEST means http://localhost:7777, a fixed port
    another process may hold; requests honours HTTP_PROXY, so the stand-in is made that
    proxy (it routes an absolute-URI request line by its host and path).
    """
    for var in list(os.environ):
        if var.startswith("KAGGLE") or var.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            monkeypatch.delenv(var)
    server = KaggleServer().start()
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    yield server
    server.stop()


@pytest.mark.tf
def test_stand_in_serves_a_keras_preset_as_kaggle_does_to_the_real_clients(
    via_test_environment: KaggleServer, bert_presets: dict[int, Path], tmp_path: Path
) -> None:
    """Real kagglehub fetches the preset file by file (``path``) and whole; real keras_hub
    loads it online from the stand-in, exactly as it loads the folder."""
    import kagglehub

    kaggle = via_test_environment
    _serve(kaggle, bert_presets)
    entry = tmp_path / "kagglehub" / "models" / SLUG / "3"
    config = Path(kagglehub.model_download(f"{SLUG}/3", "config.json"))
    assert config == entry / "config.json"
    assert config.read_bytes() == (bert_presets[3] / "config.json").read_bytes()
    files = [r.body for r in kaggle.log("api") if r.path.endswith("DownloadModelInstanceVersion")]
    assert files and b'"path": "config.json"' in files[-1]

    assert outputs_in_process(f"kaggle://{SLUG}/3") == outputs_in_process(str(bert_presets[3]))
    whole = Path(kagglehub.model_download(f"{SLUG}/1"))
    assert (whole / "model.weights.h5").read_bytes() == (
        bert_presets[1] / "model.weights.h5"
    ).read_bytes()
