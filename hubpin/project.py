"""A project: its manifest, its lock, the settings that apply and the cache they name.

Discovery works like Cargo's and uv's: an explicit path, else the nearest
``models.toml`` (or ``models.lock``) in the working directory or its parents.
The lock lives beside the manifest as ``<stem>.lock``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubpin.errors import LockfileError, LockMissingError, ManifestError, SettingsError
from hubpin.paths import MANIFEST_FILE, find_lock, find_upwards, settings_path

if TYPE_CHECKING:  # imported where used: finding files must not cost pydantic's import
    from hubpin.cache import Cache
    from hubpin.lockfile import Lock
    from hubpin.manifest import Manifest
    from hubpin.settings import Settings


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
        for given, flag, name in ((manifest, "-m", MANIFEST_FILE), (lock, "--lock", "models.lock")):
            if given is not None and given.is_dir():  # a project's folder, not its file
                raise ManifestError(
                    f"{flag} {given}: a folder; {flag} takes the file: {flag} {given / name}"
                )
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

    @property
    def settings_path(self) -> Path:
        """HUBPIN_CONFIG, else hubpin.toml beside the manifest (which need not exist)."""
        return settings_path(self.root)

    @cached_property
    def settings(self) -> Settings:
        from hubpin.settings import load_settings

        return load_settings(self.root, self.overrides)

    @cached_property
    def manifest(self) -> Manifest:
        from hubpin.manifest import load_manifest

        return load_manifest(self.manifest_path)

    def read_lock(self, checked: bool = True) -> Lock:
        """The lock, refused (exit 2) unless hubpin could have written it: a hand-edited pin
        must not reach the cache or ``hub.load`` (:func:`hubpin.lockfile.lock_problems`).

        ``checked=False`` is for ``hubpin lock``, which re-pins what does not hold.
        """
        from hubpin.lockfile import lock_problems, read_lock

        lock = read_lock(self.lock_path)
        if checked:
            problems = lock_problems(lock, self.root, self.settings)
            if problems:
                raise LockfileError(
                    f"{self.lock_path}: {'; '.join(problems)}; this is not a lock hubpin wrote "
                    "(edited by hand, or by an older hubpin); run: hubpin lock"
                )
        return lock

    def lock_or_none(self, checked: bool = True) -> Lock | None:
        try:
            return self.read_lock(checked)
        except LockMissingError:
            return None

    @cached_property
    def cache(self) -> Cache:
        """The cache the settings name: a folder, or a store prefix shared by a fleet (gs://).

        The cache kind comes from the root's scheme (:mod:`hubpin.storage.schemes`)."""
        from hubpin.storage.schemes import known, load, scheme

        root = self.settings.cache_root
        spec = scheme(root)
        if spec is None or spec.cache is None:
            roots = ", ".join(s.example for s in known("cache"))
            raise SettingsError(
                f"cache_dir {root}: not a place a cache can live (expected {roots})"
            )
        cache: Cache = load(spec.cache).at(root, self.settings)
        cache.owner = str(self.lock_path)  # the creator its records name (hubpin.owners)
        return cache
