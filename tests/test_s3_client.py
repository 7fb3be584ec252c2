"""hubpin's S3 client against moto's server (and loopback servers that deny, stall or are
gone): the conditional writes the lock rests on, checksums both ways, credentials and
endpoint as AWS tools find them, one-line errors, hubpin's retries and timeouts."""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
from gcs_emulator import _free_port
from moto_s3 import SECRET, MotoS3

from hubpin.errors import FetchError, IntegrityError, SettingsError
from hubpin.reader import HashingReader
from hubpin.s3 import client as s3client
from hubpin.s3.client import client, errors, open_object
from hubpin.settings import Settings

pytestmark = pytest.mark.s3


def _read_all(url: str, settings: Settings) -> bytes:
    download = open_object(url, settings)
    reader = HashingReader.of(download)
    data = reader.read()
    reader.hexdigest()  # raises unless the bytes are what the object declares
    return data


def test_moto_enforces_the_conditional_writes_the_lock_rests_on(s3: MotoS3) -> None:
    bucket = s3.bucket()
    c = client(Settings())
    first = c.put(bucket, "k.lock", b"host.1.aaaa", if_absent=True)
    with pytest.raises(FileExistsError):
        c.put(bucket, "k.lock", b"host.2.bbbb", if_absent=True)
    with pytest.raises(FileExistsError):
        c.put(bucket, "k.lock", b"host.2.bbbb", if_match='"0123456789abcdef0123456789abcdef"')
    second = c.put(bucket, "k.lock", b"host.1.aaaa lease 1", if_match=first.etag)
    assert second.etag != first.etag
    with pytest.raises(FileExistsError):  # the ETag it replaced no longer holds
        c.put(bucket, "k.lock", b"host.2.bbbb", if_match=first.etag)
    with pytest.raises(FileExistsError):
        c.delete(bucket, "k.lock", if_match=first.etag)
    assert s3.read(f"s3://{bucket}/k.lock") == b"host.1.aaaa lease 1"  # a refused delete kept it
    assert c.delete(bucket, "k.lock", if_match=second.etag)
    assert c.head(bucket, "k.lock") is None


def test_uploads_carry_the_sha256_and_downloads_are_checked_against_it(
    s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket()
    data = bytes(range(256)) * 40
    c = client(Settings())
    c.put(bucket, "a.tar.gz", data)
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert s3.head(f"s3://{bucket}/a.tar.gz")["ChecksumSHA256"] == sha
    monkeypatch.setattr(s3client, "BLOCK", 1000)  # several ranged GETs, each If-Match the ETag
    assert _read_all(f"s3://{bucket}/a.tar.gz", Settings()) == data

    # A checksum that lies about the bytes (moto stores it unchecked, as a damaged store might)
    lie = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    s3.put(f"s3://{bucket}/b.tar.gz", data, ChecksumAlgorithm="SHA256", ChecksumSHA256=lie)
    with pytest.raises(IntegrityError) as caught:
        _read_all(f"s3://{bucket}/b.tar.gz", Settings())
    message = str(caught.value)
    assert f"s3://{bucket}/b.tar.gz: corrupt download" in message
    assert f"sha256={lie}" in message and f"sha256={sha}" in message
    assert "x-amz-checksum" in message and "\n" not in message


def test_an_object_replaced_while_it_is_read_fails_instead_of_mixing_versions(
    s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/a.tar.gz"
    s3.put(url, b"1" * 3000)
    monkeypatch.setattr(s3client, "BLOCK", 1000)
    chunks = open_object(url, Settings()).chunks
    assert next(chunks) == b"1" * 1000
    s3.put(url, b"2" * 3000)
    with pytest.raises(FetchError, match=r"a\.tar\.gz: not found"):
        next(chunks)


def test_endpoint_and_credentials_from_a_profile_and_hubpin_toml_settings(
    s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/x", b"x")
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    config = tmp_path / "config"
    config.write_text(f"[profile fleet]\nregion = eu-west-1\nendpoint_url = {s3.url}\n")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[fleet]\naws_access_key_id = k\naws_secret_access_key = {SECRET}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    assert client(Settings(s3_profile="fleet")).head(bucket, "x") is not None
    monkeypatch.setenv("AWS_PROFILE", "fleet")  # as the AWS CLI reads it
    assert client(Settings()).head(bucket, "x") is not None

    # hubpin.toml's endpoint wins over the profile's (said for hubpin alone)
    dead = f"http://127.0.0.1:{_free_port()}"
    with (
        pytest.raises(FetchError, match="cannot reach the S3 endpoint " + dead),
        errors(f"s3://{bucket}/x"),
    ):
        client(Settings(s3_endpoint=dead, retries=0)).head(bucket, "x")

    with pytest.raises(SettingsError) as caught, errors(f"s3://{bucket}/x"):
        client(Settings(s3_profile="nope")).head(bucket, "x")
    assert "nope" in str(caught.value) and "s3_profile" in str(caught.value)


def test_no_credentials_and_denied_access_are_one_line_naming_what_to_check(
    s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(SettingsError) as caught, errors(f"s3://{bucket}/x"):
        client(Settings()).head(bucket, "x")
    message = str(caught.value)
    assert message.startswith(f"s3://{bucket}/x: Unable to locate credentials")
    assert "AWS_PROFILE" in message and "s3_anonymous" in message and "\n" not in message
    # anonymous (unsigned) requests need no credentials at all, for a public object
    s3.put(f"s3://{bucket}/x", b"x", ACL="public-read")
    assert client(Settings(s3_anonymous=True)).head(bucket, "x") is not None

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with _denying_server() as url, pytest.raises(FetchError) as caught, errors(f"s3://{bucket}/x"):
        client(Settings(s3_endpoint=url)).head(bucket, "x")
    message = str(caught.value)
    assert message.startswith(f"s3://{bucket}/x: access denied (HTTP 403")
    assert "AWS_ACCESS_KEY_ID" in message and SECRET not in message


def test_a_missing_bucket_is_named_with_how_to_create_it(s3: MotoS3) -> None:
    c = client(Settings())
    assert c.bucket_problem("no-such-bucket-here") == (
        "bucket no-such-bucket-here does not exist; create it (aws s3 mb s3://no-such-bucket-here)"
    )
    with pytest.raises(FetchError) as caught, errors("s3://no-such-bucket-here/p"):
        c.list("no-such-bucket-here", "p/")
    assert "bucket no-such-bucket-here does not exist; create it" in str(caught.value)


S3_CHECK = (
    "; check the network and any proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), that the endpoint "
    "is up, or s3_endpoint in hubpin.toml (AWS_ENDPOINT_URL)"
)


def test_an_unreachable_endpoint_fails_after_the_tries_and_then_at_once(s3: MotoS3) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    settings = Settings(s3_endpoint=dead, retries=2)
    with pytest.raises(FetchError) as caught, errors("s3://b/x"):
        client(settings).head("b", "x")
    assert str(caught.value) == (
        f"s3://b/x: cannot reach the S3 endpoint {dead}: connection refused (gave up after 3 tries)"
        + S3_CHECK
    )
    started = time.monotonic()
    with pytest.raises(FetchError, match="gave up after 3 tries"), errors("s3://b/y"):
        client(settings).head("b", "y")
    assert time.monotonic() - started < 0.5  # the given-up endpoint is not tried again


def test_a_stalled_endpoint_fails_after_read_timeout_and_the_tries(s3: MotoS3) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # accepts (the kernel does) and never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        settings = Settings(s3_endpoint=url, retries=1, read_timeout=0.5)
        with pytest.raises(FetchError) as caught, errors("s3://b/x"):
            client(settings).head("b", "x")
    assert str(caught.value) == (
        f"s3://b/x: cannot reach the S3 endpoint {url}: no answer within read_timeout (0.5s) "
        "(gave up after 2 tries)" + S3_CHECK
    )


class _Deny(http.server.BaseHTTPRequestHandler):
    def _deny(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message></Error>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_DELETE = _deny

    def log_message(self, *args: object) -> None:
        pass


class _denying_server:
    """A loopback server answering every request as S3 does a denied one (403 AccessDenied)."""

    def __enter__(self) -> str:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Deny)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
