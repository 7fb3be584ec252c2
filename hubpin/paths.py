"""Where a project's files are: the names, and the search upwards that Cargo and uv do.

Kept apart from :mod:`hubpin.project` so that settings can find hubpin.toml
without depending on the project, and so the no-op path imports no pydantic.
"""

from __future__ import annotations

import os
from pathlib import Path

MANIFEST_FILE = "models.toml"
LOCK_FILE = "models.lock"
SETTINGS_FILE = "hubpin.toml"


def find_lock() -> Path | None:
    """The lock a command or program means when none is named: HUBPIN_LOCK, else the nearest."""
    env_lock = os.environ.get("HUBPIN_LOCK")
    return Path(env_lock) if env_lock else find_upwards(LOCK_FILE)


def identity(path: Path) -> tuple[int, ...] | None:
    """Which file is at ``path``, as stat tells it (None: none). An mtime alone can be set
    back (``touch -d``, ``cp -p``, fixed build times) or be shared by two writes within one
    tick of the kernel's coarse clock; a file put in its place has another inode or ctime,
    and ctime cannot be set."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settings_path(project_dir: Path) -> Path:
    explicit = os.environ.get("HUBPIN_CONFIG")
    return Path(explicit) if explicit else project_dir / SETTINGS_FILE


def find_upwards(name: str, start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None
