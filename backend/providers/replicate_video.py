"""`replicate` as a video provider: image-to-video models on Replicate, through the same
predictions API as its image models (replicate_images.py: create, save the id, poll, cancel, fetch the
output at once). The model's catalog entry says how the job's fields map onto its input: the
image to animate (sent as a data URI), the prompt, the duration and the seed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from backend.providers.base import ProviderError, StepContext, VideoRequest, VideoResult
from backend.providers.catalog import ModelEntry, active
from backend.providers.replicate_images import ReplicateImageProvider
from backend.providers.runway import image_data_uri

#: Replicate reads a data URI input whole; kept well under its request size limit.
MAX_DATA_URI_CHARS = 5_000_000


class ReplicateVideoProvider(ReplicateImageProvider):
    """Replicate's predictions protocol (ReplicateImageProvider's), for a video model and a video output."""

    @property
    def model(self) -> str:
        default = active().default("replicate", "video")
        return default.id if default is not None else ""

    def _video_model(self, request: VideoRequest) -> str:
        return request.model or self.model

    def _video_entry(self, model: str) -> ModelEntry:
        entry = active().get(model)
        if entry is None or entry.provider != "replicate" or entry.kind != "video" or entry.input is None:
            raise ProviderError(
                self.name, f"'{model}' is not a Replicate video model of the model catalog: add it there", code="MODEL_UNKNOWN"
            )
        return entry

    async def animate(self, request: VideoRequest, ctx: StepContext) -> VideoResult:
        model = self._video_model(request)
        prediction_id, prediction = await self._predict(request, ctx, model)
        url = self._output_url(prediction)
        ctx.progress(0.92, "downloading the video from Replicate")
        width, height, seconds = await self._download_video(url, request.output_path, ctx)
        ctx.log(f"{model} made a {width}x{height} video of {seconds:.1f} s")
        return VideoResult(model=model, width=width, height=height, metadata={"replicatePredictionId": prediction_id})

    async def _create_request(self, request: Any, ctx: StepContext) -> tuple[str, dict[str, Any]]:
        model = self._video_model(request)
        entry = self._video_entry(model)
        fields = entry.input
        assert fields is not None and fields.image is not None
        uri, _, note = await asyncio.to_thread(image_data_uri, request.image_path, MAX_DATA_URI_CHARS, self.limits)
        inputs: dict[str, Any] = {**fields.fixed, fields.prompt: request.prompt, fields.image: uri}
        if fields.duration:
            inputs[fields.duration] = request.duration
        if fields.seed:
            inputs[fields.seed] = request.seed
        owner, _, name = model.partition("/")
        seed = request.seed if fields.seed else "not taken"
        ctx.log(f"starting {model} on Replicate: {request.duration} s, seed {seed}; image {note}")
        return f"/v1/models/{owner}/{name}/predictions", {"input": inputs}

    def _billed_model(self, request: Any, prediction: dict[str, Any]) -> str:
        return self._video_model(request)
