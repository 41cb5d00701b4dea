"""Errors a client can get, each with a stable UPPER_SNAKE code and an HTTP status."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status_code = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "details": self.details}


class JobNotFound(ApiError):
    status_code = 404
    code = "JOB_NOT_FOUND"

    def __init__(self, job_id: str):
        super().__init__(f"No job with id '{job_id}'.", {"field": "id", "id": job_id})


class JobNotCancellable(ApiError):
    status_code = 409
    code = "JOB_NOT_CANCELLABLE"

    def __init__(self, job_id: str, status: str):
        super().__init__(f"Job '{job_id}' is already {status} and cannot be cancelled.", {"id": job_id, "status": status})


class MediaNotReady(ApiError):
    status_code = 404
    code = "MEDIA_NOT_READY"

    def __init__(self, job_id: str, kind: str, status: str):
        super().__init__(
            f"The {kind} of job '{job_id}' is not ready (job is {status}).", {"id": job_id, "type": kind, "status": status}
        )


class PreviewNotFound(ApiError):
    # No preview right now: the step does not send any (not ComfyUI), it has not sent one yet, or it ended.
    status_code = 404
    code = "PREVIEW_NOT_FOUND"

    def __init__(self, job_id: str, status: str):
        super().__init__(f"Job '{job_id}' has no preview right now (job is {status}).", {"id": job_id, "status": status})


class MediaUnavailable(ApiError):
    # The media store (an S3 bucket) does not answer: a retry may work once it is back.
    status_code = 503
    code = "MEDIA_UNAVAILABLE"

    def __init__(self, job_id: str, kind: str, reason: str):
        super().__init__(f"The {kind} of job '{job_id}' cannot be read right now: {reason}", {"id": job_id, "type": kind})


class ProviderNotConfigured(ApiError):
    # 400, not 503: retrying will not help until the server's configuration changes.
    status_code = 400
    code = "PROVIDER_UNAVAILABLE"

    def __init__(self, message: str, provider: str, missing_setting: str):
        super().__init__(message, {"field": "provider", "provider": provider, "missing": missing_setting})


class JobBusy(ApiError):
    status_code = 409
    code = "JOB_BUSY"

    def __init__(self, job_id: str):
        super().__init__(f"Job '{job_id}' is still stopping; try again in a moment.", {"id": job_id})


class PriceUnknown(ApiError):
    # A server setting names a model this service has no price for: refuse rather than guess.
    status_code = 400
    code = "PRICE_UNKNOWN"

    def __init__(self, message: str, provider: str, video_provider: str):
        super().__init__(
            f"{message[0].upper()}{message[1:]}: choose a model with a published price (see docs/providers.md).",
            {"provider": provider, "videoProvider": video_provider},
        )


class ModelUnavailable(ApiError):
    # A model the catalog knows but that cannot run now (retired, refused, missing at the provider).
    status_code = 400
    code = "MODEL_UNAVAILABLE"

    def __init__(self, field: str, model: str, reason: str, replacement: str | None):
        way_out = f"choose {replacement}" if replacement else "choose another model (GET /api/v1/models)"
        super().__init__(
            f"{field}: model '{model}' is unavailable: {reason}; {way_out}, or update the model catalog.",
            {"field": field, "model": model, "reason": reason, "replacement": replacement},
        )


class Unauthorized(ApiError):
    status_code = 401
    code = "UNAUTHORIZED"

    def __init__(self, message: str = "A valid API token is needed: send 'Authorization: Bearer <token>'."):
        super().__init__(message)


class SignatureInvalid(ApiError):
    # A media URL whose signature was changed or has expired: a fresh job read gives a new one.
    status_code = 403
    code = "SIGNATURE_INVALID"

    def __init__(self, reason: str):
        super().__init__(f"This media link is not valid: {reason}. Read the job again for a fresh link.", {"reason": reason})


class QueueFull(ApiError):
    # The service holds as many unfinished jobs as it is configured for: try again later.
    status_code = 503
    code = "QUEUE_FULL"

    def __init__(self, limit: int):
        super().__init__(f"The queue is full ({limit} unfinished jobs); try again when some have finished.", {"limit": limit})


class RateLimited(ApiError):
    # Too many jobs from one user within a minute; Retry-After says when one more is accepted.
    status_code = 429
    code = "RATE_LIMITED"

    def __init__(self, limit: int, retry_after: int):
        super().__init__(
            f"Too many jobs: at most {limit} per minute. Try again in {retry_after} s.",
            {"limit": limit, "retryAfter": retry_after},
        )
        self.headers = {"Retry-After": str(retry_after)}


class TooManyWrongTokens(ApiError):
    # One client address sent too many wrong API tokens within a minute: guessing is slowed to a crawl.
    status_code = 429
    code = "RATE_LIMITED"

    def __init__(self, limit: int, retry_after: int):
        super().__init__(
            f"Too many wrong API tokens from this address: at most {limit} per minute. Try again in {retry_after} s.",
            {"limit": limit, "retryAfter": retry_after},
        )
        self.headers = {"Retry-After": str(retry_after)}


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"

    def __init__(self, max_bytes: int):
        super().__init__(f"The request body is larger than {max_bytes} bytes.", {"maxBytes": max_bytes})


class MediaExpired(ApiError):
    # 410, not 404: the file existed and retention removed it; asking again will not bring it back.
    status_code = 410
    code = "MEDIA_EXPIRED"

    def __init__(self, job_id: str, kind: str, expired_at: str | None):
        super().__init__(
            f"The {kind} of job '{job_id}' was removed on {expired_at} (media retention); the job itself is kept.",
            {"id": job_id, "type": kind, "expiredAt": expired_at},
        )


class UnsupportedMediaType(ApiError):
    # Judged by the file's first bytes, whatever its name or declared type says.
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"

    def __init__(self, message: str, accepted: list[str]):
        super().__init__(message, {"accepted": accepted})


class ImageInvalid(ApiError):
    # A picture of a taken type by its first bytes that cannot be taken: `details.reason` says why.
    status_code = 422
    code = "IMAGE_INVALID"

    def __init__(self, reason: str, message: str):
        super().__init__(message, {"reason": reason})


class UploadNotFound(ApiError):
    status_code = 404
    code = "UPLOAD_NOT_FOUND"

    def __init__(self, upload_id: str):
        super().__init__(f"No upload with id '{upload_id}'.", {"field": "id", "id": upload_id})


class UploadInUse(ApiError):
    # An unfinished job still has to take the picture: deleting it now would fail that job.
    status_code = 409
    code = "UPLOAD_IN_USE"

    def __init__(self, upload_id: str, job_ids: list[str]):
        super().__init__(
            f"Upload '{upload_id}' is used by {len(job_ids)} unfinished job(s); delete it once they have ended.",
            {"id": upload_id, "jobs": job_ids},
        )


class FieldInvalid(ApiError):
    # The same shape as a request validation error (422 VALIDATION_ERROR naming the field), for
    # what only the service can judge (an upload id that is not the caller's).
    status_code = 422
    code = "VALIDATION_ERROR"

    def __init__(self, field: str, message: str):
        text = f"{field}: {message}"
        super().__init__(text, {"field": field, "errors": [{"field": field, "message": text}]})
        self.field = field
        self.reason = message


class BatchNotFound(ApiError):
    status_code = 404
    code = "BATCH_NOT_FOUND"

    def __init__(self, batch_id: str):
        super().__init__(f"No batch with id '{batch_id}'.", {"field": "id", "id": batch_id})


class JobNotAnimatable(ApiError):
    # Only a completed image-only job with its image can be animated; finished is final, so the
    # video is a new job (POST /api/v1/jobs/{id}/animate).
    status_code = 409
    code = "JOB_NOT_ANIMATABLE"

    def __init__(self, job_id: str, status: str, reason: str):
        super().__init__(f"Job '{job_id}' cannot be animated: {reason}.", {"id": job_id, "status": status, "reason": reason})
