"""Media in an S3-compatible bucket: every instance and worker sees the same files.

Object keys are `{prefix}{job_id}/image.png`, built only from stored relative paths that match
the pattern this service makes them with, so no key can leave the prefix. Providers still
need local files (the video step reads a PNG and writes an MP4): those live in a temporary
staging folder for the length of the step. An object appears in the bucket only once it is
complete (a PUT is atomic), so a half-written file is never served.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from backend.media.store import (
    JOB_ID_PATTERN,
    MEDIA_TYPES,
    PREVIEW_NAME,
    THUMBNAIL_NAME,
    MediaStorageError,
    MediaStore,
    download_filename,
    parse_relative,
)

if TYPE_CHECKING:
    from backend.settings import Settings

log = logging.getLogger(__name__)

#: Everything boto3 raises when a call fails (S3's answer, the network, the credentials, a transfer).
S3_ERRORS = (BotoCoreError, ClientError, Boto3Error, OSError)
#: S3's answers for "no such object" (HEAD has no body, so only its status code).
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
#: One byte range, as players send it; anything else is ignored and the whole file served (RFC 9110).
SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
STREAM_CHUNK = 256 * 1024


def _is_missing(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in MISSING_CODES


def _reason(error: BaseException) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code, message = details.get("Code", ""), details.get("Message", "")
        return f"{code}: {message}" if code and message else str(error)
    return str(error) or type(error).__name__


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def single_range(header: str | None) -> str | None:
    """A `Range` header rebuilt from its numbers when it asks for one satisfiable-looking range."""
    match = SINGLE_RANGE.match((header or "").strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    start, end = match.group(1), match.group(2)
    if start and end and int(start) > int(end):
        return None
    return f"bytes={int(start) if start else ''}-{int(end) if end else ''}"


class S3MediaStore(MediaStore):
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "promptreel/",
        downloads: Literal["stream", "redirect"] = "stream",
        url_expiry_seconds: int = 300,
    ):
        self.client = client  # boto3 clients are thread-safe; one is shared by every thread
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.downloads = downloads
        self.url_expiry_seconds = url_expiry_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> S3MediaStore:
        config = Config(
            signature_version="s3v4",
            # S3-compatible servers (MinIO, moto, Ceph) serve buckets by path, not by host name.
            s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        client = boto3.session.Session().client(
            "s3", region_name=settings.s3_region, endpoint_url=settings.s3_endpoint_url, config=config
        )
        return cls(client, settings.s3_bucket or "", settings.s3_prefix, settings.s3_downloads, settings.s3_url_expiry_seconds)

    # -- keys -------------------------------------------------------------------------

    def key_for(self, relative: str | None) -> str | None:
        """The object key of a stored relative path; None for one this service did not make."""
        if parse_relative(relative) is None:
            return None
        return f"{self.prefix}{relative}"

    def _job_key(self, job_id: str, kind: str) -> str:
        return f"{self.prefix}{self.relative_path(job_id, kind)}"  # raises ValueError for an odd id

    def _failure(self, action: str, error: BaseException) -> MediaStorageError:
        return MediaStorageError(f"could not {action} S3 bucket '{self.bucket}': {_reason(error)}")

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as error:
            if _is_missing(error):
                return None
            raise self._failure(f"read {key} from", error) from error

    # -- the store --------------------------------------------------------------------

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except S3_ERRORS as error:
            raise self._failure("reach", error) from error

    def exists(self, relative: str | None) -> bool:
        key = self.key_for(relative)
        return key is not None and self._head(key) is not None

    def write_image(self, job_id: str, png: bytes) -> str:
        key = self._job_key(job_id, "image")
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=png, ContentType=MEDIA_TYPES["image"][1])
        except S3_ERRORS as error:
            raise self._failure("store the image in", error) from error
        return self.relative_path(job_id, "image")

    @contextmanager
    def staging(self, job_id: str) -> Iterator[Path]:
        self.relative_path(job_id, "image")  # the job id check
        try:
            folder = tempfile.TemporaryDirectory(prefix=f"promptreel-{job_id}-", ignore_cleanup_errors=True)
        except OSError as error:
            raise MediaStorageError(f"could not create a staging folder for the video step: {error.strerror or error}") from error
        with folder as path:
            yield Path(path)

    def local_file(self, relative: str | None, staging: Path) -> Path | None:
        key = self.key_for(relative)
        if key is None:
            return None
        target = staging / Path(key).name
        try:
            self.client.download_file(self.bucket, key, str(target))
        except S3_ERRORS as error:
            if _is_missing(error):
                return None
            raise self._failure(f"fetch {key} from", error) from error
        return target

    def commit_video(self, job_id: str, path: Path) -> str:
        key = self._job_key(job_id, "video")
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": MEDIA_TYPES["video"][1]})
        except S3_ERRORS as error:
            raise self._failure("store the video in", error) from error
        path.unlink(missing_ok=True)  # uploaded: the local copy is not needed any more
        return self.relative_path(job_id, "video")

    def read_bytes(self, relative: str | None) -> bytes | None:
        key = self.key_for(relative)
        return None if key is None else self._get(key)

    def _get(self, key: str) -> bytes | None:
        """The object's bytes; None when there is no such object."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            with answer["Body"] as body:
                return body.read()
        except S3_ERRORS as error:
            if _is_missing(error):
                return None
            raise self._failure(f"read {key} from", error) from error

    def write_upload(self, upload_id: str, data: bytes) -> str:
        relative = self.upload_path(upload_id)
        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{relative}", Body=data)
        except S3_ERRORS as error:
            raise self._failure("store the upload in", error) from error
        return relative

    def read_upload(self, upload_id: str) -> bytes | None:
        return self._get(f"{self.prefix}{self.upload_path(upload_id)}")

    def remove_upload(self, upload_id: str) -> None:
        key = f"{self.prefix}{self.upload_path(upload_id)}"
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as error:
            log.warning("could not remove %s from S3 bucket '%s': %s", key, self.bucket, _reason(error))

    def _thumbnail_key(self, job_id: str) -> str:
        return self._job_key(job_id, "image").rpartition("/")[0] + "/" + THUMBNAIL_NAME

    def _read_thumbnail(self, job_id: str) -> bytes | None:
        return self._get(self._thumbnail_key(job_id))

    def _write_thumbnail(self, job_id: str, jpeg: bytes) -> None:
        key = self._thumbnail_key(job_id)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=jpeg, ContentType="image/jpeg")
        except S3_ERRORS as error:
            raise self._failure("store the thumbnail in", error) from error

    def _preview_key(self, job_id: str) -> str:
        return self._job_key(job_id, "image").rpartition("/")[0] + "/" + PREVIEW_NAME

    def write_preview(self, job_id: str, jpeg: bytes) -> None:
        key = self._preview_key(job_id)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=jpeg, ContentType="image/jpeg")
        except S3_ERRORS as error:
            raise self._failure("store the preview in", error) from error

    def read_preview(self, job_id: str) -> bytes | None:
        return self._get(self._preview_key(job_id))

    def remove_preview(self, job_id: str) -> None:
        key = self._preview_key(job_id)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as error:
            log.warning("could not remove %s from S3 bucket '%s': %s", key, self.bucket, _reason(error))

    def save_copy(self, relative: str, target: Path) -> None:
        key = self.key_for(relative)
        if key is None:
            raise MediaStorageError(f"not a media path: {relative!r}")
        try:
            self.client.download_file(self.bucket, key, str(target))
        except S3_ERRORS as error:
            raise self._failure(f"fetch {key} from", error) from error

    def remove_job(self, job_id: str) -> None:
        if not JOB_ID_PATTERN.fullmatch(job_id):
            return
        folder = f"{self.prefix}{job_id}/"  # the trailing / keeps job_ab from matching job_abc
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:  # a page holds at most 1000 keys, the most one delete_objects takes
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        except S3_ERRORS as error:
            log.warning("could not remove the media of %s from S3 bucket '%s': %s", job_id, self.bucket, _reason(error))

    def remove_file(self, relative: str) -> None:
        key = self.key_for(relative)
        if key is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as error:
            log.warning("could not remove %s from S3 bucket '%s': %s", key, self.bucket, _reason(error))

    # -- downloads --------------------------------------------------------------------

    async def download_response(self, relative: str | None, kind: str, job_id: str, request: Request) -> Response | None:
        key = self.key_for(relative)
        if key is None:
            return None
        filename, content_type = download_filename(job_id, kind), MEDIA_TYPES[kind][1]
        headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Accept-Ranges": "bytes"}
        # HEAD is answered here in both modes: a presigned URL is signed for GET only.
        if request.method == "HEAD" or self.downloads == "redirect":
            head = await asyncio.to_thread(self._head, key)
            if head is None:
                return None
            if request.method == "HEAD":
                headers.update(_object_headers(head))
                return Response(status_code=200, media_type=content_type, headers=headers)
            url = await asyncio.to_thread(
                self.client.generate_presigned_url,
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentDisposition": headers["Content-Disposition"],
                    "ResponseContentType": content_type,
                },
                ExpiresIn=self.url_expiry_seconds,
            )
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
        return await self._stream(key, content_type, headers, single_range(request.headers.get("range")))

    async def _stream(self, key: str, content_type: str, headers: dict[str, str], byte_range: str | None) -> Response | None:
        arguments = {"Bucket": self.bucket, "Key": key, **({"Range": byte_range} if byte_range else {})}
        try:
            answer = await asyncio.to_thread(self.client.get_object, **arguments)
        except S3_ERRORS as error:
            if _is_missing(error):
                return None
            if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") == "InvalidRange":
                head = await asyncio.to_thread(self._head, key)
                size = head["ContentLength"] if head else 0
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            raise self._failure(f"read {key} from", error) from error
        headers.update(_object_headers(answer))
        status = 200
        if byte_range and answer.get("ContentRange"):
            status = 206
            headers["Content-Range"] = answer["ContentRange"]
        return StreamingResponse(_chunks(answer["Body"]), status_code=status, media_type=content_type, headers=headers)


def _object_headers(answer: dict[str, Any]) -> dict[str, str]:
    headers = {"Content-Length": str(answer["ContentLength"])}
    if answer.get("ETag"):
        headers["ETag"] = answer["ETag"]
    if answer.get("LastModified"):
        headers["Last-Modified"] = format_datetime(answer["LastModified"].astimezone(UTC), usegmt=True)
    return headers


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    """The object's bytes, read in a thread; the connection is released when the client stops reading."""
    try:
        async for chunk in iterate_in_threadpool(body.iter_chunks(STREAM_CHUNK)):
            yield chunk
    finally:
        body.close()
