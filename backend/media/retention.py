"""Media retention (the guide's "file cleanup"): the files of finished jobs are removed once
they are older than PROMPTREEL_MEDIA_RETENTION_DAYS; the job stays in the history, marked
expired (`Job.media_expired_at`), and its downloads answer 410 MEDIA_EXPIRED.

- The age counts from `updated_at`, not `created_at`: a finished job's last change is when it
  ended, i.e. when its last file was written. From `created_at`, a job that waited in the queue
  or ran long could lose its video moments after it was made.
- `image_path`/`video_path` are kept: they say which media the job had, so a download tells
  "removed" (410) from "never made" (404 MEDIA_NOT_READY); `public.media_urls` hides the URLs.
- Every finished job past the age is marked, with media or without (a failed job may have
  left half-files): marked, it is never looked at again.

System._keep_house runs this every `round_interval(...)` seconds on every serving instance;
the mark is a conditional UPDATE, so with several instances each job is announced once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from backend.events.bus import EventBus
from backend.jobs import public
from backend.media.store import MediaStore
from backend.store.jobs import JobStore
from backend.store.models import utcnow

log = logging.getLogger(__name__)
#: Jobs read per query: a long backlog is worked through in batches, not one huge list.
BATCH_SIZE = 500
#: Shortest pause between two rounds (s): a tiny retention must not turn housekeeping into a busy loop.
MIN_ROUND_INTERVAL = 1.0


def round_interval(retention_days: float, longest: float) -> float:
    """Seconds between two rounds: a tenth of the retention (media outlive it by 10 % at most),
    but never more than `longest` nor less than MIN_ROUND_INTERVAL."""
    return max(MIN_ROUND_INTERVAL, min(longest, retention_days * 86400 / 10))


def expire_media(store: JobStore, media: MediaStore, older_than: datetime, *, batch_size: int = BATCH_SIZE) -> list[str]:
    """Remove the media of the finished jobs last changed before `older_than` and mark them
    expired; answers the ids this call marked, oldest first.

    Blocking (store and media calls, maybe S3): async callers run it in a thread.
    """
    # Refused before anything is touched: a naive or future cutoff would expire the wrong jobs.
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware (UTC)")
    if older_than > utcnow():
        raise ValueError(f"older_than is in the future: {older_than.isoformat()}")
    expired: list[str] = []
    while True:
        batch = store.media_to_expire(older_than, batch_size)
        for job_id in batch:
            # Files first, mark second: a crash in between leaves the job to the next round,
            # never files that nobody would remove.
            media.remove_job(job_id)
            if store.mark_media_expired(job_id, utcnow()) is not None:
                expired.append(job_id)
        if len(batch) < batch_size:  # marked jobs drop out of the query, so each batch is new
            break
    if expired:
        log.info("media retention removed the media of %d job(s)", len(expired))
    return expired


def announce_expired(store: JobStore, bus: EventBus, job_ids: Iterable[str]) -> None:
    """A job_update per expired job (its updated_at moved): clients that show it read it again
    and find its media URLs gone. On the event loop, after the store says so."""
    for job_id in job_ids:
        record = store.get(job_id)
        if record is not None:  # deleted meanwhile: nobody to tell
            bus.publish("job_update", job_id, public.job_update_data(record.job))
