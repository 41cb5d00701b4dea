"""A ComfyUI on this machine, for the desktop app (`promptreel --native`) to offer when COMFYUI_URL
is unset: "ComfyUI found on this machine: use it?".

At start the app asks PROMPTREEL_COMFYUI_PROBE_URL's `/system_stats` once (a short timeout, in a
thread); the studio shows the offer while it stands. Accepting enables `comfyui` for this process
(ProviderRegistry.use_comfyui); declining hides the offer until the app starts again. Nothing is
written to the user's files: the studio says which COMFYUI_URL keeps it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

log = logging.getLogger(__name__)

#: How long the probe waits for an answer (s): a ComfyUI on this machine answers at once.
PROBE_TIMEOUT = 1.0


def comfyui_answers(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether `url` answers `GET /system_stats` as ComfyUI's server.py does (a `system` object)."""
    try:
        # trust_env off: a proxy from the environment must not answer for this machine's own ports
        response = httpx.get(f"{url.rstrip('/')}/system_stats", timeout=timeout, trust_env=False)
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and isinstance(body.get("system"), dict)


class LocalComfyUIOffer:
    """The offer of a ComfyUI found at `url`: found or not, then accepted or declined."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.found = False
        self.accepted = False
        self.declined = False
        self._probe: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Ask once, in the background (on the app's start-up)."""
        if self._probe is None and self.url:
            self._probe = asyncio.ensure_future(self._look())

    async def _look(self) -> None:
        self.found = await asyncio.to_thread(comfyui_answers, self.url)
        log.info("ComfyUI %s at %s", "answers" if self.found else "does not answer", self.url)

    async def ready(self) -> None:
        """Until the probe has answered (at most PROBE_TIMEOUT after the start)."""
        if self._probe is not None:
            await asyncio.shield(self._probe)

    @property
    def open(self) -> bool:
        """Whether the studio should ask."""
        return self.found and not self.accepted and not self.declined

    def accept(self, use_comfyui: Callable[[str], None]) -> None:
        """Take it up: `use_comfyui` (ProviderRegistry.use_comfyui) enables the provider at the URL."""
        use_comfyui(self.url)
        self.accepted = True

    def decline(self) -> None:
        self.declined = True
