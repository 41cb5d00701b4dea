"""Which providers exist, which are configured, which accept their keys, and the instances the
pipeline uses.

A remote provider is *available* when its key is set and the provider has not rejected it. The
key check is one free request (OpenAI `GET /models/dall-e-3`, Replicate `GET /v1/account`, Runway
`GET /v1/organization`), made in a background thread from the moment the registry is built and
cached for a few minutes, so that `/api/v1/status` never waits on a provider for more than a
moment: until the first answers are in, callers wait for them at most `FIRST_CHECK_WAIT` seconds
in all (async callers through `await check_keys()`; nothing ever blocks the event loop); later
ones answer from the cache at once while a stale entry is refreshed behind them, so a view that
shows availability listens with `on_availability_change` to hear when such an answer (or a
refusal met by a job) changes it. Only a clear refusal (401, no access, no credit) makes a provider
unavailable; a provider that cannot be reached stays available, and its jobs explain the failure.
A job that meets a rejected key marks it rejected at once, whatever the cache says.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from backend.media.checks import MediaLimits
from backend.providers.base import ImageProvider, VideoProvider
from backend.providers.local import LocalImageProvider, LocalVideoProvider
from backend.providers.retry import RetryPolicy
from backend.settings import Settings

log = logging.getLogger(__name__)

IMAGE_PROVIDERS = ("dalle3", "flux1", "local")
VIDEO_PROVIDERS = ("runway", "local")
PROVIDER_LABELS = {
    "dalle3": "DALL-E 3 (OpenAI)",
    "flux1": "FLUX.1 (Replicate)",
    "runway": "Runway",
    "local": "Local renderer",
}
#: The setting each remote provider cannot work without.
REQUIRED_SETTING = {"dalle3": "OPENAI_API_KEY", "flux1": "REPLICATE_API_TOKEN", "runway": "RUNWAYML_API_SECRET"}

#: How long a key check's answer is trusted (s): an accepted key, and a rejected or unknown one.
KEY_OK_TTL = 600.0
KEY_BAD_TTL = 120.0
#: The longest a status request waits for the very first key check (s); the brief allows one.
FIRST_CHECK_WAIT = 0.8
#: Timeout of the key check request itself (it runs in the background).
KEY_CHECK_TIMEOUT = 5.0


class ProviderUnavailable(Exception):
    def __init__(self, name: str, missing_setting: str):
        super().__init__(f"Provider '{name}' is not configured: set {missing_setting} to use it.")
        self.name = name
        self.missing_setting = missing_setting


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    label: str
    available: bool
    missing_setting: str | None  # why it is unavailable: a setting that is not set...
    key_problem: str | None = None  # ...or a key the provider rejected ("OpenAI rejected the API key (401)")

    @property
    def configured(self) -> bool:
        return self.missing_setting is None

    @property
    def reason(self) -> str | None:
        if self.available:
            return None
        if self.missing_setting:
            return f"set {self.missing_setting}"
        return self.key_problem


@dataclass(frozen=True)
class KeyVerdict:
    ok: bool | None  # None: unknown (not reachable, unexpected answer)
    reason: str | None
    checked_at: float


def _availability(verdict: KeyVerdict | None) -> tuple[bool, str | None]:
    """What a verdict means for the provider (as `ProviderRegistry.info` shows it): available, or
    refused and why. Only a clear refusal makes it unavailable; no answer or an unknown one does not."""
    if verdict is not None and verdict.ok is False:
        return False, verdict.reason
    return True, None


class KeyCheck:
    """A provider's key check: cached, refreshed in a background thread, never waited on for long."""

    def __init__(
        self,
        name: str,
        probe: Callable[[], tuple[bool | None, str | None]],
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ):
        self.name = name
        self.probe = probe
        self.clock = clock
        #: Called with the name, on the thread that learnt it, when the availability the verdict
        #: means changes (a key refused, or accepted again), not when it is merely confirmed.
        self.on_change = on_change
        self._verdict: KeyVerdict | None = None
        self._lock = threading.Lock()
        self._running: threading.Event | None = None

    def _stale(self, verdict: KeyVerdict | None) -> bool:
        if verdict is None:
            return True
        ttl = KEY_OK_TTL if verdict.ok else KEY_BAD_TTL
        return self.clock() - verdict.checked_at > ttl

    def _run(self, done: threading.Event) -> None:
        started = self.clock()
        try:
            ok, reason = self.probe()
        except Exception as error:
            ok, reason = None, f"key check failed: {error}"
        with self._lock:
            before = self._verdict
            rejected_meanwhile = before is not None and before.ok is False and before.checked_at >= started
            if not rejected_meanwhile:
                self._verdict = KeyVerdict(ok, reason, self.clock())
            after = self._verdict
            self._running = None
        if ok is False:
            log.warning("%s: %s", self.name, reason)
        self._changed(before, after)
        done.set()

    def refresh(self) -> threading.Event:
        """Start a check unless one runs; returns the event set when it is done."""
        with self._lock:
            if self._running is None:
                self._running = threading.Event()
                threading.Thread(target=self._run, args=(self._running,), name=f"key check {self.name}", daemon=True).start()
            return self._running

    def verdict(self, wait: float = 0.0) -> KeyVerdict | None:
        """The cached verdict; a stale one is refreshed in the background. With nothing cached
        yet, waits up to `wait` seconds for the first answer, off the event loop only."""
        with self._lock:
            current = self._verdict
        if not self._stale(current):
            return current
        done = self.refresh()
        if current is None and wait > 0 and not _on_event_loop():
            done.wait(wait)
            with self._lock:
                current = self._verdict
        return current

    @property
    def known(self) -> KeyVerdict | None:
        """The cached verdict, stale or not, without starting anything."""
        with self._lock:
            return self._verdict

    def reject(self, reason: str) -> None:
        """A provider call was refused for the key: believe it now, whatever the cache says."""
        with self._lock:
            before = self._verdict
            self._verdict = after = KeyVerdict(False, reason, self.clock())
        self._changed(before, after)

    def _changed(self, before: KeyVerdict | None, after: KeyVerdict | None) -> None:
        if self.on_change is not None and _availability(before) != _availability(after):
            try:
                self.on_change(self.name)
            except Exception:  # a broken listener must not break the check or the job that met the refusal
                log.exception("%s: availability listener failed", self.name)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class ProviderRegistry:
    def __init__(self, settings: Settings, *, policy: RetryPolicy | None = None, start_checks: bool = True):
        self.settings = settings
        self.policy = policy or retry_policy(settings)
        self._image: dict[str, ImageProvider] = {"local": LocalImageProvider()}
        self._video: dict[str, VideoProvider] = {"local": LocalVideoProvider(MediaLimits.from_settings(settings))}
        self._checks: dict[str, KeyCheck] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._listeners_lock = threading.Lock()
        self._first_wait_deadline: float | None = None
        if settings.openai_api_key:
            from backend.providers.dalle3 import DalleImageProvider

            self._add(
                "dalle3", DalleImageProvider(settings, policy=self.policy, on_key_rejected=self._rejected("dalle3")), image=True
            )
        if settings.replicate_api_token:
            from backend.providers.flux1 import FluxImageProvider

            self._add(
                "flux1", FluxImageProvider(settings, policy=self.policy, on_key_rejected=self._rejected("flux1")), image=True
            )
        if settings.runwayml_api_secret:
            from backend.providers.runway import RunwayVideoProvider

            self._add(
                "runway", RunwayVideoProvider(settings, policy=self.policy, on_key_rejected=self._rejected("runway")), image=False
            )
        if start_checks:
            self.start_key_checks()  # free requests, answered long before a first status request

    def _add(self, name: str, provider: ImageProvider | VideoProvider, *, image: bool) -> None:
        if image:
            self._image[name] = provider  # type: ignore[assignment]
        else:
            self._video[name] = provider  # type: ignore[assignment]
        check = getattr(provider, "check_key", None)
        if check is not None:
            self._checks[name] = KeyCheck(name, lambda: check(KEY_CHECK_TIMEOUT), on_change=self._availability_changed)

    def on_availability_change(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(name)` when a provider's availability changes on its own: a background key
        check answered differently from the cached verdict it refreshed, or a job met a refused
        key. It runs on the thread that learnt it (a key check's thread, a job's), so a listener
        hands the news to its own loop. Returns the function that stops it."""
        with self._listeners_lock:
            self._listeners.append(listener)

        def stop() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return stop

    def _availability_changed(self, name: str) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(name)
            except Exception:  # one broken view must not keep the others from hearing it
                log.exception("provider availability listener failed")

    def _rejected(self, name: str) -> Callable[[str], None]:
        def reject(reason: str) -> None:
            if name in self._checks:
                self._checks[name].reject(reason)

        return reject

    def start_key_checks(self) -> None:
        """Start every configured provider's key check in the background (done at construction)."""
        for check in self._checks.values():
            check.verdict()

    def _first_wait_left(self) -> float:
        """What is left of the one `FIRST_CHECK_WAIT` that all callers together may spend."""
        if self._first_wait_deadline is None:
            self._first_wait_deadline = time.monotonic() + FIRST_CHECK_WAIT
        return max(0.0, self._first_wait_deadline - time.monotonic())

    def key_verdict(self, name: str) -> KeyVerdict | None:
        """What the last key check said about a configured remote provider (None: not known yet).

        Off the event loop, waits for a first answer, at most `FIRST_CHECK_WAIT` seconds over all
        calls together; on the event loop it never waits (await `check_keys()` first there)."""
        check = self._checks.get(name)
        if check is None:
            return None
        return check.verdict(self._first_wait_left() if check.known is None else 0.0)

    async def check_keys(self) -> None:
        """Await the first answers of the key checks, at most `FIRST_CHECK_WAIT` seconds in all
        and not at all once they are known: the async callers' way (the status route, the studio)
        to report a rejected key from the first request on."""
        waiting = [check for check in self._checks.values() if check.known is None]
        if not waiting:
            return
        events = [check.refresh() for check in waiting]
        left = self._first_wait_left()
        if left <= 0:
            return

        def wait_all() -> None:
            deadline = time.monotonic() + left
            for event in events:
                event.wait(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(wait_all)

    def info(self, name: str) -> ProviderInfo:
        configured = name in self._image or name in self._video
        if not configured:
            return ProviderInfo(name, PROVIDER_LABELS[name], False, REQUIRED_SETTING[name])
        verdict = self.key_verdict(name)
        if verdict is not None and verdict.ok is False:
            return ProviderInfo(name, PROVIDER_LABELS[name], False, None, verdict.reason)
        return ProviderInfo(name, PROVIDER_LABELS[name], True, None)

    def image_providers(self) -> list[ProviderInfo]:
        return [self.info(name) for name in IMAGE_PROVIDERS]

    def video_providers(self) -> list[ProviderInfo]:
        return [self.info(name) for name in VIDEO_PROVIDERS]

    def image(self, name: str) -> ImageProvider:
        if name not in self._image:
            raise ProviderUnavailable(name, REQUIRED_SETTING[name])
        return self._image[name]

    def video(self, name: str) -> VideoProvider:
        if name not in self._video:
            raise ProviderUnavailable(name, REQUIRED_SETTING[name])
        return self._video[name]

    def model_for_image(self, name: str, quality: str) -> str:
        """The model a job would use, known even when the provider is not configured (for estimates)."""
        if name in self._image:
            return self._image[name].model_for(quality)
        if name == "flux1":
            return self.settings.flux_model_high if quality == "high" else self.settings.flux_model_standard
        return "dall-e-3"

    def model_for_video(self, name: str) -> str:
        if name in self._video:
            return self._video[name].model
        return self.settings.runway_model

    @property
    def default_video_provider(self) -> str:
        return "runway" if "runway" in self._video else "local"


def retry_policy(settings: Settings) -> RetryPolicy:
    """Retry timing from the settings; without a base delay, back off from half the poll interval
    (at most 1 s), which keeps a test run with a tiny poll interval quick."""
    base_delay = settings.retry_base_delay
    if base_delay is None:
        base_delay = min(1.0, settings.poll_interval / 2)
    return RetryPolicy(attempts=settings.retry_attempts, base_delay=base_delay)
