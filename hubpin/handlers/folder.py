"""A local folder pin (``FolderPin``): read in place, pinned by tree digest; a sync checks
that it is there with the pinned number of files and bytes (re-hashes it with
``--verify``), ``hubpin.resolve`` gives the folder, checked the same way."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from hubpin.errors import (
    DamagedEntryError,
    FetchError,
    InputError,
    IntegrityError,
    MissingError,
    NotSyncedError,
)
from hubpin.handlers import Handler, PinRequest, Placed, Run, Shared
from hubpin.handles import Kind, relative_posix
from hubpin.kinds import FolderPin
from hubpin.plan import Action, Outcome, Step

if TYPE_CHECKING:
    from hubpin.digests import Tree
    from hubpin.project import Project


class FolderHandler(Handler):
    def plan(self, run: Run, alias: str, pin: FolderPin, damage: list[str], shared: Shared) -> Step:
        size = pin.unpacked_size
        folder = run.root / pin.location
        if not folder.is_dir():
            error = missing(pin, folder)  # the row names the alias already
            return Step(
                alias, Action.FAIL, size, 0, f"{folder}: folder not found", pin, error=error
            )
        other = None if run.full_verify else reshaped(pin, folder)  # --verify: re-hashed
        if other is not None:
            error = DamagedEntryError(other)
            return Step(alias, Action.FAIL, size, 0, other, pin, error=error)
        how = "re-hashed in place" if run.full_verify else "read in place"
        return Step(alias, Action.CHECK, size, 0, f"{folder}: local folder, {how}", pin)

    def execute(
        self,
        run: Run,
        step: Step,
        pin: FolderPin,
        steps: dict[str, Step],
        done: dict[str, Outcome],
    ) -> tuple[str, str]:
        from hubpin.digests import hash_tree

        folder = run.root / pin.location
        if not folder.is_dir():
            raise missing(pin, folder)
        if not run.full_verify:
            return "checked", f"{folder} exists"
        digest = hash_tree(folder).digest()
        if digest != pin.tree_digest:
            raise IntegrityError(
                f"{folder}: tree digest is {digest}, the lock pins {pin.tree_digest}; "
                "run: hubpin lock"
            )
        return "checked", f"{folder} matches the lock"

    def state(self, project: Project, pin: FolderPin) -> str:
        folder = pin.folder(project.root)
        if not folder.is_dir():
            return "folder missing"
        return reshaped(pin, folder) or "local folder"

    def where(self, project: Project, pin: FolderPin) -> str:
        return str(pin.folder(project.root))

    def resolve(self, project: Project, alias: str, pin: FolderPin, verify: bool) -> str:
        folder = pin.folder(project.root)
        if not folder.is_dir():
            raise missing(pin, folder, alias)
        if verify:  # read in place, so verify means re-hash it, as for a cache entry
            _check_folder(alias, folder, pin.tree_digest)
        elif (other := reshaped(pin, folder)) is not None:
            raise DamagedEntryError(f"{alias}: {other}")
        return str(folder)

    def image(self, pins: dict[str, FolderPin]) -> list[Placed]:
        """Refused: the lock names the folder by its path on this machine, read in place,
        which a container mounting the image at any path does not have; copied into the
        image, it would be a model the image's lock does not say where to find."""
        alias, pin = min(pins.items())
        raise InputError(
            f"{alias} ({pin.handle}): a local folder is read in place, and an image holds only "
            "caches (tensorflow_hub's, kagglehub's, Hugging Face's), so its lock would name a "
            f"folder the image has not; pin an archive of it instead (tar -czf {alias}.tar.gz "
            f'-C {pin.location} . and handle = "{alias}.tar.gz"), or name the aliases to put '
            "in the image: hubpin image OUT ALIAS..."
        )

    def pin(self, request: PinRequest) -> tuple[FolderPin, Tree | None]:
        from hubpin.digests import hash_tree

        folder = Path(request.source.location)
        if not folder.is_dir():
            raise MissingError(f"{folder}: folder not found (a path handle is read in place)")
        try:
            tree = hash_tree(folder)
        except OSError as exc:
            raise FetchError(f"{folder}: {exc}") from None
        made = FolderPin(
            **request.common(),
            kind=Kind.FOLDER,
            location=relative_posix(folder, request.root),
            tree_digest=tree.digest(),
            unpacked_size=tree.size,
            file_count=tree.file_count,
        )
        return made, None


def missing(pin: FolderPin, folder: Path, alias: str | None = None) -> NotSyncedError:
    """A pinned folder that is not there: sync cannot fetch it (it is read in place), so say
    what the lock expects and the two ways out. ``alias`` names the model where nothing else
    does (``hubpin resolve``); a sync or verify row starts with it already."""
    what = "a file" if folder.exists() else "nothing"
    files = f"{pin.file_count} file{'' if pin.file_count == 1 else 's'}"
    return NotSyncedError(
        f"{f'{alias} ({pin.handle}): ' if alias else ''}the lock pins the local folder {folder} "
        f"({files}, tree {pin.tree_digest}), found {what} there; put the folder back, or point "
        "the handle in the manifest at where it is now and run: hubpin lock"
    )


def reshaped(pin: FolderPin, folder: Path) -> str | None:
    """How the folder differs from the pinned tree by stat alone (its files' number and
    total size, as a cache entry's sizes are checked; ``verify`` re-hashes it); None when
    it does not. A folder is the user's, read in place: a model written over it (another
    one, a retrained one of another shape) is not the one the lock pins."""
    count = size = 0
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError as exc:
                return f"pinned folder {folder} cannot be read ({exc}); fix it, or run: hubpin lock"
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):  # a link, a device
                return (
                    f"pinned folder {folder} holds {path}, which is not a file or folder; "
                    "put the pinned files back, or run: hubpin lock"
                )
            if stat.S_ISREG(st.st_mode):
                count, size = count + 1, size + st.st_size
    if (count, size) == (pin.file_count, pin.unpacked_size):
        return None
    return (
        f"pinned folder {folder} holds {count} files of {size} bytes, the lock pins "
        f"{pin.file_count} of {pin.unpacked_size} bytes (tree {pin.tree_digest}); put the "
        "pinned files back, or if the change is intended run: hubpin lock"
    )


def _check_folder(alias: str, folder: Path, tree_digest: str) -> None:
    from hubpin.digests import hash_tree

    try:
        found = hash_tree(folder).digest()
    except OSError as exc:
        raise DamagedEntryError(
            f"{alias}: pinned folder {folder} cannot be read: {exc}; fix it, or run: hubpin lock"
        ) from None
    if found != tree_digest:
        raise DamagedEntryError(
            f"{alias}: pinned folder {folder} holds {found}, the lock pins {tree_digest}; "
            "put the pinned files back, or if the change is intended run: hubpin lock"
        )
