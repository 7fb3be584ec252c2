"""List what is in this machine's own model caches, one path a line (.ci/run compares the
listings before and after the suite: tests/conftest.py must keep every test out of them).

The folders are the defaults hubpin, tensorflow_hub, kagglehub and Hugging Face use when
nothing is set, or what the environment CI runs in sets them to.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def machine_caches() -> list[Path]:
    home = Path(os.path.expanduser("~"))
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    hf_home = Path(os.environ.get("HF_HOME") or xdg / "huggingface")
    return [
        Path(os.environ.get("TFHUB_CACHE_DIR") or Path(tempfile.gettempdir()) / "tfhub_modules"),
        xdg / "hubpin",
        Path(os.environ.get("KAGGLEHUB_CACHE") or home / ".cache" / "kagglehub"),
        Path(os.environ.get("HF_HUB_CACHE") or hf_home / "hub"),
    ]


def main() -> None:
    for root in machine_caches():
        sys.stdout.write(f"{root}/\n")
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if len(path.relative_to(root).parts) <= 3:
                    sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
