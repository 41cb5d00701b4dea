"""The job form's model pickers: the chosen provider's models from the catalog, with their price
and what they take; unavailable ones greyed with the reason; the video length offers the
durations the chosen video model allows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nicegui import ui

from backend.providers.catalog import ModelEntry
from backend.providers.registry import ProviderRegistry

#: The option template: the model, its price and what it takes, and why it cannot run.
MODEL_SLOT = r"""
<q-item v-bind="props.itemProps" :aria-disabled="props.opt.disable ? 'true' : 'false'">
  <q-item-section>
    <q-item-label>{{ props.opt.label }}</q-item-label>
    <q-item-label caption>{{ props.opt.detail }}</q-item-label>
    <q-item-label caption v-if="props.opt.reason" class="pr-provider-reason">Unavailable: {{ props.opt.reason }}</q-item-label>
  </q-item-section>
</q-item>
"""
#: The option that sends no model: the provider's default (for Replicate, quality picks it).
DEFAULT = ""


class ModelSelect(ui.select):
    """A select of one provider's models of one kind; unavailable ones disabled, with the reason."""

    def __init__(self, registry: ProviderRegistry, kind: str, *, label: str):
        self.registry, self.kind = registry, kind
        self._details: dict[str, tuple[str, str | None]] = {}
        super().__init__({DEFAULT: "Provider default"}, label=label, value=DEFAULT)
        self.props("outlined options-dense")
        self.add_slot("option", MODEL_SLOT)

    def show_provider(self, provider: str) -> None:
        """Offer `provider`'s models; the choice goes back to the default when it is not one of them."""
        rows = self.registry.models(kind=self.kind, provider=provider)
        options = {DEFAULT: f"Default · {self.registry.default_model(provider, self.kind)}"}
        self._details = {DEFAULT: ("the provider's default model", None)}
        for entry, available, reason in rows:
            options[entry.id] = f"{entry.name} · {entry.price_summary()}"
            self._details[entry.id] = (f"{entry.id} · {entry.accepts_summary()}", None if available else reason)
        self.set_options(options, value=self.value if self.value in options else DEFAULT)

    def _update_options(self) -> None:
        super()._update_options()
        for option, model in zip(self._props["options"], self._values, strict=True):
            detail, reason = self._details.get(model, ("", None))
            option["detail"] = detail
            if reason:
                option["disable"] = True
                option["reason"] = reason


class ModelPicker:
    """The image and video model selects, following the provider selects; `settings()` is what a
    request adds, and the duration toggle offers what the chosen video model allows."""

    def __init__(
        self, registry: ProviderRegistry, image_provider: ui.select, video_provider: ui.select, on_change: Callable[[], Any]
    ):
        self.registry = registry
        self.image_provider, self.video_provider = image_provider, video_provider
        self.on_change = on_change
        self.duration: ui.toggle | None = None
        with ui.element("div").classes("w-full grid grid-cols-1 sm:grid-cols-2 gap-3"):
            self.image = ModelSelect(registry, "image", label="Image model")
            self.image.props("data-testid=image-model").mark("image-model")
            self.video = ModelSelect(registry, "video", label="Video model")
            self.video.props("data-testid=video-model").mark("video-model")
        self.image.show_provider(image_provider.value)
        self.video.show_provider(video_provider.value)
        image_provider.on_value_change(lambda: self._provider_changed(self.image, image_provider.value))
        video_provider.on_value_change(lambda: self._provider_changed(self.video, video_provider.value))
        self.image.on_value_change(lambda: self.on_change())
        self.video.on_value_change(lambda: self._video_changed())
        # A model found missing (a job's answer, a check) or a key refused: show it at once.
        self._loop = asyncio.get_running_loop()
        self.client = ui.context.client
        self.client.on_delete(registry.on_availability_change(self._availability_changed))

    def _availability_changed(self, _name: str) -> None:
        """The registry's news, on whichever thread learnt it: shown on this tab's loop."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.refresh)

    def refresh(self) -> None:
        """Show every model's availability now."""
        if self.client.is_deleted or self.image.is_deleted:
            return
        with self.client:
            self.image.show_provider(self.image_provider.value)
            self.video.show_provider(self.video_provider.value)

    def follow_duration(self, duration: ui.toggle) -> None:
        """Let the video length offer the chosen video model's durations."""
        self.duration = duration
        self._video_changed(notify=False)

    def prefill(self, metadata: dict[str, Any]) -> None:
        """Choose a job's models again (the provider selects were set first)."""
        for select, key in ((self.image, "imageModel"), (self.video, "videoModel")):
            select.show_provider(self.image_provider.value if select is self.image else self.video_provider.value)
            if metadata.get(key) in select._values:
                select.value = metadata[key]
        self._video_changed(notify=False)

    def settings(self) -> dict[str, str]:
        """`imageModel` / `videoModel` of the request (absent: the provider's default)."""
        chosen = {"imageModel": self.image.value, "videoModel": self.video.value}
        return {name: value for name, value in chosen.items() if value}

    def video_entry(self) -> ModelEntry | None:
        model = self.video.value or self.registry.default_model(self.video_provider.value, "video")
        return self.registry.catalog.get(model)

    def _provider_changed(self, select: ModelSelect, provider: str) -> None:
        select.show_provider(provider)
        if select is self.video:
            self._video_changed()

    def _video_changed(self, *, notify: bool = True) -> None:
        entry = self.video_entry()
        if self.duration is not None and entry is not None and entry.durations:
            current = self.duration.value
            options = {seconds: f"{seconds} s" for seconds in entry.durations}
            if list(options) != list(self.duration.options):
                self.duration.set_options(
                    options, value=current if current in options else (5 if 5 in options else entry.durations[0])
                )
        if notify:
            self.on_change()
