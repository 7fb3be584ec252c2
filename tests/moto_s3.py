"""moto's S3 server on a loopback port, for the suite: the S3 REST protocol, in its own process.

It is reached the way users reach an S3-compatible store: ``AWS_ENDPOINT_URL_S3`` and
credentials in the environment (see the ``s3`` fixture). moto 5 honours what hubpin's
lock rests on: a second ``If-None-Match: *`` PUT answers 412, and so do a PUT and a
DELETE with an ``If-Match`` that is not the object's ETag (``test_s3_client`` proves it
first). It stores the ``x-amz-checksum-sha256`` an upload declares without checking it
against the bytes (real S3 answers ``BadDigest``), which lets a test plant a checksum
that lies. Every request is logged by werkzeug to the log file, one line each, which is
how tests count downloads and uploads.

Run as a script, it starts the server on port 0 and prints the port it was given.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

KEY_ID = "hubpin-test-key"
SECRET = "hubpin-test-secret-never-printed"


class MotoS3:
    """One moto server process; buckets are made per test so tests never see each other."""

    def __init__(self) -> None:
        self.url = ""
        self.log: Path | None = None
        self._process: subprocess.Popen[str] | None = None
        self._client: Any = None

    def start(self, log: Path, timeout: float = 60.0) -> MotoS3:
        self.log = log
        with open(log, "wb") as sink:
            self._process = subprocess.Popen(
                [sys.executable, __file__], stdout=subprocess.PIPE, stderr=sink, text=True
            )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.isdigit():
            self._process.kill()
            raise RuntimeError(f"moto's server did not start (see {log})")
        self.url = f"http://127.0.0.1:{line}"
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    @property
    def client(self) -> Any:
        """A botocore client of our own, pointed at this server whatever the environment says."""
        if self._client is None:
            import botocore.session
            from botocore.config import Config

            self._client = botocore.session.Session().create_client(
                "s3",
                region_name="us-east-1",
                endpoint_url=self.url,
                aws_access_key_id=KEY_ID,
                aws_secret_access_key=SECRET,
                config=Config(
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, url: str, data: bytes, **extra: Any) -> None:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def read(self, url: str) -> bytes:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def head(self, url: str) -> dict[str, Any]:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        return dict(self.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))

    def delete(self, url: str) -> None:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        self.client.delete_object(Bucket=bucket, Key=key)

    def listing(self, url: str) -> dict[str, dict[str, Any]]:
        """Objects below an s3:// prefix, by key relative to it, as ListObjectsV2 reports them."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        found: dict[str, dict[str, Any]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            found |= {item["Key"][len(prefix) :]: item for item in page.get("Contents", [])}
        return found

    def upload_folder(self, folder: Path, url: str) -> dict[str, bytes]:
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        for rel, data in files.items():
            self.put(f"{url.rstrip('/')}/{rel}", data)
        return files

    def requests(self, needle: str) -> list[str]:
        """Request lines logged so far containing ``needle``, URL-decoded, in the order they
        were answered, each as ``"METHOD /bucket/key?query HTTP/1.1" status``."""
        assert self.log is not None
        lines = (urllib.parse.unquote(line) for line in self.log.read_text().splitlines())
        return [line[line.index('"') :] for line in lines if '"' in line and needle in line]


def _serve() -> None:
    import threading

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    _serve()
