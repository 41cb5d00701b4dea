"""A batch cancelled half-way, and an image-only job animated, with providers whose timing the test
controls (tests/support/gated_providers.py): the cancel lands exactly when one job is completed, one
is in its video step, one in its image step and one still queued. One real System on SQLite, run as
`serve` runs it; the HTTP routes on top are in tests/api/test_batches.py."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from backend.errors import JobNotAnimatable
from backend.jobs.request import AnimateRequest, GenerateRequest, VariantsRequest
from backend.store.models import StepKind
from backend.system import System
from tests.support.gated_providers import Call, GatedProviders, World, gated_settings

pytestmark = pytest.mark.timeout(120)

FLUX_SCHNELL = 0.003  # an image of black-forest-labs/flux-schnell (the catalog's price)
GEN4_TURBO_5S = 0.25  # a 5 s gen4_turbo video


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[System, World]]:
    settings = gated_settings(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'jobs.db'}",
        PROMPTREEL_REMOTE_CONCURRENCY=1,  # one image and one video at a time: the others wait in the queue
    )
    world = World()
    system = System(settings)
    system.providers = system.pipeline.providers = system.jobs.providers = GatedProviders(settings, world, "P0")
    await system.start()
    yield system, world
    await system.stop()


async def parked(world: World, job_id: str, kind: StepKind) -> Call:
    """The provider call of `job_id`'s `kind` step, once it waits for the test's say."""
    while True:
        world.changed.clear()
        for call in world.calls:
            if call.job_id == job_id and call.kind is kind and call.parked:
                return call
        await asyncio.wait_for(world.changed.wait(), 30)


def ended(system: System, job_id: str) -> asyncio.Event:
    """Set when the job's last event (job_completed, job_failed, or a cancelled job_update) is published."""
    done = asyncio.Event()

    def hear(event: dict) -> None:
        if event["jobId"] == job_id and (
            event["type"] in ("job_completed", "job_failed") or event["data"].get("status") == "cancelled"
        ):
            done.set()

    system.jobs.listen(hear)
    return done


def png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def flux_request(**settings: object) -> dict:
    return {"prompt": "a harbour at night", "provider": "flux1", "settings": {"videoProvider": "runway", **settings}}


async def test_a_batch_cancelled_half_way(gated: tuple[System, World]):
    system, world = gated
    batch = await system.jobs.create_batch(VariantsRequest.model_validate({**flux_request(seed=10), "count": 4}))
    first, second, third, fourth = (record.job.id for record in batch.jobs)
    first_done = ended(system, first)

    (await parked(world, first, StepKind.IMAGE)).send("complete")
    (await parked(world, first, StepKind.VIDEO)).send("complete")
    await asyncio.wait_for(first_done.wait(), 30)
    (await parked(world, second, StepKind.IMAGE)).send("complete")
    await parked(world, second, StepKind.VIDEO)
    await parked(world, third, StepKind.IMAGE)
    statuses = {record.job.id: record.job.status for record in system.jobs.batch(batch.batch.id).jobs}
    assert statuses == {first: "completed", second: "generating_video", third: "generating_image", fourth: "pending"}

    answer = await system.jobs.cancel_batch(batch.batch.id)
    assert [record.job.status for record in answer.jobs] == ["completed", "cancelled", "cancelled", "cancelled"]
    assert world.calls == [] and world.violations == []  # every provider call stopped, none ran twice
    jobs = {record.job.id: record for record in answer.jobs}
    assert jobs[first].job.total_cost == FLUX_SCHNELL + GEN4_TURBO_5S and jobs[first].job.video_path
    assert jobs[second].job.total_cost == FLUX_SCHNELL  # its image was made and paid; the video was stopped
    assert jobs[second].step(StepKind.IMAGE).status == "completed" and jobs[second].step(StepKind.VIDEO).status == "cancelled"
    assert jobs[third].job.total_cost == 0 and jobs[fourth].job.total_cost == 0
    assert [record.job.seed for record in answer.jobs] == [10, 11, 12, 13]
    assert answer.jobs == (await system.jobs.cancel_batch(batch.batch.id)).jobs  # nothing left to cancel: nothing changes


async def test_an_image_only_job_stops_after_its_image_and_is_animated_as_a_new_job(gated: tuple[System, World]):
    system, world = gated
    record = await system.jobs.create(GenerateRequest.model_validate(flux_request(imageOnly=True, seed=5)))
    job_id = record.job.id
    assert [step.kind for step in record.steps] == ["image_generation"]
    assert system.jobs.estimate(GenerateRequest.model_validate(flux_request(imageOnly=True)))["total"] == FLUX_SCHNELL
    done = ended(system, job_id)
    call = await parked(world, job_id, StepKind.IMAGE)
    with pytest.raises(JobNotAnimatable, match="it is generating_image, not completed"):
        await system.jobs.animate(job_id, AnimateRequest())
    call.send("complete")
    await asyncio.wait_for(done.wait(), 30)
    finished = system.jobs.get(job_id)
    assert finished.job.status == "completed" and finished.job.video_path is None and finished.job.total_cost == FLUX_SCHNELL
    assert [(step.kind, step.status) for step in finished.steps] == [("image_generation", "completed")]

    # A provider may answer with more pixels than the size asked for (it was checked against the media limits then).
    (system.media.root / job_id / "image.png").write_bytes(png_of(1100, 1100))
    animated = await system.jobs.animate(job_id, AnimateRequest.model_validate({"settings": {"videoDuration": 10}}))
    assert animated.job.extra["sourceJob"] == job_id and animated.job.video_duration == 10 and animated.job.seed == 5
    animated_done = ended(system, animated.job.id)
    (await parked(world, animated.job.id, StepKind.VIDEO)).send("complete")  # no image call: the image is taken
    await asyncio.wait_for(animated_done.wait(), 30)
    result = system.jobs.get(animated.job.id).job
    assert result.error is None
    with Image.open(system.media.root / animated.job.id / "image.png") as taken:
        assert taken.size == (1024, 1024)
    assert result.status == "completed" and result.image_cost == 0 and result.video_cost == 2 * GEN4_TURBO_5S
    assert system.jobs.get(job_id) == finished  # finished is final: the image-only job did not change
    with pytest.raises(JobNotAnimatable, match=r"not made with settings\.imageOnly"):
        await system.jobs.animate(animated.job.id, AnimateRequest())
