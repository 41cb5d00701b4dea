"""An animate job keeps the image it animates: the image-only job it continues is removed (DELETE), or
its media expire (retention), while the animate job waits in the queue, and the animate job still
completes with that image. The test holds the queue's slot for the animate job's image step, so the
job is pending, deterministically, until the test lets it go. One real System on SQLite with the
gated providers (tests/support/gated_providers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from PIL import Image

from backend.errors import JobNotAnimatable, QueueFull
from backend.jobs.request import UPLOAD_PROVIDER, AnimateRequest, GenerateRequest
from backend.media.retention import expire_media
from backend.store.models import StepKind, utcnow
from backend.system import System
from tests.support.gated_providers import GatedProviders, World, gated_settings
from tests.system.test_batch_cancel import ended, flux_request, parked, png_of

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[System, World]]:
    settings = gated_settings(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'jobs.db'}",
        PROMPTREEL_REMOTE_CONCURRENCY=1,  # one image step of each provider at a time: the test holds the upload's
    )
    world = World()
    system = System(settings)
    system.providers = system.pipeline.providers = system.jobs.providers = GatedProviders(settings, world, "P0")
    await system.start()
    yield system, world
    await system.stop()


async def image_only_job(system: System, world: World) -> str:
    """A completed image-only job whose image is a 600x400 picture."""
    record = await system.jobs.create(GenerateRequest.model_validate(flux_request(imageOnly=True, seed=5)))
    job_id = record.job.id
    done = ended(system, job_id)
    (await parked(world, job_id, StepKind.IMAGE)).send("complete")
    await asyncio.wait_for(done.wait(), 30)
    (system.media.root / job_id / "image.png").write_bytes(png_of(600, 400))  # a picture told apart by its shape
    return job_id


async def animated_while_held(system: System, world: World, take_away: Callable[[str], Awaitable[object]]) -> None:
    source = await image_only_job(system, world)
    async with system.runner.slot(StepKind.IMAGE, UPLOAD_PROVIDER):  # the animate job stays pending meanwhile
        animated = await system.jobs.animate(source, AnimateRequest())
        animated_id = animated.job.id
        done = ended(system, animated_id)
        await take_away(source)
        assert system.jobs.get(animated_id).job.status == "pending"
        assert not (system.media.root / source / "image.png").exists()
    # Its image step takes the picture; then the video call waits for the test, unless the job failed.
    video_call = asyncio.ensure_future(parked(world, animated_id, StepKind.VIDEO))
    failed = asyncio.ensure_future(done.wait())
    await asyncio.wait([video_call, failed], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    assert system.jobs.get(animated_id).job.error is None
    (await video_call).send("complete")
    await asyncio.wait_for(done.wait(), 30)
    result = system.jobs.get(animated_id).job
    assert (result.status, result.error) == ("completed", None)
    assert result.extra["sourceJob"] == source
    with Image.open(system.media.root / animated_id / "image.png") as taken:
        assert taken.size == (1024, 1024)
        assert taken.getpixel((512, 512)) == (30, 90, 160)  # the source's picture, fitted by crop


async def test_the_image_only_job_deleted_while_its_animate_job_waits(gated: tuple[System, World]):
    system, world = gated

    async def delete(job_id: str) -> None:
        await system.jobs.remove(job_id)

    await animated_while_held(system, world, delete)


async def test_the_image_only_jobs_media_expired_while_its_animate_job_waits(gated: tuple[System, World]):
    system, world = gated

    async def expire(job_id: str) -> None:
        # Only the image-only job is finished: the pending animate job is not retention's to touch.
        assert await asyncio.to_thread(expire_media, system.store, system.media, utcnow()) == [job_id]

    await animated_while_held(system, world, expire)


async def test_an_animate_refused_leaves_no_copy_and_one_whose_image_is_gone_is_refused(gated: tuple[System, World]):
    system, world = gated
    source = await image_only_job(system, world)
    jobs_before = {path.name for path in system.media.root.iterdir()}
    system.jobs.max_queued_jobs = 0  # 503 QUEUE_FULL, after the copy was made
    with pytest.raises(QueueFull):
        await system.jobs.animate(source, AnimateRequest())
    assert {path.name for path in system.media.root.iterdir()} == jobs_before  # the copy went with the refusal
    system.jobs.max_queued_jobs = 10
    (system.media.root / source / "image.png").unlink()  # lost from the media store, the row says nothing of it
    with pytest.raises(JobNotAnimatable, match="its image is gone"):
        await system.jobs.animate(source, AnimateRequest())
    assert {path.name for path in system.media.root.iterdir()} == jobs_before
