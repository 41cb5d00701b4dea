"""The desktop app's offer of the ComfyUI it found on this machine (backend/providers/comfyui/discovery.py):
"ComfyUI found on this machine: use it?". Using it enables `comfyui` for this run of the app (the
header and the form list it at once); "Not now" hides the offer until the app starts again."""

from __future__ import annotations

from nicegui import ui

from backend.providers.comfyui.discovery import LocalComfyUIOffer
from backend.system import System

from .job_card import set_visible


class ComfyUIOfferCard:
    def __init__(self, system: System, offer: LocalComfyUIOffer):
        self.system = system
        self.offer = offer
        with (
            ui.card()
            .classes("pr-card w-full p-4 gap-2 mb-4")
            .props('flat role=region aria-label="ComfyUI found on this machine" data-testid=comfyui-offer') as self.card
        ):
            self.title = ui.label("ComfyUI found on this machine: use it?").classes("text-base font-semibold")
            self.text = ui.label(
                f"It answers at {offer.url}. promptreel can run the image and video steps on it: your models, your GPU, no cost."
            ).classes("text-sm pr-muted")
            with ui.row().classes("gap-2") as self.buttons:
                ui.button("Use ComfyUI", icon="memory", on_click=self.accept).props(
                    "unelevated no-caps color=primary data-testid=comfyui-accept"
                )
                ui.button("Not now", on_click=self.decline).props("flat no-caps data-testid=comfyui-decline")

    def accept(self) -> None:
        self.offer.accept(self.system.providers.use_comfyui)
        self.title.text = "ComfyUI is on for this session"
        self.text.text = (
            f"Choose ComfyUI in the form. To have it from the start next time, set COMFYUI_URL={self.offer.url} "
            "in the environment or in a .env file."
        )
        set_visible(self.buttons, False)

    def decline(self) -> None:
        self.offer.decline()
        set_visible(self.card, False)
