"""Where generated images and videos live on disk.

Paths are built only from job ids this service made (checked against their pattern), never
from request text; the store keeps paths relative to the media root.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

JOB_ID_PATTERN = re.compile(r"^job_[A-Za-z0-9_-]{8,40}$")
MEDIA_TYPES = {"image": ("image.png", "image/png"), "video": ("video.mp4", "video/mp4")}


class MediaStore:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def relative_path(self, job_id: str, kind: str) -> str:
        if not JOB_ID_PATTERN.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return f"{job_id}/{MEDIA_TYPES[kind][0]}"

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

    def write_image(self, job_id: str, png: bytes) -> str:
        path = self.path_for(job_id, "image")
        tmp = path.with_suffix(".part")
        tmp.write_bytes(png)
        tmp.replace(path)  # atomic: a reader never sees half a file
        return self.relative_path(job_id, "image")

    def remove_job(self, job_id: str) -> None:
        if JOB_ID_PATTERN.match(job_id):
            shutil.rmtree(self.root / job_id, ignore_errors=True)
