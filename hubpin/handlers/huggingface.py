"""A Hugging Face pin (``HfPin``): a repository at one commit, its files in Hugging Face's
own cache (:mod:`hubpin.cache.huggingface`), not tensorflow_hub's, where unmodified
huggingface_hub and KerasHub find them offline; ``hubpin.resolve`` gives the snapshot.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hubpin.cache import note_name
from hubpin.cache.huggingface import (
    HfCache,
    HfPinned,
    check_file,
    hf_cache_root,
    link_target,
    record_json,
    repo_folder,
    tree_json,
)
from hubpin.errors import (
    CacheError,
    DamagedEntryError,
    FetchError,
    HubpinError,
    InputError,
    IntegrityError,
    MissingError,
    NotSyncedError,
    write_error,
)
from hubpin.handlers import (
    SHA_NOTE,
    Bundled,
    Currency,
    Handler,
    PinRequest,
    Placed,
    Pruning,
    Removal,
    Run,
    Shared,
)
from hubpin.handles import Kind
from hubpin.huggingface import HfApi, HfFile, endpoint, load_token, parse_hf
from hubpin.kinds import HfPin, Pin
from hubpin.plan import Action, Outcome, Step

if TYPE_CHECKING:
    from hubpin.digests import Tree
    from hubpin.lockfile import Lock
    from hubpin.manifest import ModelSpec
    from hubpin.project import Project
    from hubpin.sources import Sources


BUNDLE_FILES = "huggingface"  # a bundle's folder of the files that are not in LFS, by blob id
BLOB_NOTE = "hubpin-git-blob"  # a store bundle's note of a file's verified git blob id


def cache() -> HfCache:
    return HfCache(hf_cache_root())


def api(sources: Sources) -> HfApi:
    """The Hub's API for this command (one per transport, so the token is read once)."""
    transport = sources.transport
    found = getattr(transport, "_huggingface", None)
    if found is None:
        found = HfApi(endpoint(), load_token(), transport.http)
        transport._huggingface = found  # type: ignore[attr-defined]
    return found


def _commits(lock: Lock) -> dict[str, set[str]]:
    """The commits a lock pins, by repository."""
    found: dict[str, set[str]] = {}
    for pin in lock.models.values():
        if isinstance(pin, HfPin):
            found.setdefault(pin.huggingface.repo, set()).add(pin.huggingface.commit)
    return found


def _claims(where: HfCache, repo: str, own: str, here: str, found: Pruning) -> dict[str, str]:
    """The commits of ``repo`` other projects' locks pin, each → which lock."""
    from hubpin.lockfile import read_lock

    claims: dict[str, str] = {}
    for name, note in where.notes(repo).items():
        lock, host, noted = note.get("lock"), note.get("host"), note.get("commits")
        if not (isinstance(lock, str) and isinstance(host, str) and isinstance(noted, list)):
            continue
        if lock == own and host == here:
            continue
        who = lock if host == here else f"{lock} on {host}"
        commits = {str(c) for c in noted}
        if host == here:
            if not Path(lock).is_file():
                found.forget.append(Removal(who, 0, lambda n=name: where.forget(repo, n)))
                continue
            with contextlib.suppress(HubpinError):  # unreadable: what it noted still counts
                commits = _commits(read_lock(Path(lock))).get(repo, set())
        claims |= {c: who for c in commits}
    return claims


@contextlib.contextmanager
def locked(where: HfCache, pin: HfPinned, timeout: float) -> Iterator[Path]:
    """Hold the snapshot's ``hubpin/<commit>.lock`` (:meth:`HfCache.lock_path`); yield the
    (not yet made) work folder ``hubpin/.<task>.tmp``, whose growth waiters take for
    progress. Here, not in :mod:`hubpin.cache.huggingface`, which the lock's storage
    would import back through the lock file's pins."""
    from hubpin.cache.lock import Place, hold
    from hubpin.storage.local import LocalStorage

    lock = where.lock_path(pin)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, lock.parent) from None
    place = Place(
        LocalStorage(None, CacheError),
        str(lock),
        str(lock),
        lambda task: f"{lock.parent / f'.{task}.tmp'}/",
    )
    with hold(place, timeout) as holding:
        yield lock.parent / f".{holding.task}.tmp"


def _wait_unlocked(where: HfCache, pin: HfPinned, timeout: float) -> None:
    """Return once no live process holds the snapshot's lock (a prune deciding whether to
    remove it), or after ``timeout`` (at most 30 s: a prune decides well within that)."""
    import time

    from hubpin.cache import holder_is_dead

    lock, deadline = where.lock_path(pin), time.monotonic() + min(timeout, 30.0)
    while time.monotonic() < deadline:
        try:
            holder = lock.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return
        if holder_is_dead(holder):
            return
        time.sleep(0.02)


def _remove_unclaimed(project: Project, where: HfCache, pinned: HfPinned) -> str | None:
    """Remove a snapshot prune planned to, holding its lock (as a sync filling it does), if
    no lock pins its commit now: the notes and this project's lock are read again under
    it, so a sync that noted its project since is seen (one noting after looks again once
    this lock is released, :meth:`HfHandler.gone`). Why it stays, else None."""
    from hubpin.lockfile import read_lock

    own, here = str(project.lock_path), socket.gethostname()
    with locked(where, pinned, project.settings.lock_timeout):
        with contextlib.suppress(HubpinError):  # unreadable: what the plan read stands
            if pinned.commit in _commits(read_lock(project.lock_path)).get(pinned.repo, set()):
                return f"pinned by {own}, rewritten while pruning"
        claims = _claims(where, pinned.repo, own, here, Pruning())
        if pinned.commit in claims:
            return f"pinned by {claims[pinned.commit]}"
        where.remove(pinned)
    return None


def _from_hub(sources: Sources, pin: HfPin, f: HfFile) -> Iterator[bytes]:
    """A pinned file's bytes from ``/resolve/<commit>/<path>`` (unchecked: the caller checks)."""
    hf, hub = pin.huggingface, api(sources)
    handle = parse_hf(pin.handle)
    assert handle is not None
    url = hub.file_url(hf.repo, hf.commit, f.path)
    try:
        download = sources.transport.http.open(url)
    except FetchError as exc:
        raise hub.explain(url, handle) or exc from None
    yield from download.chunks


def _bundle_name(f: HfFile) -> str:
    """Where a bundle keeps a file: by sha256 beside the archives when the lock has it (LFS
    files), else by its git blob id."""
    from hubpin.sources import ARCHIVES

    return f"{ARCHIVES}/{f.sha256}" if f.sha256 else f"{BUNDLE_FILES}/{f.blob_id}"


def _in_bundle(bundle: str, f: HfFile) -> str:
    return f"{bundle.rstrip('/')}/{_bundle_name(f)}"


def _not_in_bundle(bundle: str, f: HfFile) -> str:
    return (
        f"{bundle}: the bundle has no {_bundle_name(f)} ({f.path}); "
        f"make it again with: hubpin bundle {bundle}"
    )


def current_commit(pin: HfPin, sources: Sources) -> str:
    """What the pinned revision names on the Hub now (``outdated``, ``lock --upgrade``)."""
    handle = parse_hf(pin.handle)
    assert handle is not None
    return api(sources).resolve(handle)


class HfHandler(Handler):
    image_cache = ("huggingface", "HF_HUB_CACHE")
    repairs = True

    def plan(self, run: Run, alias: str, pin: HfPin, damage: list[str], shared: Shared) -> Step:
        """Reads only: the stat check (a re-hash with ``--verify``); from a bundle, whether
        it holds every file that is missing."""
        hf, where = pin.huggingface, cache()
        size = pin.unpacked_size
        problems = where.verify(hf) if run.full_verify else where.quick_check(hf)
        if not problems:
            return Step(alias, Action.KEEP, size, 0, f"present in {where.snapshot(hf)}", pin)
        missing = [f for f in hf.files if not where.blob(hf, f).exists()]
        if run.bundle is not None:
            exists = run.sources.transport.exists
            lacking = [f for f in missing if not exists(_in_bundle(run.bundle, f))]
            if lacking:
                error = FetchError(_not_in_bundle(run.bundle, lacking[0]))
                return Step(alias, Action.FAIL, size, 0, str(error), pin, error=error)
            origin = f"bundle {run.bundle}"
        elif run.offline:
            refusal = f"{problems[0]}, and --offline forbids downloading"
            error = NotSyncedError(f"{refusal}; run: hubpin sync")
            return Step(alias, Action.FAIL, size, 0, refusal, pin, error=error)
        else:
            origin = f"{endpoint()}/{hf.repo} at {hf.commit[:12]}"
        download = sum(f.size for f in missing)
        action = Action.DOWNLOAD if problems == ["not synced"] else Action.REPLACE
        return Step(
            alias,
            action,
            size,
            download,
            f"{problems[0]}; from {origin}",
            pin,
            damage=tuple(problems),
        )

    def execute(
        self, run: Run, step: Step, pin: HfPin, steps: dict[str, Step], done: dict[str, Outcome]
    ) -> tuple[str, str]:
        """Download each missing file from ``/resolve/<commit>/…`` (or read it from the
        bundle); blobs already there are re-hashed, not downloaded."""
        hf, where, sources, bundle = pin.huggingface, cache(), run.sources, run.bundle

        def fetch(f: HfFile) -> Iterator[bytes]:
            if bundle is None:
                yield from _from_hub(sources, pin, f)
                return
            try:
                download = sources.transport.open(_in_bundle(bundle, f))
            except MissingError:
                raise FetchError(_not_in_bundle(bundle, f)) from None
            yield from download.chunks

        with locked(where, hf, run.settings.lock_timeout) as work:  # no prune meanwhile
            count = where.fill(pin.handle, hf, fetch, run.on_bytes, run.cache.owner, work)
        detail = f"{count} of {len(hf.files)} files downloaded into {where.snapshot(hf)}"
        return ("fetched" if count else "adopted"), detail

    def verify(self, run: Run, alias: str, pin: HfPin) -> list[str]:
        return cache().verify(pin.huggingface)

    def state(self, project: Project, pin: HfPin) -> str:
        problems = cache().quick_check(pin.huggingface)
        return "synced" if not problems else problems[0]

    def where(self, project: Project, pin: HfPin) -> str:
        """The snapshot folder (what ``hubpin.resolve`` and ``from_preset(<path>)`` take)."""
        return str(cache().snapshot(pin.huggingface))

    def resolve(self, project: Project, alias: str, pin: HfPin, verify: bool) -> str:
        """The snapshot folder in HF_HUB_CACHE, checked as a cache entry is."""
        where, hf = cache(), pin.huggingface
        problems = where.verify(hf) if verify else where.quick_check(hf, revision_ref=False)
        if problems == ["not synced"]:
            raise NotSyncedError(
                f"{alias} ({pin.handle}) is not synced into {where.root}; run: hubpin sync"
            )
        if problems:
            raise DamagedEntryError(
                f"{alias}: snapshot {where.snapshot(hf)} is damaged: {'; '.join(problems[:5])}; "
                "run: hubpin verify --repair"
            )
        return str(where.snapshot(hf))

    def note_use(self, project: Project, lock: Lock) -> None:
        """Beside each repository's snapshots: this lock pins these commits of it."""
        where, host = cache(), socket.gethostname()
        name = note_name(project.lock_path, host)
        for repo, commits in _commits(lock).items():
            note = {"version": 1, "host": host, "lock": str(project.lock_path)}
            where.note_use(repo, name, note | {"commits": sorted(commits)})

    def gone(self, project: Project, pin: HfPin, timeout: float) -> str | None:
        """The snapshot, if it is not synced now, once no prune holds its lock."""
        where = cache()
        _wait_unlocked(where, pin.huggingface, timeout)
        if where.quick_check(pin.huggingface, revision_ref=False) == ["not synced"]:
            return str(where.snapshot(pin.huggingface))
        return None

    def prunable(self, project: Project, lock: Lock, all_unpinned: bool) -> Pruning:
        """Snapshots this project's syncs created (their record's ``created_by``) that its
        lock no longer pins and no other project's lock claims. Hugging Face's cache is
        the machine's: a snapshot another project created is removed only with
        ``all_unpinned`` (and none that hubpin did not record, ever). A lock on this host
        is read again for what it pins now; one that is gone claims nothing (its note is
        forgotten); one on another host claims what it noted."""
        from hubpin.huggingface import HfPinned

        where, here, own = cache(), socket.gethostname(), str(project.lock_path)
        mine = _commits(lock)
        found = Pruning()
        claims: dict[str, dict[str, str]] = {}  # repo → commit → who claims it
        for repo, record in where.records():
            commit = str(record.get("commit"))
            if commit in mine.get(repo, set()):
                continue
            if repo not in claims:
                claims[repo] = _claims(where, repo, own, here, found)
            label = f"{repo}@{commit[:12]}"
            creator = record.get("created_by")
            if commit in claims[repo]:
                found.kept[label] = f"pinned by {claims[repo][commit]}"
                continue
            if creator != own and not all_unpinned:
                found.kept[label] = (
                    f"created by {creator}" if creator else "created by another hubpin"
                )
                continue
            try:
                pinned = HfPinned.model_validate(
                    {k: record[k] for k in ("repo", "revision", "commit", "files")}
                    | {"complete": False}
                )
            except (KeyError, ValueError):
                found.kept[label] = "its record cannot be read"
                continue
            name = str(where.snapshot(pinned))
            remove = functools.partial(_remove_unclaimed, project, where, pinned)
            found.remove.append(Removal(name, where.freed_by(pinned), remove))
        return found

    def image(self, pins: dict[str, HfPin]) -> list[Placed]:
        """Hugging Face's cache layout for these pins, from this machine's, as huggingface_hub
        reads it: each blob once (hashed as it is packed), snapshots of relative links, the
        refs, a complete commit's tree file, and hubpin's record of each snapshot listing
        the files every alias of that commit pins (so each alias is synced there)."""
        where = cache()
        placed: list[Placed] = []
        snapshots: dict[tuple[str, str], list[tuple[str, HfPin]]] = {}
        refs: dict[tuple[str, str], tuple[str, str]] = {}  # (repo, revision) → (commit, alias)
        for alias, pin in sorted(pins.items()):
            hf = pin.huggingface
            problems = where.quick_check(hf)
            if problems:
                raise NotSyncedError(
                    f"{alias} ({pin.handle}): snapshot {where.snapshot(hf)} is not ready "
                    f"({'; '.join(problems[:3])}); run: hubpin sync --locked"
                )
            snapshots.setdefault((hf.repo, hf.commit), []).append((alias, pin))
            if hf.revision == hf.commit:
                continue
            other = refs.setdefault((hf.repo, hf.revision), (hf.commit, alias))
            if other[0] != hf.commit:
                raise InputError(
                    f"{other[1]} and {alias} pin {hf.repo}@{hf.revision} at other commits "
                    f"({other[0][:12]}, {hf.commit[:12]}), and an image's refs/{hf.revision} "
                    f"names one; run: hubpin lock --upgrade {other[1]} {alias}"
                )
            folder = repo_folder(Path(), hf.repo).as_posix()
            placed.append(Placed(f"{folder}/refs/{hf.revision}", data=hf.commit.encode()))
        for (repo, commit), pinned in snapshots.items():
            folder = repo_folder(Path(), repo).as_posix()
            files = {f.path: (alias, f) for alias, pin in pinned for f in pin.huggingface.files}
            for path, (alias, f) in sorted(files.items()):
                blob = where.blob(pinned[0][1].huggingface, f)
                expect = (f.size, f.sha256 or f.blob_id)
                placed.append(
                    Placed(
                        f"{folder}/blobs/{f.etag}",
                        blob,
                        expect=expect,
                        alias=alias,
                        git_blob=not f.sha256,
                    )
                )
                placed.append(Placed(f"{folder}/snapshots/{commit}/{path}", symlink=link_target(f)))
            first = pinned[0][1]
            complete = [pin for _, pin in pinned if pin.huggingface.complete]
            if complete:
                tree = tree_json(complete[0].huggingface.files)
                placed.append(Placed(f"{folder}/trees/{commit}.json", data=tree))
            own = record_json(first.handle, first.huggingface, [f for _, f in files.values()], "")
            placed.append(Placed(f"{folder}/hubpin/{commit}.json", data=own))
        return placed

    def bundled(self, pin: HfPin, sources: Sources) -> list[Bundled]:
        """Every pinned file, read from the Hub and checked against the lock as it is copied."""

        def copy(f: HfFile) -> Callable[[IO[bytes], Callable[[bytes], None] | None], None]:
            def into(fh: IO[bytes], also: Callable[[bytes], None] | None) -> None:
                def chunks() -> Iterator[bytes]:
                    for chunk in _from_hub(sources, pin, f):
                        fh.write(chunk)
                        if also is not None:
                            also(chunk)
                        yield chunk

                found = check_file(f, chunks())
                if found:
                    raise IntegrityError(
                        f"{pin.huggingface.repo}@{pin.huggingface.commit[:12]} {f.path}: {found}; "
                        "nothing was written"
                    )

            return into

        return [
            Bundled(
                _bundle_name(f),
                f.size,
                {SHA_NOTE: f.sha256} if f.sha256 else {BLOB_NOTE: f.blob_id},
                copy(f),
                f.sha256,
            )
            for f in pin.huggingface.files
        ]

    def files(self, project: Project, pin: HfPin) -> set[str]:
        """The pinned files only: a snapshot may hold more (other projects' pins of the
        commit, huggingface_hub's own downloads), which the lock did not check."""
        return {f.path for f in pin.huggingface.files}

    def presets(self, project: Project, pin: HfPin) -> list[str]:
        """``hf://<repo>`` (KerasHub follows ``main``; the lock says which commit that is)."""
        return [f"hf://{pin.huggingface.repo}"]

    def outdated(self, project: Project, alias: str, pin: HfPin, sources: Sources) -> Currency:
        """The commit the pinned revision (a branch that moves, or a tag) names now."""
        locked = pin.huggingface.commit
        row = Currency(locked=locked[:12])
        try:
            current = current_commit(pin, sources)
        except HubpinError as exc:
            row.state, row.note = "failed", str(exc)
            return row
        row.current = current[:12]
        if current == locked:
            row.state = "current"
        else:
            row.state = "behind"
            row.note = f"{pin.huggingface.revision} moved; run: hubpin lock --upgrade {alias}"
        return row

    def keeps(self, project: Project, pin: HfPin) -> dict[str, Any]:
        """The commit a moving revision was pinned at (unless the pin does not hold)."""
        if pin.derived_problems(project.root, project.settings):
            return {}
        return {"commit": pin.huggingface.commit}

    def upgrade(
        self, project: Project, spec: ModelSpec, pin: Pin | None, sources: Sources
    ) -> dict[str, Any] | None:
        """A revision (a branch) that names another commit now is pinned anew."""
        if not isinstance(pin, HfPin) or current_commit(pin, sources) == pin.huggingface.commit:
            return None
        return {}

    def pin(self, request: PinRequest) -> tuple[HfPin, Tree | None]:
        """The repository's commit and files, listed by the Hub's API; nothing is downloaded."""
        from hubpin.huggingface import pin_repo

        spec = request.spec
        pinned = pin_repo(
            spec.handle, spec.include, spec.exclude, api(request.sources), request.commit
        )
        made = HfPin(
            handle=spec.handle,
            format=request.format,
            kind=Kind.HUGGINGFACE,
            io_device=spec.io_device,
            tags=spec.tags,
            also=spec.also or None,
            include=spec.include,
            exclude=spec.exclude,
            location=f"hf://{pinned.repo}@{pinned.commit}",
            tree_digest=pinned.digest(),
            unpacked_size=sum(f.size for f in pinned.files),
            file_count=len(pinned.files),
            huggingface=pinned,
        )
        return made, None
