"""The README's first command: sync the demo project and load its model by alias, offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
