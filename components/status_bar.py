"""The header's live system status: providers, active jobs, queue length, load.

It reads `JobService.status()` (runner counters and the load average: no database) when job
events arrive on the tab's feed, and every few seconds for the load, which changes on its own.
"""

from __future__ import annotations

from nicegui import ui

from backend.system import System

from .format import provider_name
from .live import client_feed

#: The load average moves without events; refresh it this often (s).
LOAD_REFRESH_SECONDS = 5.0


class StatusBar:
    def __init__(self, system: System):
        self.system = system
        infos = system.providers.image_providers() + system.providers.video_providers()
        # One entry per provider name; "local" serves both steps.
        self.providers = {info.name: info for info in infos}
        with ui.row().classes("items-center gap-2 no-wrap").props('role=status aria-live=off aria-label="System status"') as self.row:
            with ui.element("div").classes("pr-stat gt-sm").props('aria-label="Providers"') as providers_chip:
                ui.icon("hub", size="16px").classes("pr-muted")
                for name, info in self.providers.items():
                    with ui.element("span").classes("inline-flex items-center gap-1"):
                        ui.element("span").classes(f'pr-dot {"pr-dot-on" if info.available else "pr-dot-off"}')
                        ui.label(provider_name(name)).classes("text-xs" + ("" if info.available else " pr-muted"))
                available = [provider_name(n) for n, i in self.providers.items() if i.available]
                missing = [f"{provider_name(n)}: {i.reason}" for n, i in self.providers.items() if not i.available]
                providers_chip.tooltip("Available: " + ", ".join(available) + ("  ·  " + "; ".join(missing) if missing else ""))
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
        self.refresh()
        client_feed(system.bus).subscribe(lambda _events: self.refresh())
        ui.timer(LOAD_REFRESH_SECONDS, self.refresh)

    def refresh(self) -> None:
        status = self.system.jobs.status()
        self.active.text = str(status.active_jobs)
        self.queue.text = str(status.queue_length)
        self.load.text = f"{status.system_load:.2f}"
