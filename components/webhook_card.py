"""The job page's webhook card: where the job's events are POSTed and each delivery's state
(attempts, the last status code or error, the next try), read through JobService and refreshed
while a delivery is still pending (deliveries change without a job event)."""

from __future__ import annotations

from typing import Any, cast

from nicegui import ui

from backend.auth import User
from backend.errors import JobNotFound
from backend.system import System

from .format import utc_time

#: Seconds between two reads while a delivery is pending.
REFRESH_SECONDS = 2.0
ENDINGS = ("completed", "failed", "cancelled")


class WebhookCard:
    def __init__(self, system: System, job_id: str, user: User):
        self.system = system
        self.job_id = job_id
        self.user = user
        state = system.jobs.webhook_deliveries(job_id, user)
        with ui.card().classes("pr-card w-full p-5 gap-2").props('flat aria-label="Webhook" data-testid=webhook') as self.card:
            ui.label("Webhook").classes("pr-section-title")
            ui.label(str(state["webhook"] or "")).classes("pr-mono text-xs break-all")
            ui.label("Tells: " + ", ".join(cast(list[str], state["events"]))).classes("text-xs pr-muted")
            self.rows = ui.column().classes("w-full gap-1").props("data-testid=webhook-deliveries")
        self.card.visible = state["webhook"] is not None
        self.timer = ui.timer(REFRESH_SECONDS, self.refresh, active=self.card.visible)
        self._show(state)

    def refresh(self) -> None:
        try:
            state = self.system.jobs.webhook_deliveries(self.job_id, self.user)
        except JobNotFound:  # removed meanwhile: the page says so
            self.timer.active = False
            return
        self._show(state)

    def _show(self, state: dict[str, Any]) -> None:
        deliveries = state["deliveries"]
        # Final once the job's ending was delivered or given up: nothing will change any more.
        if any(d["type"] in ENDINGS and d["status"] != "pending" for d in deliveries):
            self.timer.active = False
        self.rows.clear()
        with self.rows:
            if not deliveries:
                ui.label("Nothing sent yet.").classes("text-sm pr-muted")
            for delivery in deliveries:
                ui.label(describe(delivery)).classes("text-sm").props(f"data-delivery={delivery['id']}")


def describe(delivery: dict[str, Any]) -> str:
    """'completed: delivered, attempt 3, HTTP 200 at 12:01:02' or '...: pending, attempt 1, refused ..., next try at ...'."""
    parts = [f"{delivery['type']}: {delivery['status']}"]
    if delivery["attempts"]:
        parts.append(f"attempt {delivery['attempts']}")
        last = f"HTTP {delivery['lastStatusCode']}" if delivery["lastStatusCode"] is not None else delivery["lastError"]
        parts.append(f"{last} at {utc_time(delivery['lastAttemptAt'])}")
    if delivery["nextAttemptAt"]:
        parts.append(f"next try at {utc_time(delivery['nextAttemptAt'])}")
    return ", ".join(parts)
