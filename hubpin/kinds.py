"""A pin's kind is its type: one pydantic model per way a pinned model is stored.

Each kind has the fields it needs, all required, and answers for itself what
the callers ask of a pin: which handles tensorflow_hub may be given for it,
which cache keys it fills, and which of its fields the handle determines
(:meth:`PinBase.derived_problems`, what ``lock --check`` recomputes offline).
A lock's ``[models.<alias>]`` table is read as :data:`Pin`, a union chosen by
``kind`` (a Kaggle archive is an ``archive`` with its version), so a table
missing one of its kind's fields, or carrying another kind's, is refused when
the lock is read. A new kind is one more class here and one more member of
:data:`Pin`; the TOML of existing locks does not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from hubpin.handles import (
    Format,
    Kind,
    archive_key,
    cache_key,
    kind_for,
    local_path,
    source_for,
    strip_query,
)
from hubpin.huggingface import HfPinned, is_commit, parse_hf, select
from hubpin.kaggle.handle import KaggleHandle, configured, pinned
from hubpin.kerashub import is_preset_handle, keras_hub_root
from hubpin.settings import Settings
from hubpin.storage.schemes import is_url, scheme

SHA256 = r"^[0-9a-f]{64}$"


class GcsObject(BaseModel):
    """One object of a gs:// model folder, pinned by generation and checksums."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    path: str
    size: int = Field(ge=0, strict=True)
    generation: str
    crc32c: str | None = None
    md5: str | None = None


class PinBase(BaseModel):
    """What every kind of pin records: the manifest fields it was made from, and its tree."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    in_cache: ClassVar[bool] = False  # whether sync puts it into the cache (else read in place)

    handle: str
    format: Format
    io_device: str | None = None
    tags: list[str] | None = None
    expected_sha256: str | None = None
    also: list[str] | None = None
    tree_digest: str
    # strict: a lock's numbers are TOML integers (pydantic would take "0" or true for 0 or 1)
    unpacked_size: int = Field(ge=0, strict=True)
    file_count: int = Field(ge=0, strict=True)
    kind: Kind  # each kind's own Literal; last, so a table's first problem is reported first

    def handles(self) -> list[str]:
        """Every handle tensorflow_hub may be asked for this model: as written, and ``also``."""
        return [self.handle, *(self.also or [])]

    def keyed(self) -> list[tuple[str, str]]:
        """Each handle with the tensorflow_hub cache key it fills, the pinned one first (none
        for a model whose files are not in tensorflow_hub's cache)."""
        return []

    def cache_keys(self) -> list[str]:
        """Every cache folder this pin fills (none for a model read in place)."""
        return []

    def archives(self) -> dict[str, int]:
        """The archives (sha256 → size) this model is fetched as: what a bundle carries."""
        return {}

    def version_url(self) -> str | None:
        """The model URL at the version the lock pins, for a kind pinned by a host's version
        number (Kaggle); None for any other."""
        return None

    def kagglehub_version(self, kaggle_endpoint: str | None) -> KaggleHandle | None:
        """The Kaggle model version whose place in kagglehub's own cache this model also
        fills; None for a model that is not there."""
        return None

    def inputs(self) -> dict[str, Any]:
        """The manifest fields this pin was made from."""
        return {
            "handle": self.handle,
            "format": self.format.value,
            "io_device": self.io_device,
            "tags": self.tags,
            "sha256": self.expected_sha256,
            "also": self.also or None,
            "include": None,
            "exclude": None,
        }

    def derived_problems(self, root: Path, settings: Settings) -> list[str]:
        """The fields that differ from what the handle (and format) make of them, as
        ``field: found …, the handle makes it …``; empty for a pin hubpin could have made.

        ``root`` is the folder relative handles are read from (the manifest's).
        Only what needs no network is recomputed.
        """
        want = expected_kind(self.handle, self.format, root, settings)
        if type(self) is not want:
            return [
                f"kind is {_kind_name(type(self))!r}, the handle makes it {_kind_name(want)!r} "
                f"(format {self.format.value})"
            ]
        if self.format is Format.AUTO:
            return ["format is 'AUTO', a lock records COMPRESSED or UNCOMPRESSED"]
        return []

    def describe(self) -> str:
        """Where the pinned model is, for ``pinned ALIAS → …``."""
        raise NotImplementedError


class ArchivePin(PinBase):
    """A tar(.gz) unpacked into ``<cache>/<key>/``, pinned by archive and tree digest."""

    in_cache: ClassVar[bool] = True

    kind: Literal[Kind.ARCHIVE]
    cache_key: str = Field(pattern=r"^[0-9a-f]{40}$")
    url: str
    archive_sha256: str = Field(pattern=SHA256)
    archive_size: int = Field(ge=0, strict=True)

    def keyed(self) -> list[tuple[str, str]]:
        """Each handle of :meth:`handles` with the cache key it fills, the pinned one first."""
        first = [(self.handle, self.cache_key)]
        return first + [(h, archive_key(h, self.archive_sha256)) for h in self.handles()[1:]]

    def cache_keys(self) -> list[str]:
        return list(dict.fromkeys(key for _, key in self.keyed()))

    def archives(self) -> dict[str, int]:
        return {self.archive_sha256: self.archive_size}

    def source(self, settings: Settings, root: Path) -> str:
        """Where the host serves the pinned archive, as tensorflow_hub would fetch it
        (``root``: the folder a relative handle is read from)."""
        return source_for(self.handle, self.format, root).location

    def derived_problems(self, root: Path, settings: Settings) -> list[str]:
        problems = super().derived_problems(root, settings)
        if problems:
            return problems
        want_key = archive_key(self.handle, self.archive_sha256)
        if self.cache_key != want_key:
            why = (
                " (an older hubpin keyed a local archive by its path, which two projects "
                "could share; it is keyed by its sha256 now)"
                if self.cache_key == cache_key(self.handle)
                else ""
            )
            problems.append(
                f"cache_key is {self.cache_key}, the handle and archive_sha256 make it "
                f"{want_key}{why}"
            )
        local = local_path(self.handle, root)
        if local is None and self.url != strip_query(self.url):
            problems.append(  # the host's final URL, as the lock records it: never a token
                f"url has a query string, fragment or credentials ({strip_query(self.url)}…); "
                "hubpin records the download URL without them"
            )
        if local is not None:  # a path or file:// handle is read from there: url says so
            named = self.handle if is_url(self.handle) else None  # file://
            if named is not None and self.url != named:
                problems.append(f"url is {self.url!r}, the handle makes it {named!r}")
            elif named is None and (root / self.url).resolve() != local.resolve():
                problems.append(f"url is {self.url!r}, the handle names {local.resolve()}")
        if self.expected_sha256 and self.archive_sha256 != self.expected_sha256:
            problems.append(
                f"archive_sha256 is {self.archive_sha256}, the manifest's sha256 is "
                f"{self.expected_sha256}"
            )
        return problems

    def describe(self) -> str:
        return f"{self.url} sha256:{self.archive_sha256[:12]}"


class KagglePin(ArchivePin):
    """A Kaggle model version: an archive, fetched as exactly ``kaggle_version``."""

    kaggle_version: int = Field(ge=1, strict=True)
    versioned_handle: str  # its model URL at that version, as hub.load is given it

    def handles(self) -> list[str]:
        """As an archive's, plus the versioned model URL; one download fills each key."""
        found = super().handles()
        if self.versioned_handle not in found:
            found.append(self.versioned_handle)
        return found

    def derived_problems(self, root: Path, settings: Settings) -> list[str]:
        problems = super().derived_problems(root, settings)
        if problems:
            return problems
        if is_preset_handle(self.handle) and keras_hub_root() is None:
            return problems  # mapped by keras_hub at lock time; nothing to recompute without it
        if is_preset_handle(self.handle):
            handle = configured(self.handle, settings.kaggle_endpoint)
            assert handle is not None and handle.version is not None
            if handle.model_url != self.versioned_handle:
                problems.append(
                    f"versioned_handle is {self.versioned_handle!r}, the installed keras_hub "
                    f"maps the preset to {handle.model_url!r}"
                )
            return problems
        handle = configured(self.handle, settings.kaggle_endpoint)
        assert handle is not None  # expected_kind made this a KagglePin
        if handle.version is not None and handle.version != self.kaggle_version:
            problems.append(
                f"kaggle_version is {self.kaggle_version}, the handle names version {handle.version}"
            )
        want = handle.with_version(self.kaggle_version).model_url
        if self.versioned_handle != want:
            problems.append(f"versioned_handle is {self.versioned_handle!r}, expected {want!r}")
        return problems

    def source(self, settings: Settings, root: Path) -> str:
        """Exactly the pinned version (``kaggle:o/m/f/v/N``), never "latest"."""
        return str(self.kagglehub_version(settings.kaggle_endpoint))

    def version_url(self) -> str | None:
        return self.versioned_handle

    def kagglehub_version(self, kaggle_endpoint: str | None) -> KaggleHandle:
        return pinned(self.handle, self.kaggle_version, kaggle_endpoint, self.versioned_handle)


def _read_in_place(location: str) -> bool:
    """Whether a location is on a store whose folders TensorFlow reads in place (gs://)."""
    spec = scheme(location)
    return spec is not None and spec.remote and spec.folders and spec.storage is not None


class GcsPin(PinBase):
    """A gs:// folder read in place (UNCOMPRESSED), pinned per object."""

    kind: Literal[Kind.GCS]
    location: str
    objects: list[GcsObject]

    def derived_problems(self, root: Path, settings: Settings) -> list[str]:
        problems = super().derived_problems(root, settings)
        if problems:
            return problems
        if _read_in_place(self.handle) and self.location != self.handle:
            problems.append(f"location is {self.location!r}, the handle makes it {self.handle!r}")
        elif not _read_in_place(self.location):
            problems.append(f"location is {self.location!r}, expected a gs:// folder")
        return problems

    def describe(self) -> str:
        return self.location


class FolderPin(PinBase):
    """A local folder read in place, pinned by tree digest."""

    kind: Literal[Kind.FOLDER]
    location: str  # relative to the lock's folder when below it

    def folder(self, root: Path) -> Path:
        return (root / self.location).resolve()

    def derived_problems(self, root: Path, settings: Settings) -> list[str]:
        problems = super().derived_problems(root, settings)
        if problems:
            return problems
        named = local_path(self.handle, root)
        assert named is not None  # expected_kind made this a FolderPin
        if self.folder(root) != named.resolve():
            problems.append(
                f"location is {self.location!r} ({self.folder(root)}), the handle names {named.resolve()}"
            )
        return problems

    def describe(self) -> str:
        return self.location


class HfPin(PinBase):
    """A Hugging Face repository at one commit, its files in Hugging Face's cache
    (:mod:`hubpin.huggingface`, :mod:`hubpin.cache.huggingface`)."""

    kind: Literal[Kind.HUGGINGFACE]
    location: str  # hf://<repo>@<commit>
    include: list[str] | None = None  # the manifest's file patterns
    exclude: list[str] | None = None
    huggingface: HfPinned

    def inputs(self) -> dict[str, Any]:
        return super().inputs() | {"include": self.include, "exclude": self.exclude}

    def derived_problems(self, root: Path, settings: Settings) -> list[str]:
        problems = super().derived_problems(root, settings)
        if problems:
            return problems
        hf, named = self.huggingface, parse_hf(self.handle)
        assert named is not None  # expected_kind made this an HfPin
        if (hf.repo, hf.revision) != (named.repo_id, named.revision):
            problems.append(
                f"huggingface.repo/revision are {hf.repo}@{hf.revision}, the handle names "
                f"{named.repo_id}@{named.revision}"
            )
        if is_commit(named.revision) and hf.commit != named.revision:
            problems.append(
                f"huggingface.commit is {hf.commit}, the handle names commit {named.revision}"
            )
        paths = [f.path for f in hf.files]
        left_out = sorted(set(paths) - select(paths, self.include, self.exclude))
        if left_out:
            problems.append(
                f"huggingface.files lists {left_out[0]!r}, which the manifest's include/exclude "
                "leave out"
            )
        if self.include is None and self.exclude is None and not hf.complete:
            problems.append(
                "huggingface.complete is false, but no include or exclude leaves a file out"
            )
        if self.location != f"hf://{hf.repo}@{hf.commit}":
            problems.append(f"location is {self.location!r}, expected 'hf://{hf.repo}@{hf.commit}'")
        if self.tree_digest != hf.digest():
            problems.append(
                f"tree_digest is {self.tree_digest}, the pinned files make it {hf.digest()}"
            )
        if (self.file_count, self.unpacked_size) != (len(hf.files), sum(f.size for f in hf.files)):
            problems.append("file_count or unpacked_size do not add up from the pinned files")
        return problems

    def describe(self) -> str:
        return self.location


def _tag(value: Any) -> str | None:
    """Which member of :data:`Pin` a lock table (or a pin) is."""
    if isinstance(value, PinBase):
        return _kind_name(type(value))
    if not isinstance(value, dict):
        return None
    kind = value.get("kind", Kind.ARCHIVE.value)  # missing: reported by the model, in order
    if kind == Kind.ARCHIVE.value and "kaggle_version" in value:
        return "kaggle"
    return kind if isinstance(kind, str) else None


Pin = Annotated[
    Annotated[KagglePin, Tag("kaggle")]
    | Annotated[ArchivePin, Tag(Kind.ARCHIVE.value)]
    | Annotated[GcsPin, Tag(Kind.GCS.value)]
    | Annotated[FolderPin, Tag(Kind.FOLDER.value)]
    | Annotated[HfPin, Tag(Kind.HUGGINGFACE.value)],
    Discriminator(
        _tag,
        custom_error_type="pin_kind",
        custom_error_message="kind must be 'archive', 'gcs', 'folder' or 'huggingface'",
    ),
]
"""One alias, resolved: whichever kind of pin it is."""

_KINDS: dict[type[PinBase], str] = {
    KagglePin: "kaggle",
    ArchivePin: Kind.ARCHIVE.value,
    GcsPin: Kind.GCS.value,
    FolderPin: Kind.FOLDER.value,
    HfPin: Kind.HUGGINGFACE.value,
}


TAGS = frozenset(_KINDS.values())
"""The names of :data:`Pin`'s members, as pydantic puts them into an error's key path."""


def tag_of(pin: PinBase | type[PinBase]) -> str:
    """Which member of :data:`Pin` a pin (or a kind of pin) is (a Kaggle archive is ``kaggle``)."""
    return _KINDS[pin if isinstance(pin, type) else type(pin)]


def _kind_name(cls: type[PinBase]) -> str:
    """The kind as the lock writes it (a Kaggle archive says ``archive``)."""
    return Kind.ARCHIVE.value if cls is KagglePin else _KINDS[cls]


def expected_kind(handle: str, fmt: Format, root: Path, settings: Settings) -> type[PinBase]:
    """The kind of pin ``hubpin lock`` makes of ``handle`` under ``fmt``, offline."""
    if is_preset_handle(handle) or configured(handle, settings.kaggle_endpoint) is not None:
        return KagglePin
    return _BY_KIND[kind_for(handle, fmt, root)]


_BY_KIND: dict[Kind, type[PinBase]] = {
    Kind.ARCHIVE: ArchivePin,
    Kind.GCS: GcsPin,
    Kind.FOLDER: FolderPin,
    Kind.HUGGINGFACE: HfPin,
}
