"""The examples users copy: the demo, the Dockerfile, the CI workflow and the example manifests."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORKTREE, Model
from hubserver import HubServer

DEMO = Path(__file__).parent.parent / "examples" / "demo"


def test_demo_syncs_locked_and_predicts(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": WORKTREE,  # this tree's hubpin, not whichever one is installed
        "HOME": str(tmp_path / "home"),  # the no-op stamp goes under it, not the user's ~/.cache
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
    assert "fahrenheit           fetched" in sync.stdout
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


CHECKOUT_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "build", "dist", "*.egg-info")


@pytest.fixture(scope="session")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv's bin folder standing in for an image's or runner's Python: the steps' own
    ``pip install`` runs there for real, while TensorFlow and the other dependencies come from
    this environment (``--system-site-packages``) instead of hundreds of MB of downloads."""
    venv = tmp_path_factory.mktemp("image-python") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    return venv / "bin"


def _step_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """What a build step sees: the image's Python first on PATH, and nothing of this checkout."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TFHUB_", "HUBPIN_"))}
    keep.pop("PYTHONPATH", None)
    return {**keep, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", **extra}


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _mirror_settings(folder: Path, hub: HubServer) -> Path:
    """tfhub.dev served by the loopback hub, the way a company mirror is configured."""
    path = folder / "hubpin.toml"
    path.write_text(f'[[mirrors]]\nprefix = "https://tfhub.dev/"\nreplace = "{hub.url}/"\n')
    return path


def test_dockerfile_builds_and_serves_as_shipped(
    tmp_path: Path, models: dict[str, Model], image_python: Path
) -> None:
    """Every instruction of examples/docker/Dockerfile, in order, from a clone's root as its
    first lines say: COPY into a scratch image root, RUN as scripts (its pip install included),
    then CMD. Only the host differs: tfhub.dev is mirrored to loopback through HUBPIN_CONFIG."""
    import json

    handle = "https://tfhub.dev/google/universal-sentence-encoder/4"
    hub = HubServer(models={"google/universal-sentence-encoder/4": models["double"].archive})
    hub.start()
    context, image = tmp_path / "clone", tmp_path / "image"
    shutil.copytree(EXAMPLES.parent, context, ignore=CHECKOUT_IGNORE)
    image.mkdir()
    lines = (EXAMPLES / "docker" / "Dockerfile").read_text().splitlines()
    assert "docker build -f examples/docker/Dockerfile" in "\n".join(lines[:8])
    assert "ships no models.lock, so the build pins first" in " ".join(lines[:8])

    def rooted(text: str) -> str:  # an absolute path in the image, under the scratch root
        return re.sub(r"(?<![\w.:/])/(src|opt|app)\b", f"{image}/\\1", text)

    env = _step_env(image_python, HUBPIN_CONFIG=str(_mirror_settings(tmp_path, hub)))
    workdir, ran, cmd = image, [], None
    try:
        for line in lines:
            instruction, _, rest = line.partition(" ")
            if instruction == "COPY":
                *sources, dest = rest.split()
                target = Path(rooted(dest)) if dest.startswith("/") else workdir / dest
                for source in sources:
                    origin = context / source
                    into = target / origin.name if dest.endswith("/") else target
                    into.parent.mkdir(parents=True, exist_ok=True)
                    copy = shutil.copytree if origin.is_dir() else shutil.copy
                    copy(origin, into)
            elif instruction == "RUN":
                result = _run(rooted(rest), workdir, env)
                assert result.returncode == 0, (rest, result.stdout[-2000:], result.stderr[-3000:])
                ran.append(rest)
            elif instruction == "ENV":
                key, _, value = rest.partition("=")
                env[key] = rooted(value)
            elif instruction == "WORKDIR":
                workdir = Path(rooted(rest))
                workdir.mkdir(parents=True, exist_ok=True)
            elif instruction == "CMD":
                cmd = json.loads(rest)
    finally:
        hub.stop()
    assert ran == [
        'pip install --no-cache-dir "/src/hubpin[tf]"',
        "hubpin lock && hubpin sync --locked && hubpin verify",
    ]
    assert (workdir / "models.lock").is_file()
    entry = image / "opt/tfhub_modules" / hashlib.sha1(handle.encode()).hexdigest()
    assert (entry / "saved_model.pb").is_file()

    served = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    assert served.stdout == f"loaded {entry}\n"  # with the hub stopped: nothing downloaded


def _expression(text: str, context: dict[str, str], workspace: Path) -> str:
    """The few GitHub expressions action.yml and the workflow use, evaluated as Actions would;
    an unknown one fails the test, so a new one is evaluated here before it ships."""

    def value(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if expr in context:
            return context[expr]
        alternative = re.fullmatch(
            r"(inputs\.[\w-]+) \|\| format\('\{0\}(.*)', github\.workspace\)", expr
        )
        if alternative:
            return context[alternative.group(1)] or f"{workspace}{alternative.group(2)}"
        files = re.fullmatch(r"hashFiles\(format\('\{0\}/(.*)', (inputs\.[\w-]+)\)\)", expr)
        if files:
            path = workspace / context[files.group(2)] / files.group(1)
            return hashlib.sha256(path.read_bytes()).hexdigest()
        raise AssertionError(f"an expression this test does not evaluate: {expr}")

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def test_github_workflow_and_action_run_as_shipped(
    tmp_path: Path, hub: HubServer, image_python: Path
) -> None:
    """examples/github-actions/models.yml's steps, with its ``uses: ./<folder>`` expanded into
    the steps of action.yml in the copy of hubpin its first lines say to commit there (made by
    their own command, from a git repository holding this tree): each `run` executed by bash in
    a scratch workspace holding a project (the demo's manifest and lock), GITHUB_ENV honoured;
    the cache step checked by its key. Nothing names a repository that does not exist."""
    import yaml

    text = (EXAMPLES / "github-actions" / "models.yml").read_text()
    workflow = yaml.safe_load(text)
    steps = workflow["jobs"]["models"]["steps"]
    uses = [step.get("uses") for step in steps]
    assert uses[:3] == ["actions/checkout@v4", "actions/setup-python@v5", uses[2]]
    assert all("repository" not in step.get("with", {}) for step in steps), "only the project"
    vendored = uses[2].removeprefix("./")
    assert uses[2].startswith("./") and vendored.strip("/") == vendored

    workspace = tmp_path / "workspace"
    shutil.copytree(DEMO, workspace)  # the repository the workflow checks out: a locked project
    hubpin_clone = tmp_path / "hubpin"  # a clone of hubpin holding this tree as its HEAD
    shutil.copytree(EXAMPLES.parent, hubpin_clone, ignore=CHECKOUT_IGNORE)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C"]
    for repo in (hubpin_clone, workspace):
        subprocess.run([*git, str(repo), "init", "-q"], check=True)
    subprocess.run([*git, str(hubpin_clone), "add", "-A"], check=True)
    subprocess.run([*git, str(hubpin_clone), "commit", "-q", "-m", "hubpin"], check=True)
    (vendor,) = [line[1:].strip() for line in text.splitlines() if "path/to/hubpin" in line]
    made = _run(vendor.replace("path/to/hubpin", str(hubpin_clone)), workspace, dict(os.environ))
    assert made.returncode == 0, made.stderr
    action = yaml.safe_load((workspace / vendored / "action.yml").read_text())
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    env = _step_env(image_python, GITHUB_ENV=str(github_env))
    inputs = {f"inputs.{k}": str(v.get("default", "")) for k, v in action["inputs"].items()}
    context = {
        **inputs,
        "github.action_path": str(workspace / vendored),
        "github.workspace": str(workspace),
        "runner.os": "Linux",
    }
    expanded = [*action["runs"]["steps"], *steps[3:]]
    assert action["runs"]["using"] == "composite"
    ran, cached = [], None
    for step in expanded:
        if "uses" in step:
            assert step["uses"] == "actions/cache@v4"
            cached = {k: _expression(v, context, workspace) for k, v in step["with"].items()}
            continue
        cwd = workspace / _expression(step.get("working-directory", "."), context, workspace)
        result = _run(_expression(step["run"], context, workspace), cwd, env)
        assert result.returncode == 0, (step, result.stdout[-2000:], result.stderr[-3000:])
        ran.append((step["run"].strip().splitlines()[0], result.stdout + result.stderr))
        for line in github_env.read_text().splitlines():
            key, _, val = line.partition("=")
            env[key] = val

    lock_digest = hashlib.sha256((workspace / "models.lock").read_bytes()).hexdigest()
    assert cached == {"path": f"{workspace}/.tfhub_modules", "key": f"hubpin-Linux-{lock_digest}"}
    assert env["TFHUB_CACHE_DIR"] == cached["path"]  # what later steps and the cache share
    commands = [command for command, _ in ran]
    assert commands[0].startswith("python -m pip install")
    assert commands[2:] == [
        "hubpin lock --check",
        "hubpin sync --locked",
        "hubpin verify",
        "hubpin status",
    ]
    assert "fahrenheit" in ran[-1][1]  # `hubpin status` in a later step finds the synced model
    key = (workspace / "models.lock").read_text().split('cache_key = "')[1].split('"')[0]
    assert (workspace / ".tfhub_modules" / key / "saved_model.pb").is_file()


@pytest.mark.parametrize("example", ["bert", "colab-tpu", "docker", "kaggle", "kerashub"])
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
