"""One job in the studio's list: thumbnail, prompt, status, progress per step, time, cost, actions.

A card keeps the job's public data (`backend.public.job_data`) and changes only its own
elements when an event about its job arrives; nothing is rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui
from nicegui.element import Element

from backend.public import media_path

from .format import (
    FINISHED_STATUSES,
    STEP_TITLES,
    UNFINISHED_STATUSES,
    between,
    duration,
    money,
    provider_name,
    status_classes,
    status_label,
)

JobData = dict[str, Any]
#: Where the studio serves small JPEG thumbnails of job images (app/pages.py).
THUMBNAIL_ROUTE = "/studio/thumbnails"


def thumbnail_url(job_id: str) -> str:
    return f"{THUMBNAIL_ROUTE}/{job_id}.jpg"
Action = Callable[[JobData], Any]


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


class JobCard:
    def __init__(
        self,
        job: JobData,
        *,
        on_cancel: Action,
        on_rerun: Action,
        on_prefill: Action,
        link: Callable[[str], str] = str,
        on_remove: Action,
    ):
        self.link = link
        self.job = job
        job_id = job["id"]
        self.element = ui.card().classes("pr-card w-full p-3 sm:p-4").props(
            f'flat role=article aria-label="Job: {_attr(job["prompt"][:80])}" data-job-id={job_id} data-testid=job-card'
        ).mark(f"job-card {job_id}")
        with self.element:
            with ui.row().classes("w-full gap-3 sm:gap-4 no-wrap items-start"):
                with ui.link(target=f"/jobs/{job_id}").classes("pr-thumb pr-plain").props(
                    f'aria-label="Open job {job_id}" tabindex=-1'
                ) as self.thumb_link:
                    self.thumb = ui.element("img").props('alt="" loading=lazy decoding=async data-testid=thumbnail')
                    self.thumb.on("error", self._thumbnail_missing)
                    self._thumb_missing = False
                    self.thumb_empty = ui.element("div").classes("pr-thumb-empty w-full h-full")
                    with self.thumb_empty:
                        self.thumb_icon = ui.icon("image", size="30px")
                with ui.column().classes("grow min-w-0 gap-1.5"):
                    with ui.row().classes("w-full items-start justify-between no-wrap gap-2"):
                        ui.link(job["prompt"], target=f"/jobs/{job_id}").classes("pr-prompt pr-prompt-link min-w-0").props(
                            f'title="{_attr(job["prompt"][:300])}" data-testid=job-prompt'
                        )
                        self.status = ui.label().props("data-testid=job-status role=status").mark(f"job-status status-{job_id}")
                    with ui.row().classes("items-center gap-1.5"):
                        meta = job.get("metadata") or {}
                        ui.label(
                            f'{provider_name(job["provider"])} → {provider_name(meta.get("videoProvider"))}'
                        ).classes("pr-chip").props("data-testid=job-provider")
                        ui.label(f'{meta.get("imageSize", "")} · {meta.get("videoDuration", "")} s · {meta.get("quality", "")}').classes(
                            "pr-chip gt-xs"
                        )
                        ui.label(f'seed {meta.get("seed")}').classes("pr-chip gt-sm")
                    with ui.row().classes("w-full items-center gap-2 no-wrap"):
                        self.bar = ui.linear_progress(0, show_value=False, size="8px").classes("pr-bar pr-bar-overall grow rounded").props(
                            'rounded animation-speed=300 aria-label="Overall progress" data-testid=job-progress'
                        )
                        self.percent = ui.label().classes("text-xs font-semibold w-10 text-right").props("data-testid=job-percent")
                    with ui.row().classes("w-full items-center gap-x-4 gap-y-1"):
                        self.steps: dict[str, tuple[ui.linear_progress, ui.label]] = {}
                        for step in job.get("steps", []):
                            with ui.row().classes("items-center gap-1.5 no-wrap"):
                                ui.label(STEP_TITLES.get(step["id"], step["name"])).classes("pr-step-label")
                                bar = ui.linear_progress(0, show_value=False, size="5px").classes("pr-bar w-16 sm:w-24 rounded").props(
                                    f'rounded animation-speed=300 aria-label="{step["name"]} progress" data-testid=step-{step["id"]}'
                                )
                                label = ui.label().classes("pr-step-label w-8")
                            self.steps[step["id"]] = (bar, label)
                    self.error = ui.label().classes("pr-error-text").props("data-testid=job-error")
                    with ui.row().classes("w-full items-center justify-between gap-2 pt-0.5"):
                        with ui.row().classes("items-center gap-3 text-xs pr-muted"):
                            with ui.row().classes("items-center gap-1 no-wrap"):
                                ui.icon("timer", size="15px")
                                self.elapsed = ui.label().props("data-testid=job-elapsed")
                            with ui.row().classes("items-center gap-1 no-wrap"):
                                ui.icon("payments", size="15px")
                                self.cost = ui.label().props("data-testid=job-cost")
                        with ui.row().classes("pr-actions items-center gap-0.5 no-wrap"):
                            self.cancel_button = _icon_button("stop_circle", "Cancel job", lambda: on_cancel(self.job), "cancel", "negative")
                            _icon_button("open_in_new", "Open job page", lambda: ui.navigate.to(f"/jobs/{job_id}"), "open")
                            self.image_link = _download_button("image", "Download image", link(media_path(job_id, "image")))
                            self.video_link = _download_button("movie", "Download video", link(media_path(job_id, "video")), kind="video")
                            _icon_button("replay", "Run again with the same settings", lambda: on_rerun(self.job), "rerun")
                            _icon_button("tune", "Edit these settings in the form", lambda: on_prefill(self.job), "prefill")
                            _icon_button("delete_outline", "Remove from history", lambda: on_remove(self.job), "remove")
        self.render()

    # -- updates ----------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one bus event about this job into the card's data (render() shows it)."""
        kind, data = event["type"], event["data"]
        job = self.job
        if kind == "step_update":
            for step in job.get("steps", []):
                if step["id"] == data["id"]:
                    step.update(data)
            if data["id"] == "image_generation" and data["status"] == "completed" and not job.get("image_url"):
                job["image_url"] = media_path(job["id"], "image")
        elif kind in ("job_update", "job_completed", "job_failed"):
            if data.get("progress", 0) < job.get("progress", 0):
                data = {**data, "progress": job["progress"]}  # progress never goes down, even if events cross
            job.update({key: value for key, value in data.items() if key != "id"})

    def replace(self, job: JobData) -> None:
        """New data from the store (after a list reload)."""
        self.job = job
        self.render()

    def _thumbnail_missing(self) -> None:
        self._thumb_missing = True
        self.render()

    def render(self) -> None:
        job = self.job
        status = job["status"]
        self.status.text = status_label(status)
        self.status.classes(replace=status_classes(status))
        progress = int(job.get("progress") or 0)
        self.bar.value = progress / 100
        self.percent.text = f"{progress}%"
        for step in job.get("steps", []):
            if step["id"] in self.steps:
                bar, label = self.steps[step["id"]]
                bar.value = (step.get("progress") or 0) / 100
                color = {"failed": "negative", "cancelled": "grey-6", "completed": "positive"}.get(step.get("status"), "primary")
                set_prop(bar, "color", color)
                label.text = f'{step.get("progress") or 0}%'
        error = job.get("error") or ""
        self.error.text = error
        set_visible(self.error, bool(error) and status == "failed")
        # The browser runs the clock; the server sets the start and, once finished, the end.
        finished = status in FINISHED_STATUSES
        set_prop(self.elapsed, "data-elapsed-from", job.get("created_at"))
        set_prop(self.elapsed, "data-elapsed-to", job.get("updated_at") if finished else None)
        if finished or not self.elapsed.text:
            self.elapsed.text = duration(between(job.get("created_at"), job.get("updated_at") if finished else None))
        cost = job.get("cost") or {}
        self.cost.text = money(cost.get("total")) if (finished or cost.get("total")) else "…"
        image_url = job.get("image_url") if not self._thumb_missing else None
        if image_url:
            set_prop(self.thumb, "src", self.link(thumbnail_url(job["id"])))
        set_visible(self.thumb, bool(image_url))
        set_visible(self.thumb_empty, not image_url)
        self.thumb_icon.name = "broken_image" if self._thumb_missing else {"failed": "broken_image", "cancelled": "hide_image"}.get(status, "image")
        self.thumb_icon.classes(replace="animate-pulse" if status in UNFINISHED_STATUSES else "")
        set_visible(self.cancel_button, status in UNFINISHED_STATUSES)
        _enable_link(self.image_link, bool(image_url))
        _enable_link(self.video_link, bool(job.get("video_url")))


def _attr(text: str) -> str:
    """Text made safe inside a double-quoted prop value."""
    return text.replace("\\", "\\\\").replace('"', "'").replace("\n", " ")


def _icon_button(icon: str, label: str, on_click: Callable[[], Any], testid: str, color: str | None = None) -> ui.button:
    button = ui.button(icon=icon, on_click=on_click, color=None).props(f'flat round dense aria-label="{label}" data-testid={testid}')
    if color:
        button.props(f"color={color}")
    else:
        button.classes("pr-icon-btn")
    button.tooltip(label)
    return button


def _download_button(icon: str, label: str, href: str, kind: str = "image") -> ui.button:
    button = ui.button(icon=icon, color=None).props(
        f'flat round dense href="{href}" download aria-label="{label}" data-testid=download-{kind}'
    ).classes("pr-icon-btn")
    button.tooltip(label)
    return button


def _enable_link(button: ui.button, enabled: bool) -> None:
    if enabled:
        if "disable" in button._props:
            button.props(remove="disable")
    elif "disable" not in button._props:
        button.props("disable")
