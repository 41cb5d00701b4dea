"""The studio's model pickers (components/model_picker.py) with NiceGUI's simulated user: the
chosen provider's models with their price, unavailable ones greyed with the reason, the video
length following the chosen model's durations, the estimate following, and the job keeping the
models chosen. No request leaves the test: the providers' checks are answered here and their
base URLs point at a closed port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nicegui import app as nicegui_app
from nicegui import ui
from nicegui.storage import Storage
from nicegui.testing.user import User
from nicegui.testing.user_simulation import user_simulation

from backend.providers.openai_images import OpenAIImageProvider
from backend.providers.replicate_images import ReplicateImageProvider
from backend.providers.runway import RunwayVideoProvider
from backend.settings import Settings
from backend.system import System

CLOSED = "http://127.0.0.1:9"
PROVIDERS = {
    "OPENAI_API_KEY": "sk-test",
    "OPENAI_BASE_URL": f"{CLOSED}/v1",
    "RUNWAYML_API_SECRET": "key_test",
    "RUNWAYML_BASE_URL": CLOSED,
}


@asynccontextmanager
async def open_studio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str] | None = None
) -> AsyncIterator[tuple[User, System]]:
    for name in ("OPENAI_API_KEY", "REPLICATE_API_TOKEN", "RUNWAYML_API_SECRET", "RUNWAY_API_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for provider in (OpenAIImageProvider, RunwayVideoProvider):
        monkeypatch.setattr(provider, "check_key", lambda self, timeout=5.0: (True, None))
        monkeypatch.setattr(provider, "check_model", lambda self, model, timeout=5.0: (True, None))
    monkeypatch.setattr(Storage, "path", tmp_path / "storage")
    monkeypatch.setattr(nicegui_app, "storage", Storage())
    async with user_simulation() as user:
        from app.pages import register_pages

        env = {**PROVIDERS, **(extra or {})}
        system = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path / "data", **env))  # type: ignore[arg-type]
        system.migrate()
        register_pages(system)
        try:
            yield user, system
        finally:
            await system.stop()


@pytest.fixture
async def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[User, System]]:
    async with open_studio(tmp_path, monkeypatch) as opened:
        yield opened


def element(user: User, marker: str) -> ui.element:
    (found,) = user.find(marker=marker).elements
    return found


def options(select: ui.element) -> dict[str, dict]:
    """The select's options by model id (Quasar's are numbered)."""
    return dict(zip(select._values, select._props["options"], strict=True))  # type: ignore[attr-defined]


async def test_the_form_offers_the_providers_models_with_prices_and_reasons(studio: tuple[User, System]):
    user, _ = studio
    await user.open("/")
    image_provider, image_model = element(user, "image-provider"), element(user, "image-model")
    assert image_provider.value == "dalle3"
    offered = options(image_model)
    assert offered[""]["label"] == "Default · gpt-image-2"
    assert offered["gpt-image-2"]["label"] == "GPT Image 2 · tokens (est. $0.02-0.19/image)"
    assert offered["dall-e-3"]["disable"] and offered["dall-e-3"]["reason"] == "retired on 2026-05-12"
    assert "disable" not in offered["gpt-image-1-mini"]
    assert offered["gpt-image-1"]["disable"] and offered["gpt-image-1"]["reason"] == "retired on 2026-10-23"
    image_provider.value = "flux1"  # Replicate: not configured, its models greyed with the setting to set
    offered = options(image_model)
    assert offered["black-forest-labs/flux-schnell"]["reason"] == "set REPLICATE_API_TOKEN"
    assert offered["black-forest-labs/flux-2-pro"]["label"] == "FLUX.2 [pro] · $0.03/image"
    assert offered["black-forest-labs/flux-2-max"]["label"] == "FLUX.2 [max] · $0.07/image"
    assert "gpt-image-2" not in offered
    video_provider, video_model = element(user, "video-provider"), element(user, "video-model")
    assert "replicate" in video_provider._values  # type: ignore[attr-defined]  # Replicate's image-to-video models
    video_provider.value = "replicate"
    wan = options(video_model)["wan-video/wan-2.5-i2v"]
    assert wan["label"] == "Wan 2.5 image-to-video (Replicate) · $0.1/s" and wan["reason"] == "set REPLICATE_API_TOKEN"


async def test_a_configured_replicate_runs_its_video_model_from_the_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ReplicateImageProvider, "check_key", lambda self, timeout=5.0: (True, None))
    monkeypatch.setattr(ReplicateImageProvider, "check_model", lambda self, model, timeout=5.0: (True, None))
    replicate = {"REPLICATE_API_TOKEN": "r8_test", "REPLICATE_BASE_URL": CLOSED}
    async with open_studio(tmp_path, monkeypatch, replicate) as (user, system):
        await user.open("/")
        # one Replicate key, one header chip (under the image provider's name), though it serves both steps
        assert len(user.find(marker="provider-flux1").elements) == 1
        await user.should_not_see(marker="provider-replicate")
        element(user, "image-provider").value = "local"
        video_provider, video_model = element(user, "video-provider"), element(user, "video-model")
        video_provider.value = "replicate"
        wan = options(video_model)["wan-video/wan-2.5-i2v"]
        assert "disable" not in wan and options(video_model)[""]["label"] == "Default · wan-video/wan-2.5-i2v"
        (duration,) = [t for t in user.find(kind=ui.toggle).elements if t.props.get("data-testid") == "duration"]
        assert list(duration.options) == [5, 10]
        duration.value = 10
        await user.should_see("video $1.00")  # 10 x $0.10
        user.find(marker="prompt").type("waves under a cliff")
        created: asyncio.Future = asyncio.get_running_loop().create_future()

        def listen(event: dict) -> None:
            if event["type"] == "job_update" and event["data"]["status"] == "pending" and not created.done():
                created.set_result(event)

        stop = system.bus.listen(listen)
        try:
            user.find(marker="generate").click()
            await asyncio.wait_for(created, 10)
        finally:
            stop()
        (record,), _ = system.store.list()
        assert (record.job.video_provider, record.job.video_duration) == ("replicate", 10)
        await system.jobs.cancel(record.job.id)


async def test_the_video_length_follows_the_chosen_model_and_the_estimate_follows(studio: tuple[User, System]):
    user, system = studio
    await user.open("/")
    video_model = element(user, "video-model")
    (duration,) = [toggle for toggle in user.find(kind=ui.toggle).elements if toggle.props.get("data-testid") == "duration"]
    assert element(user, "video-provider").value == "runway"
    assert list(duration.options) == [5, 10]  # gen4_turbo, the default
    video_model.value = "gen4.5"
    assert list(duration.options) == list(range(2, 11)) and duration.value == 5
    duration.value = 7
    await user.should_see("video $0.84")  # 7 x $0.12
    video_model.value = "veo3.1"
    assert list(duration.options) == [4, 6, 8] and duration.value == 4
    await user.should_see("video $1.60")  # 4 x $0.40, the top of Runway's published range for veo3.1
    video_model.value = "gen4.5"
    duration.value = 7
    element(user, "image-provider").value = "local"
    user.find(marker="prompt").type("a harbour at dawn")
    created: asyncio.Future = asyncio.get_running_loop().create_future()

    def listen(event: dict) -> None:
        if event["type"] == "job_update" and event["data"]["status"] == "pending" and not created.done():
            created.set_result(event)

    stop = system.bus.listen(listen)
    try:
        user.find(marker="generate").click()
        await asyncio.wait_for(created, 10)
    finally:
        stop()
    (record,), _ = system.store.list()
    assert (record.job.video_model, record.job.video_duration, record.job.image_model) == ("gen4.5", 7, "promptreel-scene-1")
    await system.jobs.cancel(record.job.id)


async def test_a_model_found_missing_is_greyed_in_the_open_form_at_once(studio: tuple[User, System]):
    user, system = studio
    await user.open("/")
    image_model = element(user, "image-model")
    assert "disable" not in options(image_model)["gpt-image-1-mini"]
    reason = "OpenAI answered that the model does not exist (404 model_not_found: gone)"
    await asyncio.to_thread(system.providers.model_missing, "gpt-image-1-mini", reason)  # as a job's thread learns it
    await asyncio.sleep(0)  # the loop runs the callback the registry's listener scheduled
    option = options(image_model)["gpt-image-1-mini"]
    assert option["disable"] and option["reason"] == reason
