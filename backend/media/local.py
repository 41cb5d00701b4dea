"""The local disk media store (the default): files under one folder, `{root}/{job_id}/image.png`."""

from __future__ import annotations

import contextlib
import errno
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from backend.media.store import (
    JOB_ID_PATTERN,
    MEDIA_TYPES,
    PREVIEW_NAME,
    THUMBNAIL_NAME,
    MediaStorageError,
    MediaStore,
    download_filename,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

#: OS errors that say the disk is full or read-only (a provider writing the video hits them too).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS})


class LocalMediaStore(MediaStore):
    """Files under one folder on this machine: `{root}/{job_id}/image.png`."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, job_id: str, kind: str) -> Path:
        path = self.root / self.relative_path(job_id, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def resolve(self, relative: str | None) -> Path | None:
        """The file behind a stored relative path, if it is still there and inside the root."""
        if not relative:
            return None
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def check(self) -> None:
        try:  # a file of its own per check: two health checks at once must not trip over each other
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-check-"):
                pass
        except OSError as error:
            raise MediaStorageError(f"the media folder {self.root} is not writable: {error.strerror or error}") from error

    def exists(self, relative: str | None) -> bool:
        return self.resolve(relative) is not None

    def write_image(self, job_id: str, png: bytes) -> str:
        relative = self.relative_path(job_id, "image")
        tmp: Path | None = None
        try:
            path = self.path_for(job_id, "image")
            tmp = path.with_suffix(".part")
            tmp.write_bytes(png)
            tmp.replace(path)  # atomic: a reader never sees half a file
        except OSError as error:
            if tmp is not None:  # a full disk must not keep the half-file that filled it
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
            raise MediaStorageError(f"could not store the image in {self.root}: {error.strerror or error}") from error
        return relative

    def write_upload(self, upload_id: str, data: bytes) -> str:
        relative = self.upload_path(upload_id)
        path = self.root / relative
        partial = path.with_suffix(".part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            partial.replace(path)  # atomic: a reader never sees half a file
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise MediaStorageError(f"could not store the upload in {self.root}: {error.strerror or error}") from error
        return relative

    def read_upload(self, upload_id: str) -> bytes | None:
        try:
            return (self.root / self.upload_path(upload_id)).read_bytes()
        except FileNotFoundError:
            return None

    def remove_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / self.upload_path(upload_id)).unlink()

    @contextmanager
    def staging(self, job_id: str) -> Iterator[Path]:
        # The job's own folder: a provider's finished file there is already in its final place.
        try:
            folder = self.path_for(job_id, "video").parent
        except OSError as error:
            raise MediaStorageError(f"could not create the job's folder in {self.root}: {error.strerror or error}") from error
        try:
            yield folder
        except OSError as error:
            if error.errno not in STORAGE_ERRNOS:
                raise
            # The provider's write failed on a full or read-only disk: a storage problem, named as one.
            raise MediaStorageError(f"could not write the video in {self.root}: {error.strerror or error}") from error

    def local_file(self, relative: str | None, staging: Path) -> Path | None:
        return self.resolve(relative)

    def video_output(self, job_id: str, staging: Path) -> Path:
        # A temporary name beside the final one: whatever a provider leaves there (a crash
        # mid-write), only commit_video's rename puts a file where downloads look.
        return super().video_output(job_id, staging).with_suffix(".part")

    def commit_video(self, job_id: str, path: Path) -> str:
        relative = self.relative_path(job_id, "video")
        final = self.root / relative
        if path != final.with_suffix(".part") or not path.is_file():
            raise MediaStorageError(f"the video provider wrote no file at {path}")
        try:
            path.replace(final)  # atomic: a reader never sees half a file
            for leftover in final.parent.glob("*.part"):  # half-files of an attempt a crash interrupted
                leftover.unlink(missing_ok=True)
        except OSError as error:
            raise MediaStorageError(f"could not store the video in {self.root}: {error.strerror or error}") from error
        return relative

    def read_bytes(self, relative: str | None) -> bytes | None:
        path = self.resolve(relative)
        try:
            return path.read_bytes() if path else None
        except FileNotFoundError:
            return None  # removed meanwhile

    def save_copy(self, relative: str, target: Path) -> None:
        source = self.resolve(relative)
        if source is None:
            raise MediaStorageError(f"{relative} is missing from {self.root}")
        shutil.copyfile(source, target)

    def remove_job(self, job_id: str) -> None:
        if JOB_ID_PATTERN.fullmatch(job_id):
            shutil.rmtree(self.root / job_id, ignore_errors=True)

    def _read_thumbnail(self, job_id: str) -> bytes | None:
        try:
            return (self.root / self.relative_path(job_id, "image")).with_name(THUMBNAIL_NAME).read_bytes()
        except FileNotFoundError:
            return None

    def _write_thumbnail(self, job_id: str, jpeg: bytes) -> None:
        path = (self.root / self.relative_path(job_id, "image")).with_name(THUMBNAIL_NAME)
        partial = path.with_suffix(".part")
        partial.write_bytes(jpeg)
        partial.replace(path)  # atomic: a reader never sees half a file

    def _preview_path(self, job_id: str) -> Path:
        return (self.root / self.relative_path(job_id, "image")).with_name(PREVIEW_NAME)

    def write_preview(self, job_id: str, jpeg: bytes) -> None:
        path = self._preview_path(job_id)
        partial = path.with_name(PREVIEW_NAME + ".part")  # not *.part beside the video: commit_video sweeps those
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(jpeg)
            partial.replace(path)  # atomic: a reader never sees half a file
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise MediaStorageError(f"could not store the preview in {self.root}: {error.strerror or error}") from error

    def read_preview(self, job_id: str) -> bytes | None:
        try:
            return self._preview_path(job_id).read_bytes()
        except FileNotFoundError:
            return None

    def remove_preview(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._preview_path(job_id).unlink()

    def remove_file(self, relative: str) -> None:
        path = self.resolve(relative)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def download_response(self, relative: str | None, kind: str, job_id: str, request: Request) -> Response | None:
        from starlette.responses import FileResponse  # the web layer, only for the one call that needs it

        path = self.resolve(relative)
        if path is None:
            return None
        # FileResponse answers HEAD and byte ranges (206, 416) itself.
        return FileResponse(path, media_type=MEDIA_TYPES[kind][1], filename=download_filename(job_id, kind))
