"""Which schemes hubpin knows and what a location of each may be: the one table.

Every other module asks :func:`scheme` (or :func:`scheme_of`) instead of comparing
scheme strings, so a new store is one :class:`Scheme` line here plus its back-end
module (see :mod:`hubpin.storage` for the interface it implements). Nothing here
imports anything of hubpin's, so handles, settings and the CLI can use it for free;
back-ends are named by ``"module:Class"`` and imported only when a location of
theirs is used.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    """What one scheme's locations can be used for, and which code serves them."""

    name: str  # "" for a plain path
    storage: str | None = None  # "module:Class" of its hubpin.storage.Storage back-end
    cache: str | None = None  # "module:Class" of the Cache kind for a cache_dir of this scheme
    local: bool = False  # names a file on this machine (a path, file://)
    web: bool = False  # http(s): fetched by the HTTP client, and by tensorflow_hub itself
    host: bool = False  # a model host read through hubpin's HTTP client (http(s), Kaggle's API)
    bundles: bool = False  # `hubpin bundle OUT` and `sync --from OUT` may name it
    huggingface: bool = False  # a Hugging Face repository, pinned per commit into HF's cache
    folders: bool = False  # a non-archive location is a SavedModel folder TensorFlow reads in place
    handles: bool = True  # may be a model handle (an archive, or a folder where ``folders``)
    example: str = ""  # the form of a location, for messages

    @property
    def remote(self) -> bool:
        return not self.local

    @property
    def prefix(self) -> str:
        """How its locations start (``gs://``, ``kaggle:``), for messages."""
        head, colon, rest = self.example.partition(":")
        return head + colon + ("//" if rest.startswith("//") else "") if colon else ""


_SCHEMES: dict[str, Scheme] = {}


def register(spec: Scheme) -> None:
    """Add (or replace) a scheme: the one registration a new back-end needs."""
    _SCHEMES[spec.name] = spec


for _name, _example in (("", "a path"), ("file", "file:///path")):
    register(
        Scheme(
            _name,
            storage="hubpin.storage.local:LocalStorage",
            cache="hubpin.cache.local:LocalCache",
            local=True,
            bundles=True,
            folders=True,
            example=_example,
        )
    )
register(Scheme("http", web=True, host=True, example="http://host/path"))
register(Scheme("https", web=True, host=True, example="https://host/path"))
register(Scheme("kaggle", host=True, example="kaggle:owner/model/framework/variation"))
register(Scheme("keras-hub", host=True, example="keras-hub:preset"))  # a Kaggle handle
register(Scheme("hf", huggingface=True, example="hf:org/repo"))
register(
    Scheme(
        "gs",
        storage="hubpin.storage.gcs:GcsStorage",
        cache="hubpin.cache.store:StoreCache",
        bundles=True,
        folders=True,
        example="gs://bucket/path",
    )
)


register(  # bundles only: archives as blobs by digest, the lock in the tag's manifest
    Scheme(
        "oci",
        storage="hubpin.storage.oci:OciStorage",
        bundles=True,
        handles=False,
        example="oci://registry/repository:tag",
    )
)
register(
    Scheme(
        "s3",
        storage="hubpin.storage.s3:S3Storage",
        cache="hubpin.cache.store:StoreCache",
        bundles=True,
        example="s3://bucket/path",
    )
)


@functools.lru_cache(maxsize=8192)
def split(location: str) -> urllib.parse.SplitResult:
    """``urllib.parse.urlsplit(location)``, kept for as many locations as a lock may hold: every
    check of a handle splits it, and urllib keeps 128 (a lock of 2,000 handles missed them all)."""
    return urllib.parse.urlsplit(location)


@functools.lru_cache(maxsize=8192)
def host_of(location: str) -> str:
    """``location``'s host name, lower-case ("" for none): :func:`split`'s ``hostname``, which
    parses the netloc again each time it is read (five times per handle in a first status)."""
    return (split(location).hostname or "").lower()


@functools.lru_cache(maxsize=8192)  # asked of each handle several times by every check
def scheme_of(location: str) -> str:
    """A location's scheme, lower-case; "" for a path (a Windows drive letter is a path)."""
    found = split(location).scheme.lower()
    return "" if _NO_SCHEME.fullmatch(found) else found


_NO_SCHEME = re.compile(r"[a-z]?")


def is_url(location: str) -> bool:
    """Whether a location has a scheme (``file:///x`` does, ``/x`` and ``C:\\x`` do not)."""
    return scheme_of(location) != ""


def scheme(location: str) -> Scheme | None:
    """The registered scheme of ``location``; None when hubpin knows no such scheme."""
    return _SCHEMES.get(scheme_of(location))


def known(predicate: str) -> list[Scheme]:
    """The registered schemes with attribute ``predicate`` true, for messages."""
    return [spec for spec in _SCHEMES.values() if getattr(spec, predicate)]


def load(target: str) -> type:
    """Import ``"module:Class"`` (a back-end is imported only when one of its locations is used)."""
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
