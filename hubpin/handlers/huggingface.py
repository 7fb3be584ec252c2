"""A Hugging Face pin (``HfPin``): a repository at one commit, its files in Hugging Face's
own cache (:mod:`hubpin.cache.huggingface`), not tensorflow_hub's, where unmodified
huggingface_hub and KerasHub find them offline; ``hubpin.resolve`` gives the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hubpin.cache.huggingface import HfCache, hf_cache_root
from hubpin.errors import DamagedEntryError, FetchError, HubpinError, NotSyncedError
from hubpin.handlers import Currency, Handler, PinRequest, Run, Shared
from hubpin.handles import Kind
from hubpin.huggingface import HfApi, HfFile, endpoint, load_token, parse_hf
from hubpin.kinds import HfPin, Pin
from hubpin.plan import Action, Outcome, Step

if TYPE_CHECKING:
    from hubpin.digests import Tree
    from hubpin.manifest import ModelSpec
    from hubpin.project import Project
    from hubpin.sources import Sources


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


def current_commit(pin: HfPin, sources: Sources) -> str:
    """What the pinned revision names on the Hub now (``outdated``, ``lock --upgrade``)."""
    handle = parse_hf(pin.handle)
    assert handle is not None
    return api(sources).resolve(handle)


class HfHandler(Handler):
    def plan(self, run: Run, alias: str, pin: HfPin, damage: list[str], shared: Shared) -> Step:
        """Reads only: the stat check (a re-hash with ``--verify``)."""
        hf, where = pin.huggingface, cache()
        size = pin.unpacked_size
        problems = where.verify(hf) if run.full_verify else where.quick_check(hf)
        if not problems:
            return Step(alias, Action.KEEP, size, 0, f"present in {where.snapshot(hf)}", pin)
        if run.offline or run.from_bundle:
            refusal = f"{problems[0]}, and --offline forbids downloading"
            error = NotSyncedError(f"{refusal}; run: hubpin sync")
            return Step(alias, Action.FAIL, size, 0, refusal, pin, error=error)
        download = sum(f.size for f in hf.files if not where.blob(hf, f).exists())
        action = Action.DOWNLOAD if problems == ["not synced"] else Action.REPLACE
        why = f"{problems[0]}; from {endpoint()}/{hf.repo} at {hf.commit[:12]}"
        return Step(alias, action, size, download, why, pin, damage=tuple(problems))

    def execute(
        self, run: Run, step: Step, pin: HfPin, steps: dict[str, Step], done: dict[str, Outcome]
    ) -> tuple[str, str]:
        """Download each missing file from ``/resolve/<commit>/…``; blobs already there are
        re-hashed, not downloaded."""
        hf, where, sources = pin.huggingface, cache(), run.sources
        hub = api(sources)
        handle = parse_hf(pin.handle)
        assert handle is not None

        def fetch(f: HfFile) -> Iterator[bytes]:
            url = hub.file_url(hf.repo, hf.commit, f.path)
            try:
                download = sources.transport.http.open(url)
            except FetchError as exc:
                raise hub.explain(url, handle) or exc from None
            yield from download.chunks

        count = where.fill(pin.handle, hf, fetch, run.on_bytes)
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
