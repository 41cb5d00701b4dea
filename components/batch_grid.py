"""One batch (POST /api/v1/batches, or the form's "Variants") as a grid of its jobs' cards, live.

The cards are the list's (job_card.py): the same events move them, through the tab's feed
(live.py). A completed image-only card offers "Animate this one": the video is a new job that
joins the batch, and the grid reads the batch again to show it. "Cancel the rest" cancels every
unfinished job of the batch, as DELETE /api/v1/batches/{id} does.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui

from backend.auth import LOCAL_USER, User
from backend.events.bus import Event
from backend.jobs.public import job_data
from backend.store.jobs import JobRecord
from backend.system import System

from .format import status_label
from .job_actions import animate_job, cancel_job, job_started_toast, remove_job, rerun_job
from .job_card import JobCard, JobData, set_visible
from .live import client_feed
from .session import media_link

JOB_EVENTS = ("job_update", "job_completed", "job_failed")


class BatchGrid:
    def __init__(self, system: System, batch_id: str, user: User = LOCAL_USER, on_prefill: Any = None):
        self.system = system
        self.batch_id = batch_id
        self.user = user
        self.on_prefill = on_prefill
        self.cards: dict[str, JobCard] = {}
        with ui.column().classes("w-full gap-4").props(f'data-testid=batch data-batch-id="{batch_id}"') as self.root:
            with ui.row().classes("w-full items-center justify-between gap-3"):
                with ui.column().classes("gap-0"):
                    self.title = ui.label().classes("pr-section-title").props("data-testid=batch-title").mark("batch-title")
                    self.counts = ui.label().classes("text-xs pr-muted").props("aria-live=polite data-testid=batch-counts")
                self.cancel_button = ui.button("Cancel the rest", icon="stop_circle", on_click=self.cancel_rest).props(
                    "flat no-caps color=negative data-testid=batch-cancel"
                )
            self.grid = ui.element("div").classes("w-full grid grid-cols-1 xl:grid-cols-2 gap-4").props("data-testid=batch-grid")
        self.reload()
        client_feed(system.jobs).subscribe(self._on_events, accept=self._may_concern)

    def reload(self) -> None:
        """Read the batch again and show every job of it, in the order they were asked for."""
        batch = self.system.jobs.batch(self.batch_id, self.user)
        for record in batch.jobs:
            self._show(record)
        for job_id in set(self.cards) - {record.job.id for record in batch.jobs}:  # removed from the history
            self.cards.pop(job_id).delete()
        self._render_chrome()

    def _show(self, record: JobRecord) -> None:
        job = job_data(record)
        card = self.cards.get(job["id"])
        if card is not None:
            card.show(job)
            return
        with self.grid:
            self.cards[job["id"]] = JobCard(
                job,
                on_cancel=self.cancel,
                on_rerun=self.rerun,
                on_prefill=self.prefill,
                on_remove=self.remove,
                on_animate=self.animate,
                link=lambda path: media_link(self.system, path),
            )

    def _render_chrome(self) -> None:
        jobs = [card.job for card in self.cards.values()]
        self.title.text = f"Batch of {len(jobs)} job{'s' if len(jobs) != 1 else ''}"
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        self.counts.text = " · ".join(f"{count} {status_label(status).lower()}" for status, count in counts.items())
        set_visible(self.cancel_button, any(job["status"] in ("pending", "generating_image", "generating_video") for job in jobs))

    # -- events ---------------------------------------------------------------------

    def _may_concern(self, event: Event) -> bool:
        """About a card of the grid, or a new job (one animated from this batch, maybe)."""
        if event["jobId"] in self.cards or event["type"] == "job_removed":
            return True
        return event["type"] == "job_update" and event["data"].get("status") == "pending"

    def _on_events(self, events: list[Event]) -> None:
        touched: set[str] = set()
        reload = False
        for event in events:
            card = self.cards.get(event["jobId"])
            if card is None or event["type"] == "job_removed":
                reload = True
                continue
            card.apply(event)
            touched.add(event["jobId"])
            if event["type"] == "step_update" and event["data"].get("status") == "completed":
                reload = True  # a finished step's output (image, cost, metadata) is in the store, not in the event
        if reload:
            self.reload()
            return
        for job_id in touched:
            self.cards[job_id].render()
        self._render_chrome()

    # -- actions --------------------------------------------------------------------

    async def cancel_rest(self) -> None:
        await self.system.jobs.cancel_batch(self.batch_id, self.user)
        with self.root:
            ui.notify("The unfinished jobs of the batch were cancelled.", icon="stop_circle", position="top")
        self.reload()

    async def cancel(self, job: JobData) -> None:
        await cancel_job(self.system, job["id"], self.root, self.user)

    async def rerun(self, job: JobData) -> None:
        record = await rerun_job(self.system, job, self.root, self.user)
        if record is not None:
            with self.root:
                job_started_toast(record.job.id)

    async def animate(self, job: JobData) -> None:
        record = await animate_job(self.system, job, self.root, self.user)
        if record is not None:
            self.reload()  # it joins the batch
            with self.root:
                job_started_toast(record.job.id, "Its video is made from this image.")

    def prefill(self, job: JobData) -> None:
        if self.on_prefill:
            self.on_prefill(job)
        else:
            ui.navigate.to("/")

    async def remove(self, job: JobData) -> None:
        if await remove_job(self.system, job, self.root, user=self.user):
            self.reload()
