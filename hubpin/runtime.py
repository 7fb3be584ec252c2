"""The runtime API: load models by alias, strictly from the lock, never from the network.

``hubpin.load("bert")`` is ``hub.load`` on the pinned entry: the cache folder for
a COMPRESSED model (checked against hubpin's record first), the pinned ``gs://``
location for an UNCOMPRESSED one, with the model's tags and LoadOptions. Nothing
here downloads; a model that is not synced is an error that says what to run.
TensorFlow and tensorflow_hub are imported only when a model is actually loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import posixpath
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from hubpin.errors import (
    HubpinError,
    LockMissingError,
    MissingDependencyError,
    StaleLockError,
    install_hint,
    unknown_alias,
)
from hubpin.handlers import handler
from hubpin.lockfile import Lock as LockData
from hubpin.lockfile import Pin, differences
from hubpin.ops.status import resolve_pin
from hubpin.paths import LOCK_FILE, find_lock, identity
from hubpin.project import Project
from hubpin.storage.schemes import scheme

if TYPE_CHECKING:
    import tensorflow as tf


class UnpinnedHandleError(HubpinError):
    """``install(strict=True)`` refused a handle the lock does not pin."""


class PresetConflictError(HubpinError):
    """``install()``: a KerasHub preset that aliases pinning other models both claim."""


class Lock:
    """One models.lock and the cache it describes; the module functions use a default one.

    Code that works with several projects holds one ``Lock`` per lock file:
    ``hubpin.Lock("serving/models.lock").load("bert")``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        lock_path = _find_lock(path)
        self._project = Project(lock_path.with_suffix(".toml"), lock_path)
        self.path = lock_path
        self.data: LockData = self._project.read_lock()
        manifest = self._project.manifest_path
        if manifest.exists():
            problems = differences(self.data, self._project.manifest, self._project.settings)
            if problems:
                raise StaleLockError(
                    f"{lock_path} is older than {manifest.name}: {'; '.join(problems)}; "
                    "run: hubpin lock && hubpin sync"
                )

    @property
    def cache_dir(self) -> str:
        return self._project.settings.cache_root

    def pin(self, alias: str) -> Pin:
        """The lock's entry for ``alias``; an unknown alias names the closest ones."""
        pin = self.data.models.get(alias)
        if pin is None:
            raise unknown_alias(
                f"alias {alias!r} is not pinned in {self.path}",
                alias,
                self.data.models,
                "add it to the manifest, then run: hubpin lock && hubpin sync",
            )
        return pin

    def resolve(self, alias: str, *, verify: bool = False) -> str:
        """The path ``tf.saved_model.load`` should read: cache entry, gs:// location or folder.

        The cache entry is checked against hubpin's record (every file present at
        its recorded size; with ``verify``, re-hashed) so a half-deleted model fails
        here, by name, rather than deep inside TensorFlow.
        """
        return resolve_pin(self._project, alias, self.pin(alias), verify)

    def load(
        self,
        alias: str,
        *,
        tags: list[str] | set[str] | None = None,
        options: tf.saved_model.LoadOptions | None = None,
        verify: bool = False,
    ) -> Any:
        """``hub.load`` on the pinned entry, with the pinned tags and io_device."""
        tf = _needs("tensorflow", "hubpin.load")
        pin = self.pin(alias)
        path = self.resolve(alias, verify=verify)
        options = options or _load_options(pin)
        if tags is None:
            tags = pin.tags
        # As tensorflow_hub.load: a TF1 Hub module loads with empty tags unless told otherwise.
        is_hub_module_v1 = handler(pin).has_file(pin, "tfhub_module.pb")
        if is_hub_module_v1 is None:
            is_hub_module_v1 = tf.io.gfile.exists(os.path.join(path, "tfhub_module.pb"))
        if tags is None and is_hub_module_v1:
            tags = []
        if options is not None:
            obj = tf.compat.v1.saved_model.load_v2(path, tags=tags, options=options)
        else:
            obj = tf.compat.v1.saved_model.load_v2(path, tags=tags)
        obj._is_hub_module_v1 = is_hub_module_v1
        return obj

    def KerasLayer(self, alias: str, **kwargs: Any) -> Any:
        """A ``tensorflow_hub.KerasLayer`` on the pinned entry."""
        hub = _needs("tensorflow_hub", "hubpin.KerasLayer")
        pin = self.pin(alias)
        path = self.resolve(alias)

        if pin.tags is not None:
            kwargs.setdefault("tags", pin.tags)
        if "load_options" not in kwargs and pin.io_device:
            kwargs["load_options"] = _load_options(pin)
        return hub.KerasLayer(path, **kwargs)

    def install(self, strict: bool = True) -> None:
        """Make tensorflow_hub resolve pinned handles through this lock, and KerasHub's
        ``from_preset`` load pinned presets from it (and, strictly, only those).

        KerasHub is hooked when it is installed, without importing it (a hook patches its
        preset loader when it is imported)."""
        registry = _needs("tensorflow_hub.registry", "hubpin.install")
        registry.resolver.add_implementation(_PinnedResolver(self, strict))
        try:
            keras_hub = importlib.util.find_spec("keras_hub") is not None
        except (ImportError, ValueError):  # a broken or half-installed package: not there
            keras_hub = False
        if keras_hub:
            _PinnedPresets(self, strict).install()


class _PinnedResolver:
    """A tensorflow_hub resolver: pinned handles → their checked paths; others refused when
    strict, a path or gs:// folder included unless it is where the lock put a pinned model
    (``hub.load(hubpin.resolve("bert"))``): any other is a model the lock does not pin."""

    def __init__(self, lock: Lock, strict: bool) -> None:
        self.lock = lock
        self.strict = strict
        self.by_handle = {
            handle: alias for alias, pin in lock.data.models.items() for handle in pin.handles()
        }
        self._by_place: dict[str, list[str]] | None = None

    def is_supported(self, handle: str) -> bool:
        return handle in self.by_handle or self.strict

    def __call__(self, handle: str) -> str:
        alias = self.by_handle.get(handle)
        if alias is None:
            if self._by_place is None:
                self._by_place = pinned_places(self.lock)
            alias = next(iter(self._by_place.get(_place(handle), [])), None)
        if alias is None:
            raise UnpinnedHandleError(
                f"handle {handle} is not pinned in {self.lock.path} and hubpin.install(strict=True) "
                "refuses to download or load it (a path too, unless it is where hubpin.resolve "
                f"put a pinned model); run: hubpin add ALIAS {handle} && hubpin sync"
            )
        return self.lock.resolve(alias)


def pinned_places(lock: Lock) -> dict[str, list[str]]:
    """Where each pinned model that is there now is read from (what ``hubpin.resolve``
    gives, checked) → the aliases read from there; asked once, for a handle or preset
    that is not a pinned one."""
    found: dict[str, list[str]] = {}
    for alias in sorted(lock.data.models):
        with contextlib.suppress(HubpinError):  # not there: no path of it to accept
            found.setdefault(_place(lock.resolve(alias)), []).append(alias)
    return found


def _place(handle: str) -> str:
    """A location as a path names it, for comparing: absolute and normalized, a URL as is."""
    if "://" in handle:
        return handle.rstrip("/")
    return os.path.normpath(os.path.abspath(handle))


_PRESET_UTILS = "keras_hub.src.utils.preset_utils"  # where keras_hub reads every preset file


class _PinnedPresets:
    """KerasHub's ``get_file(preset, path)``, which every ``from_preset`` reads through,
    answered from the lock: a built-in preset name (mapped as keras_hub maps it), a
    ``kaggle://`` or ``hf://`` preset the lock pins → that file in the pinned entry or
    snapshot, checked first (:meth:`Lock.resolve`) and only if the pin lists it (a
    snapshot may hold files no pin of this lock checked); one it does not pin is refused
    when strict, and so is a folder or other store (as ``hub.load`` of one) unless it is
    where ``hubpin.resolve`` put a pinned model (``from_preset(hubpin.resolve("bert"))``),
    answered then from that model's listed files; not strict, those go to keras_hub.

    keras_hub's modules import ``get_file`` by name, so it is replaced in the module that
    defines it before the others import it: now if keras_hub is loaded (and in every
    module of it that holds the original), else by an import hook when it is.
    """

    def __init__(self, lock: Lock, strict: bool) -> None:
        self.lock, self.strict = lock, strict
        project = lock._project
        self.by_preset: dict[str, list[str]] = {}  # preset → the aliases that claim it
        self._by_place: dict[str, list[str]] | None = None  # pinned_places, when first asked
        for alias, pin in sorted(lock.data.models.items()):
            for preset in handler(pin).presets(project, pin):
                self.by_preset.setdefault(preset, []).append(alias)

    def answer(self, named: str, preset: str, path: str) -> str | None:
        """The checked path of ``path`` in the model the lock pins as ``named`` (``preset``
        as the caller wrote it); None when the lock does not pin it.

        Raises PresetConflictError when aliases pinning other models claim ``named`` (a
        repository at two commits: ``hf://`` names no revision), FileNotFoundError (as
        keras_hub's own, which it takes for an absent optional file) for a file the pin
        does not list."""
        aliases = self.by_preset.get(named.rstrip("/"))
        if not aliases:
            return None
        return self._listed(aliases, named, preset, path)

    def _listed(self, aliases: list[str], named: str, preset: str, path: str) -> str:
        """:meth:`answer` for the models ``aliases`` pin."""
        project, models = self.lock._project, self.lock.data.models
        places = {alias: handler(models[alias]).where(project, models[alias]) for alias in aliases}
        if len(set(places.values())) > 1:
            pins = " and ".join(f"{a} ({models[a].describe()})" for a in aliases)
            raise PresetConflictError(
                f"preset {preset} names {len(aliases)} models pinned in {self.lock.path}: {pins}, "
                f"and keras_hub's {named.partition('://')[0]}:// preset names no version or "
                f"commit; load one by its folder: from_preset(hubpin.resolve({aliases[-1]!r})), "
                "or pin only one of them"
            )
        rel = posixpath.normpath(path.replace(os.sep, "/"))
        for alias in aliases:  # one model; each alias may pin other files of it
            listed = handler(models[alias]).files(project, models[alias])
            if listed is None or rel in listed:
                found = os.path.join(self.lock.resolve(alias), rel)
                if os.path.exists(found):
                    return found
        raise FileNotFoundError(
            f"`{path}` doesn't exist in preset directory `{preset}` (pinned as "
            f"{' and '.join(aliases)} in {self.lock.path}, which lists no such file)"
        )

    def install(self) -> None:
        module = sys.modules.get(_PRESET_UTILS)
        if module is None:
            sys.meta_path.insert(0, _PatchOnImport(_PRESET_UTILS, self.patch))
            return
        original = getattr(module, "get_file", None)
        self.patch(module)
        for name, other in list(sys.modules.items()):
            if name.startswith("keras_hub") and getattr(other, "get_file", None) is original:
                other.get_file = module.get_file

    def patch(self, module: ModuleType) -> None:
        original = module.get_file
        builtin = getattr(module, "BUILTIN_PRESETS", {})

        def get_file(preset: Any, path: str) -> Any:
            named = preset
            if isinstance(preset, str) and preset in builtin:
                named = builtin[preset]["kaggle_handle"]
            found = self.answer(named, preset, path) if isinstance(named, str) else None
            if found is not None:
                return found
            if not (self.strict and isinstance(named, str)):
                return original(preset, path)
            if _hub_preset(named, builtin, preset):
                raise UnpinnedHandleError(
                    f"preset {preset} is not pinned in {self.lock.path} and hubpin.install"
                    "(strict=True) refuses to download it; add it to models.toml (keras-hub:"
                    "<name>, kaggle:… or hf:…) and run: hubpin lock && hubpin sync"
                )
            if self._by_place is None:
                self._by_place = pinned_places(self.lock)
            aliases = self._by_place.get(_place(named))
            if aliases is None:  # a folder the lock does not pin: as hub.load of one
                raise UnpinnedHandleError(
                    f"preset {preset} is not pinned in {self.lock.path} and hubpin.install"
                    "(strict=True) refuses to load it (a folder too, unless it is where "
                    "hubpin.resolve put a pinned model); add it to models.toml and run: "
                    "hubpin lock && hubpin sync"
                )
            return self._listed(aliases, named, preset, path)

        module.get_file = get_file


def _hub_preset(named: str, builtin: dict[str, Any], preset: str) -> bool:
    """Whether keras_hub would download ``preset`` from a model hub (not read a folder)."""
    spec = scheme(named)
    return preset in builtin or (spec is not None and spec.remote and spec.storage is None)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Calls ``patch(module)`` right after ``name`` is first imported."""

    def __init__(self, name: str, patch: Any) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader, patch = spec.loader, self.patch

        class Patching(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)  # type: ignore[attr-defined]
                patch(module)

        spec.loader = Patching()
        return spec


def _load_options(pin: Pin) -> tf.saved_model.LoadOptions | None:
    if not pin.io_device:
        return None
    tf = _needs("tensorflow", "hubpin.load")
    return tf.saved_model.LoadOptions(experimental_io_device=pin.io_device)


_TF_PACKAGES = {"tensorflow", "tensorflow_hub", "tf_keras"}


def _needs(module: str, what: str) -> ModuleType:
    """Import a TensorFlow module for the runtime API, or say in one line what to install.

    The CLI and ``import hubpin`` work without TensorFlow, so a slim environment reaches this
    point; a bare ModuleNotFoundError would not say that hubpin's ``tf`` extra is the fix.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in _TF_PACKAGES:
            raise
        raise MissingDependencyError(
            f"{what} needs {missing}, which is not installed in {sys.executable}; "
            + install_hint("tf"),
            name=missing,
        ) from None


def _find_lock(path: str | os.PathLike[str] | None) -> Path:
    found = Path(path) if path is not None else find_lock()
    if found is None:
        raise LockMissingError(
            f"no {LOCK_FILE} in {Path.cwd()} or its parents and HUBPIN_LOCK is not set; "
            "run: hubpin lock (or pass the lock's path)"
        )
    if found.is_dir():  # HUBPIN_LOCK or the path given names the project's folder
        raise LockMissingError(
            f"{found}: a folder, not a lock file; name the file: {found / LOCK_FILE}"
        )
    if not found.is_file():
        raise LockMissingError(f"{found}: no lock file; run: hubpin lock")
    return found.absolute()


_default: tuple[tuple[object, ...], Lock] | None = None
_default_guard = threading.Lock()


def default_lock() -> Lock:
    """The lock found from HUBPIN_LOCK or the working directory, reread when a file changes."""
    global _default
    path = _find_lock(None)
    manifest, cache_dir = path.with_suffix(".toml"), os.environ.get("TFHUB_CACHE_DIR", "")
    stamp = (path, identity(path), identity(manifest), cache_dir)
    with _default_guard:
        if _default is None or _default[0] != stamp:
            _default = (stamp, Lock(path))
        return _default[1]


def load(
    alias: str,
    *,
    tags: list[str] | set[str] | None = None,
    options: tf.saved_model.LoadOptions | None = None,
    verify: bool = False,
) -> Any:
    """Load a pinned model by alias, like ``hub.load`` but strictly from the lock."""
    return default_lock().load(alias, tags=tags, options=options, verify=verify)


def resolve(alias: str, *, verify: bool = False) -> str:
    """The local path (COMPRESSED) or gs:// location (UNCOMPRESSED) of a pinned alias."""
    return default_lock().resolve(alias, verify=verify)


def KerasLayer(alias: str, **kwargs: Any) -> Any:
    """A ``hub.KerasLayer`` for a pinned alias."""
    return default_lock().KerasLayer(alias, **kwargs)


def install(strict: bool = True, lock: str | os.PathLike[str] | None = None) -> Lock:
    """Route tensorflow_hub's handle resolution through the lock; returns the Lock used."""
    chosen = Lock(lock) if lock is not None else default_lock()
    chosen.install(strict=strict)
    return chosen
