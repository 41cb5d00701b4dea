"""The form's own-picture input: pick a file, drop one anywhere on the form, or paste one.

The picture goes to `UploadService.create`, which checks it exactly as `POST /api/v1/uploads`
does, so a refused file shows the API's own message. Once taken, the form animates it: the
picture is shown with "Animate this picture" and the fit choice, and the form asks `upload_id`
and `fit` for its request (`settings.sourceImage`, `settings.fit`).
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from typing import Any

from nicegui import events, ui

from backend.auth import LOCAL_USER, User
from backend.errors import ApiError
from backend.media.checks import MediaLimits, megabytes, open_image
from backend.store.uploads import Upload
from backend.system import System
from backend.uploads.images import FILE_PICKER_ACCEPT, TAKEN_NAMES

from .job_card import set_visible

FIT_LABELS = {"crop": "Crop to fill", "contain": "Show it whole"}
PREVIEW_PIXELS = 160
#: Drops anywhere on the form (its card has role=form) and pastes anywhere on the page go to the uploader.
DROP_AND_PASTE_JS = """
<script>
(() => {
  const uploader = () => getElement(%(id)d);
  const take = (files) => {
    const file = [...files][0];
    if (!file || !uploader()) return false;
    uploader().$refs.qRef.reset();
    uploader().$refs.qRef.addFiles([file]);
    return true;
  };
  const onForm = (event) => {
    const element = document.getElementById("c%(id)d");
    const form = element && element.closest("[role=form]");
    return form && form.contains(event.target);
  };
  document.addEventListener("dragover", (event) => {
    if (onForm(event) && [...event.dataTransfer.types].includes("Files")) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    if (onForm(event) && event.dataTransfer.files.length && take(event.dataTransfer.files)) event.preventDefault();
  });
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData ? event.clipboardData.files : [];
    if (files.length && take(files)) event.preventDefault();
  });
})();
</script>
"""


def preview_url(data: bytes, pixels: int) -> str:
    """A small JPEG of a stored (already checked) picture of `pixels` pixels, as a data URL."""
    # open_image: past Pillow's process-wide guard for this picture only (uploads may be larger).
    with open_image(io.BytesIO(data), MediaLimits(image_bytes=len(data), image_pixels=pixels), whose="The picture") as image:
        image.draft("RGB", (PREVIEW_PIXELS * 2, PREVIEW_PIXELS * 2))
        small = image.convert("RGB")
    small.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class PictureInput:
    def __init__(self, system: System, user: User = LOCAL_USER, on_change: Callable[[], Any] | None = None):
        self.system = system
        self.user = user
        self.on_change = on_change
        self.upload: Upload | None = None
        limit = system.settings.max_upload_bytes
        with ui.column().classes("w-full gap-2").props("data-testid=picture-input"):
            self.uploader = (
                ui.upload(
                    label=f"Or animate your own picture: drop, paste or pick a {TAKEN_NAMES} (up to {megabytes(limit)})",
                    auto_upload=True,
                    max_files=1,
                    max_file_size=limit,
                    on_upload=self._received,
                    on_rejected=self._rejected,
                )
                .classes("w-full")
                .props(f'flat bordered accept="{FILE_PICKER_ACCEPT}" data-testid=picture-upload')
            )
            self.uploader.mark("picture-upload")
            with ui.row().classes("w-full items-center gap-3 no-wrap").props("data-testid=picture-chosen") as self.chosen:
                self.preview = (
                    ui.image().classes("w-20 h-20 rounded").props('fit=cover alt="Your picture" data-testid=picture-preview')
                )
                with ui.column().classes("gap-0 grow"):
                    ui.label("Animate this picture").classes("font-bold")
                    self.caption = (
                        ui.label().classes("text-xs pr-muted").props("data-testid=picture-caption").mark("picture-caption")
                    )
                    self.fit = ui.toggle(FIT_LABELS, value="crop").props(
                        'no-caps unelevated dense toggle-color=primary rounded aria-label="How the picture fills the frame" '
                        "data-testid=picture-fit"
                    )
                ui.button(icon="close", on_click=self.clear).props(
                    'flat round aria-label="Generate a picture instead" data-testid=picture-clear'
                ).mark("picture-clear")
            self.error = ui.label().classes("w-full pr-error-text text-sm").props("role=alert data-testid=picture-error")
            self.error.mark("picture-error")
        set_visible(self.chosen, False)
        set_visible(self.error, False)
        ui.add_body_html(DROP_AND_PASTE_JS % {"id": self.uploader.id})

    @property
    def upload_id(self) -> str | None:
        return self.upload.id if self.upload is not None else None

    def _show_error(self, message: str | None) -> None:
        self.error.text = message or ""
        set_visible(self.error, bool(message))

    def _rejected(self) -> None:
        self._show_error(f"The picture is larger than {megabytes(self.system.settings.max_upload_bytes)}.")

    async def _received(self, event: events.UploadEventArguments) -> None:
        data = await event.file.read()
        self.uploader.reset()
        try:
            upload = await self.system.uploads.create(io.BytesIO(data), len(data), event.file.name, self.user)
            stored = await asyncio.to_thread(self.system.uploads.read, upload)
            preview = await asyncio.to_thread(preview_url, stored, upload.width * upload.height) if stored else ""
        except ApiError as error:  # the API's own words: 413, 415, 422 IMAGE_INVALID
            self._show_error(error.message)
            return
        self.upload = upload
        self.preview.set_source(preview)
        self.caption.text = f"{upload.name or 'your picture'} · {upload.width}×{upload.height}"
        self._show_error(None)
        set_visible(self.chosen, True)
        set_visible(self.uploader, False)
        self._changed()

    def clear(self) -> None:
        self.upload = None
        set_visible(self.chosen, False)
        set_visible(self.uploader, True)
        self._show_error(None)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
