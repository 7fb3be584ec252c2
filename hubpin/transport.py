"""Open a location, whatever holds it: http(s) through urllib3, gs:// through gcsfs, a
Kaggle model version through Kaggle's API, a file.

This is the only place that dispatches on a location's scheme; which locations
to try for a pinned archive, and in what order, is :mod:`hubpin.sources`.
"""

from __future__ import annotations

from pathlib import Path

from hubpin.download import Download
from hubpin.fetch import Fetcher, open_file
from hubpin.handles import local_path, scheme_of
from hubpin.kaggle import KaggleApi, endpoint, load_credentials, parse_handle
from hubpin.settings import Settings


class Transport:
    """One per command: shares HTTP connection pools and the GCS client across threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = Fetcher(settings)
        self._kaggle: KaggleApi | None = None

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
        path = local_path(location, Path.cwd())
        assert path is not None
        return open_file(path)

    def exists(self, location: str) -> bool:
        """Whether a gs:// object or a local file is there (nothing else is asked this)."""
        if scheme_of(location) == "gs":
            from hubpin.gcs.client import errors, filesystem, split_url, stat

            with errors(location):
                return stat(filesystem(self.settings), *split_url(location)) is not None
        path = local_path(location, Path.cwd())
        assert path is not None, location
        return path.is_file()

    def ask_location(self, url: str) -> str:
        """tfhub.dev's answer for an UNCOMPRESSED model: the gs:// folder it lives in."""
        return self.http.ask_location(url)

    def close(self) -> None:
        self.http.close()
