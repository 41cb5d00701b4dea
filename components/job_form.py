"""The prompt form: what to make, with which providers, at what cost.

It validates through `backend.jobs.request.validate_request` and creates jobs through
`JobService.create`, exactly as the REST API does, so it refuses the same things with the
same words (`describe()` of the validation error, or the ApiError's message), shown at the
field they concern (Quasar's error state) when there is one.

One click makes one job: the button is disabled while the request is in flight, and each
submission carries an idempotency key; a repeat of the same submission within
REPEAT_WINDOW (a double click, Ctrl+Enter pressed twice) reuses its key and makes no new job.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
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
    UPLOAD_PROVIDER,
    GenerateRequest,
    GenerateSettings,
    VariantsRequest,
    describe,
    validate_request,
)
from backend.providers.catalog import canonical
from backend.providers.pricing import UnknownPrice
from backend.providers.registry import ProviderInfo
from backend.store.jobs import JobRecord
from backend.system import System

from .format import PROVIDER_SHORT, money
from .job_actions import job_started_toast
from .job_card import set_visible
from .model_picker import ModelPicker
from .picture_input import PictureInput

SIZE_LABELS = {"1024x1024": "Square · 1024×1024", "1792x1024": "Landscape · 1792×1024", "1024x1792": "Portrait · 1024×1792"}
QUALITY_LABELS = {"standard": "Standard", "high": "High"}
#: What "High" changes with each image provider (the video providers ignore the quality).
QUALITY_HINTS = {
    "local": "High: painted at 2× and scaled down, smoother edges and finer grain, about 4× the time.",
    "openai": "High: GPT Image's “high” quality, finer detail, at a higher price.",
    "dalle3": "High: GPT Image's “high” quality, finer detail, at a higher price.",
    "replicate": "High: the provider's best FLUX model instead of the fast one, at a higher price.",
    "flux1": "High: the provider's best FLUX model instead of the fast one, at a higher price.",
}
#: The form's "Variants" choices (the API takes up to MAX_VARIANTS).
MAX_FORM_VARIANTS = 4
#: Seconds during which the same submission again is taken for a repeat of the first (no new job).
REPEAT_WINDOW = 2.0
#: Prompts the local renderer draws every word of (tests/test_render_understanding.py checks): one click fills the form.
EXAMPLE_PROMPTS = (
    "A red hot-air balloon over desert dunes at sunrise",
    "A neon city at night in the rain",
    "A snowy lake at dawn, pine forest and mountains",
    "A lighthouse on the coast at golden hour, boats and gulls",
)
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
        for option, name in zip(self._props["options"], self._values, strict=True):
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
        #: The last submission that made a job: its request data, idempotency key, when, and the job.
        self._last_submission: tuple[dict[str, Any], str, float, JobRecord] | None = None
        self.idempotency_key = ""  # the key of the submission in flight or last sent
        image_infos = system.providers.image_providers()
        video_infos = system.providers.video_providers()
        with ui.card().classes("pr-card w-full p-5 gap-4").props('flat role=form aria-label="New job"'):
            with ui.row().classes("w-full items-center justify-between no-wrap"):
                with ui.column().classes("gap-0"):
                    ui.label("New reel").classes("pr-section-title")
                    ui.label("Describe a scene; get a picture and a short video of it.").classes("text-xs pr-muted")
                ui.icon("auto_awesome", size="22px").classes("text-primary opacity-60").props('aria-hidden="true"')
            self.prompt = (
                ui.textarea(label="Prompt", placeholder=PLACEHOLDER, on_change=self._on_prompt_change)
                .classes("w-full")
                .props(
                    'outlined autogrow input-style="min-height: 6.5rem; max-height: 16rem; overflow-y: auto" '
                    'aria-label="Prompt" data-testid=prompt'
                )
            )
            self.prompt.mark("prompt")
            self.prompt.on("keydown.ctrl.enter", self.submit)
            self.prompt.on("keydown.meta.enter", self.submit)
            with ui.row().classes("w-full justify-between items-center -mt-3 text-xs pr-muted"):
                ui.label("Ctrl+Enter to generate").classes("gt-xs")
                self.counter = (
                    ui.label(f"0 / {MAX_PROMPT_LENGTH}").props("aria-live=polite data-testid=prompt-count").mark("prompt-count")
                )

            with ui.row().classes("w-full items-center gap-1.5 -mt-1").props("data-testid=examples") as self.examples:
                ui.label("Try:").classes("text-xs pr-muted")
                for example in EXAMPLE_PROMPTS:
                    ui.chip(
                        example.split(",")[0].removeprefix("A ").capitalize(),
                        on_click=lambda example=example: self.use_example(example),
                    ).props(f'dense clickable outline color=primary aria-label="Use the example prompt: {example}"').classes(
                        "text-xs"
                    ).mark("example")
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
            self.picture = PictureInput(system, user, on_change=self._picture_changed)  # your own picture, instead
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
                        'no-caps unelevated toggle-color=primary rounded aria-label="Quality" '
                        "aria-describedby=quality-hint data-testid=quality"
                    )
            self.quality_hint = (
                ui.label()
                .classes("w-full -mt-2 text-xs pr-muted")
                .props("id=quality-hint data-testid=quality-hint")
                .mark("quality-hint")
            )
            with ui.row().classes("w-full items-start gap-2 no-wrap"):
                self.seed = (
                    ui.input(label="Seed", placeholder="random")
                    .classes("grow")
                    .mark("seed")
                    .props(
                        'outlined clearable inputmode=numeric aria-label="Seed (empty for random)" data-testid=seed'
                        ' hint="Empty = random"'
                    )
                )
                ui.button(icon="casino", on_click=self.roll_seed).props(
                    'flat round color=primary aria-label="Pick a random seed" data-testid=dice'
                ).classes("mt-2").mark("dice").tooltip("Random seed")
            with ui.row().classes("w-full items-end justify-between gap-4"):
                with ui.column().classes("gap-1"):
                    ui.label("Variants").classes("text-xs pr-muted")
                    # More than one: a batch, the seeds s, s+1, ... (or distinct random ones), shown as a grid.
                    self.variants = ui.toggle(
                        {count: str(count) for count in range(1, MAX_FORM_VARIANTS + 1)}, value=1, on_change=self._update_estimate
                    ).props(
                        'no-caps unelevated toggle-color=primary rounded aria-label="Variants (different seeds)" '
                        "data-testid=variants"
                    )
                self.image_only = (
                    ui.switch("Images first", on_change=self._update_estimate)
                    .props(
                        'color=primary aria-label="Images first: make the pictures, animate the one you like" '
                        "data-testid=image-only"
                    )
                    .tooltip("Make only the pictures; animate the one you like later (“Animate this one”).")
                )

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
        #: The fields a refusal can be about (`describe()`'s field, or an ApiError's details.field).
        self.fields: dict[str, ui.input | ui.textarea | ui.select] = {
            "prompt": self.prompt,
            "settings.seed": self.seed,
            "settings.imageSize": self.size,
        }
        self.seed.on_value_change(lambda: self._clear_field(self.seed))
        self._update_estimate()

    # -- providers ----------------------------------------------------------------

    def set_providers(self, image_infos: list[ProviderInfo], video_infos: list[ProviderInfo]) -> None:
        """The providers' availability changed (a key was refused, or accepted again): show it."""
        self.provider.set_infos(image_infos)
        self.video_provider.set_infos(video_infos)
        self._show_provider_hint(image_infos + video_infos)

    def _show_provider_hint(self, infos: list[ProviderInfo]) -> None:
        # flux1 (image) and replicate (video) are one account and one key: named once, as the image provider
        accounts: dict[str, ProviderInfo] = {}
        for info in infos:
            if not info.available:
                accounts.setdefault(canonical(info.name), info)
        missing = list(accounts.values())
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
        if self.image_only.value and self.picture.upload_id is None:
            settings["imageOnly"] = True
        if self.picture.upload_id is not None:  # the user's picture: no image provider, no image model
            settings.pop("imageModel", None)
            settings.update(sourceImage=self.picture.upload_id, fit=self.picture.fit.value)
            return {"prompt": self.prompt.value or "", "provider": UPLOAD_PROVIDER, "settings": settings}
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

    def use_example(self, prompt: str) -> None:
        """Fill the prompt with an example the local renderer draws well (the other settings stay)."""
        self.prompt.value = prompt
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
        self._clear_field(self.prompt)

    def _update_estimate(self) -> None:
        self.quality_hint.text = QUALITY_HINTS.get(self.provider.value, "")
        try:
            settings = GenerateSettings.model_construct(
                imageSize=self.size.value,
                videoDuration=self.duration.value,
                quality=self.quality.value,
                seed=None,
                videoProvider=self.video_provider.value,
                imageModel=self.models.settings().get("imageModel"),
                videoModel=self.models.settings().get("videoModel"),
                imageOnly=bool(self.image_only.value) and self.picture.upload_id is None,
            )
            # the user's picture: the video only; model_construct: the form offers valid choices (checked on submit)
            provider = UPLOAD_PROVIDER if self.picture.upload_id is not None else self.provider.value
            if self.picture.upload_id is not None:
                settings.imageModel = None
            request = GenerateRequest.model_construct(prompt="", provider=provider, settings=settings)  # type: ignore[arg-type]
            cost = self.system.jobs.estimate(request)
        except (UnknownPrice, ApiError) as error:  # ApiError: a model without a price, or that does not take the settings
            self.estimate.text = "unknown"
            self.estimate_detail.text = str(error)
            return
        count = int(self.variants.value or 1)
        self.estimate.text = money(round(cost["total"] * count, 4))
        each = f"{count} × " if count > 1 else ""
        if cost["total"] == 0:
            self.estimate_detail.text = "free · rendered on this machine"
        elif settings.imageOnly:
            self.estimate_detail.text = f"{each}image {money(cost['imageGeneration'])}; the video when you animate one"
        else:
            self.estimate_detail.text = f"{each}image {money(cost['imageGeneration'])} + video {money(cost['videoGeneration'])}"

    def _picture_changed(self) -> None:
        own_picture = self.picture.upload_id is not None
        set_visible(self.provider, not own_picture)  # the fit choice replaces the image provider
        set_visible(self.models.image, not own_picture)  # and its model
        set_visible(self.image_only, not own_picture)  # the picture is there already
        self._update_estimate()

    def _clear_field(self, field: ui.input | ui.textarea | ui.select) -> None:
        if field.error is not None:
            field.error = None
        if self.error.visible:
            self._show_error(None)

    def _show_error(self, message: str | None, field: str | None = None) -> None:
        """Show a refusal at the field it concerns (red outline, the sentence below it), or,
        when it concerns none of the form's fields, above the button."""
        element = self.fields.get(field or "")
        for other in self.fields.values():
            if other is not element and other.error is not None:
                other.error = None
        if message and element is not None:
            element.error = message
            element.run_method("focus")
            message = None
        self.error.text = message or ""
        self.error.visible = bool(message)

    def _repeat_of_last(self, data: dict[str, Any]) -> JobRecord | None:
        """The job the same submission made a moment ago (a double click), if any."""
        last = self._last_submission
        if last is not None and last[0] == data and time.monotonic() - last[2] < REPEAT_WINDOW:
            return last[3]
        return None

    async def submit(self) -> JobRecord | None:
        if self._busy:
            return None
        data = self.request_data()
        count = int(self.variants.value or 1)
        if count > 1:
            data["count"] = count
        if self._repeat_of_last(data) is not None:
            return None  # the same submission again within a moment: it made its job already
        try:
            request = validate_request(data) if count == 1 else VariantsRequest.model_validate_json(json.dumps(data))
        except ValidationError as error:
            self._show_error(*describe(error.errors()))
            return None
        self._busy = True
        self.idempotency_key = uuid.uuid4().hex  # one per submission; a repeat reuses it (above)
        self.button.disable()
        try:
            if isinstance(request, VariantsRequest):  # a batch: its grid shows it
                batch, _ = await self.system.jobs.create_batch_once(request, self.user, self.idempotency_key)
                self._last_submission = (data, self.idempotency_key, time.monotonic(), batch.jobs[0])
                self._show_error(None)
                ui.navigate.to(f"/batches/{batch.batch.id}")
                return batch.jobs[0]
            record = await self.system.jobs.create(request, self.user, idempotency_key=self.idempotency_key)
        except ApiError as error:
            self._show_error(error.message, error.details.get("field"))
            return None
        finally:
            self._busy = False
            self.button.enable()
        self._last_submission = (data, self.idempotency_key, time.monotonic(), record)
        self._show_error(None)
        if self.on_created:
            result = self.on_created(record)
            if hasattr(result, "__await__"):
                await result
        else:
            job_started_toast(record.job.id)
        return record
