"""Providers whose timing a test controls, and the clock of the event loop they run on.

Every provider call parks until the test sends it a command (a progress tick, its result, a
failure); meanwhile the `World` knows which process runs which job, what each delivered result
charged, and whether two processes ever ran one job at the same time. Used by the lifecycle
fuzzer (tests/system/test_lifecycle_fuzz.py), which runs several in-process "processes" on one loop.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from backend.providers import pricing
from backend.providers.base import ImageRequest, ImageResult, ProviderError, StepContext, VideoRequest, VideoResult
from backend.providers.registry import ProviderRegistry
from backend.settings import Settings
from backend.store.models import StepKind

#: A job whose prompt holds this gets a remote id from its provider calls (the pipeline's other cancel path).
REMOTE_MARK = "[remote]"
IMAGE_MODELS = {"standard": "black-forest-labs/flux-schnell", "high": "black-forest-labs/flux-1.1-pro"}
VIDEO_MODEL = "gen4_turbo"


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = tiny_png()


class SteppedClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the test moves forward: real time plus the jumps of `skip`, so that
    timers (the runners' heartbeats) fire when the test says time has passed, never by themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0.0

    def time(self) -> float:
        return super().time() + self.skipped

    def skip(self, seconds: float) -> None:
        self.skipped += seconds


@dataclass(eq=False)
class Call:
    """One provider call in flight: it waits for commands from the test."""

    process: str
    job_id: str
    kind: StepKind
    task: asyncio.Task[Any] | None
    world: World
    commands: asyncio.Queue[tuple[str, int]] = field(default_factory=asyncio.Queue)
    #: Waiting for a command (set by the call, cleared by whoever sends one: a sent command is work to do).
    parked: bool = False

    def __repr__(self) -> str:
        return f"<{self.kind.value} call of {self.job_id} in {self.process}>"

    def send(self, command: str, value: int = 0) -> None:
        self.parked = False
        self.commands.put_nowait((command, value))

    async def next_command(self) -> tuple[str, int]:
        if self.commands.empty():
            self.parked = True
            self.world.changed.set()
        try:
            return await self.commands.get()
        finally:
            self.parked = False


class World:
    """What every process's fake providers share: the calls in flight, the charges, the violations."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        #: (job id, step kind) -> what the results delivered for it charged, in USD.
        self.charged: Counter[tuple[str, str]] = Counter()
        self.violations: list[str] = []
        self.changed = asyncio.Event()  # a call parked, a heartbeat ran: the loop may have settled

    def enter(self, process: str, job_id: str, kind: StepKind) -> Call:
        others = [call for call in self.calls if call.job_id == job_id and call.process != process]
        if others:
            running = ", ".join(f"{call.kind.value} in {call.process}" for call in others)
            self.violations.append(f"job {job_id} run by two processes at once: {kind.value} in {process} while {running}")
        call = Call(process, job_id, kind, asyncio.current_task(), self)
        self.calls.append(call)
        return call

    def leave(self, call: Call) -> None:
        self.calls.remove(call)
        self.changed.set()

    def calls_of(self, job_id: str) -> list[Call]:
        return [call for call in self.calls if call.job_id == job_id]

    def parked_tasks(self) -> set[asyncio.Task[Any]]:
        return {call.task for call in self.calls if call.parked and call.task is not None}


class _GatedProvider:
    def __init__(self, world: World, process: str):
        self.world = world
        self.process = process
        self.remote_cancels: list[str] = []

    async def _run(self, ctx: StepContext, kind: StepKind, prompt: str) -> None:
        """Park until the test says how the call ends; returns on "complete", raises on "fail"."""
        job_id: str = ctx.job_id  # type: ignore[attr-defined]  # the pipeline's StepRun names its job
        call = self.world.enter(self.process, job_id, kind)
        try:
            if REMOTE_MARK in prompt and not ctx.remote_id:
                await ctx.save_remote_id(f"{kind.value}-{job_id}")
            while True:
                command, value = await call.next_command()
                if command == "progress":
                    ctx.progress(value / 100)
                elif command == "fail":
                    raise ProviderError(self.name, "the gated provider refused the step")  # type: ignore[attr-defined]
                else:
                    return
        finally:
            self.world.leave(call)

    async def cancel_remote(self, remote_id: str) -> None:
        self.remote_cancels.append(remote_id)


class GatedImageProvider(_GatedProvider):
    name = "flux1"

    def model_for(self, quality: str) -> str:
        return IMAGE_MODELS[quality]

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult:
        await self._run(ctx, StepKind.IMAGE, request.prompt)
        model = self.model_for(request.quality)
        self.world.charged[ctx.job_id, StepKind.IMAGE.value] += pricing.image_cost(  # type: ignore[attr-defined]
            self.name, model, f"{request.width}x{request.height}", request.quality
        )
        return ImageResult(png=PNG, model=model)


class GatedVideoProvider(_GatedProvider):
    name = "runway"
    model = VIDEO_MODEL

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult:
        await self._run(ctx, StepKind.VIDEO, request.prompt)
        request.output_path.write_bytes(b"not decoded here: the pipeline only moves the file")  # as a provider writes it
        self.world.charged[ctx.job_id, StepKind.VIDEO.value] += pricing.video_cost(self.name, self.model, request.duration)  # type: ignore[attr-defined]
        return VideoResult(model=self.model, width=1280, height=720)


class GatedProviders(ProviderRegistry):
    """The registry with flux1 and runway answered by gated fakes (their prices are published ones)."""

    def __init__(self, settings: Settings, world: World, process: str):
        super().__init__(settings, start_checks=False)
        self.gated_image = GatedImageProvider(world, process)
        self.gated_video = GatedVideoProvider(world, process)

    def image(self, name: str) -> Any:
        return self.gated_image if name == self.gated_image.name else super().image(name)

    def video(self, name: str) -> Any:
        return self.gated_video if name == self.gated_video.name else super().video(name)


def gated_settings(data_dir: Path, database_url: str, **extra: Any) -> Settings:
    """The settings of a System run on the gated providers: no provider key from the environment
    (the gates stand in for them), no rate limit; `extra` adds or overrides settings by name."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        PROMPTREEL_DATA_DIR=data_dir,
        DATABASE_URL=database_url,
        OPENAI_API_KEY=None,
        REPLICATE_API_TOKEN=None,
        RUNWAYML_API_SECRET=None,
        PROMPTREEL_RATE_LIMIT_PER_MINUTE=0,
        **extra,
    )
