"""What sync, verify, status, resolve and prune do for a Hugging Face pin (``Kind.HUGGINGFACE``).

The pin's files go into Hugging Face's cache (:mod:`hubpin.cache.huggingface`), not
tensorflow_hub's, so these are the Hugging Face counterparts of the archive paths in
:mod:`hubpin.sync` and the CLI; each takes the pin and answers in the same terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from hubpin.cache.huggingface import HfCache, hf_cache_root
from hubpin.errors import FetchError, NotSyncedError
from hubpin.huggingface import HfApi, HfFile, HfPinned, endpoint, load_token, parse_hf
from hubpin.kinds import HfPin
from hubpin.plan import Action, Step
from hubpin.sources import Sources


def pinned(pin: HfPin) -> HfPinned:
    return pin.huggingface


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


def sync(
    pin: HfPin, sources: Sources, on_bytes: Callable[[int], None] | None = None
) -> tuple[str, str]:
    """Carry out a download or replace step of :func:`plan`: (status, detail) as
    :meth:`hubpin.sync.Syncer.execute` reports them. Blobs already there are re-hashed,
    not downloaded."""
    hf, where = pinned(pin), cache()
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

    count = where.fill(pin.handle, hf, fetch, on_bytes)
    detail = f"{count} of {len(hf.files)} files downloaded into {where.snapshot(hf)}"
    return ("fetched" if count else "adopted"), detail


def plan(alias: str, pin: HfPin, *, offline: bool, full_verify: bool) -> Step:
    """What sync will do for this pin (``sync --dry-run`` prints it); reads only."""
    hf, where = pinned(pin), cache()
    size = pin.unpacked_size
    problems = where.verify(hf) if full_verify else where.quick_check(hf)
    if not problems:
        return Step(alias, Action.KEEP, size, 0, f"present in {where.snapshot(hf)}", pin)
    if offline:
        refusal = f"{problems[0]}, and --offline forbids downloading"
        error = NotSyncedError(f"{refusal}; run: hubpin sync")
        return Step(alias, Action.FAIL, size, 0, refusal, pin, error=error)
    download = sum(f.size for f in hf.files if not where.blob(hf, f).exists())
    action = Action.DOWNLOAD if problems == ["not synced"] else Action.REPLACE
    why = f"{problems[0]}; from {endpoint()}/{hf.repo} at {hf.commit[:12]}"
    return Step(alias, action, size, download, why, pin, damage=tuple(problems))


def verify(pin: HfPin) -> list[str]:
    return cache().verify(pinned(pin))


def state(pin: HfPin) -> str:
    problems = cache().quick_check(pinned(pin))
    return "synced" if not problems else problems[0]


def where(pin: HfPin) -> str:
    """The snapshot folder (what ``hubpin.resolve`` and ``from_preset(<path>)`` take)."""
    return str(cache().snapshot(pinned(pin)))


def current_commit(pin: HfPin, sources: Sources) -> str:
    """What the pinned revision names on the Hub now (``outdated``, ``lock --upgrade``)."""
    handle = parse_hf(pin.handle)
    assert handle is not None
    return api(sources).resolve(handle)
