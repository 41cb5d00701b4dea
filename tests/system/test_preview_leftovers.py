"""Live previews that outlive their step: a frame that Pillow cannot decode is skipped (the preview
task goes on), a preview left by a process that stopped mid-step goes when the step resumed elsewhere
ends, and GET /api/v1/jobs/{id}/preview answers 404 PREVIEW_NOT_FOUND unless a step runs, whatever
file is left. Real Systems on SQLite with the gated providers (tests/support/gated_providers.py), and
a real server for the route."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from backend.jobs.pipeline import StepRun
from backend.jobs.request import GenerateRequest
from backend.settings import Settings
from backend.store.models import StepKind
from backend.system import System
from tests.support.gated_providers import GatedProviders, World, gated_settings
from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import EventStream
from tests.system.test_batch_cancel import ended, flux_request, parked

pytestmark = pytest.mark.timeout(120)


def settings_in(tmp_path: Path) -> Settings:
    return gated_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'jobs.db'}")


async def started(settings: Settings, world: World, process: str) -> System:
    system = System(settings)
    system.providers = system.pipeline.providers = system.jobs.providers = GatedProviders(settings, world, process)
    await system.start()
    return system


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def malformed_png() -> bytes:
    """A PNG whose header reads well but whose second image-data chunk has a broken type: Pillow opens
    it, then raises SyntaxError ("broken PNG file") while decoding it."""
    pixels = zlib.compress(b"".join(b"\x00" + bytes(64 * 3) for _ in range(64)))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    broken = struct.pack(">I", len(pixels) - 10) + b"ID\x00T" + pixels[10:] + bytes(4)
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", pixels[:10]) + broken + chunk(b"IEND", b"")


async def test_a_malformed_frame_is_skipped_and_the_next_one_kept(tmp_path: Path):
    world = World()
    system = await started(settings_in(tmp_path), world, "P0")
    try:
        job_id = (await system.jobs.create(GenerateRequest.model_validate(flux_request()))).job.id
        call = await parked(world, job_id, StepKind.IMAGE)  # the step runs: previews may come
        run = StepRun(system.pipeline, job_id, StepKind.IMAGE, "flux1", 0, None)
        run.preview(malformed_png())
        assert run.previewer is not None
        await asyncio.wait([run.previewer])
        assert run.previewer.exception() is None and run.previews == 0  # skipped; the task ended as it should
        run.preview(jpeg())
        await asyncio.wait([run.previewer])
        assert run.previews == 1 and system.media.read_preview(job_id) is not None
        await system.pipeline._end_previews(run)
        call.send("complete")
    finally:
        await system.stop()


async def test_a_preview_left_by_a_stopped_process_goes_when_the_resumed_step_ends(tmp_path: Path):
    settings, world = settings_in(tmp_path), World()
    first = await started(settings, world, "P0")
    try:
        job_id = (await first.jobs.create(GenerateRequest.model_validate(flux_request()))).job.id
        await parked(world, job_id, StepKind.IMAGE)
        first.media.write_preview(job_id, jpeg())  # the frame it showed when it stopped
    finally:
        await first.stop()  # interrupted mid-step, as a crash leaves it: the next start resumes it
    second = await started(settings, world, "P1")
    try:
        assert second.media.read_preview(job_id) is not None
        (await parked(world, job_id, StepKind.IMAGE)).send("complete")  # the resumed image step ends
        video = await parked(world, job_id, StepKind.VIDEO)
        assert second.media.read_preview(job_id) is None
        done = ended(second, job_id)
        video.send("complete")
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await second.stop()


async def test_a_leftover_preview_answers_404_once_no_step_runs(server: Server, api: httpx.Client, events: EventStream):
    job = api.post("/api/v1/generate", json=local_job("a leftover frame", imageOnly=True)).json()
    await events.until(lambda event: event.get("jobId") == job["id"] and event["type"] == "job_completed")
    # What a worker that crashed mid-step (or was replaced by another) leaves in the job's media.
    (server.data_dir / "media" / job["id"] / "preview.jpg").write_bytes(jpeg())
    answer = api.get(f"/api/v1/jobs/{job['id']}/preview")
    assert answer.status_code == 404 and answer.json()["code"] == "PREVIEW_NOT_FOUND", answer.text
    assert answer.json()["details"]["status"] == "completed"


async def test_a_preview_left_by_a_stopped_process_goes_when_the_resumed_job_fails_before_its_step(tmp_path: Path):
    settings, world = settings_in(tmp_path), World()
    first = await started(settings, world, "P0")
    try:
        job_id = (await first.jobs.create(GenerateRequest.model_validate(flux_request()))).job.id
        (await parked(world, job_id, StepKind.IMAGE)).send("complete")
        await parked(world, job_id, StepKind.VIDEO)
        first.media.write_preview(job_id, jpeg())
    finally:
        await first.stop()
    (first.media.root / job_id / "image.png").unlink()  # lost meanwhile: the resumed job fails before its video step
    second = System(settings)
    second.providers = second.pipeline.providers = second.jobs.providers = GatedProviders(settings, world, "P1")
    done = ended(second, job_id)
    await second.start()
    try:
        await asyncio.wait_for(done.wait(), 30)
        assert second.jobs.get(job_id).job.status == "failed"
        assert second.media.read_preview(job_id) is None
    finally:
        await second.stop()
