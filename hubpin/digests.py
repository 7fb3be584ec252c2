"""The tree digest: a model's identity, independent of how its archive was packed.

Canonical form, version 1 (``tree-v1:<sha256 hex>``): the sha256 of the text

    hubpin-tree-v1\\n
    d <path>\\n                       for every directory
    f <path> <size> <sha256>\\n       for every file

sorted by path (bytes of its UTF-8), paths relative and POSIX, every parent
directory of a file listed whether or not the archive had an entry for it, no
timestamps, modes or owners. Paths never hold control characters (unpack refuses
them), so the form is unambiguous. A repacked or recompressed archive with the
same files therefore has the same tree digest.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

TREE_VERSION = "tree-v1"
_CHUNK = 1 << 20


@dataclass
class Tree:
    """Files (path → size, sha256) and directories of an unpacked model.

    ``size`` is kept as files are added, not summed when asked: unpacking checks it
    before every member, and summing made an archive of n members cost n² steps.
    """

    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    size: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        self.size = sum(size for size, _ in self.files.values())

    def add_file(self, path: str, size: int, sha256: str) -> None:
        old = self.files.get(path)
        self.size += size - (old[0] if old else 0)
        self.files[path] = (size, sha256)
        self._add_parents(path)

    def add_dir(self, path: str) -> None:
        self.dirs.add(path)
        self._add_parents(path)

    def _add_parents(self, path: str) -> None:
        for parent in PurePosixPath(path).parents:
            name = str(parent)
            if name == "." or name in self.dirs:  # a known folder's parents are known too
                break
            self.dirs.add(name)

    @property
    def file_count(self) -> int:
        return len(self.files)

    def digest(self) -> str:
        lines = [f"d {d}" for d in self.dirs]
        lines += [f"f {p} {s} {h}" for p, (s, h) in self.files.items()]
        # By path, as UTF-8 bytes: str order is code-point order, which UTF-8 keeps (sorting by
        # the encoded bytes cost a fifth of reading a record)
        lines.sort(key=lambda line: line[2:])
        text = "\n".join([f"hubpin-{TREE_VERSION}", *lines]) + "\n"
        return f"{TREE_VERSION}:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, object]:
        return {
            "files": {p: [s, h] for p, (s, h) in sorted(self.files.items())},
            "dirs": sorted(self.dirs),
        }


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of one file, read in large chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def hash_tree(root: Path) -> Tree:
    """Hash a folder on disk; symlinks and special files are reported by path, not followed."""
    tree = Tree()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise OSError(f"{os.path.join(dirpath, name)} is a symlink")
            tree.add_dir(name if rel == "." else f"{rel}/{name}")
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                raise OSError(f"{full} is not a regular file")
            size, sha = sha256_file(Path(full))
            tree.add_file(name if rel == "." else f"{rel}/{name}", size, sha)
    return tree


def compare_trees(expected: Tree, found: Tree) -> list[str]:
    """Missing, extra and changed paths between two trees, one phrase each."""
    problems = [f"missing {p}" for p in sorted(set(expected.files) - set(found.files))]
    problems += [f"extra file {p}" for p in sorted(set(found.files) - set(expected.files))]
    problems += [
        f"changed {p}"
        for p in sorted(set(expected.files) & set(found.files))
        if expected.files[p] != found.files[p]
    ]
    problems += [f"missing folder {d}" for d in sorted(expected.dirs - found.dirs)]
    problems += [f"extra folder {d}" for d in sorted(found.dirs - expected.dirs)]
    return problems
