"""Where generated images and videos live: the `MediaStore` interface, the local disk (local.py)
or an S3 bucket (s3.py).

Paths are built only from job ids this service made (checked against their pattern), never
from request text; the job store keeps them relative (`{job_id}/image.png`), the same for
both stores, so a job keeps its media when a deployment moves between instances.

The methods do blocking I/O (disk or network): async callers run them with
`asyncio.to_thread`.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from backend.media.checks import MediaLimits, MediaRejected, open_image

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

JOB_ID_PATTERN = re.compile(r"^job_[A-Za-z0-9_-]{8,40}$")
MEDIA_TYPES = {"image": ("image.png", "image/png"), "video": ("video.mp4", "video/mp4")}
#: The only relative paths a store accepts back: exactly the ones `relative_path` makes.
RELATIVE_PATTERN = re.compile(r"^(job_[A-Za-z0-9_-]{8,40})/(image\.png|video\.mp4)$")
#: Users' uploaded pictures: `uploads/{upload id}`, ids this service made (backend/uploads/service.py).
UPLOAD_ID_PATTERN = re.compile(r"^upl_[A-Za-z0-9_-]{8,40}$")
UPLOADS_FOLDER = "uploads"
log = logging.getLogger(__name__)

#: Thumbnails (the studio's job list) are JPEGs of at most this many pixels a side, made once per
#: job and stored beside its image under this name (removed with the job's other files).
THUMBNAIL_PIXELS = 256
THUMBNAIL_NAME = "thumbnail.jpg"
#: A running step's latest preview (ComfyUI's sampling frames, backend/media/previews.py): one JPEG per
#: job beside its image, overwritten by the next and removed when the step ends.
PREVIEW_NAME = "preview.jpg"
#: One lock per job (striped): concurrent first requests for a job's thumbnail make it once.
_THUMBNAIL_LOCKS = tuple(threading.Lock() for _ in range(64))
#: Thumbnails made at the same time, each decoding a whole image (up to 64 MB): the rest wait.
_THUMBNAIL_SLOTS = threading.BoundedSemaphore(2)


class MediaStorageError(Exception):
    """The media store could not write or read a file (disk full, bucket missing, S3 down...)."""


def download_filename(job_id: str, kind: str) -> str:
    """The name a download is saved under, the same for every store."""
    return f"promptreel-{job_id}-{MEDIA_TYPES[kind][0]}"


def parse_relative(relative: str | None) -> tuple[str, str] | None:
    """(job id, kind) of a stored relative path, or None for anything this service did not make."""
    match = RELATIVE_PATTERN.fullmatch(relative or "")
    if match is None:
        return None
    kind = "image" if match.group(2) == MEDIA_TYPES["image"][0] else "video"
    return match.group(1), kind


def make_thumbnail(source: Path, limits: MediaLimits = MediaLimits()) -> bytes:
    """A small JPEG of an image, checked against the limits before it is decoded."""
    with open_image(source, limits, whose="the job's image") as image:
        image.draft("RGB", (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))  # a JPEG decodes at 1/2 to 1/8 of its size
        small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=82, optimize=True)
    return buffer.getvalue()


class MediaStore(ABC):
    """The interface of both stores, as the pipeline, the jobs service, routes and pages use it."""

    def relative_path(self, job_id: str, kind: str) -> str:
        if not JOB_ID_PATTERN.fullmatch(job_id):  # fullmatch: `$` alone lets a trailing newline through
            raise ValueError(f"not a job id: {job_id!r}")
        return f"{job_id}/{MEDIA_TYPES[kind][0]}"

    def upload_path(self, upload_id: str) -> str:
        if not UPLOAD_ID_PATTERN.fullmatch(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return f"{UPLOADS_FOLDER}/{upload_id}"

    @abstractmethod
    def write_upload(self, upload_id: str, data: bytes) -> str:
        """Store an uploaded picture (already checked and cleaned) atomically; answers its relative path."""

    @abstractmethod
    def read_upload(self, upload_id: str) -> bytes | None:
        """An uploaded picture's bytes, None if missing."""

    @abstractmethod
    def remove_upload(self, upload_id: str) -> None:
        """Delete an uploaded picture; a missing file is fine, a failure is logged."""

    @abstractmethod
    def check(self) -> None:
        """Raise MediaStorageError when the store cannot be written to (for health checks)."""

    @abstractmethod
    def exists(self, relative: str | None) -> bool:
        """Whether the file behind a stored relative path is there (a step done before a restart)."""

    @abstractmethod
    def write_image(self, job_id: str, png: bytes) -> str:
        """Store a job's PNG atomically; answers its relative path."""

    @abstractmethod
    @contextmanager
    def staging(self, job_id: str) -> Iterator[Path]:
        """A local folder for a step's files while it runs (the video step's input and output)."""

    @abstractmethod
    def local_file(self, relative: str | None, staging: Path) -> Path | None:
        """A local file with the stored media (fetched into `staging` if need be), None if missing."""

    def video_output(self, job_id: str, staging: Path) -> Path:
        """Where the video provider writes the MP4 (providers write beside it and rename when done)."""
        self.relative_path(job_id, "video")  # the job id check
        return staging / MEDIA_TYPES["video"][0]

    @abstractmethod
    def commit_video(self, job_id: str, path: Path) -> str:
        """Store the finished MP4 at `path` (from `video_output`); answers its relative path."""

    @abstractmethod
    def read_bytes(self, relative: str | None) -> bytes | None:
        """The stored file's bytes, None if missing."""

    @abstractmethod
    def save_copy(self, relative: str, target: Path) -> None:
        """Copy the stored file to `target` (the CLI's output folder)."""

    @abstractmethod
    def remove_job(self, job_id: str) -> None:
        """Delete every file of a job; a failure is logged, never raised (the job row is gone already)."""

    @abstractmethod
    def remove_file(self, relative: str) -> None:
        """Delete one stored file (a step result thrown away); a missing file is fine, a failure is logged."""

    @abstractmethod
    async def download_response(self, relative: str | None, kind: str, job_id: str, request: Request) -> Response | None:
        """The HTTP answer of the download route (GET and HEAD, byte ranges), None if missing."""

    @abstractmethod
    def _read_thumbnail(self, job_id: str) -> bytes | None:
        """The job's stored thumbnail, None if it was not made yet."""

    @abstractmethod
    def _write_thumbnail(self, job_id: str, jpeg: bytes) -> None:
        """Store the job's thumbnail beside its image."""

    @abstractmethod
    def write_preview(self, job_id: str, jpeg: bytes) -> None:
        """Store (overwrite) the job's latest preview JPEG, already re-encoded; atomically."""

    @abstractmethod
    def read_preview(self, job_id: str) -> bytes | None:
        """The job's latest preview JPEG, None when there is none."""

    @abstractmethod
    def remove_preview(self, job_id: str) -> None:
        """Delete the job's preview; a missing file is fine, a failure is logged."""

    def thumbnail(self, relative: str | None) -> bytes | None:
        """A small JPEG of the image at a stored relative path: made once per job (under the
        job's lock, so that concurrent requests do not each decode the image) and stored; None if
        the image is missing or refused by the checks."""
        parsed = parse_relative(relative)
        if parsed is None or parsed[1] != "image":
            return None
        job_id = parsed[0]
        with _THUMBNAIL_LOCKS[hash(job_id) % len(_THUMBNAIL_LOCKS)]:
            stored = self._read_thumbnail(job_id)
            if stored is not None:
                return stored
            with _THUMBNAIL_SLOTS, tempfile.TemporaryDirectory(prefix="promptreel-thumbnail-") as staging:
                image = self.local_file(relative, Path(staging))
                if image is None:
                    return None
                try:
                    jpeg = make_thumbnail(image)
                except (MediaRejected, OSError, ValueError, SyntaxError) as error:
                    log.warning("no thumbnail for %s: %s", job_id, error)
                    return None
            try:
                self._write_thumbnail(job_id, jpeg)
            except (MediaStorageError, OSError) as error:  # served all the same, made again next time
                log.warning("could not store the thumbnail of %s: %s", job_id, error)
            return jpeg
