"""The model catalog as data: the built-in file, a user's file laid over it, the one-line refusal
of a bad file, prices from the catalog's rules (cost from usage), and the providers reading
their models from it against the fakes."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from backend.providers import pricing
from backend.providers.base import ImageRequest, ProviderError, VideoRequest
from backend.providers.catalog import BUILT_IN, Catalog, CatalogError, activate, active
from backend.providers.openai_images import OpenAIImageProvider
from backend.providers.registry import ProviderRegistry
from backend.providers.replicate_images import ReplicateImageProvider
from backend.providers.retry import RetryPolicy
from backend.providers.runway import RunwayVideoProvider
from backend.settings import Settings
from tests.fakes import FakeOpenAI, FakeReplicate, FakeRunway
from tests.fakes.media import png_image
from tests.support.server import clean_env

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)


class RecordingContext:
    """A StepContext that keeps what the provider logged."""

    def __init__(self) -> None:
        self.cancel_event = threading.Event()
        self.remote_id: str | None = None
        self.resumed = False
        self.logs: list[str] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        if message:
            self.logs.append(message)

    def log(self, message: str) -> None:
        self.logs.append(message)

    async def save_remote_id(self, remote_id: str) -> None:
        self.remote_id = remote_id

    def remote_succeeded(self, model: str) -> None:
        self.logs.append(f"succeeded: {model}")


def image_request(model: str | None = None) -> ImageRequest:
    return ImageRequest(prompt="a lighthouse", width=1024, height=1024, quality="standard", seed=1, model=model)


def source_image(folder: Path) -> Path:
    path = folder / "image.png"
    path.write_bytes(png_image(1792, 1024))
    return path


PIXEL_ART = """
[[models]]
id = "acme/pixel-art"
provider = "replicate"
kind = "image"
name = "Pixel art"
sizes = { "1024x1024" = "1024x1024", "1792x1024" = "1792x1024", "1024x1792" = "1024x1792" }
[models.input]
prompt = "prompt"
width = "width"
height = "height"
seed = "seed"
[models.price]
unit = "image"
perImage = { "*" = { "*" = 0.011 } }
source = "https://replicate.com/acme/pixel-art"
read = 2026-12-01
"""


@pytest.fixture(autouse=True)
def built_in_catalog() -> Iterator[None]:
    """Each test starts from (and leaves) the built-in catalog active."""
    activate(Catalog.load())
    yield
    activate(Catalog.load())


def settings(**env: str) -> Settings:
    return Settings(_env_file=None, PROMPTREEL_DATA_DIR="/tmp/unused", **env)  # type: ignore[call-arg]


def test_the_built_in_catalog_is_current_and_sourced():
    catalog = Catalog.load()
    assert catalog.default("openai", "image").id == "gpt-image-2"  # type: ignore[union-attr]
    assert catalog.default("dalle3", "image").id == "gpt-image-2"  # type: ignore[union-attr]
    retired = catalog.get("dall-e-3")
    assert retired is not None and retired.retired() and retired.replacement == "gpt-image-2"
    assert catalog.get("gpt-image-2").retired() is False  # type: ignore[union-attr]
    assert catalog.get("gen4.5").durations == list(range(2, 11))  # type: ignore[union-attr]
    assert catalog.get("veo3.1").durations == [4, 6, 8] and catalog.get("veo3.1_fast").durations == [4, 6, 8]  # type: ignore[union-attr]
    # gpt-image-1: still in openai-python's ImageModel type, but shut down by OpenAI on 2026-10-23
    gpt_image_1 = catalog.get("gpt-image-1")
    assert gpt_image_1 is not None and gpt_image_1.retired() and gpt_image_1.replacement == "gpt-image-2"
    assert gpt_image_1.price is not None and gpt_image_1.price.tokens.imageOutput == 40.0  # type: ignore[union-attr]
    # the current FLUX models on Replicate: FLUX.2 [pro] and [max] beside FLUX.1; flux1 still means FLUX.1 schnell
    assert {"black-forest-labs/flux-2-pro", "black-forest-labs/flux-2-max"} <= {e.id for e in catalog.of("replicate", "image")}
    assert catalog.default("flux1", "image").id == "black-forest-labs/flux-schnell"  # type: ignore[union-attr]
    # every Replicate and Runway model has a price, so each can run
    assert all(entry.price is not None for entry in catalog.of("replicate", "video") + catalog.of("runway", "video"))
    for entry in catalog.all():
        if entry.price is not None and entry.provider != "local":
            assert entry.price.source and entry.price.read, entry.id  # every figure names its source and date


def test_docs_list_every_built_in_model_with_its_source():
    """docs/providers.md's catalog table: every built-in model, and whether its price is verified."""
    table = (ROOT / "docs" / "providers.md").read_text(encoding="utf-8").split("## The model catalog", 1)[1]
    table = table.split("### Adding a model", 1)[0]
    missing = [entry.id for entry in Catalog.load().all() if entry.provider != "comfyui" and f"`{entry.id}`" not in table]
    assert not missing, f"docs/providers.md does not list {missing}"
    assert "| source (read 2026-12-06 unless said) | verified? |" in table


def test_a_user_file_adds_models_and_replaces_built_in_ones(tmp_path: Path):
    user = tmp_path / "models.toml"
    user.write_text(
        PIXEL_ART
        + """
[[models]]
id = "veo3.1"
provider = "runway"
kind = "video"
name = "Veo 3.1, priced by me"
imageInput = true
ratios = ["1280:720", "720:1280"]
durations = [4, 6, 8]
[models.price]
unit = "second"
usdPerSecond = 0.3
source = "https://docs.dev.runwayml.com/guides/pricing/"
read = 2026-12-01
"""
    )
    catalog = Catalog.load(user)
    assert catalog.get("acme/pixel-art").input.width == "width"  # type: ignore[union-attr]
    assert catalog.get("veo3.1").name == "Veo 3.1, priced by me"  # type: ignore[union-attr]
    assert len([entry for entry in catalog.all() if entry.id == "veo3.1"]) == 1
    activate(catalog)
    assert pricing.video_cost("runway", "veo3.1", 6) == 1.8  # the user's price, not the built-in $0.40/s
    assert pricing.image_cost("replicate", "acme/pixel-art", "1024x1024", "standard") == 0.011


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            PIXEL_ART.replace('source = "https://replicate.com/acme/pixel-art"\n', ""),
            "model 1 (acme/pixel-art): price.source: a price needs its source",
        ),
        (PIXEL_ART.replace('provider = "replicate"', 'provider = "sora"'), "model 1 (acme/pixel-art): provider: "),
        (
            PIXEL_ART.replace('name = "Pixel art"', 'name = "Pixel art"\ncolour = "red"'),
            "model 1 (acme/pixel-art): colour: unknown field",
        ),
        (PIXEL_ART.replace("[models.input]\n", "[models.inputs]\n"), "model 1 (acme/pixel-art): inputs: unknown field"),
        (
            '[[models]]\nid = "x"\nprovider = "runway"\nkind = "video"\nname = "X"\n',
            "model 1 (x): durations: a video model needs them",
        ),
        ("[[models]\n", "not valid TOML"),
    ],
    ids=["price-without-source", "unknown-provider", "unknown-field", "misnamed-table", "video-without-durations", "not-toml"],
)
def test_a_bad_file_is_refused_in_one_line_naming_the_file_the_entry_and_the_field(tmp_path: Path, text: str, expected: str):
    user = tmp_path / "models.toml"
    user.write_text(text)
    with pytest.raises(CatalogError) as caught:
        Catalog.load(user)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{user}: ") and expected in message, message


def test_a_bad_file_stops_promptreel_at_start_with_one_line(tmp_path: Path):
    user = tmp_path / "models.toml"
    user.write_text(PIXEL_ART.replace("durations", "x").replace('kind = "image"', 'kind = "video"'))
    env = clean_env(tmp_path / "data", PROMPTREEL_MODELS_FILE=str(user))
    for command in (["models"], ["serve", "--port", "8999"]):
        result = subprocess.run(
            [sys.executable, "-m", "app", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("promptreel: error: invalid model catalog: ") and str(user) in lines[0], lines
        assert "model 1 (acme/pixel-art)" in lines[0]
    assert not (tmp_path / "data" / "promptreel.db").exists()


def test_promptreel_models_prints_the_catalog(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "app", "models", "--kind", "video"],
        cwd=ROOT,
        env=clean_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for model in ("gen4.5", "gen4_turbo", "veo3.1", "veo3.1_fast", "promptreel-animate-1"):
        assert model in result.stdout
    assert "gpt-image-2" not in result.stdout  # --kind video
    assert "set RUNWAYML_API_SECRET" in result.stdout and "$0.12/s" in result.stdout


# -- prices ---------------------------------------------------------------------------------


def test_cost_from_usage_uses_the_catalogs_per_token_prices():
    usage = {
        "input_tokens": 120,
        "input_tokens_details": {"text_tokens": 100, "image_tokens": 20},
        "output_tokens": 7280,
        "output_tokens_details": {"image_tokens": 7280, "text_tokens": 0},
        "total_tokens": 7400,
    }
    # gpt-image-2: $5 text in, $8 image in, $30 image out per million tokens
    expected = round((100 * 5 + 20 * 8 + 7280 * 30) / 1_000_000, 6)
    assert pricing.image_cost("openai", "gpt-image-2", "1792x1024", "high", usage=usage) == expected == 0.21906
    # an unreadable usage (a hostile or broken answer) is not taken as free: the per-image table
    assert pricing.image_cost("openai", "gpt-image-2", "1024x1024", "high", usage={"output_tokens": -5}) == 0.19
    assert pricing.image_cost("openai", "gpt-image-2", "1024x1024", "high", usage={"input_tokens_details": "x"}) == 0.19
    # without a usage (the estimate): the per-image table
    assert pricing.image_cost("dalle3", "gpt-image-2", "1024x1024", "high") == 0.19
    assert pricing.image_cost("openai", "gpt-image-1-mini", "1792x1024", "standard") == 0.015  # medium, 1536x1024


def test_per_second_prices_and_models_without_one(tmp_path: Path):
    assert pricing.video_cost("runway", "gen4.5", 7) == round(7 * 0.12, 4) == 0.84
    assert pricing.video_cost("runway", "gen4_turbo", 5) == 0.25
    # Veo on Runway: the top of Runway's published range (40 and 15 credits a second)
    assert pricing.video_cost("runway", "veo3.1", 6) == 2.4 and pricing.video_cost("runway", "veo3.1_fast", 8) == 1.2
    assert pricing.video_cost("replicate", "wan-video/wan-2.5-i2v", 10) == 1.0  # $0.10/s at 720p
    # FLUX.2 on Replicate: a run plus one output megapixel, the same for every job size
    assert pricing.image_cost("replicate", "black-forest-labs/flux-2-pro", "1792x1024", "high") == 0.03
    assert pricing.image_cost("flux1", "black-forest-labs/flux-2-max", "1024x1024", "standard") == 0.07
    assert pricing.image_cost("openai", "gpt-image-1", "1792x1024", "high") == 0.25  # OpenAI's table, 1536x1024 high
    unpriced = tmp_path / "models.toml"
    unpriced.write_text(
        """
[[models]]
id = "acme/new-i2v"
provider = "replicate"
kind = "video"
name = "No price yet"
imageInput = true
durations = [5]
[models.input]
image = "image"
"""
    )
    activate(Catalog.load(unpriced))
    with pytest.raises(pricing.UnknownPrice, match=r"no price for replicate model 'acme/new-i2v'"):
        pricing.video_cost("replicate", "acme/new-i2v", 5)  # refused until a catalog file prices it
    with pytest.raises(pricing.UnknownPrice, match="no video model 'sora-2'"):
        pricing.video_cost("runway", "sora-2", 5)


# -- providers reading their models from the catalog ---------------------------------------------


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def replicate_fake() -> Iterator[FakeReplicate]:
    fake = FakeReplicate().start()
    yield fake
    fake.stop()


@pytest.fixture
def runway_fake() -> Iterator[FakeRunway]:
    fake = FakeRunway().start()
    yield fake
    fake.stop()


async def test_a_shut_down_model_is_explained_as_missing_and_marked_unavailable(openai_fake: FakeOpenAI):
    missing: list[tuple[str, str]] = []
    provider = OpenAIImageProvider(
        settings(OPENAI_API_KEY=openai_fake.key, OPENAI_BASE_URL=openai_fake.base_url),
        policy=FAST,
        on_model_missing=lambda model, reason: missing.append((model, reason)),
    )
    request = image_request("dall-e-3")
    with pytest.raises(ProviderError) as caught:
        await provider.generate(request, RecordingContext())
    message = caught.value.message
    assert caught.value.code == "MODEL_NOT_FOUND" and not caught.value.transient
    assert "'dall-e-3'" in message and "does not exist or you do not have access to it" in message  # OpenAI's words
    assert "choose gpt-image-2, or update the model catalog" in message
    assert "BASE_URL" not in message
    assert [model for model, _ in missing] == ["dall-e-3"]
    assert provider.check_model("dall-e-3")[0] is False and provider.check_model("gpt-image-2") == (True, None)


async def test_gpt_image_1_is_refused_as_shut_down_by_the_fake_as_by_openai(openai_fake: FakeOpenAI):
    provider = OpenAIImageProvider(settings(OPENAI_API_KEY=openai_fake.key, OPENAI_BASE_URL=openai_fake.base_url), policy=FAST)
    with pytest.raises(ProviderError) as caught:
        await provider.generate(image_request("gpt-image-1"), RecordingContext())
    assert caught.value.code == "MODEL_NOT_FOUND" and "'gpt-image-1'" in caught.value.message
    assert provider.check_model("gpt-image-1")[0] is False


@pytest.mark.parametrize(
    ("model", "size", "ratio", "expected"),
    [
        ("black-forest-labs/flux-2-pro", (1792, 1024), "16:9", (1344, 768)),
        ("black-forest-labs/flux-2-max", (1024, 1792), "9:16", (768, 1344)),
    ],
)
async def test_flux_2_runs_on_replicate_with_its_own_input(
    replicate_fake: FakeReplicate, model: str, size: tuple[int, int], ratio: str, expected: tuple[int, int]
):
    provider = ReplicateImageProvider(
        settings(REPLICATE_API_TOKEN=replicate_fake.key, REPLICATE_BASE_URL=replicate_fake.url, PROMPTREEL_POLL_INTERVAL="0.01"),
        policy=FAST,
    )
    request = ImageRequest(prompt="a lighthouse", width=size[0], height=size[1], quality="high", seed=3, model=model)
    result = await provider.generate(request, RecordingContext())
    assert result.model == model
    [prediction] = replicate_fake.predictions.values()
    # checked against the fake's FLUX.2 schema: an input it does not take is refused (422)
    assert prediction.input == {
        "prompt": "a lighthouse",
        "aspect_ratio": ratio,
        "resolution": "1 MP",
        "seed": 3,
        "output_format": "png",
    }
    assert isinstance(prediction.output, str)  # FLUX.2 answers one URL, not a list
    with Image.open(io.BytesIO(result.png)) as image:  # the PNG decoded: FLUX's one megapixel in the asked ratio
        assert (image.format, image.size) == ("PNG", expected)


async def test_the_registry_learns_a_missing_model_from_a_job_and_from_its_check(openai_fake: FakeOpenAI):
    registry = ProviderRegistry(
        settings(OPENAI_API_KEY=openai_fake.key, OPENAI_BASE_URL=openai_fake.base_url), start_checks=False
    )
    mini = registry.catalog.get("gpt-image-1-mini")
    assert mini is not None
    await registry.check_models([mini])
    assert registry.model_problem(mini) is None
    openai_fake.retire("gpt-image-1-mini")
    request = image_request("gpt-image-1-mini")
    with pytest.raises(ProviderError, match="OpenAI has no model 'gpt-image-1-mini'"):
        await registry.image("dalle3").generate(request, RecordingContext())
    problem = registry.model_problem(mini)
    assert problem is not None and problem.startswith("OpenAI answered that the model does not exist (404 model_not_found")
    retired = registry.catalog.get("dall-e-3")
    assert registry.model_problem(retired) == "retired on 2026-05-12"  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "duration", "ratio"), [("gen4.5", 7, "1280:720"), ("veo3.1", 6, "1280:720")])
async def test_runway_sends_each_models_own_request(
    runway_fake: FakeRunway, tmp_path: Path, model: str, duration: int, ratio: str
):
    provider = RunwayVideoProvider(
        settings(RUNWAYML_API_SECRET=runway_fake.key, RUNWAYML_BASE_URL=runway_fake.url, PROMPTREEL_POLL_INTERVAL="0.01"),
        policy=FAST,
    )
    request = VideoRequest(
        prompt="waves",
        image_path=source_image(tmp_path),
        duration=duration,
        seed=7,
        output_path=tmp_path / "out.mp4",
        model=model,
    )
    result = await provider.animate(request, RecordingContext())
    assert result.model == model
    [task] = runway_fake.tasks.values()
    assert (task.body["model"], task.body["duration"], task.body["ratio"]) == (model, duration, ratio)
    assert ("seed" in task.body) == (model == "gen4.5")  # Veo takes no seed


async def test_the_runway_fake_refuses_what_a_model_does_not_take(runway_fake: FakeRunway, tmp_path: Path):
    provider = RunwayVideoProvider(settings(RUNWAYML_API_SECRET=runway_fake.key, RUNWAYML_BASE_URL=runway_fake.url), policy=FAST)
    request = VideoRequest(
        prompt="waves", image_path=source_image(tmp_path), duration=5, seed=7, output_path=tmp_path / "out.mp4", model="veo3.1"
    )
    with pytest.raises(ProviderError, match=r"Runway refused the request \(400\): Validation of body failed \(duration: "):
        await provider.animate(request, RecordingContext())


def test_active_catalog_defaults_to_the_built_in_file():
    assert active().get("gpt-image-2") is not None and BUILT_IN.name == "models.toml"


async def test_runway_answering_that_it_has_no_such_model_is_explained_and_marked(runway_fake: FakeRunway, tmp_path: Path):
    missing: list[str] = []
    provider = RunwayVideoProvider(settings(RUNWAYML_API_SECRET=runway_fake.key, RUNWAYML_BASE_URL=runway_fake.url), policy=FAST)
    provider.on_model_missing = lambda model, reason: missing.append(model)
    request = VideoRequest(
        prompt="waves",
        image_path=source_image(tmp_path),
        duration=5,
        seed=7,
        output_path=tmp_path / "out.mp4",
        model="gen3a_turbo",
    )
    with pytest.raises(ProviderError) as caught:
        await provider.animate(request, RecordingContext())
    assert caught.value.code == "MODEL_NOT_FOUND" and missing == ["gen3a_turbo"]
    message = caught.value.message
    assert message.startswith("Runway has no model 'gen3a_turbo' (Validation of body failed (model: Invalid discriminator value")
    assert "update the model catalog" in message and "BASE_URL" not in message


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (
            ["--video-provider", "runway", "--video-model", "veo3.1", "--duration", "5"],
            "--duration: veo3.1 makes videos of 4, 6, 8",
        ),
        (["--image-model", "dall-e-4"], "--image-model: unknown model 'dall-e-4'"),
    ],
)
def test_generate_refuses_a_model_or_duration_in_one_line_before_opening_anything(tmp_path: Path, options: list[str], words: str):
    result = subprocess.run(
        [sys.executable, "-m", "app", "generate", "a cat", *options],
        cwd=ROOT,
        env=clean_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr
    assert not (tmp_path / "data" / "promptreel.db").exists()
