"""GCS emulators on loopback ports, for the suite: real GCS JSON API servers.

:class:`GcsServer` holds what the tests do with either (buckets, uploads,
listings, the request log); :class:`Emulator` is gcp-storage-emulator, and
``fake_gcs.FakeGcsServer`` is fake-gcs-server. Each runs in its own process and is
reached the way users reach one: through ``STORAGE_EMULATOR_HOST``. The helpers
talk to it with ``gcsfs.core.GCSFileSystem`` (never the experimental subclass,
whose gRPC bucket probe stalls 60 s on an emulator).

What each enforces differs, and the tests ask (``enforces_preconditions``):
gcp-storage-emulator ignores ``ifGenerationMatch`` everywhere; fake-gcs-server
(1.54) answers 412 to it on multipart uploads, the kind hubpin sends for its lock
and record, and ignores it on DELETE, rewrites and media/resumable uploads.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gcsfs.core import GCSFileSystem


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GcsServer:
    """One emulator process; buckets are made per test so tests never see each other."""

    name = ""
    enforces_preconditions = False  # answers 412 to ifGenerationMatch on hubpin's writes

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._fs: GCSFileSystem | None = None

    def __repr__(self) -> str:
        return self.name

    def requests(self, needle: str) -> list[str]:
        """The request lines logged so far that contain ``needle``, URL-decoded, in the
        order they were answered, each as ``"METHOD /path?query HTTP/1.1" status``."""
        raise NotImplementedError

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def _wait_until_up(self, probe: str, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + probe, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start on {self.url}") from None
                time.sleep(0.05)

    @property
    def fs(self) -> GCSFileSystem:
        """A client of our own, pointed at this server whatever STORAGE_EMULATOR_HOST says."""
        if self._fs is None:
            from gcsfs.core import GCSFileSystem

            self._fs = GCSFileSystem(
                token="anon",
                endpoint_url=self.url,
                use_listings_cache=False,
                skip_instance_cache=True,
            )
        return self._fs

    def bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.fs.mkdir(name)
        return name

    def put(self, url: str, data: bytes) -> None:
        self.fs.pipe_file(url.removeprefix("gs://"), data)

    def upload_folder(self, folder: Path, url: str, markers: bool = False) -> dict[str, bytes]:
        """Upload every file below ``folder``; return relative path → bytes.

        With ``markers``, empty folders become ``name/`` objects, as ``tf.io.gfile``
        (and so tensorflow_hub) writes them.
        """
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        for rel, data in files.items():
            self.put(f"{url.rstrip('/')}/{rel}", data)
        for path in folder.rglob("*"):
            if markers and path.is_dir() and not any(path.iterdir()):
                self.put(f"{url.rstrip('/')}/{path.relative_to(folder).as_posix()}/", b"")
        return files

    def listing(self, url: str) -> dict[str, dict[str, Any]]:
        """Objects below a gs:// prefix, by name relative to it, as the JSON API reports them."""
        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        found: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            page = self.fs.call(
                "GET", "b/{}/o", bucket, prefix=prefix or None, pageToken=token, json_out=True
            )
            found |= {item["name"][len(prefix) :]: item for item in page.get("items", [])}
            token = page.get("nextPageToken")
            if not token:
                return found

    def read(self, url: str) -> bytes:
        return bytes(self.fs.cat_file(url.removeprefix("gs://")))

    def delete(self, url: str) -> None:
        self.fs.rm_file(url.removeprefix("gs://"))


class Emulator(GcsServer):
    """gcp-storage-emulator (``python -m gcp_storage_emulator start --in-memory``), in its
    own process so that its single-threaded HTTP server never competes with the tests
    for the GIL. It ignores every precondition."""

    name = "gcp-storage-emulator"

    def start(self, log: Path, timeout: float = 30.0) -> Emulator:
        """Start it, its requests logged to ``log`` (read it when a test fails oddly)."""
        self.log = log
        command = ["gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(log, "wb") as sink:
            self._process = subprocess.Popen(
                [sys.executable, "-m", *command, "--in-memory"], stdout=sink, stderr=sink
            )
        self._wait_until_up("/", timeout)
        return self

    def requests(self, needle: str) -> list[str]:
        assert self.log is not None
        lines = (urllib.parse.unquote(line) for line in self.log.read_text().splitlines())
        return [line for line in lines if line.startswith('"') and needle in line]
