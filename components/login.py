"""/login, with authentication on: the studio asks for an API token once per browser."""

from __future__ import annotations

from nicegui import ui

from backend.errors import TooManyWrongTokens
from backend.system import System

from .session import sign_in
from .theme import apply_theme


def login_page(system: System) -> None:
    ui.page_title("Sign in · promptreel")
    apply_theme()

    def submit() -> None:
        try:
            signed_in = sign_in(system, token.value or "", ui.context.client.ip or "unknown")
        except TooManyWrongTokens as refused:  # the API's words, as REST and /ws answer them
            error.text = refused.message
            error.visible = True
            return
        if signed_in is None:
            error.text = "That token is not valid. Ask whoever runs this promptreel for yours."
            error.visible = True
            token.value = ""
            return
        ui.navigate.to(signed_in)  # the new session's link, which goes on to the studio

    with ui.element("main").classes("w-full min-h-screen flex items-center justify-center p-4"):
        with ui.card().classes("pr-card w-full max-w-[420px] p-6 gap-4").props('aria-label="Sign in"'):
            with ui.row().classes("items-center gap-3 no-wrap"):
                ui.element("img").props('src=/assets/logo.svg alt="" width=38 height=38')
                ui.label("promptreel").classes("pr-wordmark")
            ui.label("Sign in with your API token").classes("text-lg font-semibold")
            token = (
                ui.input("API token", password=True, password_toggle_button=True)
                .classes("w-full")
                .props("autofocus autocomplete=current-password data-testid=token")
                .on("keydown.enter", submit)
            )
            error = ui.label().classes("text-negative text-sm").props("role=alert data-testid=login-error")
            error.visible = False
            ui.button("Sign in", icon="login", on_click=submit).classes("w-full").props("unelevated no-caps data-testid=sign-in")
