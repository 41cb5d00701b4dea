"""The remote providers against fake OpenAI, Replicate and Runway servers (real HTTP on loopback).

These call the providers directly with a recording StepContext; `tests/system/test_providers_server.py`
runs whole jobs through the real server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image

from backend.providers.base import ImageRequest, ProviderError, VideoRequest
from backend.providers.openai_images import OpenAIImageProvider as DalleImageProvider
from backend.providers.replicate_images import ReplicateImageProvider, log_percent
from backend.providers.retry import RetryPolicy, parse_retry_after
from backend.providers.runway import RunwayVideoProvider, image_data_uri, pick_ratio, truncate_utf16
from backend.settings import Settings
from tests.fakes import FakeOpenAI, FakeReplicate, FakeRunway, Hold, Reply
from tests.fakes import fake_openai as openai_replies
from tests.fakes import fake_replicate as replicate_replies
from tests.fakes import fake_runway as runway_replies
from tests.fakes.media import png_image

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
PROMPT = "A majestic mountain landscape at golden hour"


class RecordingContext:
    """A StepContext that keeps what the provider reported."""

    def __init__(self, remote_id: str | None = None, resumed: bool = False):
        self.cancel_event = threading.Event()
        self.remote_id = remote_id
        self.resumed = resumed
        self.logs: list[str] = []
        self.fractions: list[float] = []
        self.saved: list[str] = []
        self.id_saved = asyncio.Event()
        self.succeeded: list[str] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.fractions.append(fraction)
        if message:
            self.logs.append(message)

    def log(self, message: str) -> None:
        self.logs.append(message)

    async def save_remote_id(self, remote_id: str) -> None:
        self.remote_id = remote_id
        self.saved.append(remote_id)
        self.id_saved.set()

    def remote_succeeded(self, model: str) -> None:
        self.succeeded.append(model)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, PROMPTREEL_POLL_INTERVAL=0.01, **values)  # type: ignore[call-arg]


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def replicate_fake() -> Iterator[FakeReplicate]:
    with FakeReplicate() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def runway_fake() -> Iterator[FakeRunway]:
    with FakeRunway() as fake:
        yield fake  # type: ignore[misc]


def dalle(fake: FakeOpenAI, key: str | None = None, **kwargs: object) -> DalleImageProvider:
    return DalleImageProvider(settings(OPENAI_API_KEY=key or fake.key, OPENAI_BASE_URL=fake.base_url), policy=FAST, **kwargs)  # type: ignore[arg-type]


def flux(fake: FakeReplicate, key: str | None = None, **kwargs: object) -> ReplicateImageProvider:
    env = settings(REPLICATE_API_TOKEN=key or fake.key, REPLICATE_BASE_URL=fake.url)
    return ReplicateImageProvider(env, policy=FAST, **kwargs)  # type: ignore[arg-type]


def runway(fake: FakeRunway, key: str | None = None, **kwargs: object) -> RunwayVideoProvider:
    return RunwayVideoProvider(settings(RUNWAYML_API_SECRET=key or fake.key, RUNWAYML_BASE_URL=fake.url), policy=FAST, **kwargs)  # type: ignore[arg-type]


def image_request(size: str = "1024x1024", quality: str = "standard", prompt: str = PROMPT) -> ImageRequest:
    width, height = (int(part) for part in size.split("x"))
    return ImageRequest(prompt=prompt, width=width, height=height, quality=quality, seed=12345)


def video_request(
    tmp_path: Path, size: tuple[int, int] = (1792, 1024), duration: int = 5, noisy: bool = False, prompt: str = PROMPT
) -> VideoRequest:
    image = tmp_path / "image.png"
    image.write_bytes(png_image(*size, noisy=noisy))
    return VideoRequest(prompt=prompt, image_path=image, duration=duration, seed=777, output_path=tmp_path / "video.mp4")


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


# -- OpenAI (the guide's dalle3): gpt-image-2 by default ----------------------------------------


@pytest.mark.parametrize(
    ("size", "quality", "wire_quality"),
    [("1024x1024", "standard", "medium"), ("1792x1024", "high", "high"), ("1024x1792", "standard", "medium")],
)
async def test_dalle3_generates_with_the_right_request(openai_fake: FakeOpenAI, size: str, quality: str, wire_quality: str):
    ctx = RecordingContext()
    result = await dalle(openai_fake).generate(image_request(size, quality), ctx)
    assert result.model == "gpt-image-2"
    assert png_size(result.png) == tuple(int(part) for part in size.split("x"))
    assert result.usage is not None and result.usage["output_tokens"] > 0
    assert result.metadata == {"imageUsage": result.usage}
    [call] = openai_fake.seen("POST", "/v1/images/generations")
    assert call.headers["authorization"] == f"Bearer {openai_fake.key}"
    assert call.json == {
        "model": "gpt-image-2",
        "prompt": PROMPT,
        "size": size,
        "quality": wire_quality,
        "n": 1,
        "output_format": "png",
    }


async def test_dalle3_downloads_an_image_url_at_once(openai_fake: FakeOpenAI):
    openai_fake.force_url = True
    result = await dalle(openai_fake).generate(image_request(), RecordingContext())
    assert png_size(result.png) == (1024, 1024)
    [download] = openai_fake.seen("GET", prefix="/files/")
    assert "authorization" not in download.headers  # the key never goes to the storage host


async def test_dalle3_expired_image_url_fails_plainly(openai_fake: FakeOpenAI):
    openai_fake.force_url = True
    openai_fake.expire_urls()
    with pytest.raises(ProviderError, match=r"OpenAI's output is no longer available \(403\)"):
        await dalle(openai_fake).generate(image_request(), RecordingContext())


async def test_dalle3_output_that_is_not_an_image(openai_fake: FakeOpenAI):
    openai_fake.image_override = b"<html>upstream error</html>"
    with pytest.raises(ProviderError, match="OpenAI's output is not an image"):
        await dalle(openai_fake).generate(image_request(), RecordingContext())


async def test_dalle3_interrupted_step_is_not_sent_again_on_resume(openai_fake: FakeOpenAI):
    with pytest.raises(
        ProviderError, match="interrupted by a restart; it may already have been charged, so it was not sent again"
    ) as caught:
        await dalle(openai_fake).generate(image_request(), RecordingContext(resumed=True))
    assert not caught.value.transient
    assert not openai_fake.seen(), "a resumed DALL-E step must not ask OpenAI again (it could pay twice)"


async def test_dalle3_waits_out_a_429_then_succeeds(openai_fake: FakeOpenAI):
    openai_fake.script("images", openai_replies.rate_limited(retry_after=1))
    ctx = RecordingContext()
    result = await dalle(openai_fake).generate(image_request(), ctx)
    assert result.png
    first, second = openai_fake.seen("POST", "/v1/images/generations")
    assert second.at - first.at >= 0.95, "Retry-After was not honoured"
    assert any("attempt 2/4" in line and "429" in line and "Retry-After" in line for line in ctx.logs), ctx.logs


async def test_dalle3_gives_up_after_persistent_5xx(openai_fake: FakeOpenAI):
    openai_fake.script("images", *[openai_replies.server_error() for _ in range(4)])
    ctx = RecordingContext()
    with pytest.raises(
        ProviderError, match=r"OpenAI kept failing while generating the image: 500 server error \(4 attempts\)"
    ) as caught:
        await dalle(openai_fake).generate(image_request(), ctx)
    assert caught.value.transient
    assert len(openai_fake.seen("POST", "/v1/images/generations")) == 4
    assert sum("attempt" in line for line in ctx.logs) == 3  # attempts 2, 3 and 4 are logged


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (openai_replies.content_policy(), "OpenAI refused the prompt under its content policy"),
        (openai_replies.insufficient_quota(), r"OpenAI refused to bill this account \(insufficient_quota\)"),
        (openai_replies.billing_hard_limit(), r"OpenAI refused to bill this account \(billing_hard_limit_reached\)"),
    ],
    ids=["content-policy", "insufficient-quota", "billing-hard-limit"],
)
async def test_dalle3_permanent_refusals_fail_at_once(openai_fake: FakeOpenAI, reply: Reply, message: str):
    openai_fake.script("images", reply)
    with pytest.raises(ProviderError, match=message) as caught:
        await dalle(openai_fake).generate(image_request(), RecordingContext())
    assert not caught.value.transient
    assert len(openai_fake.seen("POST", "/v1/images/generations")) == 1


async def test_dalle3_bad_key(openai_fake: FakeOpenAI):
    rejected: list[str] = []
    with pytest.raises(ProviderError, match=r"OpenAI rejected the API key \(401\)"):
        await dalle(openai_fake, key="sk-wrong", on_key_rejected=rejected.append).generate(image_request(), RecordingContext())
    assert rejected == ["OpenAI rejected the API key (401)"]
    assert len(openai_fake.seen("POST", "/v1/images/generations")) == 1


async def test_dalle3_does_not_repeat_a_request_that_timed_out_after_sending(openai_fake: FakeOpenAI):
    hold = Hold()
    openai_fake.script("images", hold)
    try:
        with pytest.raises(ProviderError, match=r"OpenAI did not answer the image request.*not requested again"):
            await dalle(openai_fake, timeout=httpx.Timeout(0.5, connect=5)).generate(image_request(), RecordingContext())
    finally:
        hold.release()
    assert len(openai_fake.seen("POST", "/v1/images/generations")) == 1


async def test_dalle3_retries_when_it_cannot_connect():
    with socket_closed_port() as port:
        provider = DalleImageProvider(settings(OPENAI_API_KEY="sk", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1"), policy=FAST)
        ctx = RecordingContext()
        with pytest.raises(
            ProviderError, match=r"OpenAI kept failing while generating the image: Connection error.*\(4 attempts\)"
        ):
            await provider.generate(image_request(), ctx)
    assert sum("attempt" in line for line in ctx.logs) == 3


# -- FLUX.1 on Replicate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quality", "model", "size", "ratio", "expected"),
    [
        ("standard", "black-forest-labs/flux-schnell", "1024x1024", "1:1", (1024, 1024)),
        ("high", "black-forest-labs/flux-1.1-pro", "1792x1024", "16:9", (1344, 768)),
        ("standard", "black-forest-labs/flux-schnell", "1024x1792", "9:16", (768, 1344)),
    ],
)
async def test_flux1_runs_a_prediction(replicate_fake: FakeReplicate, quality, model, size, ratio, expected):
    ctx = RecordingContext()
    result = await flux(replicate_fake).generate(image_request(size, quality), ctx)
    assert result.model == model
    assert png_size(result.png) == expected
    [create] = replicate_fake.seen("POST", f"/v1/models/{model}/predictions")
    assert create.headers["authorization"] == f"Bearer {replicate_fake.key}"
    assert create.json == {"input": {"prompt": PROMPT, "aspect_ratio": ratio, "seed": 12345, "output_format": "png"}}
    assert ctx.saved == [result.metadata["replicatePredictionId"]] and ctx.succeeded == [model]  # told before the download
    polls = replicate_fake.seen("GET", f"/v1/predictions/{ctx.saved[0]}")
    assert len(polls) == 3  # starting, processing, succeeded
    assert any(abs(fraction - (0.1 + 0.75 * 0.5)) < 1e-6 for fraction in ctx.fractions), "no progress from the logs' 50%"
    assert [line for line in ctx.logs if line.startswith("prediction ")] == [
        f"prediction {ctx.saved[0]} is {s}" for s in ("starting", "processing", "succeeded")
    ]
    [download] = replicate_fake.seen("GET", prefix="/files/")
    assert (
        download.headers["host"].startswith("localhost:") and "authorization" not in download.headers
    )  # no token to the file host


@pytest.mark.parametrize("which", ["flux1", "runway"])
async def test_a_create_interrupted_before_its_id_was_saved_is_not_sent_again(
    which, replicate_fake: FakeReplicate, runway_fake: FakeRunway, tmp_path: Path
):
    ctx = RecordingContext(resumed=True)  # running when the process died, and no remote id saved
    with pytest.raises(ProviderError, match="interrupted by a restart before its id was saved") as caught:
        if which == "flux1":
            await flux(replicate_fake).generate(image_request(), ctx)
        else:
            await runway(runway_fake).animate(video_request(tmp_path), ctx)
    assert not caught.value.transient
    fake = replicate_fake if which == "flux1" else runway_fake
    assert not fake.seen("POST"), "an interrupted create must not be sent again"


def test_flux1_reads_progress_from_tqdm_logs():
    assert log_percent("Using seed: 1\n  0%|   | 0/4\n 75%|███  | 3/4 [00:01<00:00]") == 75
    assert log_percent("no progress here") is None
    assert log_percent(None) is None


async def test_flux1_resumes_the_saved_prediction(replicate_fake: FakeReplicate):
    first = RecordingContext()
    provider = flux(replicate_fake)
    created = await provider.generate(image_request(), first)
    again = RecordingContext(remote_id=created.metadata["replicatePredictionId"])
    resumed = await provider.generate(image_request(), again)
    assert resumed.png == created.png
    assert len(replicate_fake.seen("POST", prefix="/v1/models/")) == 1, "a resumed step must not create a second prediction"


async def test_flux1_waits_out_a_429_on_create_then_succeeds(replicate_fake: FakeReplicate):
    replicate_fake.script("create", replicate_replies.throttled(retry_after=1))
    ctx = RecordingContext()
    await flux(replicate_fake).generate(image_request(), ctx)
    first, second = replicate_fake.seen("POST", prefix="/v1/models/")
    assert second.at - first.at >= 0.95
    assert len(replicate_fake.predictions) == 1
    assert any("attempt 2/4" in line and "429" in line for line in ctx.logs), ctx.logs


async def test_flux1_retries_polls_on_5xx(replicate_fake: FakeReplicate):
    replicate_fake.script("poll", replicate_replies.unavailable(503), replicate_replies.unavailable(502))
    ctx = RecordingContext()
    result = await flux(replicate_fake).generate(image_request(), ctx)
    assert result.png and len(replicate_fake.predictions) == 1
    assert sum("attempt" in line for line in ctx.logs) == 2


async def test_flux1_gives_up_after_persistent_5xx(replicate_fake: FakeReplicate):
    replicate_fake.script("create", *[replicate_replies.unavailable(503) for _ in range(4)])
    with pytest.raises(
        ProviderError, match=r"Replicate kept failing while starting the prediction: 503 Service Unavailable \(4 attempts\)"
    ):
        await flux(replicate_fake).generate(image_request(), RecordingContext())
    assert len(replicate_fake.seen("POST", prefix="/v1/models/")) == 4 and not replicate_fake.predictions


async def test_flux1_does_not_repeat_a_create_answered_with_500(replicate_fake: FakeReplicate):
    replicate_fake.script("create", replicate_replies.problem(500, "Internal Server Error", "Something went wrong"))
    with pytest.raises(ProviderError, match="not sent again"):
        await flux(replicate_fake).generate(image_request(), RecordingContext())
    assert len(replicate_fake.seen("POST", prefix="/v1/models/")) == 1


async def test_flux1_bad_token(replicate_fake: FakeReplicate):
    rejected: list[str] = []
    with pytest.raises(ProviderError, match=r"Replicate rejected the API token \(401\)"):
        await flux(replicate_fake, key="r8_wrong", on_key_rejected=rejected.append).generate(image_request(), RecordingContext())
    assert rejected and not replicate_fake.predictions


async def test_flux1_no_credit(replicate_fake: FakeReplicate):
    replicate_fake.script("create", replicate_replies.insufficient_credit())
    with pytest.raises(ProviderError, match=r"Replicate refused to bill this account \(402\): You have insufficient credit"):
        await flux(replicate_fake).generate(image_request(), RecordingContext())


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("nsfw", "black-forest-labs/flux-schnell on Replicate failed: NSFW content detected"),
        ("aborted", "Replicate aborted the prediction .* before it ran"),
        ("output_gone", r"Replicate's output is no longer available \(404\)"),
        ("output_not_image", "Replicate's output is not an image"),
        ("data_removed", "Replicate has already deleted this prediction's output"),
    ],
)
async def test_flux1_failures_are_explained(replicate_fake: FakeReplicate, outcome: str, message: str):
    replicate_fake.outcomes.append(outcome)
    with pytest.raises(ProviderError, match=message):
        await flux(replicate_fake).generate(image_request(), RecordingContext())


async def test_flux1_unknown_model_setting_is_refused_plainly(replicate_fake: FakeReplicate):
    provider = ReplicateImageProvider(
        settings(
            REPLICATE_API_TOKEN=replicate_fake.key,
            REPLICATE_BASE_URL=replicate_fake.url,
            PROMPTREEL_FLUX_MODEL_STANDARD="black-forest-labs/flux-nope",
        ),
        policy=FAST,
    )
    with pytest.raises(ProviderError, match=r"'black-forest-labs/flux-nope' is not a Replicate image model of the model catalog"):
        await provider.generate(image_request(), RecordingContext())
    assert not replicate_fake.seen("POST"), "a model the catalog does not know is not sent"


async def test_flux1_cancel_while_polling_cancels_the_prediction(replicate_fake: FakeReplicate):
    replicate_fake.outcomes.append("hold")
    provider = flux(replicate_fake)
    ctx = RecordingContext()
    task = asyncio.create_task(provider.generate(image_request(), ctx))
    await ctx.id_saved.wait()
    prediction_id = ctx.saved[0]
    await replicate_fake.until(lambda: replicate_fake.predictions[prediction_id].status == "processing")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.cancel_remote(prediction_id)  # what the pipeline does next
    assert replicate_fake.predictions[prediction_id].status == "canceled"
    assert len(replicate_fake.seen("POST", f"/v1/predictions/{prediction_id}/cancel")) == 1


async def test_flux1_cancel_during_create_still_learns_the_prediction_id(replicate_fake: FakeReplicate):
    hold = Hold()
    replicate_fake.script("create", hold)
    ctx = RecordingContext()
    task = asyncio.create_task(flux(replicate_fake).generate(image_request(), ctx))
    await asyncio.to_thread(hold.reached.wait, 30)
    task.cancel()
    hold.release()  # Replicate answers after the job was cancelled: the prediction exists and must be known
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.saved == list(replicate_fake.predictions)


# -- Runway ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ratio", "duration"),
    [((1792, 1024), "1280:720", 5), ((1024, 1792), "720:1280", 10), ((1024, 1024), "960:960", 5)],
)
async def test_runway_animates_with_the_right_request(runway_fake: FakeRunway, tmp_path: Path, size, ratio, duration):
    ctx = RecordingContext()
    request = video_request(tmp_path, size, duration)
    result = await runway(runway_fake).animate(request, ctx)
    width, height = (int(part) for part in ratio.split(":"))
    assert (result.model, result.width, result.height) == ("gen4_turbo", width, height)
    [create] = runway_fake.seen("POST", "/v1/image_to_video")
    assert create.headers["authorization"] == f"Bearer {runway_fake.key}"
    assert create.headers["x-runway-version"] == "2024-11-06"
    body = create.json
    assert body["promptImage"] == "data:image/png;base64," + base64.b64encode(request.image_path.read_bytes()).decode()
    assert {key: value for key, value in body.items() if key != "promptImage"} == {
        "model": "gen4_turbo",
        "ratio": ratio,
        "duration": duration,
        "seed": 777,
        "promptText": PROMPT,
    }
    assert ctx.saved == [result.metadata["runwayTaskId"]] and ctx.succeeded == ["gen4_turbo"]
    with av.open(str(request.output_path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
        assert sum(1 for _ in container.decode(stream)) == duration * 24
    assert not list(tmp_path.glob("*.part"))
    assert any(0.05 < fraction < 0.9 for fraction in ctx.fractions), ctx.fractions
    [download] = runway_fake.seen("GET", prefix="/outputs/")
    assert download.headers["host"].startswith("localhost:") and "authorization" not in download.headers  # no secret to the CDN


async def test_runway_goes_through_throttled_then_succeeds(runway_fake: FakeRunway, tmp_path: Path):
    runway_fake.outcomes.append("throttled")
    ctx = RecordingContext()
    await runway(runway_fake).animate(video_request(tmp_path), ctx)
    statuses = [line.split(" is ")[1].split(" ")[0] for line in ctx.logs if line.startswith("Runway task ")]
    assert statuses == ["THROTTLED", "PENDING", "RUNNING", "SUCCEEDED"], ctx.logs


@pytest.mark.parametrize(
    ("code", "message", "transient"),
    [
        ("SAFETY.INPUT.IMAGE", r"Runway refused the input image \(SAFETY.INPUT.IMAGE\)", False),
        ("SAFETY.INPUT.TEXT", r"Runway refused the prompt text \(SAFETY.INPUT.TEXT\)", False),
        ("SAFETY.OUTPUT.VIDEO", r"Runway's moderation rejected the generated video \(SAFETY.OUTPUT.VIDEO\)", False),
        ("INTERNAL.BAD_OUTPUT.CODE01", r"Runway rejected its own video for quality reasons", True),
        ("ASSET.INVALID", r"Runway could not use the input image \(ASSET.INVALID\)", False),
    ],
)
async def test_runway_failed_task_is_explained(runway_fake: FakeRunway, tmp_path: Path, code: str, message: str, transient: bool):
    runway_fake.outcomes.append(f"fail:{code}")
    with pytest.raises(ProviderError, match=message) as caught:
        await runway(runway_fake).animate(video_request(tmp_path), RecordingContext())
    assert caught.value.transient is transient
    assert len(runway_fake.seen("POST", "/v1/image_to_video")) == 1


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("output_gone", r"Runway's output is no longer available \(403\)"),
        ("output_not_video", "Runway's output is not a playable video"),
    ],
)
async def test_runway_broken_output(runway_fake: FakeRunway, tmp_path: Path, outcome: str, message: str):
    runway_fake.outcomes.append(outcome)
    request = video_request(tmp_path)
    with pytest.raises(ProviderError, match=message):
        await runway(runway_fake).animate(request, RecordingContext())
    assert not request.output_path.exists() and not list(tmp_path.glob("*.part"))


async def test_runway_429_then_success_and_5xx_polls(runway_fake: FakeRunway, tmp_path: Path):
    runway_fake.script("create", runway_replies.too_many_requests(retry_after=1))
    runway_fake.script("poll", runway_replies.shedding_load(502), runway_replies.shedding_load(504))
    ctx = RecordingContext()
    await runway(runway_fake).animate(video_request(tmp_path), ctx)
    first, second = runway_fake.seen("POST", "/v1/image_to_video")
    assert second.at - first.at >= 0.95
    assert len(runway_fake.tasks) == 1
    assert sum("attempt 2/4" in line for line in ctx.logs) == 2


async def test_runway_gives_up_after_persistent_5xx(runway_fake: FakeRunway, tmp_path: Path):
    runway_fake.script("create", *[runway_replies.shedding_load(503) for _ in range(4)])
    with pytest.raises(
        ProviderError, match=r"Runway kept failing while starting the video task: 503 Service Unavailable \(4 attempts\)"
    ):
        await runway(runway_fake).animate(video_request(tmp_path), RecordingContext())
    assert not runway_fake.tasks


async def test_runway_bad_secret_and_missing_credits(runway_fake: FakeRunway, tmp_path: Path):
    with pytest.raises(ProviderError, match=r"Runway rejected the API secret \(401\)"):
        await runway(runway_fake, key="key_wrong").animate(video_request(tmp_path), RecordingContext())
    runway_fake.credits = 10
    with pytest.raises(ProviderError, match="Runway refused to start the video: not enough credits"):
        await runway(runway_fake).animate(video_request(tmp_path), RecordingContext())
    assert not runway_fake.tasks


async def test_runway_fake_refuses_what_runway_refuses(runway_fake: FakeRunway):
    headers = {"Authorization": f"Bearer {runway_fake.key}", "X-Runway-Version": "2024-11-06"}
    image = "data:image/png;base64," + base64.b64encode(png_image(64, 64)).decode()
    async with httpx.AsyncClient(base_url=runway_fake.url) as client:
        missing_version = await client.post("/v1/image_to_video", headers={"Authorization": headers["Authorization"]}, json={})
        assert missing_version.status_code == 400 and "X-Runway-Version" in missing_version.json()["error"]
        bad = await client.post(
            "/v1/image_to_video",
            headers=headers,
            json={
                "model": "gen4_turbo",
                "promptImage": image,
                "ratio": "1024:1024",
                "duration": 5,
                "promptText": "x" * 1001,
                "colour": 1,
            },
        )
        assert bad.status_code == 400
        body = bad.json()
        assert body["error"] == "Validation of body failed"
        assert {tuple(issue["path"]) for issue in body["issues"]} == {(), ("ratio",), ("promptText",)}


async def test_runway_resumes_the_saved_task(runway_fake: FakeRunway, tmp_path: Path):
    provider = runway(runway_fake)
    first = await provider.animate(video_request(tmp_path), RecordingContext())
    again = await provider.animate(video_request(tmp_path), RecordingContext(remote_id=first.metadata["runwayTaskId"]))
    assert (again.width, again.height) == (first.width, first.height)
    assert len(runway_fake.seen("POST", "/v1/image_to_video")) == 1


async def test_runway_does_not_repeat_a_create_that_timed_out(runway_fake: FakeRunway, tmp_path: Path):
    hold = Hold()
    runway_fake.script("create", hold)
    try:
        with pytest.raises(ProviderError, match=r"Runway did not answer the request to start the video.*not sent again"):
            await runway(runway_fake, timeout=httpx.Timeout(0.5, connect=5)).animate(video_request(tmp_path), RecordingContext())
    finally:
        hold.release()
    assert len(runway_fake.seen("POST", "/v1/image_to_video")) == 1


async def test_runway_retries_a_poll_that_timed_out(runway_fake: FakeRunway, tmp_path: Path):
    hold = Hold()
    runway_fake.script("poll", hold)
    ctx = RecordingContext()
    try:
        await runway(runway_fake, timeout=httpx.Timeout(0.5, connect=5)).animate(video_request(tmp_path), ctx)
    finally:
        hold.release()
    assert any("attempt 2/4" in line and "read timeout" in line for line in ctx.logs), ctx.logs


async def test_runway_cancel_while_running_deletes_the_task(runway_fake: FakeRunway, tmp_path: Path):
    runway_fake.outcomes.append("hold")
    provider = runway(runway_fake)
    ctx = RecordingContext()
    task = asyncio.create_task(provider.animate(video_request(tmp_path), ctx))
    await ctx.id_saved.wait()
    task_id = ctx.saved[0]
    await runway_fake.until(lambda: runway_fake.tasks[task_id].status == "RUNNING")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.cancel_remote(task_id)
    assert runway_fake.tasks[task_id].status == "CANCELLED"
    assert len(runway_fake.seen("DELETE", f"/v1/tasks/{task_id}")) == 1


async def test_runway_large_image_is_reencoded_within_the_data_uri_limit(runway_fake: FakeRunway, tmp_path: Path):
    request = video_request(tmp_path, (1792, 1024), noisy=True)
    assert len(base64.b64encode(request.image_path.read_bytes())) > 5 * 1024 * 1024, "the test image must be over the limit"
    ctx = RecordingContext()
    await runway(runway_fake).animate(request, ctx)
    [create] = runway_fake.seen("POST", "/v1/image_to_video")
    assert create.json["promptImage"].startswith("data:image/jpeg;base64,")
    assert len(create.json["promptImage"]) <= 5_000_000
    assert any("re-encoded as JPEG" in line for line in ctx.logs)


def test_runway_request_helpers(tmp_path: Path):
    assert pick_ratio("gen4_turbo", 1792, 1024) == "1280:720"
    assert pick_ratio("gen4_turbo", 1024, 1792) == "720:1280"
    assert pick_ratio("gen4_turbo", 1024, 1024) == "960:960"
    assert pick_ratio("veo3.1", 1024, 1024) in ("1280:720", "720:1280")  # the catalog's ratios for the model
    assert truncate_utf16("a" * 1200) == "a" * 1000
    emoji = "😀" * 600  # two UTF-16 code units each
    assert truncate_utf16(emoji) == "😀" * 500
    assert truncate_utf16("a" + emoji)[-1] == "😀" and len(truncate_utf16("a" + emoji)) == 500
    path = tmp_path / "small.png"
    path.write_bytes(png_image(64, 32))
    uri, size, _ = image_data_uri(path)
    assert uri.startswith("data:image/png;base64,") and size == (64, 32)


async def test_runway_long_prompt_is_cut_to_runways_limit(runway_fake: FakeRunway, tmp_path: Path):
    await runway(runway_fake).animate(video_request(tmp_path, prompt="word " * 400), RecordingContext())
    [create] = runway_fake.seen("POST", "/v1/image_to_video")
    assert len(create.json["promptText"]) == 1000


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None
    assert 0 <= parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) < 1  # type: ignore[operator]


class socket_closed_port:
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        return self.port

    def __exit__(self, *exc: object) -> None:
        return None


# -- the registry's key checks ----------------------------------------------------------------


def test_registry_reports_configured_providers_whose_keys_work(
    openai_fake: FakeOpenAI, replicate_fake: FakeReplicate, runway_fake: FakeRunway, monkeypatch: pytest.MonkeyPatch
):
    from backend.providers import registry as registry_module
    from backend.providers.registry import ProviderRegistry

    # The first answers are awaited for at most 0.8 s, which a busy machine can miss: this test is
    # about what the answers say, so it waits for them (as long as they take, no longer).
    monkeypatch.setattr(registry_module, "FIRST_CHECK_WAIT", 10.0)
    registry = ProviderRegistry(
        settings(
            OPENAI_API_KEY=openai_fake.key,
            OPENAI_BASE_URL=openai_fake.base_url,
            REPLICATE_API_TOKEN="r8_wrong",
            REPLICATE_BASE_URL=replicate_fake.url,
            RUNWAYML_API_SECRET=runway_fake.key,
            RUNWAYML_BASE_URL=runway_fake.url,
        )
    )
    infos = {info.name: info for info in registry.image_providers() + registry.video_providers()}
    assert infos["dalle3"].available and infos["runway"].available and infos["local"].available
    assert not infos["flux1"].available and infos["flux1"].configured
    assert infos["flux1"].reason == "Replicate rejected the API token (401)"
    assert registry.default_video_provider == "runway"
    assert openai_fake.seen("GET", "/v1/models/gpt-image-2")[0].headers["authorization"] == f"Bearer {openai_fake.key}"


def test_registry_without_keys_names_the_missing_settings():
    from backend.providers.registry import ProviderRegistry

    registry = ProviderRegistry(settings())
    assert [(info.name, info.available, info.reason) for info in registry.image_providers()] == [
        ("dalle3", False, "set OPENAI_API_KEY"),
        ("flux1", False, "set REPLICATE_API_TOKEN"),
        ("local", True, None),
    ]
    assert registry.default_video_provider == "local"


def test_runway_without_enough_credits_is_unavailable(runway_fake: FakeRunway):
    from backend.providers.registry import ProviderRegistry

    runway_fake.credits = 20
    registry = ProviderRegistry(settings(RUNWAYML_API_SECRET=runway_fake.key, RUNWAYML_BASE_URL=runway_fake.url))
    info = registry.info("runway")
    assert not info.available and info.reason == "Runway has 20 credits left; a 5 s gen4_turbo video needs 25"


def test_key_check_never_waits_long_and_believes_a_rejection_at_once():
    from backend.providers.registry import KeyCheck

    answer = threading.Event()

    def slow_probe() -> tuple[bool | None, str | None]:
        answer.wait(30)
        return True, None

    check = KeyCheck("dalle3", slow_probe)
    started = time.monotonic()
    assert check.verdict(wait=0.2) is None  # not known yet: the caller treats it as available
    assert time.monotonic() - started < 1.0
    check.reject("OpenAI rejected the API key (401)")
    answer.set()  # the probe that started before the rejection answers "ok" afterwards...
    check.refresh().wait(5)
    verdict = check.verdict()
    assert verdict is not None and verdict.ok is False  # ...and does not overrule the rejection


async def test_check_keys_awaits_the_first_answers_briefly(replicate_fake: FakeReplicate, runway_fake: FakeRunway):
    from backend.providers.registry import ProviderRegistry

    hold = Hold()
    replicate_fake.script("account", hold)  # Replicate's key check hangs
    try:
        registry = ProviderRegistry(
            settings(
                REPLICATE_API_TOKEN=replicate_fake.key,
                REPLICATE_BASE_URL=replicate_fake.url,
                RUNWAYML_API_SECRET="key_wrong",
                RUNWAYML_BASE_URL=runway_fake.url,
            )
        )
        started = time.monotonic()
        await registry.check_keys()
        assert time.monotonic() - started < 1.2
        assert registry.info("runway").reason == "Runway rejected the API secret (401)"
        assert registry.info("flux1").available  # not known: available, the jobs would explain
        started = time.monotonic()
        await registry.check_keys()  # already waited once: never again
        assert time.monotonic() - started < 0.1
    finally:
        hold.release()
