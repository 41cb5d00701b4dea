"""The header's live system status: providers, active jobs, queue length, load.

It reads `JobService.status()` (runner counters and the load average: no database) and the
providers' availability (the registry's cached key checks: no request waits on a provider) when
job events that change a job's status arrive on the tab's feed, and every few seconds, as the
load changes on its own. A key check that answers in the background (the cached verdict was
stale, so the read that started it still got the old one) or a job that meets a refused key
changes availability without any event: the registry tells the bar (`on_availability_change`),
which shows it at once. The provider chips change only when a provider's availability or reason
does, and then tell the page's other views (the form's provider lists) through
`on_providers_change`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nicegui import ui

from backend.providers.catalog import canonical
from backend.providers.registry import ProviderInfo
from backend.system import System

from .format import provider_name
from .job_card import set_prop
from .live import client_feed

#: The load average moves without events; refresh this often (s).
LOAD_REFRESH_SECONDS = 5.0

ProvidersHandler = Callable[[list[ProviderInfo], list[ProviderInfo]], Any]


def chip_names(image: list[ProviderInfo], video: list[ProviderInfo]) -> list[str]:
    """One chip per provider account: "local" serves both steps, and flux1 (image) and replicate
    (video) are one Replicate key, shown under the image provider's name."""
    accounts = {canonical(info.name): info.name for info in video} | {canonical(info.name): info.name for info in image}
    return list(dict.fromkeys(accounts[canonical(info.name)] for info in image + video))


def providers_tooltip(infos: list[ProviderInfo]) -> str:
    """'Available: Local  ·  OpenAI: set OPENAI_API_KEY; Runway: Runway rejected the key (401)'."""
    available = [provider_name(info.name) for info in infos if info.available]
    missing = [f"{provider_name(info.name)}: {info.reason}" for info in infos if not info.available]
    return "Available: " + ", ".join(available) + ("  ·  " + "; ".join(missing) if missing else "")


class StatusBar:
    def __init__(self, system: System):
        self.system = system
        self._providers: tuple[tuple[ProviderInfo, ...], tuple[ProviderInfo, ...]] | None = None
        self._provider_handlers: list[ProvidersHandler] = []
        self._statuses: dict[str, str | None] = {}  # the last status shown per job, to skip progress-only events
        image, video = self._read_providers()
        names = chip_names(image, video)
        self.chips: dict[str, tuple[ui.element, ui.label]] = {}
        with (
            ui.row()
            .classes("items-center gap-2 no-wrap")
            .props('role=status aria-live=off aria-label="System status"') as self.row
        ):
            with ui.element("div").classes("pr-stat gt-sm").mark("providers") as self.providers_chip:
                ui.icon("hub", size="16px").classes("pr-muted")
                for name in names:
                    self._add_chip(name)
                self.providers_tooltip = ui.tooltip()
            # Each chip says what it counts in words (tooltip and aria-label); at phone width the
            # active count keeps its word and the other two chips step aside.
            with ui.element("div").classes("pr-stat").props('aria-label="Jobs running now" tabindex=0'):
                ui.icon("bolt", size="16px").classes("text-secondary")
                self.active = ui.label().classes("text-xs font-semibold")
                ui.label("active").classes("text-xs pr-muted")
                ui.tooltip("Jobs running now")
            with ui.element("div").classes("pr-stat gt-xs").props('aria-label="Jobs waiting in the queue" tabindex=0'):
                ui.icon("queue", size="16px").classes("pr-muted")
                self.queue = ui.label().classes("text-xs font-semibold")
                ui.label("queued").classes("text-xs pr-muted")
                ui.tooltip("Jobs waiting in the queue")
            with ui.element("div").classes("pr-stat gt-sm").props('aria-label="CPU load of this machine" tabindex=0'):
                ui.icon("speed", size="16px").classes("pr-muted")
                self.load = ui.label().classes("text-xs font-semibold")
                ui.label("load").classes("text-xs pr-muted")
                ui.tooltip("CPU load of this machine (1-minute average per core)")
        self._show_providers(image, video)
        self.refresh()
        # Active jobs and the queue change only when a job changes status, not with its progress.
        client_feed(system.jobs).subscribe(self._on_job_events, accept=self._changes_status)
        # Built just now: the first tick is due an interval from now, not at once.
        ui.timer(LOAD_REFRESH_SECONDS, self.refresh, immediate=False)
        # A key check's answer changes availability without a job event: show it when it comes.
        self._loop = asyncio.get_running_loop()
        self.client = ui.context.client
        self.client.on_delete(system.providers.on_availability_change(self._availability_changed))

    def _changes_status(self, event: dict) -> bool:
        """Whether the event moves a job to another status than the bar last showed. The feed asks
        this more than once per event (when it arrives, and again at the flush), so it only reads;
        `_on_job_events` records what was shown."""
        return event["type"] != "step_update" and self._statuses.get(event["jobId"]) != event["data"].get("status")

    def _on_job_events(self, events: list[dict]) -> None:
        for event in events:
            self._statuses[event["jobId"]] = event["data"].get("status")
        self.refresh()

    def _availability_changed(self, _name: str) -> None:
        """The registry's news, on whichever thread learnt it: show it on this tab's loop."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._show_current_providers)

    def _show_current_providers(self) -> None:
        if self.client.is_deleted or self.row.is_deleted:
            return
        with self.client:
            self._show_providers(*self._read_providers())

    def on_providers_change(self, handler: ProvidersHandler) -> Callable[[], None]:
        """Call `handler(image_infos, video_infos)` whenever a provider's availability changes;
        returns the function that stops it."""
        self._provider_handlers.append(handler)
        return lambda: self._provider_handlers.remove(handler) if handler in self._provider_handlers else None

    def refresh(self) -> None:
        # The providers first: this read is the one that finds a stale verdict and starts its check,
        # so what the bar shows is one consistent reading, and the check's answer comes through
        # `_availability_changed` (jobs.status() reads them too, but only for its own counters).
        image, video = self._read_providers()
        status = self.system.jobs.status()
        self.active.text = str(status.active_jobs)
        self.queue.text = str(status.queue_length)
        self.load.text = f"{status.system_load:.2f}"
        self._show_providers(image, video)

    def _read_providers(self) -> tuple[list[ProviderInfo], list[ProviderInfo]]:
        return self.system.providers.image_providers(), self.system.providers.video_providers()

    def _add_chip(self, name: str) -> None:
        with (
            ui.element("span")
            .classes("inline-flex items-center gap-1")
            .props(f"data-testid=provider-{name}")
            .mark(f"provider-{name}")
        ):
            dot = ui.element("span").classes("pr-dot")
            label = ui.label(provider_name(name)).classes("text-xs")
        self.chips[name] = (dot, label)

    def _show_providers(self, image: list[ProviderInfo], video: list[ProviderInfo]) -> None:
        """Update the chips and tell the listeners, only when something changed since last time."""
        current = (tuple(image), tuple(video))
        if current == self._providers:
            return
        first = self._providers is None
        self._providers = current
        infos = {info.name: info for info in image + video}
        for name in [name for name in chip_names(image, video) if name not in self.chips]:  # listed since (ComfyUI taken up)
            with self.providers_chip:
                self._add_chip(name)
        for name, (dot, label) in self.chips.items():
            info = infos[name]
            dot.classes(replace=f"pr-dot {'pr-dot-on' if info.available else 'pr-dot-off'}")
            label.classes(replace="text-xs" + ("" if info.available else " pr-muted"))
        tip = providers_tooltip(list(infos.values()))
        self.providers_tooltip.text = tip
        set_prop(self.providers_chip, "aria-label", f"Providers. {tip}")  # what the tooltip shows, for screen readers
        if not first:
            for handler in list(self._provider_handlers):
                handler(image, video)
