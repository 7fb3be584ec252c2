"""The hooks a lockfile plugs into: the pre-commit hook (run by the real pre-commit, which
installs hubpin from this checkout as it would from a tag) and the composite GitHub Action."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import WORKTREE

DEMO = Path(WORKTREE) / "examples" / "demo"


def _git(cwd: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *argv],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("pre-commit") is None, reason="the test extra installs pre-commit")
@pytest.mark.skipif(not (Path(WORKTREE) / ".git").exists(), reason="needs the git checkout")
def test_pre_commit_hook_fails_a_commit_whose_lock_is_stale(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO, repo)
    _git(repo, "init", "-q")
    with (repo / "models.toml").open("a") as manifest:  # a model added without re-locking
        manifest.write('\n[models.second]\nhandle = "fahrenheit.tar.gz"\n')
    _git(repo, "add", "-A")
    # One run: installing the hook's environment is the slow part (a venv and hubpin's deps).
    result = subprocess.run(
        ["pre-commit", "try-repo", WORKTREE, "hubpin-lock", "--all-files"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert "hubpin lock --check" in said and "Failed" in said, said
    assert "models.lock is stale: second: in the manifest but not in the lock" in said, said
