"""The header's live system status: providers, active jobs, queue length, load.

It reads `JobService.status()` (runner counters and the load average: no database) and the
providers' availability (the registry's cached key checks: no request waits on a provider) when
job events arrive on the tab's feed, and every few seconds, as the load and a key check's answer
change on their own. The provider chips change only when a provider's availability or reason
does, and then tell the page's other views (the form's provider lists) through
`on_providers_change`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from backend.providers.registry import ProviderInfo
from backend.system import System

from .format import provider_name
from .job_card import set_prop
from .live import client_feed

#: The load average and the key checks move without events; refresh this often (s).
LOAD_REFRESH_SECONDS = 5.0

ProvidersHandler = Callable[[list[ProviderInfo], list[ProviderInfo]], Any]


def providers_tooltip(infos: list[ProviderInfo]) -> str:
    """'Available: Local  ·  DALL-E 3: set OPENAI_API_KEY; Runway: Runway rejected the key (401)'."""
    available = [provider_name(info.name) for info in infos if info.available]
    missing = [f"{provider_name(info.name)}: {info.reason}" for info in infos if not info.available]
    return "Available: " + ", ".join(available) + ("  ·  " + "; ".join(missing) if missing else "")


class StatusBar:
    def __init__(self, system: System):
        self.system = system
        self._providers: tuple[tuple[ProviderInfo, ...], tuple[ProviderInfo, ...]] | None = None
        self._provider_handlers: list[ProvidersHandler] = []
        self._statuses: dict[str, str | None] = {}  # the last status seen per job, to skip progress-only events
        image, video = self._read_providers()
        # One chip per provider name; "local" serves both steps.
        names = list(dict.fromkeys(info.name for info in image + video))
        self.chips: dict[str, tuple[ui.element, ui.label]] = {}
        with ui.row().classes("items-center gap-2 no-wrap").props('role=status aria-live=off aria-label="System status"') as self.row:
            with ui.element("div").classes("pr-stat gt-sm").mark("providers") as self.providers_chip:
                ui.icon("hub", size="16px").classes("pr-muted")
                for name in names:
                    with ui.element("span").classes("inline-flex items-center gap-1").props(f"data-testid=provider-{name}").mark(f"provider-{name}"):
                        dot = ui.element("span").classes("pr-dot")
                        label = ui.label(provider_name(name)).classes("text-xs")
                    self.chips[name] = (dot, label)
                self.providers_tooltip = ui.tooltip()
            with ui.element("div").classes("pr-stat").props('aria-label="Active jobs"'):
                ui.icon("bolt", size="16px").classes("text-secondary")
                self.active = ui.label().classes("text-xs font-semibold")
                ui.label("active").classes("text-xs pr-muted gt-xs")
            with ui.element("div").classes("pr-stat gt-xs").props('aria-label="Queue length"'):
                ui.icon("queue", size="16px").classes("pr-muted")
                self.queue = ui.label().classes("text-xs font-semibold")
                ui.label("queued").classes("text-xs pr-muted")
            with ui.element("div").classes("pr-stat gt-xs").props('aria-label="System load"'):
                ui.icon("speed", size="16px").classes("pr-muted")
                self.load = ui.label().classes("text-xs font-semibold")
                ui.label("load").classes("text-xs pr-muted")
        self._show_providers(image, video)
        self.refresh()
        # Active jobs and the queue change only when a job changes status, not with its progress.
        client_feed(system.bus).subscribe(lambda _events: self.refresh(), accept=self._changes_status)
        ui.timer(LOAD_REFRESH_SECONDS, self.refresh)

    def _changes_status(self, event: dict) -> bool:
        if event["type"] == "step_update":
            return False
        status = event["data"].get("status")
        changed = self._statuses.get(event["jobId"]) != status
        self._statuses[event["jobId"]] = status
        return changed

    def on_providers_change(self, handler: ProvidersHandler) -> None:
        """Call `handler(image_infos, video_infos)` whenever a provider's availability changes."""
        self._provider_handlers.append(handler)

    def refresh(self) -> None:
        status = self.system.jobs.status()
        self.active.text = str(status.active_jobs)
        self.queue.text = str(status.queue_length)
        self.load.text = f"{status.system_load:.2f}"
        self._show_providers(*self._read_providers())

    def _read_providers(self) -> tuple[list[ProviderInfo], list[ProviderInfo]]:
        return self.system.providers.image_providers(), self.system.providers.video_providers()

    def _show_providers(self, image: list[ProviderInfo], video: list[ProviderInfo]) -> None:
        """Update the chips and tell the listeners, only when something changed since last time."""
        current = (tuple(image), tuple(video))
        if current == self._providers:
            return
        first = self._providers is None
        self._providers = current
        infos = {info.name: info for info in image + video}
        for name, (dot, label) in self.chips.items():
            info = infos[name]
            dot.classes(replace=f'pr-dot {"pr-dot-on" if info.available else "pr-dot-off"}')
            label.classes(replace="text-xs" + ("" if info.available else " pr-muted"))
        tip = providers_tooltip(list(infos.values()))
        self.providers_tooltip.text = tip
        set_prop(self.providers_chip, "aria-label", f"Providers. {tip}")  # what the tooltip shows, for screen readers
        if not first:
            for handler in list(self._provider_handlers):
                handler(image, video)
