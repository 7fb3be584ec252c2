"""Finding a project's files: the manifest, its lock, its settings, its cache.

Discovery works like Cargo's and uv's: an explicit path, else the nearest
``models.toml`` (or ``models.lock``) in the working directory or its parents.
The lock lives beside the manifest as ``<stem>.lock``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hubpin.cache import Cache
from hubpin.errors import LockMissingError, ManifestError
from hubpin.lockfile import Lock, read_lock
from hubpin.manifest import MANIFEST_FILE, Manifest, load_manifest
from hubpin.settings import Settings, load_settings

LOCK_FILE = "models.lock"


def find_lock() -> Path | None:
    """The lock a command or program means when none is named: HUBPIN_LOCK, else the nearest."""
    env_lock = os.environ.get("HUBPIN_LOCK")
    return Path(env_lock) if env_lock else find_upwards(LOCK_FILE)


def find_upwards(name: str, start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Project:
    """A manifest and/or lock, with the settings that apply to them."""

    manifest_path: Path
    lock_path: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def discover(
        cls,
        manifest: Path | None = None,
        lock: Path | None = None,
        overrides: dict[str, Any] | None = None,
        need_manifest: bool = True,
    ) -> Project:
        if manifest is None and lock is not None and not need_manifest:
            manifest = lock.with_suffix(".toml")  # the lock's own manifest, if it has one
        if manifest is None:
            manifest = find_upwards(MANIFEST_FILE)
        if manifest is None and not need_manifest:
            lock = find_lock()
            manifest = lock.with_suffix(".toml") if lock else None
        if manifest is None:
            raise ManifestError(
                f"no {MANIFEST_FILE} in {Path.cwd()} or its parents; "
                "pass -m PATH or create one with: hubpin add ALIAS HANDLE"
            )
        manifest = manifest.absolute()
        return cls(manifest, (lock or manifest.with_suffix(".lock")).absolute(), overrides or {})

    @property
    def root(self) -> Path:
        """Relative handles and hubpin.toml are relative to this folder."""
        return self.manifest_path.parent

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.root, self.overrides)

    @cached_property
    def manifest(self) -> Manifest:
        return load_manifest(self.manifest_path)

    def read_lock(self) -> Lock:
        return read_lock(self.lock_path)

    def lock_or_none(self) -> Lock | None:
        try:
            return self.read_lock()
        except LockMissingError:
            return None

    @cached_property
    def cache(self) -> Cache:
        root = self.settings.cache_root
        if root.startswith("gs://"):
            from hubpin.gcs import GcsCache

            return GcsCache(root, self.settings)
        return Cache(Path(root).expanduser())
