"""The S3 client hubpin shares: one botocore client per settings, conditional writes,
checksums, hubpin's retries and timeouts, one-line errors.

**Why botocore, not s3fs.** s3fs (gcsfs's fsspec sibling) was tried first (2026.9.0
against moto's server): its ``pipe_file(mode="create")`` sends ``If-None-Match: *``,
and an ``IfMatch`` keyword reaches ``put_object`` for small writes, but a failed
``If-Match`` comes back as ``OSError(EINVAL)`` instead of a precondition failure,
and ``rm_file`` drops its keywords, so a conditional delete deleted the object
whatever its ETag. It also retries on its own (``S3FileSystem.retries``, a 1.7x
backoff) on top of botocore's. hubpin needs a dozen plain calls, each with a
precondition or a checksum, so it uses botocore (what boto3 and s3fs sit on)
directly, with botocore's own retries off and hubpin's around each call.

**Credentials and endpoint** are found as AWS tools find them: botocore's session
reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``AWS_PROFILE``, the shared credentials and config files (``AWS_SHARED_CREDENTIALS_FILE``,
``AWS_CONFIG_FILE``), SSO and instance roles, ``AWS_REGION``, and
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` / a profile's ``endpoint_url``.
hubpin.toml adds ``s3_endpoint``, ``s3_region``, ``s3_profile``, ``s3_anonymous``
(unsigned requests, for public buckets) and ``s3_addressing_style``; a setting
given there wins over AWS's environment, since it is said for hubpin alone. No
key or token is ever printed: errors name the settings, never their values.

**Checksums.** botocore 1.36+ adds a CRC32 to every upload by default, sent as an
``aws-chunked`` trailer that several S3-compatible stores refuse; hubpin turns
that off (``when_required``) and sends its own: ``x-amz-checksum-sha256`` with
the SHA-256 the lock or the verified tree holds (S3 refuses the upload with
``BadDigest`` if the bytes differ), or of the bytes for small objects. Downloads
are checked by the reader against the checksum the object declares on ``HEAD``
(``x-amz-checksum-mode: ENABLED``), as ``X-Goog-Hash`` is (ranged GETs declare none).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubpin.checksums import Declared
from hubpin.download import Download
from hubpin.errors import (
    FetchError,
    HubpinError,
    MissingError,
    SettingsError,
    install_hint,
    unreachable,
)
from hubpin.handles import strip_query
from hubpin.retry import Retries
from hubpin.settings import Settings

log = logging.getLogger("hubpin")
BLOCK = 8 << 20  # bytes per ranged GET when streaming an object
SINGLE_PUT_MAX = 5 << 30  # S3's limit for one PUT
WHOLE_SHA, PARTS_SHA = "hubpin-sha256", "hubpin-parts-sha256"  # a multipart object's notes
_GIVEN_UP_FOR = 60.0  # seconds an endpoint that exhausted the retries fails at once
_RETRY_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",  # S3's 409 for two conditional writes at once: try again
}


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``; the key may be empty."""
    bucket, _, key = url.partition("://")[2].partition("/")
    return bucket, key


def folder_prefix(key: str) -> str:
    return key.rstrip("/") + "/" if key.strip("/") else ""


def sha256_b64(hex_digest: str) -> str:
    """A hex SHA-256 (as the lock and trees hold it) as S3 carries it (base64)."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def hex_of(b64_digest: str) -> str:
    """A base64 digest (as S3 carries it) in hex (as the lock holds it)."""
    return base64.b64decode(b64_digest).hex()


DECLARED_BY = "its S3 size and x-amz-checksum"  # names what a corrupt download contradicted


@dataclass(frozen=True)
class Head:
    """One object as S3 describes it without reading it."""

    key: str
    size: int
    etag: str  # quoted, as S3 sends it; what If-Match compares
    sha256: str | None = None  # base64 x-amz-checksum-sha256 of the whole object, if it has one
    crc32c: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class S3:
    """A botocore S3 client with hubpin's retries: shared by the threads of a command."""

    def __init__(self, client: Any, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.endpoint = strip_query(client.meta.endpoint_url)
        self._given_up: tuple[float, BaseException] | None = None

    def call(self, operation: str, **params: Any) -> Any:
        """One S3 operation, tried ``retries`` more times on what may pass (see :func:`_retriable`)."""
        return self.retried(lambda: getattr(self.client, operation)(**params), operation)

    def retried(self, attempt: Callable[[], Any], what: str) -> Any:
        """``attempt()``, retried with hubpin's backoff; an endpoint that stopped answering
        fails every call of the next minute at once, so a command pays one budget."""
        tries = Retries(self.settings.retries, first=0.1)
        while True:
            given_up = self._given_up
            if given_up is not None and time.monotonic() - given_up[0] < _GIVEN_UP_FOR:
                raise given_up[1]
            try:
                return attempt()
            except Exception as exc:
                if not _retriable(exc):
                    raise
                wait = tries.failed(exc)
                reason = _reason(exc, self.settings)
                if wait is None:
                    exc.hubpin_tries = tries.failures  # type: ignore[attr-defined]
                    exc.hubpin_endpoint = self.endpoint  # type: ignore[attr-defined]
                    exc.hubpin_reason = reason  # type: ignore[attr-defined]
                    if _unreachable(exc):
                        self._given_up = (time.monotonic(), exc)
                    raise
                log.info("%s on %s: %s; retrying", what, self.endpoint, reason)
                time.sleep(wait)

    # -- reading

    def head(self, bucket: str, key: str) -> Head | None:
        """The object's size, ETag and declared checksums; None when there is none."""
        try:
            meta = self.call("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise
        return Head(
            key,
            int(meta["ContentLength"]),
            meta["ETag"],
            _whole(meta, "ChecksumSHA256"),
            _whole(meta, "ChecksumCRC32C"),
            dict(meta.get("Metadata") or {}),
        )

    def get(self, bucket: str, key: str, etag: str | None = None, span: str | None = None) -> bytes:
        """An object's bytes (``span``: ``"bytes=a-b"``); FileNotFoundError when absent, and
        when ``etag`` is given and the object was replaced since (412)."""

        def attempt() -> bytes:
            params: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if etag:
                params["IfMatch"] = etag
            if span:
                params["Range"] = span
            answer = self.client.get_object(**params)
            with contextlib.closing(answer["Body"]) as body:
                return body.read()  # type: ignore[no-any-return]

        try:
            return self.retried(attempt, "get_object")  # type: ignore[no-any-return]
        except Exception as exc:
            if _status(exc) in (404, 412):
                raise FileNotFoundError(f"s3://{bucket}/{key}") from None
            raise

    def read(self, bucket: str, key: str) -> tuple[bytes, Head] | None:
        """A small object's bytes and what its answer says of it, in one GET; None if absent."""

        def attempt() -> tuple[bytes, Head]:
            answer = self.client.get_object(Bucket=bucket, Key=key)
            with contextlib.closing(answer["Body"]) as body:
                data = body.read()
            meta = dict(answer.get("Metadata") or {})
            return data, Head(key, len(data), answer["ETag"], None, None, meta)

        try:
            return self.retried(attempt, "get_object")  # type: ignore[no-any-return]
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise

    def stream(
        self, bucket: str, key: str, etag: str, size: int, start: int = 0
    ) -> Iterator[bytes]:
        """Bytes ``[start, size)`` of one version (its ETag), by ranges of ``BLOCK``: each
        range is retried, and an overwrite during the read fails (412 on that ETag) instead
        of mixing versions."""
        for first in range(start, size, BLOCK):
            last = min(size, first + BLOCK) - 1
            body = self.get(bucket, key, etag, f"bytes={first}-{last}")
            if len(body) != last - first + 1:
                raise ValueError(f"got {len(body)} bytes for range {first}-{last} of {size}")
            yield body

    def list(
        self, bucket: str, prefix: str, delimiter: str | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Every object (and with ``delimiter``, every sub-prefix) under ``prefix``; each as
        ListObjectsV2 gives it (``Key``, ``Size``, ``ETag``)."""
        items: list[dict[str, Any]] = []
        prefixes: list[str] = []
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            params["Delimiter"] = delimiter
        while True:
            page = self.call("list_objects_v2", **params)
            items += page.get("Contents", [])
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return items, prefixes
            params["ContinuationToken"] = page["NextContinuationToken"]

    def bucket_problem(self, bucket: str) -> str | None:
        """Why ``bucket`` cannot be used ("does not exist", and how to create it), or None."""
        try:
            self.call("list_objects_v2", Bucket=bucket, MaxKeys=1)
        except Exception as exc:
            problem = no_bucket(exc, bucket)
            if problem is None:
                raise
            return problem
        return None

    # -- writing

    def put(
        self,
        bucket: str,
        key: str,
        body: bytes | Path,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        sha256: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Head:
        """Write an object whole, with ``x-amz-checksum-sha256`` (hex ``sha256``, else computed
        for bytes), so S3 stores only the bytes meant. ``if_absent``: only if no object is
        there (``If-None-Match: *``); ``if_match``: only if it still has that ETag.
        FileExistsError when the condition does not hold (412)."""
        size = len(body) if isinstance(body, bytes) else body.stat().st_size
        if size > SINGLE_PUT_MAX:  # hubpin.s3.multipart writes those
            raise ValueError(f"{size} bytes is more than one S3 PUT takes ({SINGLE_PUT_MAX})")
        if sha256 is None:
            assert isinstance(body, bytes), "a file's SHA-256 comes from the lock or the tree"
            sha256 = hashlib.sha256(body).hexdigest()
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "ContentLength": size,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": sha256_b64(sha256),
            "ContentType": "application/octet-stream",
        }
        if if_absent:
            params["IfNoneMatch"] = "*"
        if if_match:
            params["IfMatch"] = if_match
        if metadata:
            params["Metadata"] = metadata

        def attempt() -> Any:
            if isinstance(body, bytes):
                return self.client.put_object(Body=body, **params)
            with open(body, "rb") as fh:  # a retry reads the file again from its start
                return self.client.put_object(Body=fh, **params)

        try:
            answer = self.retried(attempt, "put_object")
        except Exception as exc:
            if _status(exc) == 412:
                raise FileExistsError(f"s3://{bucket}/{key}") from None
            raise
        return Head(key, size, answer["ETag"], params["ChecksumSHA256"], None, metadata or {})

    def copy(self, bucket: str, source: str, target: str) -> Head:
        """Copy an object within the bucket, server-side (S3 allows up to 5 GiB in one
        request), with S3 computing the copy's SHA-256; FileNotFoundError when the source
        is gone."""
        try:
            answer = self.call(
                "copy_object",
                Bucket=bucket,
                Key=target,
                CopySource={"Bucket": bucket, "Key": source},
                ChecksumAlgorithm="SHA256",
            )
        except Exception as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(f"s3://{bucket}/{source}") from None
            raise
        result = answer.get("CopyObjectResult", {})
        return Head(target, -1, result.get("ETag", ""), result.get("ChecksumSHA256"))

    def delete(self, bucket: str, key: str, if_match: str | None = None) -> bool:
        """Delete one object; with ``if_match``, only if it still has that ETag (FileExistsError
        otherwise). False when it is known to have been gone already."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if if_match:
            params["IfMatch"] = if_match
        try:
            self.call("delete_object", **params)
        except Exception as exc:
            if _status(exc) == 404:
                return False
            if _status(exc) == 412:
                raise FileExistsError(f"s3://{bucket}/{key}") from None
            raise
        return True

    def delete_all(self, bucket: str, keys: list[str]) -> None:
        """Delete objects, 1,000 a request (S3's DeleteObjects); any that fail are an error."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            answer = self.call(
                "delete_objects", Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
            )
            failed = answer.get("Errors") or []
            if failed:
                first = failed[0]
                raise OSError(
                    f"could not delete {len(failed)} objects, e.g. s3://{bucket}/{first['Key']}: "
                    f"{first.get('Code')} {first.get('Message', '')}".strip()
                )


def no_bucket(exc: BaseException, bucket: str) -> str | None:
    """What to say when ``exc`` means the bucket does not exist; None when it means else."""
    if _code(exc) == "NoSuchBucket":
        return f"bucket {bucket} does not exist; create it (aws s3 mb s3://{bucket})"
    return None


def _whole(meta: dict[str, Any], name: str) -> str | None:
    """A checksum of the whole object. A multipart object's is a checksum of its parts'
    checksums (``…-N``, ChecksumType COMPOSITE; its ETag ends in ``-N`` too), which says
    nothing a reader can check: None, unless hubpin wrote the object and noted its SHA-256
    beside the parts' digest S3 computed (see :mod:`hubpin.s3.multipart`)."""
    value = meta.get(name)
    multipart = "-" in str(meta.get("ETag", "")) or meta.get("ChecksumType") == "COMPOSITE"
    if not value or not (multipart or "-" in value):
        return str(value) if value else None
    notes = meta.get("Metadata") or {}
    parts, whole = notes.get(PARTS_SHA, ""), notes.get(WHOLE_SHA)
    if name == "ChecksumSHA256" and whole and value.split("-")[0] == parts.split("-")[0]:
        return sha256_b64(whole)
    return None


_clients: dict[tuple[Any, ...], S3] = {}
_clients_lock = threading.Lock()


def client(settings: Settings) -> S3:
    """One client per settings and AWS environment, shared by the threads of a command."""
    aws = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    key = (
        settings.s3_endpoint,
        settings.s3_region,
        settings.s3_profile,
        settings.s3_anonymous,
        settings.s3_addressing_style,
        settings.retries,
        settings.connect_timeout,
        settings.read_timeout,
        settings.jobs,
        hashlib.sha256(repr(aws).encode()).hexdigest(),  # keys are not kept in memory twice
    )
    with _clients_lock:
        if key not in _clients:
            _clients[key] = S3(_new_client(settings), settings)
        return _clients[key]


def _not_installed() -> HubpinError:
    return HubpinError(
        f"s3:// locations need botocore, which is not installed; {install_hint('s3')}"
    )


def _new_client(settings: Settings) -> Any:
    try:
        import botocore.session
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise _not_installed() from None
    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},  # hubpin retries (S3.retried)
        max_pool_connections=max(10, 2 * settings.jobs + 2),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": settings.s3_addressing_style},
        user_agent_extra="hubpin",
        **({"signature_version": UNSIGNED} if settings.s3_anonymous else {}),
    )
    try:
        session = botocore.session.Session(profile=settings.s3_profile)
        region = settings.s3_region or session.get_config_variable("region") or "us-east-1"
        return session.create_client(
            "s3", region_name=region, endpoint_url=settings.s3_endpoint or None, config=config
        )
    except BotoCoreError as exc:
        raise SettingsError(f"S3 settings: {_first_line(exc)}; {_CREDENTIALS_HINT}") from None
    except ValueError as exc:  # e.g. an endpoint URL botocore cannot parse
        raise SettingsError(f"s3_endpoint / AWS_ENDPOINT_URL: {_first_line(exc)}") from None


_CREDENTIALS_HINT = (
    "check AWS_PROFILE / s3_profile, ~/.aws/credentials and ~/.aws/config, or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (s3_anonymous = true for a public bucket)"
)


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _retriable(exc: BaseException) -> bool:
    """Connection errors, timeouts, 5xx, 408, 429 and S3's "slow down" codes; never TLS."""
    from botocore.exceptions import ClientError, HTTPClientError, SSLError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, SSLError):
        return False
    if isinstance(exc, BotoConnectionError | HTTPClientError | socket.timeout | ConnectionError):
        return True
    if isinstance(exc, ClientError):
        status = _status(exc)
        return status >= 500 or status in (408, 429) or _code(exc) in _RETRY_CODES
    return False


def _unreachable(exc: BaseException) -> bool:
    """The endpoint itself failed (no connection, no answer), not one request."""
    from botocore.exceptions import ClientError

    return not isinstance(exc, ClientError)


def _reason(exc: BaseException, settings: Settings | None = None) -> str:
    """Why a request failed, in terms of the settings that bound it where one did."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

    if getattr(exc, "hubpin_reason", None):
        return str(exc.hubpin_reason)  # type: ignore[attr-defined]
    if settings is None:
        settings = Settings()
    if isinstance(exc, ConnectTimeoutError):
        return f"no connection within connect_timeout ({settings.connect_timeout:g}s)"
    if isinstance(exc, ReadTimeoutError | socket.timeout):
        return f"no answer within read_timeout ({settings.read_timeout:g}s)"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = str(error.get("Message") or "").strip()
        return f"HTTP {_status(exc)} {error.get('Code', '')}{': ' + message if message else ''}"
    cause: BaseException | None = exc
    for _ in range(8):  # the OS's reason, wherever urllib3 and botocore wrapped it
        if cause is None:
            break
        errno_ = getattr(cause, "errno", None)
        if isinstance(cause, OSError) and errno_:
            return os.strerror(errno_).lower()
        inner = getattr(cause, "kwargs", {}).get("error") if hasattr(cause, "kwargs") else None
        cause = inner or cause.__cause__ or cause.__context__
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return strip_query(text) if text.startswith(("http://", "https://")) else text


def _tries(exc: BaseException) -> str:
    tries = getattr(exc, "hubpin_tries", None)
    return f" (gave up after {tries} tries)" if tries else ""


@contextlib.contextmanager
def errors(where: str, error: type[HubpinError] = FetchError) -> Iterator[None]:
    """Turn whatever botocore raises into one line naming ``where`` (never a credential)."""
    try:
        import botocore.exceptions  # noqa: F401 - the s3 extra; its names are imported below
    except ImportError:  # not installed: say so before the client is made
        raise _not_installed() from None
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    try:
        yield
    except HubpinError:
        raise
    except FileNotFoundError:
        raise error(f"{where}: not found (HTTP 404)") from None
    except FileExistsError:
        raise error(f"{where}: changed by someone else meanwhile (HTTP 412)") from None
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as exc:
        raise SettingsError(
            f"{where}: {_first_line(exc).rstrip('.')}; {_CREDENTIALS_HINT}"
        ) from None
    except ClientError as exc:
        code, status = _code(exc), _status(exc)
        bucket = split_url(where)[0]
        if code == "NoSuchBucket":
            raise error(
                f"{where}: bucket {bucket} does not exist; create it (aws s3 mb s3://{bucket}) "
                "or fix the location"
            ) from None
        if status in (401, 403):
            raise error(f"{where}: access denied ({_reason(exc)}); {_CREDENTIALS_HINT}") from None
        raise error(f"{where}: {_reason(exc)}{_tries(exc)}") from None
    except (TimeoutError, BotoCoreError, ConnectionError) as exc:
        endpoint = getattr(exc, "hubpin_endpoint", "")
        what = f"the S3 endpoint{' ' + endpoint if endpoint else ''}"
        check = "that the endpoint is up, or s3_endpoint in hubpin.toml (AWS_ENDPOINT_URL)"
        tries = _tries(exc).strip(" ()")
        raise error(f"{where}: " + unreachable(what, _reason(exc), tries, check)) from None
    except (OSError, ValueError) as exc:
        raise error(f"{where}: {_first_line(exc)}") from None


def open_object(url: str, settings: Settings) -> Download:
    """Stream an s3:// archive, checked against the size and checksum the object declares."""
    bucket, key = split_url(url)
    s3 = client(settings)
    with errors(url):
        head = s3.head(bucket, key)
    if head is None:
        raise MissingError(f"{url}: archive not found (no such object)")

    def chunks() -> Iterator[bytes]:
        with errors(url):
            yield from s3.stream(bucket, key, head.etag, head.size)

    declared = Declared(head.size, crc32c=head.crc32c, sha256=head.sha256, by=DECLARED_BY)
    return Download(final_url=url, length=head.size, chunks=chunks(), declared=declared)
