"""``hubpin image``: an OCI image whose filesystem is the ready cache, the same bytes every time.

One layer holds, under ``/models``::

    tfhub_modules/<sha1(handle)>/…            each entry, as tensorflow_hub reads it
    tfhub_modules/<key>.descriptor.txt        ``Module: <handle>`` (no time, host or pid)
    tfhub_modules/<key>.hubpin.json           hubpin's record of the verified tree
    kagglehub/models/<o>/<m>/<f>/<v>/<n>/…    a Kaggle model, as kagglehub reads it, with
    kagglehub/models/…/<n>.complete           its completion markers, whole and per file
    kagglehub/models/…/.complete/<n>/…        (the model's files are hard links, not copies)
    huggingface/models--<org>--<repo>/…       a Hugging Face repository as huggingface_hub
                                              reads it: blobs/, snapshots/<commit>/ of
                                              relative symlinks, refs/, hubpin/<commit>.json
    models.lock                               the lock it was made from

an image index offers that one layer for each platform in :data:`PLATFORMS`, and
the image's environment points the tools there (``TFHUB_CACHE_DIR``,
``KAGGLEHUB_CACHE``, ``HF_HUB_CACHE``, ``HUBPIN_LOCK``). What a kind of pin puts
there is its handler's (:meth:`hubpin.handlers.Handler.image`): a model read in place
from a gs:// folder needs nothing, a local folder is refused (its lock names a path
the image has not). Reproducible: members in sorted order,
every time 0 and owner 0:0, modes 0755/0644 (0755 for an executable file), the
same handle's extra keys as hard links, descriptors and records written from the
lock and the verified tree (never copied from disk, where tensorflow_hub's
descriptor names a time, a host and a pid), gzip with no name and time, config
without a creation date. The same lock and models give the same layer, config
and manifest digest on any machine with the same deflate (zlib 1.2.x and 1.3.x
agree; zlib-ng would not). Every file is hashed as it is packed and compared with
the entry's record, which must carry the lock's tree digest: a damaged cache
makes no image.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from hubpin.cache import Cache, Record
from hubpin.cache.kagglehub import kagglehub_entry, kagglehub_file_markers, kagglehub_marker
from hubpin.errors import HubpinError, IntegrityError, NotSyncedError
from hubpin.handlers import Handler, Placed, every, handler
from hubpin.lockfile import Lock
from hubpin.oci.client import OCI_MANIFEST, RegistryClient

if TYPE_CHECKING:
    from hubpin.kinds import Pin
    from hubpin.transport import Transport

ROOT = "models"
TFHUB = f"{ROOT}/tfhub_modules"
KAGGLEHUB = f"{ROOT}/kagglehub"
LOCK = f"{ROOT}/models.lock"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
ALIASES = "dev.hubpin.aliases"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
PLATFORMS = ("amd64", "arm64", "ppc64le", "s390x")  # linux; see push_image


Member = Placed  # one tar member


def environment() -> list[str]:
    """The image's variables: each tool's cache below ``/models``, and the lock."""
    own = [kind.image_cache for kind in every() if kind.image_cache is not None]
    caches = [f"{variable}=/{ROOT}/{folder}" for folder, variable in own]
    base = [f"TFHUB_CACHE_DIR=/{TFHUB}", f"KAGGLEHUB_CACHE=/{KAGGLEHUB}", f"HUBPIN_LOCK=/{LOCK}"]
    return sorted(base + caches)


@dataclass
class Plan:
    members: dict[str, Member] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    def add(self, member: Member) -> None:
        for parent in reversed(PurePosixPath(member.path).parents):
            if str(parent) != "." and str(parent) not in self.members:
                self.members[str(parent)] = Member(str(parent))
        self.members[member.path] = member


def plan_image(
    lock: Lock, lock_text: str, aliases: list[str], cache: Cache, endpoint: str | None
) -> Plan:
    """What the layer holds, from the lock and each entry's verified record."""
    if cache.local_root is None:
        raise HubpinError(
            f"{cache.location}: `hubpin image` packs a local cache; sync into a folder first "
            "(hubpin --cache-dir DIR sync --locked)"
        )
    plan = Plan()
    kinds: dict[type[Handler], tuple[Handler, dict[str, Pin]]] = {}
    for alias in aliases:
        pin = lock.models[alias]
        kind = handler(pin)
        kinds.setdefault(type(kind), (kind, {}))[1][alias] = pin
    held: set[str] = set()
    for kind, pins in kinds.values():
        placed = kind.image(pins)
        if placed is None:  # tensorflow_hub's cache (and kagglehub's), or read in place
            held |= {a for a, pin in pins.items() if _plan_tfhub(plan, a, pin, cache, endpoint)}
            continue
        assert kind.image_cache is not None
        below = f"{ROOT}/{kind.image_cache[0]}"
        for member in placed:
            plan.add(replace(member, path=f"{below}/{member.path}"))
        held |= set(pins)
    plan.aliases = [alias for alias in aliases if alias in held]
    plan.add(Member(LOCK, data=lock_text.encode("utf-8")))
    return plan


def _plan_tfhub(plan: Plan, alias: str, pin: Pin, cache: Cache, endpoint: str | None) -> bool:
    """A pin's tensorflow_hub entries (and its kagglehub version) into ``plan``; False for
    one read in place (a gs:// folder: the lock says where, the image needs nothing)."""
    assert cache.local_root is not None
    keyed = pin.keyed()
    if not keyed:
        return False
    key = keyed[0][1]  # the pinned handle's entry; the others hold the same files
    record = cache.read_record(key)
    problems = cache.quick_check(key, pin.tree_digest)
    if record is None or problems:
        raise NotSyncedError(
            f"{alias} ({pin.handle}): the cache entry {cache.entry(key)} is not "
            f"ready ({'; '.join(problems) or 'no record'}); run: hubpin sync --locked"
        )
    first_handle: dict[str, str] = {}  # each key the pin fills → the handle it is for
    for handle, filled in keyed:
        first_handle.setdefault(filled, handle)
    places = [(f"{TFHUB}/{filled}", handle) for filled, handle in first_handle.items()]
    kaggle = pin.kagglehub_version(endpoint)
    if kaggle is not None:
        places.append((kagglehub_entry(Path(KAGGLEHUB), kaggle).as_posix(), ""))
        plan.add(Member(kagglehub_marker(Path(KAGGLEHUB), kaggle).as_posix(), data=b""))
        markers = kagglehub_file_markers(Path(KAGGLEHUB), kaggle).as_posix()
        for rel in record.tree.files:  # model_download(handle, path) takes a file by these
            plan.add(Member(f"{markers}/{rel}.complete", data=b""))
    # The files once, where they sort first (a hard link must follow its target).
    first = min((where for where, _ in places), key=lambda p: p.encode("utf-8"))
    for where, handle in places:
        plan.add(Member(where))
        for rel in sorted(record.tree.dirs):
            plan.add(Member(f"{where}/{rel}"))
        for rel, expect in sorted(record.tree.files.items()):
            if where == first:
                source = cache.local_root / key / rel
                plan.add(Member(f"{where}/{rel}", source, expect=expect, alias=alias))
            else:
                plan.add(Member(f"{where}/{rel}", link=f"{first}/{rel}"))
        if handle:  # a tensorflow_hub entry: its descriptor and hubpin's record beside it
            plan.add(Member(f"{where}.descriptor.txt", data=f"Module: {handle}\n".encode()))
            own = Record(handle, pin.tree_digest, record.tree).to_json()
            plan.add(Member(f"{where}.hubpin.json", data=own.encode()))
    return True


class _Hashing:
    """A write-through file that counts and hashes what passes (a layer's digest, its diff_id)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


def _info(
    path: str, kind: bytes, size: int = 0, mode: int = 0o644, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.size, info.mode, info.linkname = kind, size, mode, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def write_layer(plan: Plan, out: IO[bytes]) -> tuple[str, str, int]:
    """Write the gzipped layer into ``out``: (digest, diff_id, size)."""
    compressed = _Hashing(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=6, mtime=0) as gz:
        raw = _Hashing(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path in sorted(plan.members, key=lambda p: p.encode("utf-8")):
                _add(tar, plan.members[path])
    return compressed.digest, raw.digest, compressed.size


def _add(tar: tarfile.TarFile, member: Member) -> None:
    if member.link is not None:
        tar.addfile(_info(member.path, tarfile.LNKTYPE, link=member.link))
    elif member.symlink is not None:
        tar.addfile(_info(member.path, tarfile.SYMTYPE, mode=0o777, link=member.symlink))
    elif member.data is not None:
        tar.addfile(_info(member.path, tarfile.REGTYPE, len(member.data)), _Bytes(member.data))
    elif member.source is None:
        tar.addfile(_info(member.path, tarfile.DIRTYPE, mode=0o755))
    else:
        _add_file(tar, member)


def _add_file(tar: tarfile.TarFile, member: Member) -> None:
    """A file from disk, hashed as it is packed: the layer holds exactly the bytes checked."""
    assert member.expect is not None and member.source is not None
    size, want = member.expect
    digest = hashlib.sha1(b"blob %d\0" % size) if member.git_blob else hashlib.sha256()
    try:
        with open(member.source, "rb") as fh:
            mode = 0o755 if os.fstat(fh.fileno()).st_mode & 0o111 else 0o644
            reader = _Checked(fh, digest, size)
            tar.addfile(_info(member.path, tarfile.REGTYPE, size, mode), reader)
            found = (digest.hexdigest(), reader.size + len(fh.read(1)))
    except OSError as exc:
        raise IntegrityError(
            f"{member.alias}: {member.source}: cannot read it ({exc}); run: hubpin verify --repair"
        ) from None
    if found != (want, size):
        kind = "git blob sha1" if member.git_blob else "sha256"
        raise IntegrityError(
            f"{member.alias}: {member.source} changed since it was synced ({kind} {found[0]}, "
            f"the record says {want}); no image was written; run: hubpin verify --repair"
        )


class _Checked:
    """A file's bytes for tarfile, hashed on the way, never past the size its header says."""

    def __init__(self, fh: IO[bytes], digest: Any, size: int) -> None:
        self.fh, self.digest, self.left, self.size = fh, digest, size, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(self.left if n < 0 else min(n, self.left))
        self.digest.update(chunk)
        self.left -= len(chunk)
        self.size += len(chunk)
        return chunk


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        chunk, self.at = self.data[self.at : end], min(end, len(self.data))
        return chunk


def image_config(diff_id: str, aliases: list[str], architecture: str) -> bytes:
    """The image config: no creation time, the tools' variables pointing into ``/models``."""
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": environment(),
            "Labels": {ALIASES: ",".join(aliases)},
            "WorkingDir": f"/{ROOT}",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    return json.dumps(config, indent=2, sort_keys=True).encode("utf-8")


def _json(data: object) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode("utf-8")


def _descriptor(media_type: str, body: bytes, **extra: object) -> dict[str, object]:
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    return {"mediaType": media_type, "digest": digest, "size": len(body), **extra}


def image_manifest(config: bytes, layer: tuple[str, int], aliases: list[str]) -> bytes:
    return _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(CONFIG_TYPE, config),
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer[0], "size": layer[1]}],
            "annotations": {ALIASES: ",".join(aliases)},
        }
    )


@dataclass(frozen=True)
class Pushed:
    digest: str  # the image index's: what a tag or an ``@sha256:`` reference names
    layer: str
    layer_size: int
    aliases: list[str]


def push_image(plan: Plan, registry: RegistryClient, tag: str) -> Pushed:
    """Write the layer to a temp file, push it, then a config and manifest per platform, and
    the index naming them last (the tag).

    The layer holds no executable for any machine, but containerd refuses an image whose
    config names another architecture than the node's ("no match for platform in
    manifest"), so one layer is offered for each platform in :data:`PLATFORMS`.
    """
    with tempfile.NamedTemporaryFile(prefix="hubpin-image-") as fh:
        digest, diff_id, size = write_layer(plan, fh)  # type: ignore[arg-type]
        fh.flush()
        registry.upload(digest, size, fh)  # type: ignore[arg-type]
    manifests = []
    for architecture in PLATFORMS:
        config = image_config(diff_id, plan.aliases, architecture)
        registry.upload(f"sha256:{hashlib.sha256(config).hexdigest()}", len(config), config)
        body = image_manifest(config, (digest, size), plan.aliases)
        registry.put_manifest(f"sha256:{hashlib.sha256(body).hexdigest()}", body)
        platform = {"architecture": architecture, "os": "linux"}
        manifests.append(_descriptor(OCI_MANIFEST, body, platform=platform))
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
            "annotations": {ALIASES: ",".join(plan.aliases)},
        }
    )
    return Pushed(registry.put_manifest(tag, index, OCI_INDEX), digest, size, plan.aliases)


def build_image(
    lock: Lock, aliases: list[str], out: str, cache: Cache, transport: Transport
) -> Pushed:
    """``hubpin image OUT``: plan the layer from the verified cache, pack it, push it."""
    from hubpin.lockfile import dumps
    from hubpin.oci.client import client
    from hubpin.oci.reference import parse

    ref = parse(out, need_tag=True)
    plan = plan_image(lock, dumps(lock), aliases, cache, transport.settings.kaggle_endpoint)
    assert ref.tag
    return push_image(plan, client(ref, transport.http, "pull,push"), ref.tag)
