"""Bundles for air-gapped machines: the locked archives, named by sha256, plus the lock.

``hubpin bundle OUT`` writes::

    OUT/models.lock            the lock the archives belong to
    OUT/archives/<sha256>      each locked archive, verified against the lock

(or the same as a tar file when OUT ends in ``.tar``). On the machine without a
network, ``hubpin sync --from OUT`` reads archives from there; they are verified
against that machine's lock exactly as downloads are, so a bundle cannot change a model.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from hubpin.errors import IntegrityError, write_error
from hubpin.handles import Kind
from hubpin.lockfile import Lock, Pin, dumps
from hubpin.sources import ARCHIVES, Sources
from hubpin.unpack import HashingReader


def write_bundle(lock: Lock, aliases: list[str], out: Path, sources: Sources) -> list[str]:
    """Download each pinned archive once into ``out``, verified; return the aliases written."""
    as_tar = out.suffix == ".tar"
    folder = Path(tempfile.mkdtemp(prefix=".hubpin-bundle-", dir=out.parent)) if as_tar else out
    written = []
    try:
        (folder / ARCHIVES).mkdir(parents=True, exist_ok=True)
        for alias in aliases:
            pin = lock.models[alias]
            if pin.kind is not Kind.ARCHIVE or not pin.archive_sha256:
                continue
            target = folder / ARCHIVES / pin.archive_sha256
            if not target.is_file():
                _download(sources, pin, target)
            written.append(alias)
        (folder / "models.lock").write_text(dumps(lock), encoding="utf-8")
        if as_tar:
            tmp = out.with_name(f".{out.name}.tmp")
            with tarfile.open(tmp, "w") as tar:
                tar.add(folder, arcname=".")
            os.replace(tmp, out)
    except OSError as exc:
        raise write_error(exc, out) from None
    finally:
        if as_tar:
            shutil.rmtree(folder, ignore_errors=True)
    return written


def _download(sources: Sources, pin: Pin, target: Path) -> None:
    download = sources.open_pin(pin)
    reader = HashingReader.of(download, expected_size=pin.archive_size)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            while chunk := reader.read(1 << 20):
                fh.write(chunk)
        found = reader.hexdigest()  # raises for a corrupt download
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if found != pin.archive_sha256:
        tmp.unlink()
        raise IntegrityError(
            f"{download.final_url}: archive sha256 is {found}, the lock pins {pin.archive_sha256}; "
            "nothing was written. If the model changed upstream on purpose, run: hubpin lock"
        )
    os.replace(tmp, target)
