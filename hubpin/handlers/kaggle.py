"""A Kaggle model version (``KagglePin``): an archive (:mod:`hubpin.handlers.archive`), also
hard-linked into kagglehub's own cache, fetched as exactly the pinned version, whose host
names a current version (``outdated``, ``lock --upgrade``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hubpin.errors import ArchiveError, HubpinError, IntegrityError
from hubpin.handlers import Currency, Run, manifest_fields
from hubpin.handlers.archive import ArchiveHandler
from hubpin.handles import cache_key
from hubpin.kaggle.handle import KaggleHandle, configured
from hubpin.kerashub import is_preset_handle
from hubpin.kinds import KagglePin, Pin
from hubpin.plan import Target

if TYPE_CHECKING:
    from hubpin.cache import Cache
    from hubpin.digests import Tree
    from hubpin.handles import Format
    from hubpin.manifest import ModelSpec
    from hubpin.project import Project
    from hubpin.settings import Settings
    from hubpin.sources import Sources

log = logging.getLogger("hubpin")
ABSENT_COPY = "not in kagglehub's cache"  # kagglehub downloads it again itself: not damage


class KaggleHandler(ArchiveHandler):
    """A Kaggle version: an archive, also hard-linked into kagglehub's cache, whose
    host names a current version."""

    def targets(self, run: Run, pin: KagglePin, damage: list[str]) -> list[Target]:  # type: ignore[override]
        """As an archive's, and kagglehub's copy unless it holds the pinned entry's very files
        (hard links, or copies of them: :func:`~hubpin.cache.kagglehub.differences`; their
        bytes too under ``full_verify``). An entry that is re-made re-makes the copy, which
        may share its damaged files."""
        found = super().targets(run, pin, damage)
        if run.cache.local_root is not None and (
            damage or self.kagglehub_damage(run, pin, run.full_verify)
        ):
            found.append(Target(str(_kaggle_handle(run, pin))))
        return found

    def check_tree(self, handle: str, tree: Tree) -> None:
        """A tree kagglehub's per-file markers cannot describe is refused (lock and sync)."""
        from hubpin.cache.kagglehub import marker_clash

        why = marker_clash(handle, tree)
        if why is not None:
            raise ArchiveError(why)

    def kagglehub_damage(self, run: Run, pin: KagglePin, rehash: bool) -> list[str]:
        """How kagglehub's copy differs from the pin's entry (empty: it does not, or the
        cache is not local, so there is no copy), or :data:`ABSENT_COPY`."""
        return _kagglehub_damage(run.cache, run.settings, pin, rehash)

    def state(self, project: Project, pin: KagglePin) -> str:
        """As an archive's; a synced entry whose kagglehub copy differs (by stat) says how."""
        found = super().state(project, pin)
        if found != "synced":
            return found
        damage = _kagglehub_damage(project.cache, project.settings, pin, rehash=False)
        return next((p for p in damage if p != ABSENT_COPY), found)

    def verify(self, run: Run, alias: str, pin: KagglePin) -> list[str]:  # type: ignore[override]
        """The entry re-hashed, then kagglehub's copy compared with it byte for byte (what
        unmodified ``kagglehub.model_download`` reads); a copy that is gone is no damage."""
        problems = super().verify(run, alias, pin)
        if problems:
            return problems
        return [p for p in self.kagglehub_damage(run, pin, rehash=True) if p != ABSENT_COPY]

    def fill(self, run: Run, pin: KagglePin, target: Target) -> None:  # type: ignore[override]
        """Put a Kaggle model where unmodified ``kagglehub.model_download`` finds it offline:
        the verified entry, hard-linked into ``$KAGGLEHUB_CACHE`` under the pinned version
        (nothing is written when it already holds these files)."""
        if target.key is not None:
            super().fill(run, pin, target)
            return
        from hubpin.cache.kagglehub import kagglehub_cache_root, publish_to_kagglehub

        if run.cache.local_root is None:
            log.info("%s: kagglehub's cache is filled only from a local cache", pin.handle)
            return
        publish_to_kagglehub(
            run.cache.local_root / pin.cache_key,
            kagglehub_cache_root(),
            _kaggle_handle(run, pin),
            rehash=run.full_verify,
        )

    def keeps(self, project: Project, pin: KagglePin) -> dict[str, Any]:
        """The version an unversioned handle was pinned at (unless the pin does not hold)."""
        if pin.derived_problems(project.root, project.settings):
            return {}
        return {"version": pin.kaggle_version}

    def upgrade(
        self, project: Project, spec: ModelSpec, pin: Pin | None, sources: Sources
    ) -> dict[str, Any] | None:
        """An unversioned handle moves to the version Kaggle calls current."""
        handle = configured(spec.handle, project.settings.kaggle_endpoint)
        if handle is None or handle.version is not None:
            return None
        current = sources.kaggle.current_version(handle)
        if isinstance(pin, KagglePin) and pin.kaggle_version == current:
            return None
        return {"version": current}

    def download(
        self, spec: ModelSpec, fmt: Format, version: int | None, settings: Settings
    ) -> tuple[object, ...] | None:
        """One variation at one version (unversioned: the one kept, else the current one)."""
        handle = configured(spec.handle, settings.kaggle_endpoint)
        if handle is None:  # a keras-hub preset: keras_hub maps it when it is pinned
            return None
        return handle.slug, handle.version or version, fmt.value

    def follow(self, leader: KagglePin, alias: str, spec: ModelSpec, settings: Settings) -> Pin:
        """The same version, archive and tree, under its own handle, cache key and manifest
        fields; nothing downloaded (sync hard-links its entry from the leader's)."""
        if spec.sha256 and spec.sha256 != leader.archive_sha256:
            raise IntegrityError(
                f"{alias} ({spec.handle}): archive sha256 is {leader.archive_sha256}, the "
                f"manifest expects {spec.sha256}; check the handle, or update sha256 in the "
                "manifest"
            )
        fields = manifest_fields(spec, spec.effective_format(settings))
        return KagglePin.model_validate(
            leader.model_dump() | fields | {"cache_key": cache_key(spec.handle)}
        )

    def presets(self, project: Project, pin: KagglePin) -> list[str]:
        """``kaggle://o/m/f/v/N``, as keras_hub maps a built-in preset name; and without the
        version when the manifest's handle has none (the lock pins what "latest" is)."""
        endpoint = project.settings.kaggle_endpoint
        exact = pin.kagglehub_version(endpoint)
        found = [f"kaggle://{exact.slug}/{exact.version}"]
        named = None if is_preset_handle(pin.handle) else configured(pin.handle, endpoint)
        if named is not None and named.version is None:
            found.append(f"kaggle://{exact.slug}")
        return found

    def outdated(self, project: Project, alias: str, pin: KagglePin, sources: Sources) -> Currency:
        handle = configured(pin.handle, project.settings.kaggle_endpoint)
        assert handle is not None  # a Kaggle pin's handle (else sources.location_of raises)
        row = Currency(locked=pin.kaggle_version)
        try:
            row.current = current = sources.kaggle.current_version(handle)
        except HubpinError as exc:
            row.state, row.note = "failed", str(exc)
            return row
        if current <= pin.kaggle_version:
            row.state = "current"
        elif handle.version is None:
            row.state, row.note = "behind", f"run: hubpin lock --upgrade {alias}"
        else:
            row.state = "behind"
            row.note = f"the manifest pins version {handle.version}; edit its handle"
        return row


def _kaggle_handle(run: Run, pin: KagglePin) -> KaggleHandle:
    return pin.kagglehub_version(run.settings.kaggle_endpoint)


def _kagglehub_damage(cache: Cache, settings: Settings, pin: KagglePin, rehash: bool) -> list[str]:
    """:meth:`KaggleHandler.kagglehub_damage`, given the cache and settings."""
    from hubpin.cache.kagglehub import (
        differences,
        in_kagglehub_cache,
        kagglehub_cache_root,
        kagglehub_entry,
    )

    if cache.local_root is None:
        return []
    root, handle = kagglehub_cache_root(), pin.kagglehub_version(settings.kaggle_endpoint)
    if not in_kagglehub_cache(root, handle):
        return [ABSENT_COPY]
    found = differences(cache.local_root / pin.cache_key, kagglehub_entry(root, handle), rehash)
    return [f"kagglehub's copy {p}" for p in found]
