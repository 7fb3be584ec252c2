"""The examples users copy: the demo, the Dockerfile, the CI workflow and the example manifests."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import HubServer

DEMO = Path(__file__).parent.parent / "examples" / "demo"


def test_demo_syncs_locked_and_predicts(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo)
    env = {
        "PATH": "/usr/bin:/bin",
        "TFHUB_CACHE_DIR": str(tmp_path / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    sync = subprocess.run(
        [sys.executable, "-m", "hubpin", "sync", "--locked"],
        cwd=demo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert sync.returncode == 0, sync.stderr
    assert "fahrenheit           fetched" in sync.stderr
    assert (demo / "models.lock").read_bytes() == (DEMO / "models.lock").read_bytes()
    predict = subprocess.run(
        [sys.executable, "predict.py"],
        cwd=demo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert predict.returncode == 0, predict.stderr
    assert "100.0 °C =  212.0 °F" in predict.stdout
    assert "-40.0 °C =  -40.0 °F" in predict.stdout


EXAMPLES = DEMO.parent


def _hubpin_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment a build step sees: this Python's scripts first on PATH."""
    scripts = str(Path(sys.executable).parent)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TFHUB_", "HUBPIN_"))}
    return {**keep, "PATH": f"{scripts}:{os.environ.get('PATH', '')}", **extra}


def test_dockerfile_build_steps_run_against_a_loopback_hub(tmp_path: Path, hub: HubServer) -> None:
    """The Dockerfile's ENV, WORKDIR, COPY and hubpin RUN steps, run as a script in a fake image root."""
    image = tmp_path / "image"
    env: dict[str, str] = {}
    workdir = image
    steps = []
    for line in (EXAMPLES / "docker" / "Dockerfile").read_text().splitlines():
        instruction, _, rest = line.partition(" ")
        if instruction == "ENV":
            key, _, value = rest.partition("=")
            env[key] = str(image / value.lstrip("/"))
        elif instruction == "WORKDIR":
            workdir = image / rest.lstrip("/")
        elif instruction == "RUN" and "hubpin" in rest and "pip install" not in rest:
            steps.append(rest)
    assert env == {"TFHUB_CACHE_DIR": str(image / "opt/tfhub_modules")}
    assert steps == ["hubpin sync --locked && hubpin verify"]

    workdir.mkdir(parents=True)
    handle = hub.handle("google/double/1")
    (workdir / "models.toml").write_text(f'[models.encoder]\nhandle = "{handle}"\n')
    lock = subprocess.run(
        [sys.executable, "-m", "hubpin", "lock"],
        cwd=workdir,
        env=_hubpin_env(env),
        capture_output=True,
        text=True,
    )
    assert lock.returncode == 0, lock.stderr

    for step in steps:
        build = subprocess.run(
            ["bash", "-c", step], cwd=workdir, env=_hubpin_env(env), capture_output=True, text=True
        )
        assert build.returncode == 0, build.stderr
        assert "encoder              ok" in build.stderr
    assert (
        image / "opt/tfhub_modules" / hashlib.sha1(handle.encode()).hexdigest() / "saved_model.pb"
    ).is_file()

    (workdir / "models.toml").write_text(
        f'[models.encoder]\nhandle = "{hub.handle("google/triple/1")}"\n'
    )
    stale = subprocess.run(
        ["bash", "-c", steps[0]], cwd=workdir, env=_hubpin_env(env), capture_output=True, text=True
    )
    assert stale.returncode == 1, "a stale lock must fail the image build"
    assert "--locked" in stale.stderr and "encoder: handle is" in stale.stderr


def test_github_workflow_commands_are_valid_and_run(tmp_path: Path, hub: HubServer) -> None:
    import yaml

    from hubpin.cli import build_parser

    workflow = yaml.safe_load((EXAMPLES / "github-actions" / "models.yml").read_text())
    job = workflow["jobs"]["models"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    commands = [run for run in runs if run.startswith("hubpin")]
    assert commands == ["hubpin lock --check", "hubpin sync --locked", "hubpin verify"]
    cache = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/cache"))
    assert "hashFiles('models.lock')" in cache["with"]["key"]
    assert job["env"]["TFHUB_CACHE_DIR"].endswith(cache["with"]["path"])
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])  # exits 2 on an unknown flag

    project = tmp_path / "repo"
    project.mkdir()
    (project / "models.toml").write_text(f'[models.m]\nhandle = "{hub.handle("google/quint/1")}"\n')
    env = _hubpin_env({"TFHUB_CACHE_DIR": str(project / cache["with"]["path"])})
    assert (
        subprocess.run([sys.executable, "-m", "hubpin", "lock"], cwd=project, env=env).returncode
        == 0
    )
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, (command, result.stderr)


@pytest.mark.parametrize("example", ["bert", "colab-tpu", "docker", "kaggle"])
def test_example_manifests_and_settings_are_valid(example: str) -> None:
    from hubpin.manifest import load_manifest
    from hubpin.settings import load_settings

    manifest = load_manifest(EXAMPLES / example / "models.toml")
    assert manifest.models, example
    settings = load_settings(EXAMPLES / example)
    if example == "colab-tpu":
        assert settings.cache_root == "gs://my-bucket/tfhub-cache"
        assert {m.io_device for m in manifest.models.values()} == {"/job:localhost"}


def test_settings_example_documents_every_setting_and_its_values_are_valid(tmp_path: Path) -> None:
    """hubpin.toml.example is where users look up a setting: each one is there, and the
    file with every example line uncommented is a valid hubpin.toml."""
    import re

    from hubpin.settings import Settings, load_settings

    text = (EXAMPLES.parent / "hubpin.toml.example").read_text(encoding="utf-8")
    shown = set(re.findall(r"^# ([a-z0-9_]+) = ", text, re.M)) | set(
        re.findall(r"^# \[\[([a-z_]+)\]\]", text, re.M)
    )
    assert shown - {"prefix", "replace"} == set(Settings.model_fields)  # those two: [[mirrors]]
    live = re.sub(r"^# (?=[a-z0-9_]+ = |\[\[)", "", text, flags=re.M)
    live = "\n".join(
        line for line in live.splitlines() if not line.startswith("#") or line.startswith("#!")
    )
    (tmp_path / "hubpin.toml").write_text(live, encoding="utf-8")
    settings = load_settings(tmp_path)
    assert settings.mirrors and settings.kaggle_endpoint and settings.max_compression_ratio
