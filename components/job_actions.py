"""The studio's actions on one job, shared by the list's cards and the job page: cancel, run
again, and remove (after a confirmation dialog).

They go through `JobService` as the REST API does and tell the viewer how it went; what comes
after a success (a notice, a new page) is the caller's. `anchor` is an element that outlives
the action: a card may be deleted while its dialog is open or its removal runs (the list
re-reads its page on the job's events), so the dialog and the notices are made inside `anchor`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from nicegui import ui
from nicegui.element import Element
from pydantic import ValidationError

from backend.auth import LOCAL_USER, User
from backend.errors import ApiError
from backend.jobs.request import AnimateRequest, describe, validate_request
from backend.store.jobs import JobRecord
from backend.system import System

from .format import UNFINISHED_STATUSES

JobData = dict[str, Any]

#: The settings that, with the prompt and the image provider, make a job again (seed included).
RERUN_SETTINGS = ("imageSize", "videoDuration", "quality", "seed", "videoProvider", "imageOnly")
#: The settings that, with the prompt, make an animated image-only job's video again.
ANIMATE_SETTINGS = ("videoDuration", "videoProvider", "videoModel")


def rerun_request(job: JobData) -> dict[str, Any]:
    """The request that made `job`, seed included: running it again gives the same local result."""
    meta = job.get("metadata") or {}
    settings = {key: meta[key] for key in RERUN_SETTINGS if meta.get(key) is not None}
    return {"prompt": job["prompt"], "provider": job["provider"], "settings": settings}


def _inside(anchor: Element | None) -> Any:
    return anchor if anchor is not None else nullcontext()


async def cancel_job(system: System, job_id: str, anchor: Element | None = None, user: User = LOCAL_USER) -> bool:
    """Cancel a running job; says so, or why it could not (it finished meanwhile, ...)."""
    try:
        await system.jobs.cancel(job_id, user)
    except ApiError as error:
        with _inside(anchor):
            ui.notify(error.message, type="warning", position="top")
        return False
    with _inside(anchor):
        ui.notify("Job cancelled.", icon="stop_circle", position="top")
    return True


async def rerun_job(system: System, job: JobData, anchor: Element | None = None, user: User = LOCAL_USER) -> JobRecord | None:
    """Start `job` again with the same settings; None (and a notice why) when it is refused. A job
    that animated an image-only job's image animates that image again."""
    meta = job.get("metadata") or {}
    try:
        if meta.get("sourceJob"):
            settings = {key: meta[key] for key in ANIMATE_SETTINGS if meta.get(key) is not None}
            again = AnimateRequest.model_validate({"prompt": job["prompt"], "settings": settings})
            return await system.jobs.animate(meta["sourceJob"], again, user)
        return await system.jobs.create(validate_request(rerun_request(job)), user)
    except ValidationError as error:
        with _inside(anchor):
            ui.notify(describe(error.errors())[0], type="negative", position="top")
    except ApiError as error:
        with _inside(anchor):
            ui.notify(error.message, type="negative", position="top")
    return None


async def animate_job(system: System, job: JobData, anchor: Element | None = None, user: User = LOCAL_USER) -> JobRecord | None:
    """Make the video of a completed image-only job: a new job that takes its image (the API's
    POST /api/v1/jobs/{id}/animate); None (and a notice why) when it is refused."""
    try:
        return await system.jobs.animate(job["id"], AnimateRequest(), user)
    except ApiError as error:
        with _inside(anchor):
            ui.notify(error.message, type="negative", position="top")
    return None


async def confirm_remove(job: JobData, anchor: Element | None = None) -> bool:
    """Ask whether to remove `job` from the history; True when the viewer confirmed."""
    with (
        _inside(anchor),
        ui.dialog() as dialog,
        ui.card().classes("pr-card p-5 gap-3 max-w-md").props('role=alertdialog aria-label="Remove job"'),
    ):
        ui.label("Remove this job from history?").classes("pr-section-title")
        ui.label(job["prompt"]).classes("text-sm pr-muted pr-prompt")
        running = job["status"] in UNFINISHED_STATUSES
        ui.label(
            ("It is still running and will be cancelled. " if running else "") + "Its image and video are deleted too."
        ).classes("text-sm")
        with ui.row().classes("w-full justify-end gap-2"):
            ui.button("Keep", on_click=lambda: dialog.submit(False)).props("flat no-caps data-testid=remove-keep")
            ui.button("Remove", icon="delete", on_click=lambda: dialog.submit(True)).props(
                "unelevated no-caps color=negative autofocus data-testid=remove-confirm"
            )
    confirmed = await dialog
    dialog.delete()
    return bool(confirmed)


async def remove_job(
    system: System,
    job: JobData,
    anchor: Element | None = None,
    *,
    on_confirmed: Callable[[], Any] | None = None,
    user: User = LOCAL_USER,
) -> bool:
    """Confirm, then remove `job` (cancelling it first if it runs) with its files.

    `on_confirmed` runs once the viewer said yes, before the removal starts. True when removed."""
    if not await confirm_remove(job, anchor):
        return False
    if on_confirmed is not None:
        on_confirmed()
    try:
        await system.jobs.remove(job["id"], user)
    except ApiError as error:
        with _inside(anchor):
            ui.notify(error.message, type="warning", position="top")
        return False
    return True


def job_started_toast(job_id: str, note: str = "") -> None:
    """The one toast a new job gets: where it is, with an action that opens its page."""
    ui.notify(
        f"Job started.{' ' + note if note else ''}",
        type="positive",
        icon="movie_filter",
        position="top",
        timeout=4000,
        actions=[
            {"label": "Open", "color": "white", "href": f"/jobs/{job_id}", "noCaps": True, "aria-label": "Open the new job"}
        ],
    )
