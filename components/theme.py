"""The studio's look and its frame: palette, font, header with logo, live status and dark mode.

The palette comes from the logo (violet dusk, pink glow, amber sun); the font is Inter,
shipped in `assets/fonts` so the studio looks the same on every machine and offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nicegui import app, ui

from backend.system import System

from .session import sign_out
from .status_bar import StatusBar

VIOLET = "#7c3aed"
PINK = "#db2777"
AMBER = "#f59e0b"

#: Quasar's named colors, so `color=primary` etc. follow the project's palette.
PALETTE = {
    "primary": VIOLET,
    "secondary": PINK,
    "accent": AMBER,
    "dark": "#171327",
    "dark-page": "#0d0b17",
    "positive": "#059669",
    "negative": "#dc2626",
    "warning": "#d97706",
    "info": "#0284c7",
}

FONT_STACK = "'Inter Variable', Inter, 'Segoe UI', system-ui, -apple-system, Roboto, 'Helvetica Neue', Arial, sans-serif"

CSS = """
@font-face {
  font-family: 'Inter Variable'; font-style: normal; font-display: swap; font-weight: 100 900;
  src: url(/assets/fonts/inter-latin-wght-normal.woff2) format('woff2-variations');
  unicode-range: U+0000-00FF,U+0131,U+0152-0153,U+02BB-02BC,U+02C6,U+02DA,U+02DC,U+0304,U+0308,U+0329,U+2000-206F,
    U+20AC,U+2122,U+2191,U+2193,U+2212,U+2215,U+FEFF,U+FFFD;
}
@font-face {
  font-family: 'Inter Variable'; font-style: normal; font-display: swap; font-weight: 100 900;
  src: url(/assets/fonts/inter-latin-ext-wght-normal.woff2) format('woff2-variations');
  unicode-range: U+0100-02BA,U+02BD-02C5,U+02C7-02CC,U+02CE-02D7,U+02DD-02FF,U+0304,U+0308,U+0329,U+1D00-1DBF,
    U+1E00-1E9F,U+1EF2-1EFF,U+2020,U+20A0-20AB,U+20AD-20C0,U+2113,U+2C60-2C7F,U+A720-A7FF;
}
:root {
  --pr-violet: #7c3aed; --pr-pink: #db2777; --pr-amber: #f59e0b; --pr-ink: #1e1b4b;
  --pr-gradient: linear-gradient(120deg, #7c3aed 0%, #db2777 55%, #f59e0b 100%);
  --pr-surface: #ffffff; --pr-border: rgba(30, 27, 75, 0.09); --pr-muted: #6b6785;
}
body.body--dark { --pr-surface: #171327; --pr-border: rgba(255, 255, 255, 0.08); --pr-muted: #a19cbd; }
body, .q-field, .q-btn, .q-item, .q-menu { font-family: FONT_STACK; }
body { font-feature-settings: 'cv11', 'ss01'; -webkit-font-smoothing: antialiased; }
body.body--light {
  background: radial-gradient(1200px 500px at 10% -10%, rgba(124, 58, 237, 0.10), transparent 60%),
              radial-gradient(900px 420px at 95% -5%, rgba(219, 39, 119, 0.08), transparent 60%), #f7f5fb;
  background-attachment: fixed; color: #1e1b4b;
}
body.body--dark {
  background: radial-gradient(1200px 500px at 10% -10%, rgba(124, 58, 237, 0.22), transparent 60%),
              radial-gradient(900px 420px at 95% -5%, rgba(219, 39, 119, 0.14), transparent 60%), #0d0b17;
  background-attachment: fixed; color: #ece9f8;
}
.nicegui-content { padding: 0; }
.pr-header { background: rgba(255, 255, 255, 0.78) !important; backdrop-filter: blur(14px); color: #1e1b4b;
  border-bottom: 1px solid var(--pr-border); }
body.body--dark .pr-header { background: rgba(13, 11, 23, 0.78) !important; color: #ece9f8; }
.pr-wordmark { font-weight: 800; font-size: 1.35rem; letter-spacing: -0.03em; line-height: 1;
  background: var(--pr-gradient); -webkit-background-clip: text; background-clip: text; color: transparent; }
.pr-tagline { font-size: 0.72rem; color: var(--pr-muted); letter-spacing: 0.01em; }
.pr-card { background: var(--pr-surface) !important; border: 1px solid var(--pr-border); border-radius: 18px !important;
  box-shadow: 0 1px 2px rgba(30, 27, 75, 0.04), 0 8px 24px -12px rgba(30, 27, 75, 0.12) !important; }
body.body--dark .pr-card { box-shadow: 0 1px 2px rgba(0, 0, 0, 0.3), 0 12px 32px -16px rgba(0, 0, 0, 0.7) !important; }
.pr-section-title { font-weight: 700; font-size: 1.05rem; letter-spacing: -0.01em; }
.pr-muted { color: var(--pr-muted); }
.pr-card.pr-alert-error { border-left: 4px solid #dc2626;
  background: linear-gradient(90deg, rgba(220, 38, 38, 0.07), transparent 40%), var(--pr-surface) !important; }
.pr-card.pr-alert-warning { border-left: 4px solid #f59e0b; }
.pr-mono { font-family: 'DejaVu Sans Mono', ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.q-btn.pr-gradient-btn { background: var(--pr-gradient) !important; color: white !important; font-weight: 650;
  letter-spacing: 0.01em; border-radius: 12px !important; }
.q-btn.pr-gradient-btn.disabled { opacity: 0.55 !important; }
.pr-thumb { width: 104px; height: 104px; border-radius: 14px; overflow: hidden; flex: none;
  background: linear-gradient(135deg, rgba(124, 58, 237, 0.18), rgba(219, 39, 119, 0.14) 60%, rgba(245, 158, 11, 0.18)); }
@media (max-width: 599px) { .pr-thumb { width: 72px; height: 72px; border-radius: 12px; } }
.pr-thumb img { width: 100%; height: 100%; object-fit: cover; display: block; }
.pr-thumb-empty { display: flex; align-items: center; justify-content: center; color: var(--pr-violet); }
.pr-prompt { font-weight: 600; line-height: 1.35; overflow: hidden; display: -webkit-box;
  -webkit-line-clamp: 2; -webkit-box-orient: vertical; word-break: break-word; }
.pr-prompt-link { color: inherit; text-decoration: none; }
.pr-prompt-link:hover, .pr-prompt-link:focus-visible { text-decoration: underline; text-decoration-color: var(--pr-pink); }
.pr-chip { font-size: 0.72rem; padding: 2px 8px; border-radius: 999px; background: rgba(124, 58, 237, 0.08);
  color: var(--pr-muted); white-space: nowrap; }
body.body--dark .pr-chip { background: rgba(255, 255, 255, 0.06); }
.pr-status { font-size: 0.72rem; font-weight: 650; padding: 3px 10px; border-radius: 999px; white-space: nowrap;
  display: inline-flex; align-items: center; gap: 6px; }
.pr-status::before { content: ''; width: 7px; height: 7px; border-radius: 50%; background: currentColor; }
.pr-status.running::before { animation: pr-pulse 1.2s ease-in-out infinite; }
@keyframes pr-pulse { 0%, 100% { opacity: 1; } 50% { opacity: 0.25; } }
.pr-status-pending { background: rgba(100, 116, 139, 0.14); color: #475569; }
.pr-status-generating_image { background: rgba(124, 58, 237, 0.13); color: #6d28d9; }
.pr-status-generating_video { background: rgba(219, 39, 119, 0.13); color: #be185d; }
.pr-status-completed { background: rgba(5, 150, 105, 0.13); color: #047857; }
.pr-status-failed { background: rgba(220, 38, 38, 0.12); color: #b91c1c; }
.pr-status-cancelled { background: rgba(120, 113, 108, 0.15); color: #57534e; }
body.body--dark .pr-status-pending { color: #cbd5e1; }
body.body--dark .pr-status-generating_image { color: #c4b5fd; }
body.body--dark .pr-status-generating_video { color: #f9a8d4; }
body.body--dark .pr-status-completed { color: #6ee7b7; }
body.body--dark .pr-status-failed { color: #fca5a5; }
body.body--dark .pr-status-cancelled { color: #d6d3d1; }
.pr-bar .q-linear-progress__track { opacity: 0.18; }
.pr-bar-overall .q-linear-progress__model { background: var(--pr-gradient) !important; }
.pr-step-label { font-size: 0.72rem; color: var(--pr-muted); white-space: nowrap; }
.pr-error-text { color: #b91c1c; font-size: 0.8rem; }
body.body--dark .pr-error-text { color: #fca5a5; }
.pr-stat { display: inline-flex; align-items: center; gap: 6px; font-size: 0.78rem; padding: 4px 10px; border-radius: 999px;
  border: 1px solid var(--pr-border); white-space: nowrap; }
.pr-dot { width: 8px; height: 8px; border-radius: 50%; display: inline-block; }
.pr-dot-on { background: #10b981; box-shadow: 0 0 0 3px rgba(16, 185, 129, 0.18); }
.pr-dot-off { background: #a8a29e; }
.pr-empty { text-align: center; padding: 48px 16px; }
.pr-log { font-size: 0.74rem; line-height: 1.5; white-space: pre-wrap; word-break: break-word; max-height: 220px; overflow: auto;
  background: rgba(30, 27, 75, 0.04); border-radius: 10px; padding: 8px 10px; }
body.body--dark .pr-log { background: rgba(255, 255, 255, 0.04); }
.pr-media { width: 100%; max-height: 66vh; object-fit: contain; border-radius: 14px; overflow: hidden; background: #0d0b17;
  display: block; }
.pr-image { width: auto; max-width: 100%; margin: 0 auto; background: transparent; }
.q-timeline__title { font-size: 1rem; font-weight: 650; margin-bottom: 6px; }
.q-timeline__subtitle { font-size: 0.68rem; letter-spacing: 0.06em; }
.q-timeline__content { padding-bottom: 18px; }
.pr-kv { display: grid; grid-template-columns: max-content 1fr; gap: 6px 16px; font-size: 0.88rem; }
.pr-kv dt { color: var(--pr-muted); }
.pr-kv dd { margin: 0; font-weight: 550; word-break: break-word; }
.pr-actions .q-btn { border-radius: 10px; }
.pr-icon-btn { color: var(--pr-muted); }
.pr-icon-btn:hover, .pr-icon-btn:focus-visible { color: var(--pr-violet); }
a.pr-plain { color: inherit; text-decoration: none; }
/* a long prompt scrolls inside its box: start the box below the floating label, so no line passes under it */
.q-textarea.q-field--labeled .q-field__native { margin-top: 10px; }
:focus-visible { outline: 2px solid var(--pr-violet); outline-offset: 2px; }
""".replace("FONT_STACK", FONT_STACK)

#: Shown in the browser for times and running clocks, so they tick with no server work.
#: Elements with data-elapsed-from (and data-elapsed-to once finished) show a duration;
#: elements with data-local-time show that moment in the viewer's own time zone.
CLOCK_JS = """
<script>
(() => {
  const fmt = (seconds) => {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + 's';
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + 'm ' + String(s).padStart(2, '0') + 's';
    return Math.floor(m / 60) + 'h ' + String(m % 60).padStart(2, '0') + 'm';
  };
  const tick = () => {
    const now = Date.now();
    document.querySelectorAll('[data-elapsed-from]').forEach((el) => {
      const from = Date.parse(el.dataset.elapsedFrom);
      const to = el.dataset.elapsedTo ? Date.parse(el.dataset.elapsedTo) : now;
      const text = fmt((to - from) / 1000);
      if (el.textContent !== text) el.textContent = text;
    });
    document.querySelectorAll('[data-local-time]').forEach((el) => {
      const when = new Date(el.dataset.localTime);
      const text = el.dataset.localStyle === 'time' ? when.toLocaleTimeString() : when.toLocaleString();
      if (el.textContent !== text) el.textContent = text;
    });
  };
  window.promptreelTick = tick;
  setInterval(tick, 1000);
  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; tick(); });
  }).observe(document.documentElement, { childList: true, subtree: true, attributes: true,
                                          attributeFilter: ['data-elapsed-from', 'data-elapsed-to', 'data-local-time'] });
})();
</script>
"""


def apply_theme() -> None:
    ui.colors(**PALETTE)
    ui.add_css(CSS)
    ui.add_head_html(CLOCK_JS)
    ui.add_head_html('<meta name="theme-color" content="#7c3aed">')


#: Whether the browser shows the dark theme right now (the system's preference, while in auto).
SHOWS_DARK_JS = "document.body.classList.contains('body--dark')"


class DarkModeToggle:
    """A button that switches light/dark and remembers the choice in the user's storage. Until
    the user chooses, the studio follows the system's preference (Quasar's auto mode)."""

    def __init__(self) -> None:
        choice = app.storage.user.get("dark")
        self.dark = ui.dark_mode(choice if isinstance(choice, bool) else None)
        self.button = ui.button(on_click=self.toggle, color=None).props("flat round data-testid=dark-toggle").mark("dark-toggle")
        with self.button:
            self.tooltip = ui.tooltip()
        self._render()

    def _render(self) -> None:
        dark = self.dark.value
        if dark is None:
            self.button.props('icon=contrast aria-label="Light or dark: follows the system; switch" aria-pressed=mixed')
            self.tooltip.text = "Follows the system; click to switch"
            return
        self.button.props(
            f"icon={'light_mode' if dark else 'dark_mode'} "
            f'aria-label="{"Switch to light mode" if dark else "Switch to dark mode"}" '
            f"aria-pressed={'true' if dark else 'false'}"
        )
        self.tooltip.text = "Light mode" if dark else "Dark mode"

    async def toggle(self) -> None:
        shown = self.dark.value
        if shown is None:  # auto: what the system chose is known to the browser only
            try:
                shown = bool(await ui.run_javascript(SHOWS_DARK_JS, timeout=2.0))
            except TimeoutError:
                shown = False
        self.dark.value = not shown
        app.storage.user["dark"] = self.dark.value
        self._render()


@contextmanager
def frame(system: System, title: str = "promptreel") -> Iterator[StatusBar]:
    """The page around every studio view: header (logo, live status, dark mode) and a centred main column."""
    ui.page_title(title)
    apply_theme()
    with ui.header().classes("pr-header px-4 md:px-6 py-2 items-center gap-3 no-wrap").props("bordered=false"):
        with ui.link(target="/").classes("pr-plain flex items-center gap-3 no-wrap").props('aria-label="promptreel studio home"'):
            ui.element("img").props('src=/assets/logo.svg alt="" width=38 height=38').style("display:block")
            with ui.column().classes("gap-0"):
                ui.label("promptreel").classes("pr-wordmark")
                ui.label("prompt in, picture and motion out").classes("pr-tagline gt-xs")
        ui.space()
        status = StatusBar(system)
        ui.button("API docs", icon="data_object", on_click=lambda: ui.navigate.to("/docs", new_tab=True), color=None).props(
            'flat no-caps dense aria-label="REST API documentation (opens a new tab)"'
        ).classes("gt-sm px-2").tooltip("The REST API's interactive documentation")
        DarkModeToggle()
        if system.auth.enabled:
            ui.button(icon="logout", on_click=lambda: _sign_out(system), color=None).props(
                'flat round aria-label="Sign out" data-testid=sign-out'
            ).tooltip("Sign out")
    # A div, not a second <main>: NiceGUI's page (Quasar's q-page) is the page's one main landmark.
    main = ui.element("div").classes("w-full max-w-[1400px] mx-auto px-3 sm:px-4 md:px-6 py-5 md:py-7 flex flex-col gap-6")
    ui.skip_link(target=main)
    with main:
        yield status


def _sign_out(system: System) -> None:
    ui.navigate.to(sign_out(system))  # a new session's link, which goes on to /login
