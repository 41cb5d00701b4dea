"""The uploads routes: a user's own picture, to animate with `settings.sourceImage` on generate.

POST takes the picture as multipart/form-data (field `file`) or as the raw body with its image
Content-Type. The body's size is judged before it is read (BodySizeLimit, with the upload limit for
this path); the file's type by its first bytes; its pixels off the event loop (UploadService).
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from backend.api.deps import SystemDep, UserDep
from backend.api.routes import errors
from backend.errors import FieldInvalid, PayloadTooLarge, UnsupportedMediaType, UploadNotFound
from backend.uploads.images import STORED_CONTENT_TYPES, TAKEN_CONTENT_TYPES, TAKEN_NAMES
from backend.uploads.service import upload_data

router = APIRouter()
UPLOADS_PATH = "/api/v1/uploads"
#: Room for the multipart envelope (boundaries, part headers) around the picture itself.
MULTIPART_MARGIN = 64 * 1024
RAW_TYPES = frozenset(TAKEN_CONTENT_TYPES)
#: A raw body is kept in memory up to this size, on disk beyond (as Starlette spools multipart files).
SPOOL_BYTES = 1024 * 1024

UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **errors(400, 401, 404, 422, 429),
    413: {"description": "PAYLOAD_TOO_LARGE: the picture is over PROMPTREEL_MAX_UPLOAD_BYTES."},
    415: {"description": f"UNSUPPORTED_MEDIA_TYPE: not a {TAKEN_NAMES} by its first bytes."},
    422: {
        "description": "IMAGE_INVALID (`details.reason`: truncated, corrupt, too_many_pixels, dimensions, animated) "
        "or VALIDATION_ERROR."
    },
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                    "additionalProperties": False,
                }
            },
            **{content_type: {"schema": {"type": "string", "format": "binary"}} for content_type in sorted(RAW_TYPES)},
        },
    }
}


def body_limit(max_upload_bytes: int) -> int:
    """The request body this path takes at most: the picture and its multipart envelope."""
    return max_upload_bytes + MULTIPART_MARGIN


async def _raw_body(request: Request, max_bytes: int) -> tuple[Any, int]:
    """The body in a spooled file, and its size; 413 as soon as it grows past `max_bytes`."""
    spooled = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            spooled.close()
            raise PayloadTooLarge(max_bytes)
        spooled.write(chunk)
    return spooled, size


@router.post("/api/v1/uploads", tags=["uploads"], status_code=201, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY)
async def create_upload(request: Request, system: SystemDep, user: UserDep) -> Response:
    """Upload a picture (PNG, JPEG, WebP; AVIF and HEIC where installed) to animate: answers its id
    (`upl_...`), type, upright size and expiry. It is stored upright by its EXIF orientation, without
    any metadata (AVIF and HEIC as JPEG, or PNG when transparent)."""
    uploads = system.uploads
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            async with request.form(max_files=1, max_fields=4) as form:
                unknown = [name for name in form if name != "file"]
                if unknown:  # strict, as the JSON bodies are: a misspelt part is not silently ignored
                    raise FieldInvalid(unknown[0], "unknown field: the picture goes in the part named 'file'")
                file = form.get("file")
                if not isinstance(file, UploadFile):
                    raise FieldInvalid("file", "this field is required: the picture, as a file part")
                size = file.size if file.size is not None else 0
                upload = await uploads.create(file.file, size, file.filename, user)
        elif content_type in RAW_TYPES:
            body, size = await _raw_body(request, uploads.max_bytes)
            with body:
                upload = await uploads.create(body, size, None, user)
        else:
            raise UnsupportedMediaType(
                "Send the picture as multipart/form-data (field 'file') or as the body with Content-Type "
                f"{', '.join(TAKEN_CONTENT_TYPES[:-1])} or {TAKEN_CONTENT_TYPES[-1]}.",
                list(TAKEN_CONTENT_TYPES),
            )
    except ClientDisconnect:  # gone, or cut off by BodySizeLimit, which has answered 413 already
        return Response(status_code=400)
    return JSONResponse(upload_data(upload), status_code=201, headers={"Location": f"{UPLOADS_PATH}/{upload.id}"})


@router.get("/api/v1/uploads/{upload_id}", tags=["uploads"], responses=errors(401, 404, 429))
async def get_upload(upload_id: str, system: SystemDep, user: UserDep) -> JSONResponse:
    """An upload's details; 404 UPLOAD_NOT_FOUND for an unknown, expired or someone else's upload."""
    return JSONResponse(upload_data(system.uploads.get(upload_id, user)))


@router.get(
    "/api/v1/uploads/{upload_id}/content",
    tags=["uploads"],
    responses={
        200: {"content": {content_type: {} for content_type in sorted(STORED_CONTENT_TYPES.values())}},
        **errors(401, 404, 429),
    },
)
async def upload_content(upload_id: str, system: SystemDep, user: UserDep) -> Response:
    """The stored picture: upright, without metadata (no EXIF, GPS or comments)."""
    upload = system.uploads.get(upload_id, user)
    data = await asyncio.to_thread(system.uploads.read, upload)  # maybe an S3 call
    if data is None:
        raise UploadNotFound(upload_id)
    return Response(data, media_type=upload.content_type, headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/api/v1/uploads/{upload_id}", tags=["uploads"], status_code=204, responses=errors(401, 404, 409, 429))
async def delete_upload(upload_id: str, system: SystemDep, user: UserDep) -> Response:
    """Remove the upload and its file; 409 UPLOAD_IN_USE while an unfinished job still has to take it."""
    await system.uploads.delete(upload_id, user)
    return Response(status_code=204)
