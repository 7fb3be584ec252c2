"""``hubpin image``: an OCI image whose filesystem is the ready cache, the same bytes every time.

One layer holds, under ``/models``::

    tfhub_modules/<sha1(handle)>/…            each entry, as tensorflow_hub reads it
    tfhub_modules/<key>.descriptor.txt        ``Module: <handle>`` (no time, host or pid)
    tfhub_modules/<key>.hubpin.json           hubpin's record of the verified tree
    kagglehub/models/<o>/<m>/<f>/<v>/<n>/…    a Kaggle model, as kagglehub reads it, with
    kagglehub/models/…/<n>.complete           its completion markers, whole and per file
    kagglehub/models/…/.complete/<n>/…        (the model's files are hard links, not copies)
    models.lock                               the lock it was made from

an image index offers that one layer for each platform in :data:`PLATFORMS`, and
the image's environment points the tools there (``TFHUB_CACHE_DIR``,
``KAGGLEHUB_CACHE``, ``HUBPIN_LOCK``). Reproducible: members in sorted order,
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
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from hubpin.cache import Cache, Record
from hubpin.cache.kagglehub import kagglehub_entry, kagglehub_file_markers, kagglehub_marker
from hubpin.errors import FetchError, HubpinError, IntegrityError, NotSyncedError
from hubpin.lockfile import Lock
from hubpin.oci.client import OCI_MANIFEST, RegistryClient
from hubpin.reader import HashingReader
from hubpin.storage.local import LocalStorage

if TYPE_CHECKING:
    from hubpin.transport import Transport

ROOT = "models"
TFHUB = f"{ROOT}/tfhub_modules"
KAGGLEHUB = f"{ROOT}/kagglehub"
LOCK = f"{ROOT}/models.lock"
ENV = [f"TFHUB_CACHE_DIR=/{TFHUB}", f"KAGGLEHUB_CACHE=/{KAGGLEHUB}", f"HUBPIN_LOCK=/{LOCK}"]
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
ALIASES = "dev.hubpin.aliases"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
PLATFORMS = ("amd64", "arm64", "ppc64le", "s390x")  # linux; see push_image


@dataclass(frozen=True)
class Member:
    """One tar member: a folder, a file (from disk or bytes) or a hard link to an earlier one."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    link: str | None = None
    expect: tuple[int, str] | None = None  # the record's (size, sha256) of a file from disk
    alias: str = ""


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
    for alias in aliases:
        pin = lock.models[alias]
        keyed = pin.keyed()
        if not keyed:
            continue  # not in tensorflow_hub's cache (read in place, or Hugging Face's)
        key = keyed[0][1]  # the pinned handle's entry; the others hold the same files
        record = cache.read_record(key)
        problems = cache.quick_check(key, pin.tree_digest)
        if record is None or problems:
            raise NotSyncedError(
                f"{alias} ({pin.handle}): the cache entry {cache.entry(key)} is not "
                f"ready ({'; '.join(problems) or 'no record'}); run: hubpin sync --locked"
            )
        plan.aliases.append(alias)
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
    plan.add(Member(LOCK, data=lock_text.encode("utf-8")))
    return plan


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
    elif member.data is not None:
        tar.addfile(_info(member.path, tarfile.REGTYPE, len(member.data)), _Bytes(member.data))
    elif member.source is None:
        tar.addfile(_info(member.path, tarfile.DIRTYPE, mode=0o755))
    else:
        assert member.expect is not None
        size, sha = member.expect
        try:
            download = LocalStorage(None).open(str(member.source))
            mode = 0o755 if member.source.stat().st_mode & 0o111 else 0o644
            reader = HashingReader.of(download, expected_size=size)
            tar.addfile(_info(member.path, tarfile.REGTYPE, size, mode), reader)
        except (OSError, FetchError) as exc:
            raise IntegrityError(
                f"{member.alias}: {member.source}: cannot read it ({exc}); "
                "run: hubpin verify --repair"
            ) from None
        found = reader.hexdigest()
        if (found, reader.size) != (sha, size):
            raise IntegrityError(
                f"{member.alias}: {member.source} changed since it was synced (sha256 {found}, "
                f"the record says {sha}); no image was written; run: hubpin verify --repair"
            )


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
        "config": {"Env": ENV, "Labels": {ALIASES: ",".join(aliases)}, "WorkingDir": f"/{ROOT}"},
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
