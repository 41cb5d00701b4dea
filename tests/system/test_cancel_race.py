"""A cancel that answered cancelled stays cancelled (issue 12): finished is final, whichever
writer comes second, and a cancel on one instance stops the job where it runs.

In one process, two Systems on one store stand for two instances: `owner` runs the job, `other`
answers the DELETE. A fake video provider (priced as Runway) is gated by events, and a wrapper
around the media write holds the owner exactly while it stores its last step's result, so both
orders are forced, not hoped for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.errors import JobNotCancellable
from backend.providers.base import VideoRequest, VideoResult
from backend.settings import Settings
from backend.store.jobs import JobFinished
from backend.store.models import Job, JobStatus, StepKind
from backend.system import System
from tests.fakes import FakeReplicate, FakeRunway, provider_env
from tests.fakes.base import Hold
from tests.support.cluster import Cluster
from tests.support.server import Server
from tests.support.streams import EventStream, ends_job, open_stream

pytestmark = pytest.mark.timeout(120)

RUNWAY_PRICE_5S = 0.25  # gen4_turbo: 5 credits a second at $0.01 (backend/providers/pricing.py)
FLUX_SCHNELL_PRICE = 0.003  # black-forest-labs/flux-schnell, an image (backend/providers/pricing.py)


class GatedVideo:
    """A video provider that starts a remote task, then waits for `finish` (or a cancel)."""

    name = "runway"

    def __init__(self, remote_id: str | None = None) -> None:
        self.remote_id = remote_id
        self.started = asyncio.Event()
        self.tick = asyncio.Event()  # set: report one more progress tick, then wait on
        self.finish = asyncio.Event()
        self.cancelled_remote: list[str] = []

    def model(self) -> str:
        return "gen4_turbo"

    async def animate(self, request: VideoRequest, ctx: Any) -> VideoResult:
        if self.remote_id:
            await ctx.save_remote_id(self.remote_id)
        ctx.progress(0.5, "half way")
        self.started.set()
        finish, tick = asyncio.ensure_future(self.finish.wait()), asyncio.ensure_future(self.tick.wait())
        try:
            await asyncio.wait({finish, tick}, return_when=asyncio.FIRST_COMPLETED)
            if self.tick.is_set():
                ctx.progress(0.7)
            await finish
        finally:
            finish.cancel()
            tick.cancel()
        request.output_path.write_bytes(b"\x00\x00\x00\x18ftypmp42 a video")
        return VideoResult(model="gen4_turbo", width=1280, height=720)

    async def cancel_remote(self, remote_id: str) -> None:
        self.cancelled_remote.append(remote_id)


class HeldWrite:
    """Wraps one of the media store's writes (the video's by default): it signals `writing`, then
    waits for `go`."""

    def __init__(self, system: System, method: str = "commit_video") -> None:
        self.writing = threading.Event()
        self.go = threading.Event()
        original = getattr(system.media, method)

        def held(*args: Any) -> str:
            self.writing.set()
            assert self.go.wait(60), "the test never let the write go on"
            return original(*args)

        setattr(system.media, method, held)


def settings(data_dir: Path, database_url: str, **more: str) -> Settings:
    # Heartbeats far apart: only what is under test (the store, the events) can stop the owner.
    return Settings(
        PROMPTREEL_DATA_DIR=data_dir,
        DATABASE_URL=database_url,
        PROMPTREEL_HEARTBEAT_SECONDS="60",
        PROMPTREEL_STALLED_AFTER_SECONDS="120",
        **more,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def instances(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[System, System, GatedVideo]]:
    """The owner and another instance on one store (one media folder), each started as `serve` does."""
    owner, other = System(settings(tmp_path / "data", database_url)), System(settings(tmp_path / "data", database_url))
    await owner.start()
    await other.start()
    video = GatedVideo(remote_id="task-1")
    owner.providers.video = lambda name: video  # type: ignore[method-assign]
    yield owner, other, video
    for system in (owner, other):
        await system.stop()


def submit(owner: System, job_id: str, provider: str = "local", video_provider: str = "runway") -> asyncio.Task[None]:
    """A local image, then the gated Runway-priced video, run by `owner` (stored as its claim)."""
    owner.store.create(
        Job(
            id=job_id,
            prompt="a river filmed until someone cancels it",
            provider=provider,
            video_provider=video_provider,
            image_size="1024x1024",
            video_duration=5,
            quality="standard",
            seed=3,
            worker_id=owner.runner.worker_id,
        )
    )
    task = owner.runner.submit(job_id, claimed=True)
    assert task is not None
    return task


async def ended(task: asyncio.Task[None], timeout: float) -> None:
    """Wait for the owner's run to end, however it ends (stopped by a cancel: CancelledError)."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    assert done, f"the owner's task still runs after {timeout} s"


def stored_event_types(system: System, job_id: str) -> list[str]:
    return [event["type"] for event in system.event_log.after(job_id, 0, limit=10_000)]


async def test_cancel_lands_while_the_owner_stores_its_last_result(instances):
    """Cancel first: the DELETE's answer stands; the late result is thrown away and still paid."""
    owner, other, video = instances
    held = HeldWrite(owner)
    task = submit(owner, "job_race_cancel1")
    await video.started.wait()
    video.finish.set()  # the provider answers: the owner now writes the video...
    await asyncio.to_thread(held.writing.wait, 60)  # ...and is held right there

    answer = await other.jobs.cancel("job_race_cancel1")  # the DELETE on the other instance
    assert answer.job.status == "cancelled"
    held.go.set()
    await ended(task, 30)

    record = owner.store.get("job_race_cancel1")
    assert record.job.status == "cancelled", record.job
    assert record.job.video_path is None and not (owner.media.root / "job_race_cancel1" / "video.mp4").exists()
    assert record.job.video_cost == RUNWAY_PRICE_5S and record.job.total_cost == RUNWAY_PRICE_5S  # the local image is free
    video_step = record.step(StepKind.VIDEO)
    assert video_step.status == "cancelled"
    assert any("discarded; the provider charged $0.2500" in line for line in video_step.log), video_step.log
    assert any("stopped here: the job was cancelled by another process" in line for line in video_step.log), video_step.log
    assert video.cancelled_remote == ["task-1"]
    types = stored_event_types(owner, "job_race_cancel1")
    assert "job_completed" not in types and types.count("job_update") >= 1
    with pytest.raises(JobNotCancellable):
        await other.jobs.cancel("job_race_cancel1")


async def test_remove_lands_while_the_owner_stores_its_last_result(instances):
    """A remove on another instance (cancel, then delete row and files) while the owner writes its
    result: the owner's late file is taken away too, and no end is announced for a removed job.
    (Found by tests/system/test_lifecycle_fuzz.py: the owner's write met a missing row, and its file stayed.)"""
    owner, other, _ = instances
    held = HeldWrite(owner, "write_image")
    task = submit(owner, "job_race_remove1")
    await asyncio.to_thread(held.writing.wait, 60)  # the local image is drawn: the owner is about to write it

    await other.jobs.remove("job_race_remove1")  # the other instance cancels and deletes it
    assert owner.store.get("job_race_remove1") is None
    held.go.set()
    await ended(task, 30)

    assert not (owner.media.root / "job_race_remove1").exists(), list((owner.media.root / "job_race_remove1").rglob("*"))
    assert owner.store.get("job_race_remove1") is None and stored_event_types(owner, "job_race_remove1") == []


async def test_owner_stores_its_last_result_before_the_cancel(instances):
    """Completion first: the step's result and the job's completion are one transaction, so a
    cancel right after it (here, at the moment its events go out) finds the job completed."""
    owner, other, video = instances
    attempts: list[BaseException | str] = []
    announce = owner.bus.announce

    def cancel_as_the_step_ends(events: list[dict[str, Any]]) -> None:
        announce(events)
        if any(
            e["type"] == "step_update" and e["data"]["id"] == "video_generation" and e["data"]["status"] == "completed"
            for e in events
        ):
            try:  # the other instance records a cancel the moment the video step's end is out
                attempts.append(other.pipeline.mark_cancelled("job_race_finish1").status)
            except JobFinished as lost:
                attempts.append(lost)

    owner.bus.announce = cancel_as_the_step_ends  # type: ignore[method-assign]
    task = submit(owner, "job_race_finish1")
    await video.started.wait()
    video.finish.set()
    await ended(task, 30)

    assert len(attempts) == 1 and isinstance(attempts[0], JobFinished) and attempts[0].status == "completed", attempts
    record = owner.store.get("job_race_finish1")
    assert (record.job.status, record.job.progress, record.job.video_cost) == ("completed", 100, RUNWAY_PRICE_5S)
    assert stored_event_types(owner, "job_race_finish1")[-1] == "job_completed"
    with pytest.raises(JobNotCancellable) as refused:
        await other.jobs.cancel("job_race_finish1")  # the DELETE: 409
    assert refused.value.code == "JOB_NOT_CANCELLABLE"
    assert owner.store.get("job_race_finish1").job.status == "completed"


async def test_cancel_on_another_instance_stops_the_owner_promptly(instances, database_url):
    """No task engine, heartbeats a minute apart: the owner stops on the cancel's event
    (PostgreSQL), or at its next write, which finds the job finished (SQLite)."""
    owner, other, video = instances
    task = submit(owner, "job_race_reach01")
    await video.started.wait()
    answer = await other.jobs.cancel("job_race_reach01")
    assert answer.job.status == "cancelled"
    if database_url.startswith("sqlite"):  # no events cross processes: the owner's next write finds out
        assert not task.done()
        video.finish.set()
    await ended(task, 5)
    record = owner.store.get("job_race_reach01")
    assert record.job.status == "cancelled" and record.job.video_path is None
    assert "job_completed" not in stored_event_types(owner, "job_race_reach01")
    assert any("stopped here: the job was cancelled by another process" in line for line in record.step(StepKind.VIDEO).log)
    assert video.cancelled_remote == ["task-1"]


async def test_the_owners_next_progress_write_stops_it(tmp_path: Path):
    """Told by nobody (SQLite, no heartbeat in time), the owner stops at its next write: the
    progress tick finds the job finished, is dropped, and the run stops there."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    owner, other = System(settings(tmp_path / "data", url)), System(settings(tmp_path / "data", url))
    await owner.start()
    await other.start()
    try:
        video = GatedVideo(remote_id="task-2")
        owner.providers.video = lambda name: video  # type: ignore[method-assign]
        task = submit(owner, "job_race_tick001")
        await video.started.wait()
        assert (await other.jobs.cancel("job_race_tick001")).job.status == "cancelled"
        assert not task.done()
        video.tick.set()  # the render goes on and reports 70%
        await ended(task, 5)
        record = owner.store.get("job_race_tick001")
        assert record.job.status == "cancelled" and record.step(StepKind.VIDEO).progress < 70
        assert any("stopped here: the job was cancelled by another process" in line for line in record.step(StepKind.VIDEO).log)
        assert video.cancelled_remote == ["task-2"] and not video.finish.is_set()
    finally:
        for system in (owner, other):
            await system.stop()


async def test_cancel_in_the_same_process_while_the_result_is_stored(tmp_path: Path):
    """One instance: its own cancel interrupts the write of the result; the result is thrown
    away and its charge recorded before the job says cancelled."""
    system = System(settings(tmp_path / "data", f"sqlite:///{tmp_path / 'one.db'}"))
    await system.start()
    try:
        video = GatedVideo()
        system.providers.video = lambda name: video  # type: ignore[method-assign]
        held = HeldWrite(system)
        task = submit(system, "job_race_single1")
        await video.started.wait()
        video.finish.set()
        await asyncio.to_thread(held.writing.wait, 60)
        cancel = asyncio.create_task(system.jobs.cancel("job_race_single1"))
        await asyncio.sleep(0)  # let the cancel reach the task (one loop turn, not a time)
        held.go.set()
        answer = await asyncio.wait_for(cancel, 30)
        await asyncio.gather(task, return_exceptions=True)
        assert answer.job.status == "cancelled"
        record = system.store.get("job_race_single1")
        assert (record.job.status, record.job.video_cost, record.job.video_path) == ("cancelled", RUNWAY_PRICE_5S, None)
        assert not (system.media.root / "job_race_single1" / "video.mp4").exists()
        assert any("discarded; the provider charged $0.2500" in line for line in record.step(StepKind.VIDEO).log)
        assert JobStatus(record.job.status).finished
    finally:
        await system.stop()


# -- a cancel while the output of a remote task that succeeded downloads -------------------------


def assert_charged_and_discarded(system: System, job_id: str, kind: StepKind, price: float) -> list[str]:
    """The job is cancelled, its step's output is nowhere, and the provider's charge for it is in
    the cost once, with one log line: the step's log."""
    record = system.store.get(job_id)
    assert record.job.status == "cancelled", record.job
    cost, path = (
        (record.job.image_cost, record.job.image_path)
        if kind is StepKind.IMAGE
        else (record.job.video_cost, record.job.video_path)
    )
    assert cost == price and record.job.total_cost == price and path is None, record.job
    prefix = "image" if kind is StepKind.IMAGE else "video"
    assert [file.name for file in (system.media.root / job_id).glob(f"{prefix}*")] == []  # no output, no partial file
    log = record.step(kind).log
    assert len([line for line in log if f"charged ${price:.4f}" in line]) == 1, log
    return log


@pytest.mark.parametrize(
    ("provider", "video_provider", "kind", "price"),
    [("local", "runway", StepKind.VIDEO, RUNWAY_PRICE_5S), ("flux1", "local", StepKind.IMAGE, FLUX_SCHNELL_PRICE)],
    ids=["runway", "replicate"],
)
async def test_a_cancel_during_the_download_still_records_the_charge(
    tmp_path: Path, provider: str, video_provider: str, kind: StepKind, price: float
):
    """The remote task has succeeded (the provider charged for it) and its output is held at the
    fake's file server when the job is cancelled here: the cancel stops the download, so the
    provider's call never returns; the pipeline knew of the success all the same."""
    with FakeRunway() as runway, FakeReplicate() as replicate:
        fake, route = (runway, "output") if video_provider == "runway" else (replicate, "files")
        download = Hold()
        fake.script(route, download)
        env = {**provider_env(runway=runway, replicate=replicate), "PROMPTREEL_POLL_INTERVAL": "0.05"}
        system = System(settings(tmp_path / "data", f"sqlite:///{tmp_path / 'one.db'}", **env))
        await system.start()
        try:
            task = submit(system, f"job_fetch_{provider}_{video_provider}", provider, video_provider)
            await asyncio.to_thread(download.reached.wait, 60)
            answer = await system.jobs.cancel(f"job_fetch_{provider}_{video_provider}")
            assert answer.job.status == "cancelled"
            await ended(task, 30)
            log = assert_charged_and_discarded(system, f"job_fetch_{provider}_{video_provider}", kind, price)
            assert any(
                f"the provider had finished this step (charged ${price:.4f}); its result was thrown away" in line for line in log
            ), log
        finally:
            download.release()
            await system.stop()


async def test_a_cancel_on_another_instance_during_the_download_still_records_the_charge(tmp_path: Path, database_url: str):
    """The same with the cancel on another instance: on PostgreSQL its event stops the owner's
    download; on SQLite nobody tells the owner, which finds out as it stores the video and throws
    it away. Either way the video is paid for once and stored nowhere."""
    with FakeRunway() as runway:
        download = Hold()
        runway.script("output", download)
        env = {**provider_env(runway=runway), "PROMPTREEL_POLL_INTERVAL": "0.05"}
        owner, other = (
            System(settings(tmp_path / "data", database_url, **env)),
            System(settings(tmp_path / "data", database_url, **env)),
        )
        await owner.start()
        await other.start()
        try:
            task = submit(owner, "job_fetch_elsewhere1")
            await asyncio.to_thread(download.reached.wait, 60)
            assert (await other.jobs.cancel("job_fetch_elsewhere1")).job.status == "cancelled"
            if database_url.startswith("sqlite"):
                download.release()
            await ended(task, 30)
            log = assert_charged_and_discarded(owner, "job_fetch_elsewhere1", StepKind.VIDEO, RUNWAY_PRICE_5S)
            assert any("stopped here: the job was cancelled by another process" in line for line in log), log
        finally:
            download.release()
            for system in (owner, other):
                await system.stop()


# -- real servers on one PostgreSQL: without a task engine, and with procrastinate workers --------


def runway_job(prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "provider": "local", "settings": {"videoProvider": "runway", "videoDuration": 5, "seed": 5}}


async def until_held(stream: EventStream, runway: FakeRunway, job_id: str, prompt: str) -> str:
    """The job's Runway task, once the job's video step reports its first progress (the task is held)."""

    def video_runs(e: dict[str, Any]) -> bool:
        return (
            e.get("jobId") == job_id
            and e["type"] == "step_update"
            and e["data"]["id"] == "video_generation"
            and e["data"]["progress"] > 0
        )

    if not any(video_runs(event) for event in stream.events):
        await stream.until(video_runs)
    [task] = [task for task in runway.tasks.values() if task.body.get("promptText") == prompt]
    return task.id


async def assert_cancel_stands(
    api_a: httpx.Client, api_b: httpx.Client, runway: FakeRunway, stream: EventStream, prompt: str
) -> None:
    """Cancel on B while A (or a worker) waits on a held Runway task: B's answer stands, the owner
    stops and cancels the remote task, and letting the task finish afterwards changes nothing."""
    job = api_a.post("/api/v1/generate", json=runway_job(prompt)).json()
    task_id = await until_held(stream, runway, job["id"], prompt)
    answer = api_b.delete(f"/api/v1/jobs/{job['id']}")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled", answer.text
    await runway.until_request("DELETE", f"/v1/tasks/{task_id}", timeout=10)  # the owner heard it and stopped
    final = await until_logged(api_a, job["id"], f"remote task {task_id} cancelled at runway")
    runway.release(task_id)  # too late: nobody polls it any more
    assert final["status"] == "cancelled" and final["video_url"] is None, final
    events = api_b.get(f"/api/v1/jobs/{job['id']}/events").json()
    assert "job_completed" not in [event["type"] for event in events]
    assert api_b.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "cancelled"


async def until_logged(api: httpx.Client, job_id: str, text: str, timeout: float = 10) -> dict[str, Any]:
    """The job as the server reports it once its video step's log has `text` (no event tells of
    a log line written after the end: the server's state is polled)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        if any(text in line for line in job["steps"][1]["log"]):
            return job
        assert asyncio.get_running_loop().time() < deadline, f"no {text!r} in the log: {job['steps'][1]['log']}"
        await asyncio.sleep(0.05)


async def assert_cancel_stands_while_the_result_downloads(
    api_a: httpx.Client, api_b: httpx.Client, runway: FakeRunway, stream: EventStream, prompt: str
) -> None:
    """The Runway task has succeeded and the owner is fetching its video (held at the fake's CDN)
    when B's cancel lands: the fetch is abandoned, nothing is stored, the cancel stands."""
    download = Hold()
    runway.script("output", download)
    job = api_a.post("/api/v1/generate", json=runway_job(prompt)).json()
    await asyncio.to_thread(download.reached.wait, 60)
    answer = api_b.delete(f"/api/v1/jobs/{job['id']}")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled", answer.text
    final = await until_logged(api_a, job["id"], "cancelled at runway")
    download.release()  # the video arrives now, for nobody
    assert final["status"] == "cancelled" and final["video_url"] is None, final
    assert "job_completed" not in [event["type"] for event in api_b.get(f"/api/v1/jobs/{job['id']}/events").json()]


async def assert_completion_stands(api_a: httpx.Client, api_b: httpx.Client, stream: EventStream, prompt: str) -> None:
    job = api_a.post("/api/v1/generate", json=runway_job(prompt)).json()
    end = await stream.until(ends_job(job["id"]))
    assert end["type"] == "job_completed", end
    refused = api_b.delete(f"/api/v1/jobs/{job['id']}")
    assert refused.status_code == 409 and refused.json()["code"] == "JOB_NOT_CANCELLABLE"
    assert api_a.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "completed"


async def test_two_instances_without_a_task_engine(tmp_path: Path, postgres_url: str):
    """A runs the jobs it creates; a DELETE on B reaches A's task through the cancel's event
    (heartbeats a minute apart here: they cannot be what stops it)."""
    with FakeRunway() as runway:
        env = {
            "DATABASE_URL": postgres_url,
            "PROMPTREEL_HEARTBEAT_SECONDS": "60",
            "PROMPTREEL_STALLED_AFTER_SECONDS": "120",
            "PROMPTREEL_POLL_INTERVAL": "0.05",
            **provider_env(runway=runway),
        }
        a = Server(tmp_path / "a", **env).start()
        b = Server(tmp_path / "b", **env).start()
        stream = await open_stream(a)
        try:
            with a.client() as api_a, b.client() as api_b:
                runway.outcomes.append("hold")
                await assert_cancel_stands(api_a, api_b, runway, stream, "a river filmed on A, cancelled on B")
                await assert_cancel_stands_while_the_result_downloads(
                    api_a, api_b, runway, stream, "a river fetched by A, cancelled on B"
                )
                await assert_completion_stands(api_a, api_b, stream, "a river filmed on A, finished before B's cancel")
        finally:
            await stream.connection.close()
            b.stop()
            a.stop()


async def test_procrastinate_workers(tmp_path: Path, postgres_url: str):
    with FakeRunway() as runway:
        cluster = Cluster(
            tmp_path, postgres_url, instances=2, workers=1, PROMPTREEL_POLL_INTERVAL="0.05", **provider_env(runway=runway)
        ).start()
        a, b = cluster.instances
        stream = await open_stream(a)
        try:
            with a.client() as api_a, b.client() as api_b:
                runway.outcomes.append("hold")
                await assert_cancel_stands(api_a, api_b, runway, stream, "a tram filmed by a worker, cancelled on B")
                await assert_cancel_stands_while_the_result_downloads(
                    api_a, api_b, runway, stream, "a tram fetched by a worker, cancelled on B"
                )
                await assert_completion_stands(api_a, api_b, stream, "a tram filmed by a worker, finished before B's cancel")
        finally:
            await stream.connection.close()
            cluster.stop()
