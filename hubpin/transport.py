"""Open a location, whatever holds it: http(s) through urllib3, gs:// through gcsfs, a
Kaggle model version through Kaggle's API, a file.

This is the only place that dispatches on a location's scheme; which locations
to try for a pinned archive, and in what order, is :mod:`hubpin.sources`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from hubpin.download import Download
from hubpin.fetch import Fetcher, open_file
from hubpin.handles import local_path, scheme_of
from hubpin.kaggle import KaggleApi, endpoint, load_credentials, parse_handle
from hubpin.settings import Settings

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

    @property
    def kaggle(self) -> KaggleApi:
        """Kaggle's API with the user's credentials (read once, only when a Kaggle model is used)."""
        if self._kaggle is None:
            where = endpoint(self.settings.kaggle_endpoint)
            self._kaggle = KaggleApi(where, load_credentials(), self.http.request)
        return self._kaggle

    def open(self, location: str) -> Download:
        scheme = scheme_of(location)
        if scheme in ("http", "https"):
            return self.http.open(location)
        if scheme == "kaggle":  # ``kaggle:o/m/f/v/N``: the API answers with a signed URL
            handle = parse_handle(location)
            assert handle is not None and handle.version is not None
            return self.http.open(self.kaggle.download_url(handle))
        if scheme == "gs":  # an object name has no query (a mirror may have kept one)
            from hubpin.gcs.client import open_object

            return open_object(location.partition("?")[0], self.settings)
        if scheme == "oci":  # ``oci://registry/repository@sha256:…``: one blob
            return self.registry(location).open_blob(_blob_digest(location))
        path = local_path(location, Path.cwd())
        assert path is not None
        return open_file(path)

    def exists(self, location: str) -> bool:
        """Whether a gs:// object or a local file is there (nothing else is asked this)."""
        if scheme_of(location) == "gs":
            from hubpin.gcs.client import errors, filesystem, split_url, stat

            with errors(location):
                return stat(filesystem(self.settings), *split_url(location)) is not None
        if scheme_of(location) == "oci":
            return self.registry(location).blob_size(_blob_digest(location)) is not None
        path = local_path(location, Path.cwd())
        assert path is not None, location
        return path.is_file()

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
