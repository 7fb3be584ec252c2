"""Open a location, whatever holds it: http(s) through urllib3, a Kaggle model version
through Kaggle's API, and a store (a file, gs://, …) through its back-end.

What a scheme is, and which back-end serves it, is :mod:`hubpin.storage.schemes`;
which locations to try for a pinned archive, and in what order, is :mod:`hubpin.sources`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from hubpin.download import Download
from hubpin.fetch import Fetcher
from hubpin.kaggle import KaggleApi, endpoint, load_credentials, parse_handle
from hubpin.settings import Settings
from hubpin.storage import Storage, scheme, scheme_of, storage_for

if TYPE_CHECKING:
    from hubpin.oci.artifact import Artifact
    from hubpin.oci.client import RegistryClient


class Transport:
    """One per command: shares HTTP connection pools and the GCS client across threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = Fetcher(settings)
        self._kaggle: KaggleApi | None = None
        self._registries: dict[tuple[str, str, str], RegistryClient] = {}
        self._artifacts: dict[str, Artifact] = {}
        self._oci_lock = threading.Lock()
        self._stores: dict[str, Storage] = {}

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
        if spec is not None and spec.registry:  # ``oci://registry/repository@sha256:…``: a blob
            return self.registry(location).open_blob(_blob_digest(location))
        return self.storage(location).open(location)

    def exists(self, location: str) -> bool:
        """Whether an object or file is there (asked of stores, never of model hosts)."""
        spec = scheme(location)
        if spec is not None and spec.registry:
            return self.registry(location).blob_size(_blob_digest(location)) is not None
        return self.storage(location).exists(location)

    def storage(self, location: str) -> Storage:
        """The back-end of a store location, one per scheme for this command."""
        name = scheme_of(location)
        if name not in self._stores:
            self._stores[name] = storage_for(location, self.settings)
        return self._stores[name]

    def registry(self, location: str, actions: str = "pull") -> RegistryClient:
        """A connected client for the repository of an ``oci://`` location, one per command."""
        from hubpin.oci.client import client
        from hubpin.oci.reference import parse

        ref = parse(location)
        key = (ref.registry, ref.repository, actions)
        with self._oci_lock:  # sync's jobs share one login
            if key not in self._registries:
                self._registries[key] = client(ref, self.http, actions)
            return self._registries[key]

    def artifact(self, location: str) -> Artifact:
        """The hubpin bundle artifact an ``oci://…:tag`` or ``…@sha256:…`` names, read once."""
        from hubpin.oci.artifact import read_artifact
        from hubpin.oci.reference import parse

        if location not in self._artifacts:
            self._artifacts[location] = read_artifact(parse(location), self.registry(location))
        return self._artifacts[location]

    def ask_location(self, url: str) -> str:
        """tfhub.dev's answer for an UNCOMPRESSED model: the gs:// folder it lives in."""
        return self.http.ask_location(url)

    def close(self) -> None:
        self.http.close()


def _blob_digest(location: str) -> str:
    from hubpin.oci.reference import parse

    digest = parse(location).digest
    assert digest is not None, location
    return digest
