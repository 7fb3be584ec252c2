"""The suite never writes into the machine's own caches: every default a test or a process it
starts could fall back to lies under that test's folder (tests/conftest.py; .ci/run checks
the real folders before and after the suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import WORKTREE

_DEFAULTS = """
import json, os, tempfile
from hubpin.settings import Settings
from hubpin.stamp import folder as stamp_dir
from hubpin.cache.kagglehub import kagglehub_cache_root
from kagglehub.config import get_cache_folder
print(json.dumps({
    "tfhub cache (hubpin's default)": Settings().cache_root,
    "temp folder": tempfile.gettempdir(),
    "hubpin stamps": str(stamp_dir()),
    "kagglehub cache (hubpin)": str(kagglehub_cache_root()),
    "kagglehub cache (kagglehub)": get_cache_folder(),
    "Hugging Face home": os.environ.get("HF_HOME", "~/.cache/huggingface"),
    "Kaggle config": os.environ.get("KAGGLE_CONFIG_DIR", "~/.kaggle"),
}))
"""


def _outside(tmp_path: Path, places: dict[str, str]) -> dict[str, str]:
    root = tmp_path.resolve()
    return {
        what: where
        for what, where in places.items()
        if not Path(os.path.expanduser(where)).resolve().is_relative_to(root)
    }


def test_default_caches_of_this_process_are_the_tests_own(tmp_path: Path) -> None:
    from hubpin.cache.kagglehub import kagglehub_cache_root
    from hubpin.settings import Settings
    from hubpin.stamp import folder as stamp_dir

    places = {
        "tfhub cache (hubpin's default)": Settings().cache_root,
        "temp folder": tempfile.gettempdir(),
        "hubpin stamps": str(stamp_dir()),
        "kagglehub cache": str(kagglehub_cache_root()),
    }
    assert _outside(tmp_path, places) == {}
    inherited = {v for v in os.environ if v.startswith(("HUBPIN_", "TFHUB_", "KAGGLE_", "HF_"))}
    assert inherited == {"KAGGLE_CONFIG_DIR", "HF_HOME"}  # the two conftest points here


def test_default_caches_of_a_process_the_test_starts_are_the_tests_own(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _DEFAULTS],
        env={**os.environ, "PYTHONPATH": WORKTREE},
        capture_output=True,
        text=True,
        check=True,
    )
    assert _outside(tmp_path, json.loads(result.stdout)) == {}
