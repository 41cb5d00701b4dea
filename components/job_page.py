"""The page of one job: its image and video, the steps' timeline and log, settings, cost, error.

While the job runs, its events (and only its events) reach this tab through the tab's feed;
each burst re-reads this one job from the store once (the step log is not in the events)
and updates the elements in place, so the video player is never rebuilt under the viewer.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui
from nicegui.elements.mixins.text_element import TextElement

from backend.auth import LOCAL_USER, User
from backend.events.bus import Event
from backend.jobs.public import PREVIEW_URL_KEY, job_data, media_path, with_query
from backend.jobs.request import GenerateRequest, GenerateSettings
from backend.providers.pricing import UnknownPrice
from backend.providers.registry import PROVIDER_LABELS
from backend.system import System

from .format import (
    FINISHED_STATUSES,
    LOCAL_RENDERER_HINT,
    STEP_STATUS_ICONS,
    UNFINISHED_STATUSES,
    between,
    duration,
    money,
    provider_name,
    status_classes,
    status_label,
    understood,
    utc_time,
)
from .job_actions import animate_job, cancel_job, remove_job, rerun_job
from .job_card import JobData, set_prop, set_visible
from .live import client_feed
from .session import media_link
from .webhook_card import WebhookCard

#: Metadata keys shown in their own rows above; the rest are listed as provider extras.
KNOWN_METADATA = {
    "imageSize",
    "videoDuration",
    "quality",
    "seed",
    "videoProvider",
    "imageProvider",  # the provider that ran it: the "Image provider" row names the one the job asked for
    "imageModel",
    "videoModel",
    "videoWidth",
    "videoHeight",
    "understoodWords",  # shown in the image card: what the local renderer drew
    "notUnderstoodWords",
    "imageOnly",  # an image-only job has a "Video" row saying so instead of the video's rows
}


def not_found(job_id: str) -> None:
    with (
        ui.card()
        .classes("pr-card w-full max-w-xl mx-auto p-8 items-center text-center gap-3")
        .props("flat data-testid=not-found")
    ):
        ui.icon("travel_explore", size="56px").classes("text-primary")
        ui.label("We could not find that job").classes("text-xl font-bold")
        ui.label(
            f"There is no job with the id “{job_id}”. It may have been removed from the history, or the link is incomplete."
        ).classes("pr-muted")
        ui.button("Back to the studio", icon="arrow_back", on_click=lambda: ui.navigate.to("/"), color=None).classes(
            "pr-gradient-btn mt-2"
        ).props("unelevated no-caps")


def unknown_route(path: str) -> None:
    """The studio's page for an address it does not have."""
    with (
        ui.card()
        .classes("pr-card w-full max-w-xl mx-auto p-8 items-center text-center gap-3")
        .props("flat data-testid=page-not-found")
    ):
        ui.icon("explore_off", size="56px").classes("text-primary")
        ui.label("There is no such page").classes("text-xl font-bold")
        ui.label(f"The studio has nothing at “{path[:200]}”. The link may be mistyped or out of date.").classes("pr-muted")
        ui.button("Back to the studio", icon="arrow_back", on_click=lambda: ui.navigate.to("/"), color=None).classes(
            "pr-gradient-btn mt-2"
        ).props("unelevated no-caps")


class JobDetail:
    def __init__(self, system: System, job: JobData, user: User = LOCAL_USER):
        self.system = system
        self.user = user
        self.job = job
        self.job_id = job["id"]
        self.removed = False
        self.video: ui.video | None = None
        self.image: ui.element | None = None
        #: The latest live preview of the running image step (ComfyUI's sampling), from its step_update.
        self.preview_url: str | None = None
        self.preview: ui.element | None = None

        with ui.row().classes("w-full items-center justify-between"):
            ui.link("← All jobs", "/").classes("text-sm font-semibold text-primary no-underline").props(
                'aria-label="Back to all jobs"'
            )
            ui.label(self.job_id).classes("pr-mono text-xs pr-muted").props("data-testid=job-id")

        # Title and actions
        with ui.card().classes("pr-card w-full p-5 gap-3").props("flat"):
            with ui.row().classes("w-full items-start justify-between gap-4"):
                with ui.column().classes("gap-2 grow min-w-0 basis-96"):
                    with ui.row().classes("items-center gap-2"):
                        self.status = ui.label().props("data-testid=job-status role=status")
                        ui.label("created").classes("text-xs pr-muted")
                        ui.label(utc_time(job["created_at"], with_date=True)).classes("text-xs pr-muted").props(
                            f"data-local-time={job['created_at']}"
                        )
                    ui.label(job["prompt"]).classes("text-lg sm:text-xl font-semibold leading-snug break-words").props(
                        "data-testid=job-prompt"
                    )
                with ui.row().classes("pr-actions items-center gap-2 flex-wrap"):
                    # A completed image-only job: its video is a new job (POST /api/v1/jobs/{id}/animate).
                    self.animate_button = ui.button("Animate this one", icon="movie_filter", on_click=self.animate).props(
                        "unelevated no-caps color=primary data-testid=animate"
                    )
                    if job.get("batch_id"):
                        ui.link("Batch", f"/batches/{job['batch_id']}").classes("pr-chip pr-plain").props("data-testid=job-batch")
                    self.cancel_button = ui.button("Cancel", icon="stop_circle", on_click=self.cancel).props(
                        "outline no-caps color=negative data-testid=cancel"
                    )
                    ui.button("Run again", icon="replay", on_click=self.rerun).props(
                        'outline no-caps color=primary aria-label="Run again with the same settings" data-testid=rerun'
                    )
                    self.image_button = ui.button("Image", icon="download", color=None).props(
                        f'flat no-caps href="{media_link(system, media_path(self.job_id, "image"))}" download'
                        ' aria-label="Download image" data-testid=download-image'
                    )
                    self.video_button = ui.button("Video", icon="download", color=None).props(
                        f'flat no-caps href="{media_link(system, media_path(self.job_id, "video"))}" download'
                        ' aria-label="Download video" data-testid=download-video'
                    )
                    ui.button("Remove", icon="delete_outline", on_click=self.confirm_remove, color=None).props(
                        'flat no-caps aria-label="Remove from history" data-testid=remove'
                    ).tooltip("Remove from history")
            with ui.row().classes("w-full items-center gap-3 no-wrap"):
                self.bar = (
                    ui.linear_progress(0, show_value=False, size="10px")
                    .classes("pr-bar pr-bar-overall grow")
                    .props('rounded animation-speed=300 aria-label="Overall progress" data-testid=job-progress')
                )
                self.percent = ui.label().classes("text-sm font-bold w-12 text-right").props("data-testid=job-percent")
                with ui.row().classes("items-center gap-1 no-wrap text-sm pr-muted"):
                    ui.icon("timer", size="16px")
                    self.elapsed = ui.label().props("data-testid=job-elapsed")

        with (
            ui.card()
            .classes("pr-card pr-alert-warning w-full p-4 gap-2")
            .props("flat role=status data-testid=removed") as self.removed_card
        ):
            with ui.row().classes("items-center gap-3"):
                ui.icon("delete_sweep", size="22px").classes("text-accent")
                ui.label("This job was removed from the history.").classes("font-semibold")
                ui.link("Back to the studio", "/").classes("text-primary font-semibold")
        self.removed_card.visible = False

        # What went wrong, in plain words
        with (
            ui.card()
            .classes("pr-card pr-alert-error w-full p-5 gap-2")
            .props("flat role=alert data-testid=job-error-card") as self.error_card
        ):
            with ui.row().classes("items-center gap-2"):
                ui.icon("error_outline", size="24px").classes("text-negative")
                ui.label("This job failed").classes("font-bold text-base")
            self.error = ui.label().classes("text-sm").props("data-testid=job-error")
            self.error_hint = ui.label().classes("text-xs pr-muted")

        with ui.element("div").classes(
            "w-full grid grid-cols-1 lg:grid-cols-[minmax(0,3fr)_minmax(320px,2fr)] gap-6 items-start"
        ):
            with ui.column().classes("gap-6 min-w-0"):
                self.video_caption, self.video_box, self.video_placeholder = self._media_card("Video", "movie")
                with ui.card().classes("pr-card w-full p-5 gap-2").props('flat aria-label="Steps"'):
                    ui.label("Timeline").classes("pr-section-title")
                    self.timeline = ui.timeline(side="right", layout="dense", color="primary").classes("w-full")
                    self.steps: dict[str, dict[str, Any]] = {}
                    with self.timeline:
                        for step in job["steps"]:
                            self.steps[step["id"]] = self._step_entry(step)
            with ui.column().classes("gap-6 min-w-0"):
                self.image_caption, self.image_box, self.image_placeholder = self._media_card("Image", "image")
                with (
                    ui.card()
                    .classes("pr-card w-full p-4 gap-1")
                    .props('flat aria-label="What the local renderer understood" data-testid=understood') as self.understood_card
                ):
                    ui.label("What the local renderer understood").classes("pr-section-title")
                    self.drew = ui.label().classes("text-sm").props("data-testid=drew")
                    self.not_understood = ui.label().classes("text-sm").props("data-testid=not-understood")
                    self.understood_hint = ui.label(LOCAL_RENDERER_HINT).classes("text-xs pr-muted")
                with ui.card().classes("pr-card w-full p-5 gap-3").props('flat aria-label="Settings"'):
                    ui.label("Settings used").classes("pr-section-title")
                    self.settings_list = ui.element("dl").classes("pr-kv").props("data-testid=settings")
                with ui.card().classes("pr-card w-full p-5 gap-3").props('flat aria-label="Cost"'):
                    with ui.row().classes("w-full items-center justify-between"):
                        ui.label("Cost").classes("pr-section-title")
                        self.cost_note = ui.label().classes("text-xs pr-muted")
                    with ui.element("dl").classes("pr-kv").props("data-testid=cost"):
                        self.cost_image = _kv("Image")
                        self.cost_video = _kv("Video")
                        self.cost_total = _kv("Total")
                    self.cost_total.classes("text-lg font-bold")
                WebhookCard(system, self.job_id, user)  # hidden when the job has no webhook
        self.render()
        client_feed(system.jobs).subscribe(self._on_events, accept=lambda event: event["jobId"] == self.job_id)

    # -- building -------------------------------------------------------------------

    def _media_card(self, title: str, icon: str) -> tuple[ui.label, ui.element, ui.element]:
        """A card for the video or the image: its caption, the box it goes in, and a placeholder until then."""
        with ui.card().classes("pr-card w-full p-4 gap-3").props(f'flat aria-label="{title}"'):
            with ui.row().classes("w-full items-center justify-between"):
                ui.label(title).classes("pr-section-title")
                caption = ui.label().classes("text-xs pr-muted")
            box = ui.element("div").classes("w-full")
            placeholder = self._placeholder(icon, f"The {title.lower()} appears here when it is ready.")
        return caption, box, placeholder

    def _placeholder(self, icon: str, text: str) -> ui.element:
        with ui.element("div").classes("pr-thumb pr-thumb-empty w-full h-56 flex-col gap-2 text-center") as box:
            ui.icon(icon, size="40px").classes("opacity-70")
            ui.label(text).classes("text-sm pr-muted px-6")
        box.style("width: 100%; height: 14rem")
        return box

    def _step_entry(self, step: dict[str, Any]) -> dict[str, Any]:
        entry = ui.timeline_entry(title=step["name"]).props(f"data-testid=timeline-{step['id']}")
        with entry:
            with ui.column().classes("w-full gap-1.5"):
                with ui.row().classes("w-full items-center gap-2 no-wrap"):
                    bar = (
                        ui.linear_progress(0, show_value=False, size="6px")
                        .classes("pr-bar grow")
                        .props(f'rounded animation-speed=300 aria-label="{step["name"]} progress"')
                    )
                    percent = ui.label().classes("text-xs w-10 text-right")
                with ui.row().classes("items-center gap-1 text-xs pr-muted").props(f"data-testid=times-{step['id']}"):
                    started_word = ui.label("started")
                    started = ui.label().props("data-local-style=time")
                    ended_word = ui.label("· ended")
                    ended = ui.label().props("data-local-style=time")
                    took = ui.label()
                with (
                    ui.expansion("Log", icon="notes")
                    .classes("w-full text-sm")
                    .props(f'dense header-class="px-0 text-xs" data-testid=log-{step["id"]}') as expansion
                ):
                    log = ui.label().classes("pr-log pr-mono w-full")
        return {
            "entry": entry,
            "bar": bar,
            "percent": percent,
            "log": log,
            "expansion": expansion,
            "started_word": started_word,
            "started": started,
            "ended_word": ended_word,
            "ended": ended,
            "took": took,
        }

    # -- showing --------------------------------------------------------------------

    def render(self) -> None:
        job = self.job
        status = job["status"]
        running = status in UNFINISHED_STATUSES
        self.status.text = status_label(status)
        self.status.classes(replace=status_classes(status))
        progress = int(job.get("progress") or 0)
        self.bar.value = progress / 100
        self.percent.text = f"{progress}%"
        finished = status in FINISHED_STATUSES
        set_prop(self.elapsed, "data-elapsed-from", job.get("created_at"))
        set_prop(self.elapsed, "data-elapsed-to", job.get("updated_at") if finished else None)
        if finished or not self.elapsed.text:
            self.elapsed.text = duration(between(job.get("created_at"), job.get("updated_at") if finished else None))
        set_visible(self.cancel_button, running and not self.removed)
        _enable(self.image_button, bool(job.get("image_url")))
        _enable(self.video_button, bool(job.get("video_url")))
        image_only = bool((job.get("metadata") or {}).get("imageOnly"))
        set_visible(self.video_button, not image_only)  # no video will ever be there to download
        set_visible(self.animate_button, image_only and status == "completed" and bool(job.get("image_url")) and not self.removed)

        failed = status == "failed"
        set_visible(self.error_card, failed)
        if failed:
            self.error.text = job.get("error") or "The job failed without a reason."
            paid = (job.get("cost") or {}).get("total") or 0
            self.error_hint.text = (
                f"What was already done cost {money(paid)}. " if paid else ""
            ) + "Run it again, or change the settings in the studio."

        self._render_media()
        self._render_steps()
        self._render_settings()
        self._render_cost()

    def _render_media(self) -> None:
        job = self.job
        meta = job.get("metadata") or {}
        if job.get("video_url") and self.video is None:
            with self.video_box:
                self.video = (
                    ui.video(media_link(self.system, job["video_url"]))
                    .classes("pr-media")
                    .props('preload=metadata playsinline aria-label="Generated video" data-testid=video')
                )
        if job.get("image_url") and self.image is None:
            with self.image_box:
                self.image = (
                    ui.element("img")
                    .classes("pr-media pr-image")
                    .props(f'src="{media_link(self.system, job["image_url"])}" alt="Generated image" data-testid=image')
                )
                self.image.on("error", self._image_missing)
        self._render_preview()
        set_visible(self.video_placeholder, self.video is None)
        set_visible(
            self.image_placeholder, (self.image is None or not self.image.visible) and not (self.preview and self.preview.visible)
        )
        if meta.get("videoWidth"):
            self.video_caption.text = f"{meta['videoWidth']}×{meta['videoHeight']} · {meta.get('videoDuration')} s · H.264"
        elif not meta.get("imageOnly"):
            self.video_caption.text = f"{meta.get('videoDuration')} s"
        else:
            self.video_caption.text = ""  # no length for a video that is not made
        self.image_caption.text = str(meta.get("imageSize", "")).replace("x", "×")
        status = job["status"]
        for placeholder, kind in ((self.video_placeholder, "video"), (self.image_placeholder, "image")):
            text = placeholder.default_slot.children[1]
            assert isinstance(text, ui.label)  # the placeholder's icon, then its label
            if kind == "image" and self.image is not None and not self.image.visible:
                text.text = "The image file is no longer in the media store."
            elif kind == "video" and (self.job.get("metadata") or {}).get("imageOnly"):
                text.text = "Images first: this job makes no video. “Animate this one” makes it, as a new job."
            elif status == "failed":
                text.text = f"No {kind}: the job failed."
            elif status == "cancelled":
                text.text = f"No {kind}: the job was cancelled."
            else:
                text.text = f"The {kind} appears here when it is ready."

    def _render_preview(self) -> None:
        """While the image step runs and the image is not there yet, its latest preview in the image's place."""
        image_step: dict[str, Any] = next((step for step in self.job.get("steps", []) if step["id"] == "image_generation"), {})
        url = self.preview_url if self.image is None and image_step.get("status") == "running" else None
        if url is None:
            if self.preview is not None:
                set_visible(self.preview, False)
            return
        path, _, query = url.partition("?")  # signed by its path, as the route checks it
        source = with_query(media_link(self.system, path), query)
        if self.preview is None:
            with self.image_box:
                self.preview = ui.element("img").classes("pr-media pr-image").props('alt="Preview while the image is made"')
                self.preview.props("data-testid=preview").style("width: 100%")  # a small frame, shown at the image's width
        set_prop(self.preview, "src", source)
        set_visible(self.preview, True)

    def _image_missing(self) -> None:
        """The browser could not load the image: its file was deleted behind the job's back."""
        if self.image is not None:
            set_visible(self.image, False)
            _enable(self.image_button, False)
            self._render_media()

    def _render_steps(self) -> None:
        for step in self.job["steps"]:
            parts = self.steps.get(step["id"])
            if parts is None:
                continue
            icon, color = STEP_STATUS_ICONS.get(step["status"], ("help", "grey"))
            entry = parts["entry"]
            set_prop(entry, "icon", icon)
            set_prop(entry, "color", color)
            set_prop(entry, "subtitle", step["status"].capitalize())
            parts["bar"].value = (step.get("progress") or 0) / 100
            set_prop(
                parts["bar"],
                "color",
                {"failed": "negative", "cancelled": "grey-6", "completed": "positive"}.get(step["status"], "primary"),
            )
            parts["percent"].text = f"{step.get('progress') or 0}%"
            start, end = step.get("startTime"), step.get("endTime")
            set_visible(parts["started"], bool(start))
            set_visible(parts["ended_word"], bool(end))
            set_visible(parts["ended"], bool(end))
            # Times show in the viewer's zone (the browser rewrites data-local-time), UTC until then.
            set_prop(parts["started"], "data-local-time", start)
            set_prop(parts["ended"], "data-local-time", end)
            if start:
                parts["started_word"].text = "started"
                parts["started"].text = utc_time(start)
                parts["ended"].text = utc_time(end) if end else ""
                parts["took"].text = f"· took {duration(between(start, end))}" if end else "· running"
            else:
                parts["started_word"].text = (
                    "waiting for its turn" if self.job["status"] in UNFINISHED_STATUSES else "did not run"
                )
                parts["took"].text = ""
            lines = step.get("log") or []
            parts["log"].text = "\n".join(lines) if lines else "Nothing logged yet."
            parts["expansion"].text = f"Log ({len(lines)} line{'s' if len(lines) != 1 else ''})"

    def _render_understood(self) -> None:
        words = understood(self.job.get("metadata") or {})
        set_visible(self.understood_card, words is not None)
        if words is None:
            return
        drawn, not_understood = words
        self.drew.text = f"Drew: {drawn}"
        self.not_understood.text = f"Not understood: {not_understood or 'none, every word was drawn'}"
        set_visible(self.understood_hint, bool(not_understood))

    def _render_settings(self) -> None:
        self._render_understood()
        job = self.job
        meta = job.get("metadata") or {}
        unknown = "—" if job["status"] in FINISHED_STATUSES else "chosen when the step runs"
        provider: str = job["provider"]
        rows: list[tuple[str, str]] = [
            ("Image provider", PROVIDER_LABELS.get(provider) or provider_name(provider)),  # upload: "Your picture"
            ("Image model", meta.get("imageModel") or unknown),
            ("Video provider", PROVIDER_LABELS.get(meta.get("videoProvider") or "", meta.get("videoProvider") or "—")),
            ("Video model", meta.get("videoModel") or unknown),
            ("Image size", str(meta.get("imageSize", "—")).replace("x", "×")),
            ("Video length", f"{meta.get('videoDuration', '—')} s"),
            ("Quality", str(meta.get("quality", "—")).capitalize()),
            ("Seed", str(meta.get("seed", "—"))),
        ]
        if meta.get("videoWidth"):
            rows.insert(6, ("Video size", f"{meta['videoWidth']}×{meta['videoHeight']}"))
        if meta.get("imageOnly"):  # no video to describe: one row says why
            rows = [row for row in rows if not row[0].startswith("Video")]
            rows.insert(2, ("Video", "none: images first (Animate this one makes it as a new job)"))
        for key, value in meta.items():  # provider extras, e.g. DALL-E's revised prompt
            if key not in KNOWN_METADATA and value not in (None, ""):
                rows.append((_words(key), str(value)))
        signature = repr(rows)
        if getattr(self, "_settings_signature", None) == signature:
            return
        self._settings_signature = signature
        self.settings_list.clear()
        with self.settings_list:
            for name, value in rows:
                TextElement(tag="dt", text=name).props(f'data-key="{name}"')
                TextElement(tag="dd", text=value)

    def _render_cost(self) -> None:
        job = self.job
        cost = job.get("cost") or {}
        finished = job["status"] in FINISHED_STATUSES
        self.cost_image.text = money(cost.get("imageGeneration"))
        self.cost_video.text = money(cost.get("videoGeneration"))
        self.cost_total.text = money(cost.get("total"))
        if finished:
            self.cost_note.text = "charged by the providers" if cost.get("total") else "free: made on this machine"
        else:
            estimate = self._estimate()
            self.cost_note.text = f"estimated {money(estimate)} in all" if estimate is not None else "so far"

    def _estimate(self) -> float | None:
        meta = self.job.get("metadata") or {}
        try:
            # The stored job's own values, not validated again: a missing one makes the estimate fail.
            stored: dict[str, Any] = {key: meta.get(key) for key in ("imageSize", "videoDuration", "quality")}
            settings = GenerateSettings.model_construct(
                **stored, seed=None, videoProvider=meta.get("videoProvider"), imageOnly=bool(meta.get("imageOnly"))
            )
            return self.system.jobs.estimate(
                GenerateRequest.model_construct(prompt="", provider=self.job["provider"], settings=settings)
            )["total"]
        except (UnknownPrice, KeyError, TypeError):
            return None

    # -- events ---------------------------------------------------------------------

    def _on_events(self, events: list[Event]) -> None:
        if any(event["type"] == "job_removed" for event in events):
            self._show_removed()
            return
        if self.removed:
            return
        for event in events:
            if event["type"] == "step_update" and event["data"].get(PREVIEW_URL_KEY):
                self.preview_url = str(event["data"][PREVIEW_URL_KEY])
        record = self.system.jobs.find(self.job_id, self.user)
        if record is None:
            self._show_removed()
            return
        self.job = job_data(record)
        self.render()

    def _show_removed(self) -> None:
        if self.removed:
            return
        self.removed = True
        set_visible(self.cancel_button, False)
        set_visible(self.removed_card, True)

    # -- actions --------------------------------------------------------------------

    async def cancel(self) -> None:
        await cancel_job(self.system, self.job_id, user=self.user)

    async def rerun(self) -> None:
        record = await rerun_job(self.system, self.job, user=self.user)
        if record is not None:
            ui.navigate.to(f"/jobs/{record.job.id}")

    async def animate(self) -> None:
        record = await animate_job(self.system, self.job, user=self.user)
        if record is not None:
            ui.navigate.to(f"/jobs/{record.job.id}")

    async def confirm_remove(self) -> None:
        if await remove_job(self.system, self.job, on_confirmed=self._removing, user=self.user):
            ui.navigate.to("/")

    def _removing(self) -> None:
        self.removed = True  # its job_removed event must not show the "removed" notice: we leave


def _kv(name: str) -> TextElement:
    TextElement(tag="dt", text=name)
    return TextElement(tag="dd", text="")


def _words(key: str) -> str:
    """'revisedPrompt' -> 'Revised prompt'."""
    out = "".join(" " + char.lower() if char.isupper() else char for char in key)
    return out[:1].upper() + out[1:]


def _enable(button: ui.button, enabled: bool) -> None:
    if enabled and "disable" in button._props:
        button.props(remove="disable")
    elif not enabled and "disable" not in button._props:
        button.props("disable")
