"""What a release would ship: the sdist is the project as a clone has it (its tests collect from
it), with the license, the type marker and one version. .ci/run also builds the wheel and runs
``twine check`` on both."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path

import pytest
import tomllib
from conftest import WORKTREE

import hubpin

pytest.importorskip("build", reason="the test extra installs build")


def _sdist(out: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), WORKTREE],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "license" not in result.stderr.lower(), result.stderr  # no deprecated license table
    (sdist,) = out.glob("hubpin-*.tar.gz")
    return sdist


def test_the_sdist_holds_the_project_and_its_tests_collect_from_it(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path / "dist")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (root,) = (p for p in tmp_path.iterdir() if p.name.startswith("hubpin-"))
    for path in (
        "tests/conftest.py",
        "tests/hubserver.py",
        "tests/kaggleserver.py",
        "tests/savedmodels.py",
        "tests/faultkit.py",
        "examples/demo/models.lock",
        "examples/demo/fahrenheit.tar.gz",
        "benchmarks/bench.py",
        "hubpin.toml.example",
        "hubpin/py.typed",
    ):
        assert (root / path).is_file(), path
    assert (
        "Apache License" in (root / "LICENSE").read_text()
        and "Version 2.0" in (root / "LICENSE").read_text()
    )

    info = Parser().parsestr((root / "PKG-INFO").read_text())
    assert info["Version"] == hubpin.__version__  # the one place the version is written
    assert info["License-Expression"] == "Apache-2.0"
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]

    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-2000:]
    summary = collect.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ tests collected in [\d.]+s", summary), summary  # no errors
