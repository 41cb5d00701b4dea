"""What every image and video provider implements, and what the pipeline hands it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class ProviderError(Exception):
    """A provider could not do the work. `message` is shown to the user as it is.

    `transient` errors are worth retrying (rate limits, 5xx, dropped connections);
    the others (bad key, content policy, validation) fail the step at once.
    """

    def __init__(self, provider: str, message: str, *, code: str = "PROVIDER_ERROR", transient: bool = False):
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.code = code
        self.transient = transient


class StepCancelled(Exception):
    """Raised from inside CPU-bound work (a render thread) when the job was cancelled."""


@dataclass
class ImageRequest:
    prompt: str
    width: int
    height: int
    quality: str  # "standard" | "high" (or a model's own: "low", "medium")
    seed: int
    #: The catalog id of the model to run; None: the provider's default.
    model: str | None = None


@dataclass
class ImageResult:
    png: bytes
    model: str
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The token usage the provider reported (OpenAI's `usage`), priced by the catalog's per-token rule.
    usage: dict[str, Any] | None = None


@dataclass
class VideoRequest:
    prompt: str
    image_path: Path
    duration: int  # seconds: what the model allows (5 or 10 with the defaults)
    seed: int
    output_path: Path
    #: The catalog id of the model to run; None: the provider's default.
    model: str | None = None


@dataclass
class VideoResult:
    model: str
    width: int
    height: int
    metadata: dict[str, Any] = field(default_factory=dict)


class StepContext(Protocol):
    """The pipeline's side of one running step, as a provider sees it."""

    #: Set when the job is cancelled; threads poll it, coroutines are cancelled directly.
    cancel_event: threading.Event
    #: The remote task id saved by an earlier run of this step (resume after a restart).
    remote_id: str | None
    #: True when an earlier run of this step was interrupted (a stop or a crash) mid-way.
    resumed: bool

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress 0..1 (thread-safe; never goes down)."""

    def log(self, message: str) -> None:
        """Add a line to the step's log (thread-safe)."""

    async def save_remote_id(self, remote_id: str) -> None:
        """Store the provider's task id as soon as it is known, before polling it."""

    def preview(self, frame: bytes) -> None:
        """A picture of the work in progress as the provider sent it (ComfyUI's sampling previews):
        untrusted bytes; the pipeline keeps the latest, re-encoded, a few times a second at most."""

    def remote_succeeded(self, model: str) -> None:
        """The remote task succeeded, run by `model` (as priced): the provider charged for it,
        whatever becomes of its output (a cancel during the download still records the charge)."""


class ImageProvider(Protocol):
    name: str  # "dalle3" (openai) | "flux1" (replicate) | "local"

    def model_for(self, quality: str) -> str: ...

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult: ...

    async def cancel_remote(self, remote_id: str) -> None: ...


class VideoProvider(Protocol):
    name: str  # "runway" | "local"

    @property
    def model(self) -> str: ...

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult: ...

    async def cancel_remote(self, remote_id: str) -> None: ...


#: Progress callback of CPU-bound work: a fraction 0..1.
ProgressFn = Callable[[float], None]
