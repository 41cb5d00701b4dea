"""One job in the studio's list: thumbnail, prompt, status, progress per step, time, cost, actions.

A card keeps the job's public data (`backend.jobs.public.job_data`) and is a single NiceGUI element
whose one prop, the card's view, the browser draws (job_card.js): building a page of twenty
cards, updating one on an event and re-pointing one at another job each cost the server one
element, where separate labels, bars and buttons cost about fifty (NiceGUI inspects the
signature of every element's change handlers as it makes them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui.element import Element
from nicegui.events import GenericEventArguments

from backend.jobs.public import PREVIEW_URL_KEY, media_path, with_query

from .format import (
    FINISHED_STATUSES,
    LOCAL_RENDERER_HINT,
    STEP_TITLES,
    UNFINISHED_STATUSES,
    between,
    duration,
    money,
    provider_name,
    status_classes,
    status_label,
    understood,
)

JobData = dict[str, Any]
#: Where the studio serves small JPEG thumbnails of job images (app/pages.py).
THUMBNAIL_ROUTE = "/studio/thumbnails"
#: A step's bar color by the step's status (running and pending: the palette's primary).
STEP_COLORS = {"failed": "negative", "cancelled": "grey-6", "completed": "positive"}
#: The placeholder's icon while a job has no image, by status.
THUMBNAIL_ICONS = {"failed": "broken_image", "cancelled": "hide_image"}
Action = Callable[[JobData], Any]


def thumbnail_url(job_id: str) -> str:
    return f"{THUMBNAIL_ROUTE}/{job_id}.jpg"


def set_prop(element: Element, key: str, value: Any) -> None:
    """Set a prop, sending an update only when it really changed."""
    if value is None:
        if key in element._props:
            del element._props[key]
    elif element._props.get(key) != value:
        element._props[key] = value


def set_visible(element: Element, visible: bool) -> None:
    if element.visible != visible:
        element.visible = visible


class JobCard(Element, component="job_card.js"):
    """A job's card: one element whose `job` prop (`view`) the browser draws (job_card.js).

    The list keeps a page's cards and re-points them at other jobs (`show`) instead of making
    new ones, and `render` sends the card again only when what it shows changed."""

    def __init__(
        self,
        job: JobData,
        *,
        on_cancel: Action,
        on_rerun: Action,
        on_prefill: Action,
        link: Callable[[str], str] = str,
        on_remove: Action,
        on_animate: Action | None = None,
    ):
        super().__init__()
        self._props["hint"] = LOCAL_RENDERER_HINT
        self.link = link
        self.job = job
        self._actions: dict[str, Action] = {"cancel": on_cancel, "rerun": on_rerun, "prefill": on_prefill, "remove": on_remove}
        if on_animate is not None:  # "Animate this one", on a completed image-only job
            self._actions["animate"] = on_animate
        self.classes("nicegui-card pr-card w-full p-3 sm:p-4")
        self.on("action", self._on_action)
        self.show(job)

    @property
    def view(self) -> dict[str, Any]:
        """What the card shows, as the browser got it."""
        return self._props["job"]

    # -- updates ----------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one bus event about this job into the card's data (render() shows it)."""
        kind, data = event["type"], event["data"]
        job = self.job
        if kind == "step_update":
            for step in job.get("steps", []):
                if step["id"] != data["id"]:
                    continue
                # Older than the store's data the list just read: within a status, progress only grows.
                if step.get("status") == data.get("status") and (data.get("progress") or 0) < (step.get("progress") or 0):
                    continue
                step.update(data)
            if data["id"] == "image_generation" and data["status"] == "completed" and not job.get("image_url"):
                job["image_url"] = media_path(job["id"], "image")
        elif kind in ("job_update", "job_completed", "job_failed"):
            if data.get("progress", 0) < job.get("progress", 0):
                data = {**data, "progress": job["progress"]}  # progress never goes down, even if events cross
            job.update({key: value for key, value in data.items() if key != "id"})

    def show(self, job: JobData) -> None:
        """Show `job` (new data from the store, or another job: the list re-points its cards)."""
        self.job = job
        self.mark(f"job-card {job['id']}")
        self.render()

    def render(self) -> None:
        view = self._view()
        if view != self._props.get("job"):
            self._props["job"] = view

    def _view(self) -> dict[str, Any]:
        job = self.job
        job_id, status = job["id"], job["status"]
        meta = job.get("metadata") or {}
        finished = status in FINISHED_STATUSES
        cost = job.get("cost") or {}
        has_image = bool(job.get("image_url"))
        drawn, not_understood = understood(meta) or ("", "")
        image_only = bool(meta.get("imageOnly"))
        length = "image only" if image_only else f"{meta.get('videoDuration', '')} s"
        batch_id = job.get("batch_id")
        # An animated image-only job's picture is that job's image (POST /api/v1/jobs/{id}/animate).
        picture = "Image of a job" if meta.get("sourceJob") else provider_name(job["provider"])
        return {
            "id": job_id,
            "href": f"/jobs/{job_id}",
            "prompt": job["prompt"],
            "status": status,
            "statusLabel": status_label(status),
            "statusClasses": status_classes(status),
            "unfinished": status in UNFINISHED_STATUSES,
            "providers": f"{picture} → {provider_name(meta.get('videoProvider'))}",
            "models": f"Models: {meta.get('imageModel') or '?'} → {meta.get('videoModel') or '?'}",
            "settings": f"{meta.get('imageSize', '')} · {length} · {meta.get('quality', '')}",
            "seed": f"seed {meta.get('seed')}",
            "progress": int(job.get("progress") or 0),
            "steps": [
                {
                    "id": step["id"],
                    "name": step["name"],
                    "title": STEP_TITLES.get(step["id"], step["name"]),
                    "progress": int(step.get("progress") or 0),
                    "color": STEP_COLORS.get(step.get("status"), "primary"),
                }
                for step in job.get("steps", [])
            ],
            "error": (job.get("error") or "") if status == "failed" else "",
            "drew": drawn,  # what the local renderer understood of the prompt (empty for other providers)
            "notUnderstood": not_understood,
            # The browser runs the clock (theme.CLOCK_JS); the server sets the start and, once finished, the end.
            "elapsedFrom": job.get("created_at"),
            "elapsedTo": job.get("updated_at") if finished else None,
            "elapsed": duration(between(job.get("created_at"), job.get("updated_at"))) if finished else self._started_text(),
            "cost": money(cost.get("total")) if (finished or cost.get("total")) else "…",
            "thumbnail": self.link(thumbnail_url(job_id)) if has_image else None,
            "thumbnailIcon": THUMBNAIL_ICONS.get(status, "image"),
            "image": self.link(media_path(job_id, "image")) if has_image else None,
            "preview": None if has_image else self._preview(),
            "video": self.link(media_path(job_id, "video")) if job.get("video_url") else None,
            # A completed image-only job: the video is a new job (POST /api/v1/jobs/{id}/animate).
            "animatable": "animate" in self._actions and image_only and status == "completed" and has_image,
            "batchHref": f"/batches/{batch_id}" if batch_id else None,
        }

    def _preview(self) -> str | None:
        """The latest live preview of the running image step (ComfyUI's sampling), until the image comes."""
        for step in self.job.get("steps", []):
            if step["id"] == "image_generation" and step.get("status") == "running" and step.get(PREVIEW_URL_KEY):
                path, _, query = str(step[PREVIEW_URL_KEY]).partition("?")  # signed by its path, as the route checks it
                return with_query(self.link(path), query)
        return None

    def _started_text(self) -> str:
        """The running clock's first text; kept while the job runs, as the browser ticks it on."""
        shown = self._props.get("job")
        if shown and shown["id"] == self.job["id"] and shown["elapsedTo"] is None:
            return shown["elapsed"]
        return duration(between(self.job.get("created_at"), None))

    def _on_action(self, event: GenericEventArguments) -> Any:
        action = self._actions.get(event.args)
        return action(self.job) if action else None

    def _displayed_contents(self, *, only_visible: bool) -> list:
        """The texts the card shows (NiceGUI's element filter, and so its simulated user, reads these)."""
        view = self.view
        understanding = [f"Drew: {view['drew']}", f"Not understood: {view['notUnderstood']}"] if view["drew"] else []
        return [
            view["prompt"],
            view["statusLabel"],
            f"{view['progress']}%",
            view["error"],
            view["cost"],
            view["providers"],
            *understanding,
        ]
