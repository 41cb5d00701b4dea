"""The built-in `local` provider: images and videos made on this machine's CPU, for free.

Rendering is CPU-bound, so it runs in a worker thread; the thread polls the step's cancel
event between frames, which stops it well within a second of a cancel.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import TypeVar

from backend.media.checks import MediaLimits, MediaRejected, open_image
from backend.providers.base import ImageRequest, ImageResult, ProviderError, StepContext, VideoRequest, VideoResult
from backend.render.animate import animate_image
from backend.render.prompt_scene import understanding
from backend.render.scene import render_scene

T = TypeVar("T")
LOCAL_IMAGE_MODEL = "promptreel-scene-1"
LOCAL_VIDEO_MODEL = "promptreel-animate-1"
# zlib level 1: a quarter of the default level's time for ~2 % more bytes (the film grain every
# scene carries does not compress much at any level)
PNG_COMPRESS_LEVEL = 1
#: Quality "high" paints the scene at this many times the size and scales it down: smoother
#: edges and finer grain for about four times the rendering time. "standard" paints it as is.
HIGH_QUALITY_SUPERSAMPLE = 2


async def run_in_thread(work: Callable[[], T], ctx: StepContext) -> T:
    """Run CPU work in a thread. On cancel, stop it and wait until it has stopped (a frame at
    most), so the job's slot is free for real when the cancel is answered."""
    future = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        ctx.cancel_event.set()
        await asyncio.wait({future})
        if not future.cancelled():
            future.exception()  # the thread's StepCancelled: expected, and read so asyncio does not report it
        raise


class LocalImageProvider:
    name = "local"

    def model_for(self, quality: str) -> str:
        return LOCAL_IMAGE_MODEL

    async def generate(self, request: ImageRequest, ctx: StepContext) -> ImageResult:
        def work() -> bytes:
            image = render_scene(
                request.prompt,
                request.seed,
                request.width,
                request.height,
                progress=ctx.progress,
                cancel=ctx.cancel_event,
                supersample=HIGH_QUALITY_SUPERSAMPLE if request.quality == "high" else 1,
            )
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            return buffer.getvalue()

        detail = f", painted at {HIGH_QUALITY_SUPERSAMPLE}x and scaled down (quality high)" if request.quality == "high" else ""
        ctx.log(f"rendering a {request.width}x{request.height} scene on the CPU (seed {request.seed}){detail}")
        drawn, unknown = understanding(request.prompt)
        ctx.log(f"drew: {', '.join(drawn) or 'nothing it knows'}; not understood: {', '.join(unknown) or 'none'}")
        png = await run_in_thread(work, ctx)
        # What it understood goes into the job's metadata, for the studio and for REST clients.
        return ImageResult(png=png, model=LOCAL_IMAGE_MODEL, metadata={"understoodWords": drawn, "notUnderstoodWords": unknown})

    async def cancel_remote(self, remote_id: str) -> None:  # nothing remote to cancel
        return None


class LocalVideoProvider:
    name = "local"
    model = LOCAL_VIDEO_MODEL

    def __init__(self, limits: MediaLimits | None = None):
        self.limits = limits or MediaLimits()

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult:
        def work() -> tuple[int, int]:
            try:  # checked from its header before it is decoded: a huge image would take all memory
                with open_image(request.image_path, self.limits, whose="the image to animate") as image:
                    image = image.convert("RGB")
            except MediaRejected as error:
                raise ProviderError(self.name, str(error)) from None
            return animate_image(
                image, request.output_path, request.duration, request.seed, progress=ctx.progress, cancel=ctx.cancel_event
            )

        ctx.log(f"animating the image into a {request.duration} s H.264 video at 24 fps")
        width, height = await run_in_thread(work, ctx)
        return VideoResult(model=LOCAL_VIDEO_MODEL, width=width, height=height)

    async def cancel_remote(self, remote_id: str) -> None:
        return None
