"""Where the Kaggle API is, as kagglehub and the Kaggle CLI find it, and the URL of each
of its calls (kagglesdk/kaggle_env.py, kagglesdk/kaggle_http_client.py)."""

from __future__ import annotations

import functools
import os
import urllib.parse
from collections.abc import Mapping

from hubpin.errors import InputError
from hubpin.handles import strip_query

DEFAULT_ENDPOINT = "https://api.kaggle.com"
# kagglesdk/kaggle_env.py:24-31 and 45-59: kagglehub 1.x reads KAGGLE_API_ENVIRONMENT
# (not KAGGLE_API_ENDPOINT, which only kagglehub 0.x read) and maps it to these.
_ENVIRONMENTS = {
    "PROD": "https://api.kaggle.com",
    "LOCALHOST": "http://localhost",
    "STAGING": "https://staging.kaggle.com",
    "ADMIN": "https://admin.kaggle.com",
    "QA": "https://qa.kaggle.com",
    "TEST": "http://localhost:7777",
}


def endpoint(settings_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The Kaggle API's base URL, without a trailing slash.

    Precedence: ``settings_value`` (the caller's resolution of ``--kaggle-endpoint``,
    ``HUBPIN_KAGGLE_ENDPOINT`` and ``kaggle_endpoint`` in hubpin.toml), then
    ``KAGGLE_API_ENDPOINT`` (kagglehub 0.x, the Kaggle CLI), then
    ``KAGGLE_API_ENVIRONMENT`` as kagglehub 1.x reads it (``TEST`` is
    ``http://localhost:7777``), else kagglehub 1.x's default, ``https://api.kaggle.com``.
    A trailing ``/api/v1`` (the Kaggle CLI's form) is dropped.
    """
    env = os.environ if environ is None else environ
    return _endpoint(
        settings_value, env.get("KAGGLE_API_ENDPOINT"), env.get("KAGGLE_API_ENVIRONMENT")
    )


@functools.lru_cache(maxsize=16)  # asked once per pin by every check: 2,000 times for 2,000
def _endpoint(settings_value: str | None, api_endpoint: str | None, name: str | None) -> str:
    """:func:`endpoint` of these values (InputError is raised again each time: a cache keeps
    only what returned)."""
    for value, origin in (
        (settings_value, "kaggle_endpoint"),
        (api_endpoint, "KAGGLE_API_ENDPOINT"),
    ):
        if value and value.strip():
            return _normal_endpoint(value.strip(), origin)
    if name:
        if name not in _ENVIRONMENTS:
            raise InputError(
                f"KAGGLE_API_ENVIRONMENT={name!r}: expected one of {', '.join(_ENVIRONMENTS)}"
            )
        return _ENVIRONMENTS[name]
    return DEFAULT_ENDPOINT


def _normal_endpoint(value: str, origin: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"{origin} = {strip_query(value)!r}: expected an http(s) URL such as {DEFAULT_ENDPOINT}"
        )
    if parts.query or parts.fragment or parts.password:
        raise InputError(f"{origin}: expected a plain base URL, without query or credentials")
    path = parts.path.rstrip("/")
    for suffix in ("/api/v1", "/v1"):
        path = path.removesuffix(suffix)
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def rpc_url(endpoint: str, service: str, method: str) -> str:
    """Where kagglesdk POSTs ``service/method`` (kagglesdk/kaggle_http_client.py:288-294).

    api.kaggle.com serves ``/v1/...``; every other host (www.kaggle.com as older
    kagglesdk used it, staging, a local server) serves ``/api/v1/...``.
    """
    host = (urllib.parse.urlsplit(endpoint).hostname or "").lower()
    base = endpoint if host == "api.kaggle.com" else f"{endpoint}/api"
    return f"{base}/v1/{service}/{method}"
