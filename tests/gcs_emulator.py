"""gcp-storage-emulator on a loopback port, for the suite: a real GCS JSON API server.

It runs in its own process (``python -m gcp_storage_emulator start --in-memory``)
so that its single-threaded HTTP server never competes with the tests for the
GIL, and is reached the way users reach one: through ``STORAGE_EMULATOR_HOST``.
The helpers below talk to it with ``gcsfs.core.GCSFileSystem`` (never the
experimental subclass, whose gRPC bucket probe stalls 60 s on an emulator).
"""

from __future__ import annotations

import os
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


class Emulator:
    """One emulator process; buckets are made per test so tests never see each other."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._fs: GCSFileSystem | None = None

    def start(self, log: Path, timeout: float = 30.0) -> Emulator:
        """Start it, its requests logged to ``log`` (read it when a test fails oddly)."""
        self.log = log
        command = ["gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(log, "wb") as sink:
            self._process = subprocess.Popen(
                [sys.executable, "-m", *command, "--in-memory"], stdout=sink, stderr=sink
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as response:
                    if response.read() == b"OK":
                        return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"gcp-storage-emulator did not start on {self.url}"
                    ) from None
                time.sleep(0.05)

    def requests(self, needle: str) -> list[str]:
        """The request lines the emulator logged so far that contain ``needle``, URL-decoded,
        in the order it answered them (it serves one request at a time)."""
        assert self.log is not None
        lines = (urllib.parse.unquote(line) for line in self.log.read_text().splitlines())
        return [line for line in lines if line.startswith('"') and needle in line]

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    @property
    def fs(self) -> GCSFileSystem:
        """A client of our own (needs STORAGE_EMULATOR_HOST set, as the fixture does)."""
        if self._fs is None:
            from gcsfs.core import GCSFileSystem

            assert os.environ.get("STORAGE_EMULATOR_HOST") == self.url
            self._fs = GCSFileSystem(
                token="anon", use_listings_cache=False, skip_instance_cache=True
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
