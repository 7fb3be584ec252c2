"""What each command does with a pin, by its kind: one :class:`Handler` per kind of pin.

:mod:`hubpin.kinds` says what a pin *is* (its fields, the handles and keys it
claims, what ``lock --check`` recomputes); a handler says what the commands *do*
with it: where its cache entry is and what state it is in (``status``), the step
a sync plans for it and how that step is carried out (``sync``, ``verify
--repair``), how it is re-hashed (``verify``), the path ``hubpin.resolve`` gives,
what its host calls current (``outdated``, ``lock --upgrade``) and how a manifest
entry becomes one (``lock``). The callers (:mod:`hubpin.sync`, :mod:`hubpin.ops`,
:mod:`hubpin.runtime`, :mod:`hubpin.pin`) ask :func:`handler` and never test a
pin's class, so a new kind of pin is one class in :mod:`hubpin.kinds`, one module
here and one line of :data:`_HANDLERS`.

Handlers are imported by name when first used (as the scheme table names storage
back-ends), so ``status`` and ``hubpin.load`` load only the kinds their lock holds,
and this module imports none of the machinery the handlers use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from hubpin.errors import HubpinError
from hubpin.kinds import TAGS, PinBase, expected_kind, tag_of

if TYPE_CHECKING:
    import threading

    from hubpin.cache import Cache
    from hubpin.digests import Tree
    from hubpin.handles import Format, Source
    from hubpin.kinds import ArchivePin, Pin
    from hubpin.lockfile import Lock
    from hubpin.manifest import ModelSpec
    from hubpin.plan import Outcome, Step
    from hubpin.project import Project
    from hubpin.settings import Settings
    from hubpin.sources import Sources
    from hubpin.unpack import Unpacked

_HANDLERS: dict[str, str] = {
    "archive": "hubpin.handlers.archive:ArchiveHandler",
    "kaggle": "hubpin.handlers.kaggle:KaggleHandler",
    "gcs": "hubpin.handlers.gcs:GcsHandler",
    "folder": "hubpin.handlers.folder:FolderHandler",
    "huggingface": "hubpin.handlers.huggingface:HfHandler",
}
"""Each kind's handler as ``module:Class``, by the kind's name in :data:`hubpin.kinds.Pin`
(a Kaggle archive is ``kaggle``)."""

_loaded: dict[str, Handler] = {}

SHA_NOTE = "hubpin-sha256"  # a store bundle's note of the verified sha256 beside each file


def by_tag(tag: str) -> Handler:
    """The handler registered as ``tag``."""
    found = _loaded.get(tag)
    if found is None:
        module, _, name = _HANDLERS[tag].partition(":")
        found = _loaded[tag] = getattr(importlib.import_module(module), name)()
    return found


def handler(pin: PinBase) -> Handler:
    """What the commands do with ``pin``, by its kind."""
    return by_tag(tag_of(pin))


def for_handle(handle: str, fmt: Format, root: Path, settings: Settings) -> Handler:
    """The handler of the kind of pin ``hubpin lock`` makes of ``handle`` (under ``fmt``)."""
    return by_tag(tag_of(expected_kind(handle, fmt, root, settings)))


def every() -> list[Handler]:
    """One of each handler (``prune`` asks them all: a kind the lock no longer holds may
    have left entries behind)."""
    found: dict[type[Handler], Handler] = {}
    for tag in _HANDLERS:
        kind = by_tag(tag)
        found.setdefault(type(kind), kind)
    return list(found.values())


assert set(_HANDLERS) == TAGS, "every kind of pin has a handler"


class Run(Protocol):
    """What one sync run gives the handlers (:class:`hubpin.sync.Syncer` is one)."""

    cache: Cache
    settings: Settings
    sources: Sources
    root: Path
    offline: bool
    full_verify: bool
    bundle: str | None
    on_bytes: Callable[[int], None] | None
    stop: threading.Event

    @property
    def from_bundle(self) -> bool: ...

    def fetch_into(self, pin: ArchivePin, work: Path) -> Unpacked: ...

    def run(self, pins: dict[str, Pin], jobs: int) -> list[Outcome]: ...


@dataclass
class Shared:
    """What the steps of one plan share: pins that name one model share its work.

    ``holders``: a model (by the handler's :meth:`Handler.content`) → an alias whose
    entry holds it (or will, once its step ran). ``claimed``: a place a step fills
    (a cache key, a kagglehub version) → the alias whose step fills it.
    """

    holders: dict[tuple[str, str], str] = field(default_factory=dict)
    claimed: dict[str, str] = field(default_factory=dict)


class Handler:
    """What the commands do with one kind of pin; the defaults suit a model read in place."""

    prechecks = False  # whether planning starts with :meth:`damage` (run `jobs` at a time)
    repairs = False  # whether a sync can fetch what verify finds damaged (not in place)
    # A cache of the kind's own in an image (``hubpin image``): its folder below the image's
    # root, and the variable that points its tool there (set in the image's environment).
    image_cache: tuple[str, str] | None = None

    # -- sync ---------------------------------------------------------------------------

    def damage(self, run: Run, pin: Any) -> list[str]:
        """Why the pin's entry is not usable as is (empty: it is), read before planning."""
        return []

    def seen(self, shared: Shared, alias: str, pin: Any, damage: list[str]) -> None:
        """Note, before any step is planned, what this pin's entry already holds."""

    def plan(self, run: Run, alias: str, pin: Any, damage: list[str], shared: Shared) -> Step:
        """The step a sync takes for this pin, found without writing or downloading."""
        raise NotImplementedError

    def execute(
        self, run: Run, step: Step, pin: Any, steps: dict[str, Step], done: dict[str, Outcome]
    ) -> tuple[str, str]:
        """Carry out ``step`` (not a keep or a fail): ``(status, detail)`` of its outcome."""
        raise NotImplementedError

    # -- verify, status, resolve ----------------------------------------------------------

    def verify(self, run: Run, alias: str, pin: Any) -> list[str]:
        """Re-hash what the pin's entry holds against the lock; one phrase per problem."""
        return [o.detail for o in run.run({alias: pin}, 1) if o.status == "failed"]

    def state(self, project: Project, pin: Any) -> str:
        """``status``'s word for the pin: "synced", or the first problem (stat checks only)."""
        raise NotImplementedError

    def where(self, project: Project, pin: Any) -> str:
        """Where the pinned model is read: its cache entry, its folder or its location."""
        raise NotImplementedError

    def resolve(self, project: Project, alias: str, pin: Any, verify: bool) -> str:
        """What ``hubpin.resolve`` gives: :meth:`where`, once checked (re-hashed with
        ``verify``); NotSyncedError or DamagedEntryError naming the alias otherwise."""
        return self.where(project, pin)

    def bundled(self, pin: Any, sources: Sources) -> list[Bundled]:
        """What ``hubpin bundle`` copies for this pin (``sync --from`` reads it back, verified
        again against the lock): nothing for a model read in place."""
        return []

    def presets(self, project: Project, pin: Any) -> list[str]:
        """The presets KerasHub's ``from_preset`` may be given for this model
        (``kaggle://…``, ``hf://…``), which ``hubpin.install()`` answers from the lock."""
        return []

    # -- the caches of its own, for prune ---------------------------------------------------

    def note_use(self, project: Project, lock: Lock) -> None:
        """Note, in a cache of this kind's own, which of its entries ``lock`` pins (after a
        sync), so other projects' ``prune`` keeps them."""

    def gone(self, project: Project, pin: Any, timeout: float) -> str | None:
        """The place in a cache of this kind's own that a sync found or made for ``pin`` and
        that is gone now, once no prune holds its lock (None: it is there, or the kind has
        no cache of its own): asked after the sync noted its lock, as
        :meth:`hubpin.cache.Cache.still_present` is for tensorflow_hub's cache."""
        return None

    def prunable(self, project: Project, lock: Lock, all_unpinned: bool) -> Pruning:
        """What ``prune`` removes from a cache of this kind's own (not tensorflow_hub's, which
        :mod:`hubpin.owners` prunes): what this project made there and no lock pins now."""
        return Pruning()

    # -- hubpin image -----------------------------------------------------------------------

    def image(self, pins: dict[str, Any]) -> list[Placed] | None:
        """What ``hubpin image`` puts into the image for these pins (all of this kind), below
        their own cache's place there, checked against the lock; None: the kind's files are
        in tensorflow_hub's cache (and kagglehub's), which the image lays out from each pin's
        keys, or read from where the lock names (a gs:// folder). Raises for a kind an image
        cannot hold."""
        return None

    def files(self, project: Project, pin: Any) -> Collection[str] | None:
        """The files the pinned model holds, by relative POSIX path, as the lock or its
        entry's verified record lists them (``hubpin.install()`` answers KerasHub's
        ``get_file`` with these only); None for a kind that cannot tell."""
        keyed = pin.keyed()
        if not keyed:
            return None
        record = project.cache.read_record(keyed[0][1])
        if record is None or record.tree_digest != pin.tree_digest:
            return ()
        return record.tree.files.keys()

    def has_file(self, pin: Any, path: str) -> bool | None:
        """Whether the pinned model holds ``path``, when the pin tells without reading the
        model (None: look)."""
        return None

    # -- outdated, lock -------------------------------------------------------------------

    def outdated(self, project: Project, alias: str, pin: Any, sources: Sources) -> Currency:
        """The pinned version or commit beside the one its host calls current now."""
        return Currency(note="not hosted on Kaggle: its host cannot tell")

    def keeps(self, project: Project, pin: Any) -> dict[str, Any]:
        """What pinning this alias again keeps of its earlier ``pin`` (the same handle), as
        :class:`PinRequest` fields: a Kaggle version, a Hugging Face commit; only ``lock
        --upgrade`` moves them (:meth:`upgrade`)."""
        return {}

    def upgrade(
        self, project: Project, spec: ModelSpec, pin: Pin | None, sources: Sources
    ) -> dict[str, Any] | None:
        """For ``lock --upgrade``: the :class:`PinRequest` fields that move ``spec``'s pin
        (``pin`` in the earlier lock) to what its host calls current; None when it is
        current, or pinned exactly by its handle."""
        return None

    def download(
        self, spec: ModelSpec, fmt: Format, version: int | None, settings: Settings
    ) -> tuple[object, ...] | None:
        """Which one download a manifest entry names before it is pinned, where several
        handles can name it (a Kaggle variation at one version, by URL and by ``kaggle:``):
        ``hubpin lock`` downloads it once, for the first such alias, and pins the others from
        that (:meth:`follow`). ``version``: what an earlier lock pinned. None: its own."""
        return None

    def follow(self, leader: Any, alias: str, spec: ModelSpec, settings: Settings) -> Pin:
        """The pin ``spec`` gets from the one ``leader`` got (their :meth:`download` agreed)."""
        raise NotImplementedError

    def pin(self, request: PinRequest) -> tuple[Pin, Tree | None]:
        """Resolve a manifest entry into a pin (and the tree unpacked into ``request.work``)."""
        raise NotImplementedError

    def pin_into(self, alias: str, request: PinRequest, cache: Cache | None, required: bool) -> Pin:
        """:meth:`pin`, filling ``cache`` in the same pass where the kind can
        (:func:`hubpin.pin.pin_into_cache`); a kind read in place just pins."""
        return self.pin(request)[0]


@dataclass(frozen=True)
class Bundled:
    """One file a bundle holds for a pin, named by its content below the bundle.

    ``copy(fh, also)`` streams it into ``fh`` (and ``also``), verified against the lock;
    ``notes`` are what a store bundle records beside it (the verified id), so a rerun
    trusts one ``stat``; ``sha256`` when the lock knows it (a store whose own checksum is
    a sha256 vouches for it alone); ``pin``: the archive pin an OCI bundle takes.
    """

    name: str  # archives/<sha256>, huggingface/<etag>
    size: int
    notes: dict[str, str]
    copy: Callable[[IO[bytes], Callable[[bytes], None] | None], None] = field(
        compare=False, repr=False
    )
    sha256: str | None = None
    pin: ArchivePin | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Placed:
    """One member of an image's filesystem (``hubpin image``): a folder; a file from disk
    (``source``), hashed as it is packed and compared with ``expect`` (size, and sha256 or,
    with ``git_blob``, the git blob sha1); small bytes (``data``); a hard link to an earlier
    member (``link``); or a symbolic link (``symlink``, its target)."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    link: str | None = None
    expect: tuple[int, str] | None = None
    alias: str = ""
    git_blob: bool = False
    symlink: str | None = None


@dataclass(frozen=True)
class Removal:
    """One thing ``prune`` removes: its name, the bytes it frees, how."""

    name: str
    size: int
    remove: Callable[[], str | None] = field(compare=False, repr=False)  # why kept, or None


@dataclass
class Pruning:
    """What ``prune`` removes from a kind's own cache, what it keeps there and why."""

    remove: list[Removal] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # name → why it stays
    forget: list[Removal] = field(default_factory=list)  # notes of locks that are gone


@dataclass
class Currency:
    """A pin's version against its host's current one (``outdated``)."""

    locked: int | str | None = None  # a Kaggle version, or a Hugging Face commit (12 digits)
    current: int | str | None = None
    state: str = "unknown"  # current | behind | failed | unknown
    note: str | None = None


@dataclass
class PinRequest:
    """One manifest entry to pin (``hubpin lock``), and what an earlier lock pinned for it."""

    spec: ModelSpec
    format: Format
    source: Source
    settings: Settings
    sources: Sources
    root: Path
    work: Path | None = None  # unpack an archive into it while hashing
    on_bytes: Callable[[int], None] | None = None
    version: int | None = None  # the Kaggle version to keep (None: the current one)
    commit: str | None = None  # the Hugging Face commit to keep (None: resolve the revision)
    adopt: bool = False  # pin an entry an interrupted lock of this project published, if intact

    def common(self) -> dict[str, Any]:
        """The fields every kind copies from the manifest."""
        return manifest_fields(self.spec, self.format)


def manifest_fields(spec: ModelSpec, fmt: Format) -> dict[str, Any]:
    """The fields every kind copies from a manifest entry into its pin (a pin made by
    :meth:`Handler.pin` or by :meth:`Handler.follow` alike)."""
    return {
        "handle": spec.handle,
        "format": fmt,
        "io_device": spec.io_device,
        "tags": spec.tags,
        "expected_sha256": spec.sha256,
        "also": spec.also or None,
    }


def failed(alias: str, pin: Any, exc: HubpinError) -> Step:
    """The step of a pin whose planning raised: it fails with that error."""
    from hubpin.plan import Action, Step  # a sync's: `status` asks handlers without planning

    return Step(alias, Action.FAIL, pin.unpacked_size, 0, str(exc), pin, error=exc)
