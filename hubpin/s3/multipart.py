"""Objects larger than ``s3_part_size`` as S3 multipart uploads (one PUT takes at most 5 GiB).

Each part carries its own SHA-256, which S3 checks on arrival; the object appears only
when CompleteMultipartUpload succeeds, and that request carries the write's condition
(``If-None-Match: *`` or ``If-Match``), so the lock protocol and "only if absent" hold
as for one PUT. An upload that fails is aborted, so no parts are left to pay for.

S3 keeps no SHA-256 of a multipart object's bytes, only one of its parts' digests
(``…-N``, a "composite" checksum). So the parts are hashed before anything is sent,
the file's SHA-256 is checked against the one the caller gives (the lock's, or the
verified tree's), and both are noted in the object's metadata;
:func:`hubpin.s3.client._whole` then declares the noted SHA-256 exactly when S3's own
digest of the parts is the one noted, and readers check every byte against it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubpin.s3.client import PARTS_SHA, S3, WHOLE_SHA, Head, _status, sha256_b64

log = logging.getLogger("hubpin")
MAX_PARTS = 10_000  # S3's limit of parts in one multipart upload


def put_parts(
    s3: S3,
    bucket: str,
    key: str,
    path: Path,
    *,
    if_absent: bool = False,
    if_match: str | None = None,
    sha256: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Head:
    """Write ``path`` as ``key`` in parts (the keywords are :meth:`S3.put`'s; ``sha256``, when
    given, the file must have); FileExistsError when the condition fails (412)."""
    size = path.stat().st_size
    part, spans = _spans(s3, size)
    digests, sha256 = _part_digests(path, spans, sha256)
    composite = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    noted = {**(metadata or {}), WHOLE_SHA: sha256, PARTS_SHA: f"{composite}-{len(spans)}"}
    condition: dict[str, Any] = {}
    if if_absent:
        condition["IfNoneMatch"] = "*"
    if if_match:
        condition["IfMatch"] = if_match

    with open(path, "rb") as fh:

        def send(upload: str, number: int, start: int, end: int) -> dict[str, str]:
            checksum = base64.b64encode(digests[number - 1]).decode()

            def attempt() -> Any:
                fh.seek(start)  # a retry sends the part again from its start
                return s3.client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=number,
                    Body=fh.read(end - start),
                    ContentLength=end - start,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )

            return {"ETag": s3.retried(attempt, "upload_part")["ETag"], "ChecksumSHA256": checksum}

        try:
            etag = _upload(s3, bucket, key, noted, spans, send, condition)
        except Exception as exc:
            if _status(exc) == 412:
                raise FileExistsError(f"s3://{bucket}/{key}") from None
            raise
    log.info("s3://%s/%s: uploaded in %d parts of %d bytes", bucket, key, len(spans), part)
    return Head(key, size, etag, sha256_b64(sha256), None, noted)


def copy_parts(s3: S3, bucket: str, source: str, target: str, uploaded: Head) -> Head:
    """Copy an object :func:`put_parts` wrote, part for part (UploadPartCopy), so the copy
    has its ETag and digest of parts (what the cache compares after publishing) and its
    notes; one CopyObject would give another ETag and stops at 5 GiB."""

    def send(upload: str, number: int, start: int, end: int) -> dict[str, str]:
        answer = s3.call(
            "upload_part_copy",
            Bucket=bucket,
            Key=target,
            UploadId=upload,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": source},
            CopySourceRange=f"bytes={start}-{end - 1}",
        )["CopyPartResult"]
        return {k: answer[k] for k in ("ETag", "ChecksumSHA256") if answer.get(k)}

    try:
        etag = _upload(s3, bucket, target, uploaded.metadata, _spans(s3, uploaded.size)[1], send)
    except Exception as exc:
        if _status(exc) == 404:
            raise FileNotFoundError(f"s3://{bucket}/{source}") from None
        raise
    return Head(target, uploaded.size, etag, uploaded.sha256, None, uploaded.metadata)


def _upload(
    s3: S3,
    bucket: str,
    key: str,
    metadata: dict[str, str],
    spans: list[tuple[int, int]],
    send: Callable[[str, int, int, int], dict[str, str]],
    condition: dict[str, Any] | None = None,
) -> str:
    """One multipart upload: created, each part sent by ``send(upload id, number, start,
    end)`` (its ETag and checksum), completed under ``condition``; aborted if anything fails,
    so no parts are left to pay for. The object's ETag."""
    upload = s3.call(
        "create_multipart_upload",
        Bucket=bucket,
        Key=key,
        ChecksumAlgorithm="SHA256",
        ContentType="application/octet-stream",
        Metadata=metadata,
    )["UploadId"]
    try:
        parts = [
            {"PartNumber": number, **send(upload, number, start, end)}
            for number, (start, end) in enumerate(spans, 1)
        ]
        answer = s3.call(
            "complete_multipart_upload",
            Bucket=bucket,
            Key=key,
            UploadId=upload,
            MultipartUpload={"Parts": parts},
            **(condition or {}),
        )
    except BaseException:
        with contextlib.suppress(Exception):
            s3.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        raise
    return str(answer["ETag"])


def _spans(s3: S3, size: int) -> tuple[int, list[tuple[int, int]]]:
    """The part size for an object of ``size`` bytes, and each part's ``[start, end)``."""
    part = max(s3.settings.s3_part_size, -(-size // MAX_PARTS))
    return part, [(start, min(size, start + part)) for start in range(0, size, part)]


def _part_digests(
    path: Path, spans: list[tuple[int, int]], sha256: str | None
) -> tuple[list[bytes], str]:
    """Each part's SHA-256 and the file's, in one read; the file must have ``sha256``."""
    digests, whole = [], hashlib.sha256()
    with open(path, "rb") as fh:
        for start, end in spans:
            one, left = hashlib.sha256(), end - start
            while left and (data := fh.read(min(left, 1 << 20))):
                one.update(data)
                whole.update(data)
                left -= len(data)
            digests.append(one.digest())
    if sha256 is not None and whole.hexdigest() != sha256:
        raise ValueError(f"{path}: its sha256 is {whole.hexdigest()}, not {sha256} as expected")
    return digests, whole.hexdigest()
