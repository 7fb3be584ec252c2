"""Open a location, whatever holds it: http(s) through urllib3, a Kaggle model version
through Kaggle's API, and a store (a file, gs://, s3://, an OCI registry's bundle, …)
through its back-end.

What a scheme is, and which back-end serves it, is :mod:`hubpin.storage.schemes`;
which locations to try for a pinned archive, and in what order, is :mod:`hubpin.sources`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from hubpin.kaggle.api import KaggleApi
from hubpin.kaggle.credentials import load_credentials
from hubpin.kaggle.endpoint import endpoint
from hubpin.kaggle.handle import parse_handle
from hubpin.settings import Settings
from hubpin.storage import Storage, scheme, scheme_of, storage_for

if TYPE_CHECKING:  # made on first use: a sync with nothing to fetch never imports them
    from hubpin.download import Download
    from hubpin.fetch import Fetcher


class Transport:
    """One per command: shares HTTP connection pools and each store's back-end across threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http: Fetcher | None = None
        self._http_lock = threading.Lock()
        self._kaggle: KaggleApi | None = None
        self._stores: dict[str, Storage] = {}
        self._stores_lock = threading.Lock()  # sync's jobs share one back-end (and its login)

    @property
    def http(self) -> Fetcher:
        """HTTP(S) for every host: one per command (its pools, and the hosts found down), made
        on first use, so a sync with nothing to fetch imports none of the download, checksum
        and unpack path (~10 ms of a no-op sync of 2,000 models)."""
        with self._http_lock:  # sync's jobs ask at once
            if self._http is None:
                from hubpin.fetch import Fetcher

                self._http = Fetcher(self.settings)
            return self._http

    @property
    def kaggle(self) -> KaggleApi:
        """Kaggle's API with the user's credentials (read once, only when a Kaggle model is used)."""
        if self._kaggle is None:
            where = endpoint(self.settings.kaggle_endpoint)
            self.http.add_host_hint(
                where,
                "that the host is up, or the API endpoint: kaggle_endpoint in hubpin.toml "
                "(HUBPIN_KAGGLE_ENDPOINT, KAGGLE_API_ENDPOINT)",
            )
            self._kaggle = KaggleApi(where, load_credentials(), self.http.request)
        return self._kaggle

    def open(self, location: str) -> Download:
        spec = scheme(location)
        if spec is not None and spec.web:
            return self.http.open(location)
        if spec is not None and spec.host:  # ``kaggle:o/m/f/v/N``: the API names a signed URL
            handle = parse_handle(location)
            assert handle is not None and handle.version is not None
            return self.http.open(self.kaggle.download_url(handle))
        return self.storage(location).open(location)

    def exists(self, location: str) -> bool:
        """Whether an object or file is there (asked of stores, never of model hosts)."""
        return self.storage(location).exists(location)

    def storage(self, location: str) -> Storage:
        """The back-end of a store location, one per scheme for this command."""
        name = scheme_of(location)
        with self._stores_lock:
            if name not in self._stores:
                self._stores[name] = storage_for(location, self.settings)
            return self._stores[name]

    def ask_location(self, url: str) -> str:
        """tfhub.dev's answer for an UNCOMPRESSED model: the gs:// folder it lives in."""
        return self.http.ask_location(url)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
