"""The live job list: newest first, filtered by status, searched by prompt, one page at a time.

Only one page (PAGE_SIZE jobs) is ever read from the store, with the total for the pager, so
the list stays fast with any number of jobs. Bus events update the cards they are about in
place; the page is read again only when its membership may have changed: a job was created
or removed, or (under a status filter) a job moved into or out of the filtered statuses.

What an open tab costs the server stays small and bounded however busy the system is: events
about jobs this tab does not show are dropped as they arrive unless they may change the page
(a new job, a status change); re-reading the page happens at most once per RELOAD_INTERVAL
(a burst of fifty new jobs makes a few reads, not fifty); and a re-read re-points the page's
existing cards at the jobs that came in rather than deleting cards and making new ones.

The search and the status filter live in the page's URL (`?q=...&status=...`), so a reload or
a shared link keeps them. A job the viewer just made is always shown (`reveal`): a filter that
would hide it is cleared, and its card is scrolled into view.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from nicegui import ui

from backend.auth import LOCAL_USER, User
from backend.events.bus import Event
from backend.jobs.public import job_data
from backend.store.jobs import JobRecord
from backend.store.models import JobStatus
from backend.system import System

from .format import FINISHED_STATUSES, UNFINISHED_STATUSES, status_label
from .job_actions import animate_job, cancel_job, job_started_toast, remove_job, rerun_job
from .job_card import JobCard, JobData
from .live import client_feed
from .session import media_link

PAGE_SIZE = 20
#: The status filter's choices and the statuses each one lets through (none = all).
STATUS_FILTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "all": ("All statuses", ()),
    "active": ("In progress", UNFINISHED_STATUSES),
    **{status: (status_label(status), (status,)) for status in (*FINISHED_STATUSES, *UNFINISHED_STATUSES)},
}
JOB_EVENTS = ("job_update", "job_completed", "job_failed")
#: Statuses remembered for jobs this tab does not show, to spot status changes; bounded.
MAX_REMEMBERED = 5000
#: Seconds between two re-reads of the page caused by events, at least (the viewer's own
#: searches, filters and page changes are read at once).
RELOAD_INTERVAL = 1.0
#: Scrolls a job's card into view once the browser has drawn it (a few frames after the update).
SCROLL_INTO_VIEW_JS = """
(() => { let tries = 0; const id = %s; const look = () => {
  const card = document.querySelector(`[data-testid="job-card"][data-job-id="${id}"]`);
  if (card) card.scrollIntoView({block: 'center', behavior: 'smooth'});
  else if (tries++ < 120) requestAnimationFrame(look);
}; look(); })();
"""


class JobList:
    def __init__(
        self,
        system: System,
        *,
        on_prefill: Callable[[JobData], Any] | None = None,
        page_size: int = PAGE_SIZE,
        user: User = LOCAL_USER,
        search: str = "",
        status: str = "all",
    ):
        self.user = user
        self.system = system
        self.on_prefill = on_prefill
        self.page_size = page_size
        self.page = 1
        self.total = 0
        self.filter = status if status in STATUS_FILTERS else "all"
        self.search = search.strip()
        self.cards: dict[str, JobCard] = {}
        self._seen: dict[str, str] = {}
        self._loop = asyncio.get_running_loop()
        self._last_reload = float("-inf")
        self._reload_handle: asyncio.TimerHandle | None = None

        with ui.column().classes("w-full gap-4").props('aria-label="Jobs"') as self.root:
            with ui.row().classes("w-full items-center gap-3"):
                with ui.column().classes("gap-0 grow"):
                    ui.label("Your jobs").classes("pr-section-title")
                    self.summary = (
                        ui.label()
                        .classes("text-xs pr-muted")
                        .props("aria-live=polite data-testid=job-summary")
                        .mark("job-summary")
                    )
                self.search_input = (
                    ui.input(placeholder="Search prompts", value=self.search, on_change=self._on_search)
                    .classes("w-full sm:w-64")
                    .props('outlined dense clearable debounce=300 aria-label="Search prompts" data-testid=search')
                    .mark("search")
                )
                with self.search_input.add_slot("prepend"):
                    ui.icon("search", size="20px")
                self.status_select = (
                    ui.select(
                        {key: label for key, (label, _) in STATUS_FILTERS.items()},
                        label="Status",
                        value=self.filter,
                        on_change=self._on_filter,
                    )
                    .classes("w-full sm:w-48")
                    .props("outlined dense options-dense data-testid=status-filter")
                    .mark("status-filter")
                )
            self.container = ui.column().classes("w-full gap-3").props("data-testid=job-list")
            with ui.element("div").classes("pr-card pr-empty w-full") as self.empty:
                ui.icon("movie_filter", size="44px").classes("text-primary opacity-70")
                self.empty_title = (
                    ui.label().classes("text-base font-semibold mt-2").props("data-testid=empty-state").mark("empty-state")
                )
                self.empty_hint = ui.label().classes("text-sm pr-muted")
            with ui.row().classes("w-full justify-center"):
                self.pager = (
                    ui.pagination(1, 1, direction_links=True, value=1, on_change=self._on_page)
                    .props(
                        "max-pages=7 boundary-numbers color=primary active-design=unelevated active-color=primary "
                        'round aria-label="Pages" data-testid=pager'
                    )
                    .mark("pager")
                )
        self.reload()
        client_feed(system.jobs).subscribe(self._on_events, accept=self._may_concern)

    # -- reading the store ------------------------------------------------------------

    @property
    def statuses(self) -> tuple[str, ...]:
        return STATUS_FILTERS[self.filter][1]

    def reload(self) -> None:
        """Read the current page (and the total) again and show it, keeping the cards that stay."""
        self._cancel_reload()
        self._last_reload = self._loop.time()
        records, total = self._read()
        pages = max(1, -(-total // self.page_size))
        if self.page > pages:  # the page emptied (removals, a narrower filter): show the last one
            self.page = pages
            records, total = self._read()
        self.total = total
        self._show(records)
        self._render_chrome(pages)

    def _read(self) -> tuple[list[JobRecord], int]:
        return self.system.jobs.list(
            self.user,
            statuses=self.statuses,
            search=self.search or None,
            limit=self.page_size,
            offset=(self.page - 1) * self.page_size,
        )

    def _request_reload(self) -> None:
        """Read the page again now, or at the end of the interval if it was read less than one ago."""
        if self._reload_handle is not None:
            return  # one is due already; it will read whatever happened until then
        wait = self._last_reload + RELOAD_INTERVAL - self._loop.time()
        if wait <= 0:
            self.reload()
        else:
            self._reload_handle = self._loop.call_later(wait, self._reload_when_due)

    def _reload_when_due(self) -> None:
        self._reload_handle = None
        if not self.root.is_deleted:  # the tab may have closed meanwhile
            with self.root:
                self.reload()

    def _cancel_reload(self) -> None:
        if self._reload_handle is not None:
            self._reload_handle.cancel()
            self._reload_handle = None

    def _show(self, records: list[JobRecord]) -> None:
        """Show `records` in order: cards whose job stays keep it, the others are re-pointed at the
        jobs that came in; cards are made or deleted only when the page's length changes."""
        wanted = [job_data(record) for record in records]
        wanted_ids = {job["id"] for job in wanted}
        free = [card for job_id, card in self.cards.items() if job_id not in wanted_ids]
        cards: dict[str, JobCard] = {}
        for job in wanted:
            card = self.cards.get(job["id"])
            if card is None and free:
                card = free.pop()
            if card is None:
                with self.container:
                    card = JobCard(
                        job,
                        on_cancel=self.cancel,
                        on_rerun=self.rerun,
                        on_prefill=self.prefill,
                        on_remove=self.confirm_remove,
                        on_animate=self.animate,
                        link=lambda path: media_link(self.system, path),
                    )
            else:
                card.show(job)
            cards[job["id"]] = card
        for card in free:
            card.delete()
        self.cards = cards
        children = self.container.default_slot.children
        for index, card in enumerate(cards.values()):
            if children.index(card) != index:
                card.move(target_index=index)

    def _render_chrome(self, pages: int) -> None:
        first = (self.page - 1) * self.page_size + 1
        last = min(self.total, self.page * self.page_size)
        filtered = bool(self.search) or self.filter != "all"
        noun = "job" if self.total == 1 else "jobs"
        if self.total == 0:
            self.summary.text = "No matching jobs" if filtered else "No jobs yet"
        elif pages == 1:
            self.summary.text = f"{self.total:,} {noun}" + ((" matches" if self.total == 1 else " match") if filtered else "")
        else:
            self.summary.text = f"{first:,}–{last:,} of {self.total:,} {noun}"
        self.empty.visible = self.total == 0
        if filtered:
            self.empty_title.text = "Nothing matches"
            self.empty_hint.text = "Try another word or status."
        else:
            self.empty_title.text = "No jobs yet — describe a scene in the form"
            self.empty_hint.text = "Your pictures and videos will appear here, live, as they are made."
        self.pager.visible = pages > 1
        if self.pager.max != pages:
            self.pager.max = pages
        if self.pager.value != self.page:
            self.pager.value = self.page

    # -- events ---------------------------------------------------------------------

    def _may_concern(self, event: Event) -> bool:
        """Whether an event may change what this tab shows: it is about a card on the page, removes
        a job, or changes the status of another job. The feed asks as each event arrives (and again
        at the flush), so progress of jobs off the page costs a tab no more than this."""
        job_id, kind = event["jobId"], event["type"]
        if job_id in self.cards or kind == "job_removed":
            return True
        return kind in JOB_EVENTS and self._seen.get(job_id, "") != event["data"].get("status")

    def _on_events(self, events: list[Event]) -> None:
        touched: set[str] = set()
        imaged: set[str] = set()  # cards whose image step just completed: their metadata grew
        reload = False
        statuses = self.statuses
        for event in events:
            job_id, kind, data = event["jobId"], event["type"], event["data"]
            card = self.cards.get(job_id)
            if kind == "job_removed":
                reload = True  # the page and the total change
            elif card is not None:
                card.apply(event)
                touched.add(job_id)
                if kind == "step_update" and data.get("id") == "image_generation" and data.get("status") == "completed":
                    imaged.add(job_id)
                if statuses and card.job["status"] not in statuses:
                    reload = True  # it left the filter
            elif kind in JOB_EVENTS:
                status = data.get("status")
                before = self._seen.get(job_id)
                if len(self._seen) >= MAX_REMEMBERED:
                    self._seen.clear()
                self._seen[job_id] = status
                if statuses:
                    if status in statuses and status != before:
                        reload = True  # it entered the filter
                elif status == JobStatus.PENDING and before is None:
                    reload = True  # a new job: it goes on top
        for job_id in touched:
            self.cards[job_id].render()
        for job_id in imaged:  # what the local renderer drew is in the metadata, not in the events
            record = self.system.jobs.find(job_id, self.user)
            if record is not None and job_id in self.cards:
                self.cards[job_id].show(job_data(record))
        if reload:
            self._request_reload()

    # -- filters --------------------------------------------------------------------

    def _on_search(self) -> None:
        search = (self.search_input.value or "").strip()
        if search == self.search:
            return
        self.search = search
        self.page = 1
        self.reload()
        self._update_url()

    def _on_filter(self) -> None:
        status = self.status_select.value or "all"
        if status == self.filter:
            return
        self.filter = status
        self.page = 1
        self._seen.clear()
        self.reload()
        self._update_url()

    def _update_url(self) -> None:
        """Keep the search and the filter in the address bar (no new history entry for each keystroke)."""
        query = {key: value for key, value in (("q", self.search), ("status", self.filter)) if value and value != "all"}
        with self.root:
            ui.navigate.history.replace("/" + (f"?{urlencode(query)}" if query else ""))

    def reveal(self, record: JobRecord) -> None:
        """Show a job the viewer just made: on the first page, with a filter that would hide it
        cleared (and the toast says so), its card scrolled into view."""
        job_id = record.job.id
        note = ""
        self.page = 1
        self.reload()
        if job_id not in self.cards and (self.search or self.filter != "all"):
            self.search, self.filter = "", "all"
            self.search_input.value = ""  # their change handlers see nothing new: one reload below
            self.status_select.value = "all"
            self._seen.clear()
            self.reload()
            self._update_url()
            note = "The search and status filter were cleared to show it."
        with self.root:
            job_started_toast(job_id, note)
            ui.run_javascript(SCROLL_INTO_VIEW_JS % json.dumps(job_id))

    def _on_page(self) -> None:
        page = int(self.pager.value or 1)
        if page != self.page:
            self.page = page
            self.reload()

    # -- actions --------------------------------------------------------------------

    async def cancel(self, job: JobData) -> None:
        await cancel_job(self.system, job["id"], self.root, self.user)

    async def rerun(self, job: JobData) -> JobRecord | None:
        record = await rerun_job(self.system, job, self.root, self.user)
        if record is not None:
            self.reveal(record)
        return record

    async def animate(self, job: JobData) -> JobRecord | None:
        record = await animate_job(self.system, job, self.root, self.user)
        if record is not None:
            self.reveal(record)
        return record

    def prefill(self, job: JobData) -> None:
        if self.on_prefill:
            self.on_prefill(job)

    async def confirm_remove(self, job: JobData) -> None:
        await remove_job(self.system, job, self.root, user=self.user)  # the card goes: no toast needed
