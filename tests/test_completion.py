"""``hubpin completion bash|zsh|fish``: scripts generated from the parser, loaded by the real
shells and asked to complete, as a user's TAB would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WORKTREE

from hubpin.cli import build_parser


def _script(shell: str, tmp_path: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "hubpin", "completion", shell],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": WORKTREE},
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    path = tmp_path / f"hubpin.{shell}"
    path.write_text(result.stdout)
    return path


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return list(sub.choices)  # type: ignore[arg-type]


BASH_TAB = """
source "$1"
fn=$(complete -p hubpin | sed -E 's/.*-F ([^ ]+).*/\\1/')
tab() {
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    COMPREPLY=(); "$fn" hubpin "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"; echo "${COMPREPLY[*]}"
}
tab hubpin ""
tab hubpin sy
tab hubpin sync --lo
tab hubpin completion ""
"""


def test_bash_completes_commands_flags_and_shells(tmp_path: Path) -> None:
    script = _script("bash", tmp_path)
    result = subprocess.run(
        ["bash", "-c", BASH_TAB, "bash", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    everything, sy, lo, shells = result.stdout.splitlines()
    assert everything.split() == _commands()
    assert (sy, lo, shells) == ("sync", "--lock --locked", "bash zsh fish")


@pytest.mark.skipif(
    shutil.which("fish") is None, reason="fish is not installed (.ci/run installs it)"
)
def test_fish_completes_commands_and_flags_with_their_help(tmp_path: Path) -> None:
    script = _script("fish", tmp_path)
    result = subprocess.run(
        ["fish", "-c", f"source {script}; complete -C 'hubpin sy'; complete -C 'hubpin sync --lo'"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sync\tmake the cache match the lock (locking first if needed)",
        "--lock\tlock file (default: <manifest stem>.lock)",
        "--locked\tfail (exit 1) instead of updating a stale lock",
    ]


@pytest.mark.skipif(
    shutil.which("zsh") is None, reason="zsh is not installed (.ci/run installs it)"
)
def test_zsh_script_is_valid_zsh_naming_every_command(tmp_path: Path) -> None:
    script = _script("zsh", tmp_path)
    check = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert (check.returncode, check.stderr) == (0, "")
    text = script.read_text()
    assert text.startswith("#compdef hubpin")
    assert all(f"\n    {name}:'" in text for name in _commands()), text[:2000]
