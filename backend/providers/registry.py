"""Which providers exist, which are configured, which accept their keys, and the instances the
pipeline uses.

Providers are named as the catalog names them (`openai`, `replicate`, `runway`, `local`); the
guide's `dalle3` and `flux1` are accepted everywhere as `openai` and `replicate`.

A remote provider is *available* when its key is set and the provider has not rejected it. The
key check is one free request (OpenAI `GET /models/{model}`, Replicate `GET /v1/account`, Runway
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
from backend.providers.catalog import Catalog, ModelEntry, activate, canonical
from backend.providers.local import LocalImageProvider, LocalVideoProvider
from backend.providers.retry import RetryPolicy
from backend.settings import Settings

log = logging.getLogger(__name__)

IMAGE_PROVIDERS = ("dalle3", "flux1", "local", "comfyui")
VIDEO_PROVIDERS = ("runway", "replicate", "local", "comfyui")
PROVIDER_LABELS = {
    "dalle3": "OpenAI (GPT Image)",
    "flux1": "FLUX.1 (Replicate)",
    "openai": "OpenAI (GPT Image)",
    "replicate": "Replicate",
    "runway": "Runway",
    "local": "Local renderer",
    "comfyui": "ComfyUI",
}
#: Providers the studio and the lists show only when configured.
LISTED_WHEN_CONFIGURED = frozenset({"comfyui"})
#: The setting each remote provider cannot work without.
REQUIRED_SETTING = {
    "openai": "OPENAI_API_KEY",
    "replicate": "REPLICATE_API_TOKEN",
    "dalle3": "OPENAI_API_KEY",
    "flux1": "REPLICATE_API_TOKEN",
    "runway": "RUNWAYML_API_SECRET",
    "comfyui": "COMFYUI_URL",
}

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
        #: The model catalog (built in, and the user's file); prices and checks read it.
        self.catalog = Catalog.load(settings.models_file)
        activate(self.catalog)
        #: Per model: what the provider said of it (a cached, bounded check, or a job's answer).
        self._model_checks: dict[str, KeyCheck] = {}
        self._model_checks_lock = threading.Lock()
        if settings.openai_api_key:
            from backend.providers.openai_images import OpenAIImageProvider

            self._add(
                "openai",
                OpenAIImageProvider(
                    settings, policy=self.policy, on_key_rejected=self._rejected("openai"), on_model_missing=self.model_missing
                ),
                image=True,
            )
        if settings.replicate_api_token:
            from backend.providers.replicate_images import ReplicateImageProvider
            from backend.providers.replicate_video import ReplicateVideoProvider

            flux = ReplicateImageProvider(settings, policy=self.policy, on_key_rejected=self._rejected("replicate"))
            flux.on_model_missing = self.model_missing
            self._add("replicate", flux, image=True)
            # The same account and key check: Replicate's image-to-video models.
            video = ReplicateVideoProvider(settings, policy=self.policy, on_key_rejected=self._rejected("replicate"))
            video.on_model_missing = self.model_missing
            self._add("replicate", video, image=False)
        if settings.runwayml_api_secret:
            from backend.providers.runway import RunwayVideoProvider

            runway = RunwayVideoProvider(settings, policy=self.policy, on_key_rejected=self._rejected("runway"))
            runway.on_model_missing = self.model_missing
            self._add("runway", runway, image=False)
        if settings.comfyui_url:
            from backend.providers.comfyui import ComfyUIProvider

            comfyui = ComfyUIProvider(settings, policy=self.policy)
            self._add("comfyui", comfyui, image=True)
            self._video["comfyui"] = comfyui
        if start_checks:
            self.start_key_checks()  # free requests, answered long before a first status request
            for entry in (
                self.catalog.of("comfyui", "image") + self.catalog.of("comfyui", "video") if settings.comfyui_url else []
            ):
                if (model_check := self._model_check(entry)) is not None:
                    model_check.refresh()  # what the workflows miss, known before a first job

    def use_comfyui(self, url: str) -> None:
        """Enable `comfyui` at `url` for this process, as COMFYUI_URL would have (the desktop app's
        offer of the ComfyUI it found on this machine); its checks start at once."""
        if "comfyui" in self._image:
            return
        from backend.providers.comfyui import ComfyUIProvider

        self.settings = self.settings.model_copy(update={"comfyui_url": url})
        comfyui = ComfyUIProvider(self.settings, policy=self.policy)
        self._add("comfyui", comfyui, image=True)
        self._video["comfyui"] = comfyui
        self._checks["comfyui"].refresh()
        for entry in self.catalog.of("comfyui", "image") + self.catalog.of("comfyui", "video"):
            if (model_check := self._model_check(entry)) is not None:
                model_check.refresh()
        self._availability_changed("comfyui")

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
        """The provider's availability, under the name asked for (`dalle3` answers for `openai`)."""
        key = canonical(name)
        configured = key in self._image or key in self._video
        if not configured:
            return ProviderInfo(name, PROVIDER_LABELS[name], False, REQUIRED_SETTING[name])
        verdict = self.key_verdict(key)
        if verdict is not None and verdict.ok is False:
            return ProviderInfo(name, PROVIDER_LABELS[name], False, None, verdict.reason)
        return ProviderInfo(name, PROVIDER_LABELS[name], True, None)

    def _listed(self, name: str) -> bool:
        """ComfyUI is the user's own software, not a key to buy: offered only once COMFYUI_URL is set."""
        return name not in LISTED_WHEN_CONFIGURED or name in self._image or name in self._video

    def image_providers(self) -> list[ProviderInfo]:
        return [self.info(name) for name in IMAGE_PROVIDERS if self._listed(name)]

    def video_providers(self) -> list[ProviderInfo]:
        return [self.info(name) for name in VIDEO_PROVIDERS if self._listed(name)]

    def image(self, name: str) -> ImageProvider:
        key = canonical(name)
        if key not in self._image:
            raise ProviderUnavailable(name, REQUIRED_SETTING[name])
        return self._image[key]

    def video(self, name: str) -> VideoProvider:
        key = canonical(name)
        if key not in self._video:
            raise ProviderUnavailable(name, REQUIRED_SETTING[name])
        return self._video[key]

    def model_for_image(self, name: str, quality: str) -> str:
        """The model a job would use, known even when the provider is not configured (for estimates)."""
        key = canonical(name)
        if key in self._image:
            return self._image[key].model_for(quality)
        if key == "replicate":
            return self.settings.flux_model_high if quality == "high" else self.settings.flux_model_standard
        default = self.catalog.default(key, "image")
        return default.id if default is not None else "gpt-image-2"

    def model_for_video(self, name: str) -> str:
        key = canonical(name)
        if key in self._video:
            return self._video[key].model
        if key == "runway":
            return self.settings.runway_model
        default = self.catalog.default(key, "video")
        return default.id if default is not None else ""

    def is_default(self, entry: ModelEntry) -> bool:
        """Whether a job that names no model would run this one (the settings choose Replicate's and Runway's)."""
        if entry.provider == "replicate" and entry.kind == "image":
            return entry.id in (self.settings.flux_model_standard, self.settings.flux_model_high)
        if entry.provider == "runway":
            return entry.id == self.settings.runway_model
        default = self.catalog.default(entry.provider, entry.kind)
        return default is not None and default.id == entry.id

    # -- models ------------------------------------------------------------------------------

    def _model_check(self, entry: ModelEntry) -> KeyCheck | None:
        """The cached check of one model at its provider (None: the provider is not configured or has none)."""
        with self._model_checks_lock:
            if entry.id in self._model_checks:
                return self._model_checks[entry.id]
            providers: dict[str, object] = {**self._image, **self._video}
            probe = getattr(providers.get(entry.provider), "check_model", None)
            if probe is None:
                return None
            model_id = entry.id
            check = KeyCheck(model_id, lambda: probe(model_id, KEY_CHECK_TIMEOUT), on_change=self._availability_changed)
            self._model_checks[model_id] = check
            return check

    def model_missing(self, model: str, reason: str) -> None:
        """A provider answered (a job, or a key check) that `model` does not exist: believe it now."""
        entry = self.catalog.get(model)
        check = self._model_check(entry) if entry is not None else None
        if check is not None:
            check.reject(reason)

    def model_problem(self, entry: ModelEntry, *, check: bool = True, configured: bool = False) -> str | None:
        """Why the model cannot run now (None: it can): retired, its provider not configured or
        refusing the key, or the provider said the model does not exist (cached; a stale or
        missing answer is asked again in the background, never waited for here)."""
        if entry.retired():
            return f"retired on {entry.retiresOn.isoformat() if entry.retiresOn else 'an earlier date'}"
        info = self.info(entry.provider)
        if not info.available and not (configured and info.key_problem is None):
            return info.reason  # `configured`: the caller knows the provider is set up; only a refused key counts
        model_check = self._model_check(entry) if check else None
        verdict = model_check.verdict() if model_check is not None else None
        if verdict is not None and verdict.ok is False:
            return verdict.reason
        return None

    def missing(self, provider: str) -> str | None:
        """What a configured provider's models lack at the provider (ComfyUI's nodes and model files), from the cached checks."""
        if canonical(provider) not in self._image and canonical(provider) not in self._video:
            return None
        reasons = []
        for entry in self.catalog.all():
            if entry.provider == canonical(provider) and (check := self._model_check(entry)) is not None:
                verdict = check.verdict()
                if verdict is not None and verdict.ok is False and verdict.reason:
                    reasons.append(verdict.reason)
        return "; ".join(reasons) or None

    def models(self, *, kind: str | None = None, provider: str | None = None) -> list[tuple[ModelEntry, bool, str | None]]:
        """The catalog's models (filtered), each with whether it can run now and why not."""
        rows = []
        for entry in self.catalog.all():
            if (kind is None or entry.kind == kind) and (provider is None or entry.provider == canonical(provider)):
                problem = self.model_problem(entry)
                rows.append((entry, problem is None, problem))
        return rows

    def model_data(self, entry: ModelEntry, available: bool, reason: str | None) -> dict[str, object]:
        """One model as GET /api/v1/models shows it."""
        return {**entry.public(), "default": self.is_default(entry), "available": available, "reason": reason}

    async def check_models(self, entries: list[ModelEntry]) -> None:
        """Await the first answers of the models' checks, at most `FIRST_CHECK_WAIT` seconds in all."""
        await self.check_keys()
        checks = [check for entry in entries if not entry.retired() and (check := self._model_check(entry)) is not None]
        events = [check.refresh() for check in checks if check.known is None]
        if not events:
            return
        deadline = time.monotonic() + FIRST_CHECK_WAIT

        def wait_all() -> None:
            for event in events:
                event.wait(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(wait_all)

    @property
    def default_video_provider(self) -> str:
        return "runway" if "runway" in self._video else "local"

    def default_model(self, provider: str, kind: str, quality: str = "standard") -> str:
        return self.model_for_image(provider, quality) if kind == "image" else self.model_for_video(provider)


def retry_policy(settings: Settings) -> RetryPolicy:
    """Retry timing from the settings; without a base delay, back off from half the poll interval
    (at most 1 s), which keeps a test run with a tiny poll interval quick."""
    base_delay = settings.retry_base_delay
    if base_delay is None:
        base_delay = min(1.0, settings.poll_interval / 2)
    return RetryPolicy(attempts=settings.retry_attempts, base_delay=base_delay)
