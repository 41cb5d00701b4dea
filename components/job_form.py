"""The prompt form: what to make, with which providers, at what cost.

It validates through `backend.jobs.request.validate_request` and creates jobs through
`JobService.create`, exactly as the REST API does, so it refuses the same things with the
same words (`describe()` of the validation error, or the ApiError's message).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from nicegui import ui
from pydantic import ValidationError

from backend.auth import LOCAL_USER, User
from backend.errors import ApiError
from backend.jobs.request import (
    DURATIONS,
    IMAGE_SIZES,
    MAX_PROMPT_LENGTH,
    MAX_SEED,
    GenerateRequest,
    GenerateSettings,
    describe,
    validate_request,
)
from backend.providers.pricing import UnknownPrice
from backend.providers.registry import ProviderInfo
from backend.store.jobs import JobRecord
from backend.system import System

from .format import PROVIDER_SHORT, money
from .job_card import set_visible
from .model_picker import ModelPicker

SIZE_LABELS = {"1024x1024": "Square · 1024×1024", "1792x1024": "Landscape · 1792×1024", "1024x1792": "Portrait · 1024×1792"}
QUALITY_LABELS = {"standard": "Standard", "high": "High"}
PLACEHOLDER = "A lighthouse on a basalt cliff at golden hour, waves rolling in, gulls in the wind…"

#: The option template: the provider's name, and under an unavailable one, what to set.
OPTION_SLOT = r"""
<q-item v-bind="props.itemProps" :aria-disabled="props.opt.disable ? 'true' : 'false'">
  <q-item-section>
    <q-item-label>{{ props.opt.label }}</q-item-label>
    <q-item-label caption v-if="props.opt.reason" class="pr-provider-reason">Unavailable: {{ props.opt.reason }}</q-item-label>
  </q-item-section>
</q-item>
"""


def unavailable_reasons(infos: list[ProviderInfo]) -> dict[str, str]:
    return {info.name: info.reason or "unavailable" for info in infos if not info.available}


def first_available(infos: list[ProviderInfo], preferred: str | None = None) -> str:
    """`preferred` when it is available, else the first available provider (local always is)."""
    available = [info.name for info in infos if info.available]
    return preferred if preferred in available else next(iter(available), "local")


class ProviderSelect(ui.select):
    """A select of providers; the unavailable ones are shown, disabled, with the setting they need
    or why their key was refused. A chosen provider that became unavailable is marked in error."""

    def __init__(self, infos: list[ProviderInfo], *, label: str, value: str):
        self._reasons = unavailable_reasons(infos)
        super().__init__({info.name: info.label for info in infos}, label=label, value=value)
        self.props("outlined options-dense")  # Quasar names the combobox after its label
        self.add_slot("option", OPTION_SLOT)
        self.validate(return_result=False)

    def set_infos(self, infos: list[ProviderInfo]) -> None:
        """Show the providers' availability now; sends nothing when it did not change."""
        reasons = unavailable_reasons(infos)
        if reasons == self._reasons:
            return
        self._reasons = reasons
        self.update()
        self.validate(return_result=False)

    def _update_options(self) -> None:
        super()._update_options()
        for option, name in zip(self._props["options"], self._values):
            reason = self._reasons.get(name)
            if reason:
                option["disable"] = True
                option["reason"] = reason

    def validate(self, *, return_result: bool = True) -> bool:
        """Runs on every value change: the chosen provider must be available."""
        reason = self._reasons.get(self.value)
        self.error = f"Unavailable: {reason}" if reason else None
        return reason is None


def seed_value(text: str | None) -> Any:
    """The seed as the API would receive it: absent when empty, an int when it is one, else the text as typed."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text  # validation then answers as the API would: "settings.seed: Input should be a valid integer"


class JobForm:
    def __init__(self, system: System, on_created: Callable[[JobRecord], Any] | None = None, user: User = LOCAL_USER):
        self.user = user
        self.system = system
        self.on_created = on_created
        self._busy = False
        image_infos = system.providers.image_providers()
        video_infos = system.providers.video_providers()
        with ui.card().classes("pr-card w-full p-5 gap-4").props('flat role=form aria-label="New job"'):
            with ui.row().classes("w-full items-center justify-between no-wrap"):
                with ui.column().classes("gap-0"):
                    ui.label("New reel").classes("pr-section-title")
                    ui.label("Describe a scene; get a picture and a short video of it.").classes("text-xs pr-muted")
                ui.icon("auto_awesome", size="22px").classes("text-primary")
            self.prompt = (
                ui.textarea(label="Prompt", placeholder=PLACEHOLDER, on_change=self._on_prompt_change)
                .classes("w-full")
                .props('outlined autogrow input-style="min-height: 6.5rem" aria-label="Prompt" data-testid=prompt')
            )
            self.prompt.mark("prompt")
            self.prompt.on("keydown.ctrl.enter", self.submit)
            self.prompt.on("keydown.meta.enter", self.submit)
            with ui.row().classes("w-full justify-between items-center -mt-3 text-xs pr-muted"):
                ui.label("Ctrl+Enter to generate").classes("gt-xs")
                self.counter = (
                    ui.label(f"0 / {MAX_PROMPT_LENGTH}").props("aria-live=polite data-testid=prompt-count").mark("prompt-count")
                )

            with ui.element("div").classes("w-full grid grid-cols-1 sm:grid-cols-2 gap-3"):
                self.provider = ProviderSelect(image_infos, label="Image provider", value=first_available(image_infos))
                self.provider.props("data-testid=image-provider").mark("image-provider")
                self.provider.on_value_change(self._update_estimate)
                self.video_provider = ProviderSelect(
                    video_infos,
                    label="Video provider",
                    value=first_available(video_infos, system.providers.default_video_provider),
                )
                self.video_provider.props("data-testid=video-provider").mark("video-provider")
                self.video_provider.on_value_change(self._update_estimate)
            with (
                ui.row()
                .classes("w-full items-center gap-2 no-wrap -mt-1 text-xs pr-muted")
                .props("data-testid=provider-hint") as self.provider_hint
            ):
                ui.icon("key", size="16px").classes("text-accent")
                self.provider_hint_text = ui.label().mark("provider-hint")
                self.provider_hint_tip = ui.tooltip()
            self._show_provider_hint(image_infos + video_infos)
            self.models = ModelPicker(system.providers, self.provider, self.video_provider, self._update_estimate)
            self.size = (
                ui.select(SIZE_LABELS, label="Image size", value=IMAGE_SIZES[0], on_change=self._update_estimate)
                .classes("w-full")
                .props("outlined options-dense data-testid=image-size")
            )
            with ui.row().classes("w-full items-end gap-4"):
                with ui.column().classes("gap-1"):
                    ui.label("Video length").classes("text-xs pr-muted")
                    self.duration = ui.toggle(
                        {d: f"{d} s" for d in DURATIONS}, value=DURATIONS[0], on_change=self._update_estimate
                    ).props('no-caps unelevated toggle-color=primary rounded aria-label="Video length" data-testid=duration')
                    self.models.follow_duration(self.duration)
                with ui.column().classes("gap-1"):
                    ui.label("Quality").classes("text-xs pr-muted")
                    self.quality = ui.toggle(QUALITY_LABELS, value="standard", on_change=self._update_estimate).props(
                        'no-caps unelevated toggle-color=primary rounded aria-label="Quality" data-testid=quality'
                    )
            with ui.row().classes("w-full items-start gap-2 no-wrap"):
                self.seed = (
                    ui.input(label="Seed", placeholder="random")
                    .classes("grow")
                    .mark("seed")
                    .props(
                        'outlined clearable inputmode=numeric aria-label="Seed (empty for random)" data-testid=seed hint="Empty = random"'
                    )
                )
                ui.button(icon="casino", on_click=self.roll_seed).props(
                    'flat round color=primary aria-label="Pick a random seed" data-testid=dice'
                ).classes("mt-2").mark("dice").tooltip("Random seed")

            self.error = ui.label().classes("w-full pr-error-text text-sm").props("role=alert data-testid=form-error")
            self.error.mark("form-error")
            self.error.visible = False
            with ui.row().classes("w-full items-center justify-between no-wrap gap-3"):
                with ui.column().classes("gap-0"):
                    ui.label("Estimated cost").classes("text-xs pr-muted")
                    self.estimate = (
                        ui.label().classes("text-lg font-bold").props("data-testid=estimate aria-live=polite").mark("estimate")
                    )
                    self.estimate_detail = ui.label().classes("text-xs pr-muted")
                self.button = (
                    ui.button("Generate", icon="movie_filter", on_click=self.submit, color=None)
                    .classes("pr-gradient-btn px-5 py-2")
                    .props('unelevated no-caps no-wrap aria-label="Generate (Ctrl+Enter)" data-testid=generate')
                    .mark("generate")
                )
        self._update_estimate()

    # -- providers ----------------------------------------------------------------

    def set_providers(self, image_infos: list[ProviderInfo], video_infos: list[ProviderInfo]) -> None:
        """The providers' availability changed (a key was refused, or accepted again): show it."""
        self.provider.set_infos(image_infos)
        self.video_provider.set_infos(video_infos)
        self._show_provider_hint(image_infos + video_infos)

    def _show_provider_hint(self, infos: list[ProviderInfo]) -> None:
        missing = list({info.name: info for info in infos if not info.available}.values())
        set_visible(self.provider_hint, bool(missing))
        if not missing:
            return
        names = [PROVIDER_SHORT.get(info.name, info.label) for info in missing]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        one = len(names) == 1
        if all(info.missing_setting for info in missing):
            text = f"{listed} need{'s' if one else ''} an API key; open a list to see which to set."
        else:  # a key was refused by its provider
            text = f"{listed} {'is' if one else 'are'} unavailable; open a list to see why."
        self.provider_hint_text.text = text
        self.provider_hint_tip.text = "; ".join(f"{info.label}: {info.reason}" for info in missing)

    # -- values -------------------------------------------------------------------

    def request_data(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "imageSize": self.size.value,
            "videoDuration": self.duration.value,
            "quality": self.quality.value,
            "videoProvider": self.video_provider.value,
            **self.models.settings(),
        }
        seed = seed_value(self.seed.value)
        if seed is not None:
            settings["seed"] = seed
        return {"prompt": self.prompt.value or "", "provider": self.provider.value, "settings": settings}

    def prefill(self, job: dict[str, Any]) -> None:
        """Load a job's settings (seed included) into the form, to run it again or vary it."""
        meta = job.get("metadata") or {}
        self.prompt.value = job.get("prompt", "")
        if job.get("provider") in self.provider._values:
            self.provider.value = job["provider"]
        if meta.get("videoProvider") in self.video_provider._values:
            self.video_provider.value = meta["videoProvider"]
        self.models.prefill(meta)
        if meta.get("imageSize") in IMAGE_SIZES:
            self.size.value = meta["imageSize"]
        if meta.get("videoDuration") in self.duration.options:  # what the chosen video model allows
            self.duration.value = meta["videoDuration"]
        if meta.get("quality") in QUALITY_LABELS:
            self.quality.value = meta["quality"]
        self.seed.value = "" if meta.get("seed") is None else str(meta["seed"])
        self._show_error(None)
        self._update_estimate()
        self.prompt.run_method("focus")

    def roll_seed(self) -> None:
        self.seed.value = str(secrets.randbelow(MAX_SEED + 1))

    # -- reactions ------------------------------------------------------------------

    def _on_prompt_change(self) -> None:
        length = len(self.prompt.value or "")
        self.counter.text = f"{length} / {MAX_PROMPT_LENGTH}"
        self.counter.classes(
            add="text-negative font-bold" if length > MAX_PROMPT_LENGTH else "",
            remove="" if length > MAX_PROMPT_LENGTH else "text-negative font-bold",
        )
        if self.error.visible:
            self._show_error(None)

    def _update_estimate(self) -> None:
        try:
            settings = GenerateSettings.model_construct(
                imageSize=self.size.value,
                videoDuration=self.duration.value,
                quality=self.quality.value,
                seed=None,
                videoProvider=self.video_provider.value,
                **self.models.settings(),
            )
            cost = self.system.jobs.estimate(
                GenerateRequest.model_construct(prompt="", provider=self.provider.value, settings=settings)
            )
        except (UnknownPrice, ApiError) as error:  # ApiError: a model without a price, or that does not take the settings
            self.estimate.text = "unknown"
            self.estimate_detail.text = str(error)
            return
        self.estimate.text = money(cost["total"])
        if cost["total"] == 0:
            self.estimate_detail.text = "free · rendered on this machine"
        else:
            self.estimate_detail.text = f"image {money(cost['imageGeneration'])} + video {money(cost['videoGeneration'])}"

    def _show_error(self, message: str | None) -> None:
        self.error.text = message or ""
        self.error.visible = bool(message)

    async def submit(self) -> JobRecord | None:
        if self._busy:
            return None
        try:
            request = validate_request(self.request_data())
        except ValidationError as error:
            self._show_error(describe(error.errors())[0])
            return None
        self._busy = True
        try:
            record = await self.system.jobs.create(request, self.user)
        except ApiError as error:
            self._show_error(error.message)
            return None
        finally:
            self._busy = False
        self._show_error(None)
        ui.notify("Job started — it is at the top of your jobs.", type="positive", icon="movie_filter", position="bottom-right")
        if self.on_created:
            result = self.on_created(record)
            if hasattr(result, "__await__"):
                await result
        return record
