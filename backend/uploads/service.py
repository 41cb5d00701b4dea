"""UploadService: what a user can do with their pictures, the same for the API, the studio and the
CLI: upload one (checked, cleaned, stored), read its details, delete it; and their expiry.

Uploads are owned like jobs: another user's upload answers as if it did not exist. One that an
unfinished job still has to take is not deleted under it: DELETE answers 409 UPLOAD_IN_USE, and
expiry passes it over until the job has ended (the job keeps its own fitted copy from then on).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import IO, Any

from sqlalchemy import Connection

from backend.auth import LOCAL_USER, User
from backend.errors import ImageInvalid, PayloadTooLarge, UnsupportedMediaType, UploadInUse, UploadNotFound
from backend.jobs.public import iso
from backend.media.store import UPLOAD_ID_PATTERN, MediaStore
from backend.store.models import utcnow
from backend.store.uploads import Upload, UploadStore
from backend.uploads.images import TAKEN_CONTENT_TYPES, TAKEN_NAMES, NotAPicture, PictureRefused, clean_picture

log = logging.getLogger(__name__)
#: Pictures decoded at the same time (each up to the pixel limit, 160 MB as RGBA at 40 MP): the rest wait.
DECODE_SLOTS = 2
#: Expired uploads removed per round.
BATCH_SIZE = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def new_upload_id() -> str:
    return "upl_" + secrets.token_urlsafe(12)


def display_name(name: str | None) -> str | None:
    """The client's file name, for the user's eyes only: its last part, no control characters, 255 at most."""
    if not name:
        return None
    cleaned = _CONTROL.sub("", PurePosixPath(name.replace("\\", "/")).name).strip()
    return cleaned[:255] or None


def upload_data(upload: Upload) -> dict[str, Any]:
    """An upload as the API answers it."""
    return {
        "id": upload.id,
        "contentType": upload.content_type,
        "width": upload.width,
        "height": upload.height,
        "bytes": upload.bytes,
        "name": upload.name,
        "created_at": iso(upload.created_at),
        "expires_at": iso(upload.expires_at),
    }


class UploadService:
    def __init__(self, store: UploadStore, media: MediaStore, *, max_bytes: int, max_pixels: int, expiry: timedelta):
        self.store = store
        self.media = media
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.expiry = expiry
        self._decoding: asyncio.Semaphore | None = None

    async def create(self, source: IO[bytes], size: int, name: str | None, user: User = LOCAL_USER) -> Upload:
        """Check, clean and store a picture. 413 over the size limit, 415 for a file that is not of a
        type taken (images.TAKEN) by its first bytes, 422 IMAGE_INVALID naming why it cannot be taken."""
        if size > self.max_bytes:
            raise PayloadTooLarge(self.max_bytes)
        if self._decoding is None:  # made on the event loop that uses it
            self._decoding = asyncio.Semaphore(DECODE_SLOTS)
        async with self._decoding:
            try:  # off the event loop: decoding a large picture takes a second of CPU
                picture = await asyncio.to_thread(clean_picture, source, self.max_pixels)
            except NotAPicture:
                raise UnsupportedMediaType(f"The file is not a {TAKEN_NAMES} image.", list(TAKEN_CONTENT_TYPES)) from None
            except PictureRefused as refusal:
                raise ImageInvalid(refusal.reason, refusal.message) from None
        upload_id = new_upload_id()
        path = await asyncio.to_thread(self.media.write_upload, upload_id, picture.data)
        now = utcnow()
        upload = Upload(
            id=upload_id,
            owner=user.name,
            content_type=picture.content_type,
            width=picture.width,
            height=picture.height,
            bytes=len(picture.data),
            name=display_name(name),
            path=path,
            created_at=now,
            expires_at=now + self.expiry,
        )
        return self.store.add(upload)

    def find(self, upload_id: str, user: User = LOCAL_USER) -> Upload | None:
        """The upload, if `user` may see it; None when it does not exist, has expired or is someone else's."""
        if not UPLOAD_ID_PATTERN.fullmatch(upload_id):
            return None
        upload = self.store.get(upload_id)
        if upload is None or not user.may_see(upload.owner):
            return None
        if upload.expires_at <= utcnow():  # expired: gone for the user, whether or not a round removed it yet
            return None
        return upload

    def get(self, upload_id: str, user: User = LOCAL_USER) -> Upload:
        upload = self.find(upload_id, user)
        if upload is None:
            raise UploadNotFound(upload_id)
        return upload

    def read(self, upload: Upload) -> bytes | None:
        """The stored (clean) picture; blocking (maybe S3)."""
        return self.media.read_upload(upload.id)

    async def delete(self, upload_id: str, user: User = LOCAL_USER) -> None:
        """Remove the upload and its file; 409 UPLOAD_IN_USE while an unfinished job still needs it."""
        self.get(upload_id, user)
        deleted, using = self.store.delete_unless_used(upload_id)  # decided under the row's lock
        if using:
            raise UploadInUse(upload_id, using)
        if not deleted:  # removed meanwhile (another DELETE, or expiry)
            raise UploadNotFound(upload_id)
        await asyncio.to_thread(self.media.remove_upload, upload_id)

    def claim(self, connection: Connection, upload_id: str) -> bool:
        """In the transaction that stores a job animating the upload: whether it is still there, held
        for that job from now on (UploadStore.claim); False: deleted or expired since it was found."""
        return self.store.claim(connection, upload_id, utcnow())

    def expire(self, now: datetime | None = None, *, batch_size: int = BATCH_SIZE) -> list[str]:
        """Remove the uploads past their expiry that no unfinished job uses; answers their ids.
        Blocking (store and media calls, maybe S3): async callers run it in a thread."""
        now = now or utcnow()
        removed: list[str] = []
        after: tuple[datetime, str] | None = None
        while True:
            batch = self.store.expired(now, batch_size, after)
            for upload in batch:
                # Kept while an unfinished job uses it (a later round looks again). Row first: a crash in
                # between leaves a file nobody can reach, never a row without a file.
                deleted, _ = self.store.delete_unless_used(upload.id, expired_by=now)
                if deleted:
                    self.media.remove_upload(upload.id)
                    removed.append(upload.id)
            if len(batch) < batch_size:
                break
            after = (batch[-1].expires_at, batch[-1].id)
        if removed:
            log.info("upload expiry removed %d upload(s)", len(removed))
        return removed
