"""``hubpin env`` works anywhere: in a project, and outside one from flags, environment,
defaults and the nearest hubpin.toml. Its output is what ``eval "$(hubpin env)"`` runs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tomli_w
from conftest import Project
from faultkit import hubpin_env


def test_outside_a_project_it_prints_the_default_cache(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TFHUB_CACHE_DIR")
    assert not any(project.root.iterdir())  # an empty folder, no models.toml above it
    code, out, err = project.run("env")
    assert (code, err) == (0, "")
    default = Path(tempfile.gettempdir()) / "tfhub_modules"
    assert out == f"export TFHUB_CACHE_DIR={default}\n"  # no lock, so no HUBPIN_LOCK


def test_outside_a_project_flags_beat_environment_beats_hubpin_toml(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = project.run("env")
    assert code == 0 and out == f"export TFHUB_CACHE_DIR={project.cache}\n"
    code, out, _ = project.run(
        "--cache-dir", "/opt/models", "env", "--tfhub_model_load_format", "auto"
    )
    assert code == 0
    assert out == "export TFHUB_CACHE_DIR=/opt/models\nexport TFHUB_MODEL_LOAD_FORMAT=AUTO\n"
    monkeypatch.delenv("TFHUB_CACHE_DIR")
    project.write('cache_dir = "/srv/from toml"\nformat = "UNCOMPRESSED"\n', "hubpin.toml")
    nested = project.root / "src" / "app"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)  # the nearest hubpin.toml above counts, as for a project
    code, out, _ = project.run("env")
    assert code == 0
    assert (
        out
        == "export TFHUB_CACHE_DIR='/srv/from toml'\nexport TFHUB_MODEL_LOAD_FORMAT=UNCOMPRESSED\n"
    )
    other = project.root.parent / "elsewhere.toml"
    other.write_text('cache_dir = "/srv/elsewhere"\n')
    monkeypatch.setenv("HUBPIN_CONFIG", str(other))
    code, out, _ = project.run("env")
    assert code == 0 and out == "export TFHUB_CACHE_DIR=/srv/elsewhere\n"


def test_outside_a_project_a_broken_hubpin_toml_is_one_line(project: Project) -> None:
    project.write("cache_dir = 3\n", "hubpin.toml")
    code, _, err = project.run("env")
    assert code == 2
    assert err.count("\n") == 1 and "hubpin.toml" in err and "cache_dir" in err, err
    assert "models.toml" not in err


def test_in_a_project_it_reads_hubpin_toml_and_names_the_lock_once_there_is_one(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TFHUB_CACHE_DIR")
    project.write(f'cache_dir = "{project.cache}"\n', "hubpin.toml")
    (project.root / "mirror").mkdir()
    project.models(local="mirror")  # a local folder: locking needs no archive
    (project.root / "mirror" / "saved_model.pb").write_bytes(b"\x08\x01")
    code, out, _ = project.run("env")
    assert code == 0 and out == f"export TFHUB_CACHE_DIR={project.cache}\n"
    assert project.run("lock")[0] == 0
    (project.root / "sub").mkdir()
    monkeypatch.chdir(project.root / "sub")
    code, out, _ = project.run("env")
    assert code == 0
    assert out == f"export TFHUB_CACHE_DIR={project.cache}\nexport HUBPIN_LOCK={project.lock}\n"


def test_its_output_is_what_a_shell_evaluates(tmp_path: Path) -> None:
    cache = tmp_path / "a cache with 'quotes' and $paces"
    (tmp_path / "hubpin.toml").write_text(tomli_w.dumps({"cache_dir": str(cache)}))
    env = hubpin_env(tmp_path)
    del env["TFHUB_CACHE_DIR"]
    result = subprocess.run(
        [
            "sh",
            "-c",
            f'out=$("{sys.executable}" -m hubpin env) && eval "$out" && printf %s "$TFHUB_CACHE_DIR"',
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == str(cache)
