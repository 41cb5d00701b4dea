"""Scale-out, end to end: two API instances and two `promptreel worker` processes on one real
PostgreSQL database, media in a real S3 emulator (moto server), providers faked over HTTP.

What an operator counts on: a job submitted on one instance is watched on another and run
by a worker; its files come from any instance; a worker killed mid-job does not lose it; a
cancel on any instance reaches the worker that runs the job and the provider's remote task.
"""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from typing import Any

import av
import pytest
from PIL import Image

from tests.fakes import FakeOpenAI, FakeRunway, provider_env
from tests.support.cluster import Cluster
from tests.support.jobs import local_job, unsigned
from tests.support.postgres import new_database
from tests.support.s3 import moto_server
from tests.support.streams import EventStream, ends_job, open_stream

pytestmark = pytest.mark.timeout(240)


class Setup:
    def __init__(self, cluster: Cluster, openai: FakeOpenAI, runway: FakeRunway, moto: Any, bucket: str):
        self.cluster = cluster
        self.a, self.b = cluster.instances
        self.openai = openai
        self.runway = runway
        self.moto = moto
        self.bucket = bucket


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("cluster")
    openai, runway = FakeOpenAI().start(), FakeRunway().start()
    try:
        with new_database() as database_url, moto_server(root) as moto:
            bucket = moto.new_bucket()
            env = {**moto.env(bucket), **provider_env(openai=openai, runway=runway), "PROMPTREEL_POLL_INTERVAL": "0.05"}
            cluster = Cluster(root, database_url, **env).start()
            try:
                yield Setup(cluster, openai, runway, moto, bucket)
            finally:
                cluster.stop()
    finally:
        openai.stop()
        runway.stop()


def remote_job(prompt: str) -> dict[str, Any]:
    """DALL-E 3 then Runway, on the fakes: a Runway task that a test may hold in RUNNING."""
    return {"prompt": prompt, "provider": "dalle3", "settings": {"videoProvider": "runway", "videoDuration": 5, "seed": 7}}


async def until_video_step_runs(stream: EventStream, job_id: str) -> dict[str, Any]:
    """The job's first video progress event, whether the stream read it already or not."""

    def video_runs(e: dict[str, Any]) -> bool:
        return (
            e.get("jobId") == job_id
            and e["type"] == "step_update"
            and e["data"]["id"] == "video_generation"
            and e["data"]["status"] == "running"
            and e["data"]["progress"] > 0
        )

    return next((event for event in stream.events if video_runs(event)), None) or await stream.until(video_runs)


def assert_in_order(events: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    mine = [event for event in events if event.get("jobId") == job_id]
    assert [event["seq"] for event in mine] == list(range(mine[0]["seq"], mine[0]["seq"] + len(mine)))
    return mine


async def test_job_from_a_watched_on_b_run_by_a_worker_downloaded_from_b(setup: Setup):
    on_b = await open_stream(setup.b)
    with setup.a.client() as api_a, setup.b.client() as api_b:
        job = api_a.post(
            "/api/v1/generate", json=local_job("a lighthouse on a cliff, seen from another host", videoProvider="local")
        ).json()
        end = await on_b.until(ends_job(job["id"]))
        assert end["type"] == "job_completed", end
        mine = assert_in_order(on_b.events, job["id"])
        assert mine[0]["seq"] == 1 and mine[0]["data"]["status"] == "pending"  # B heard even the creation on A
        assert end["data"]["video_url"].startswith(f"{setup.b.url}/api/v1/jobs/{job['id']}/download/video?expires=")

        image = api_b.get(f"/api/v1/jobs/{job['id']}/download/image")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)
        video = api_b.get(f"/api/v1/jobs/{job['id']}/download/video")
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(video.content)) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames == 120  # 5 s at 24 fps
        # The worker wrote to the bucket; no instance keeps media on its own disk.
        keys = setup.moto.keys(setup.bucket, f"promptreel/{job['id']}/")
        assert keys == [f"promptreel/{job['id']}/image.png", f"promptreel/{job['id']}/video.mp4"]
        for instance in setup.cluster.instances:
            assert not list((instance.data_dir / "media").glob(f"{job['id']}/*"))
        from_a, from_b = api_a.get(f"/api/v1/jobs/{job['id']}").json(), api_b.get(f"/api/v1/jobs/{job['id']}").json()
        assert from_b["image_url"].startswith(setup.b.url) and from_a["image_url"].startswith(setup.a.url)
        assert {**from_a, "image_url": None, "video_url": None} == {**from_b, "image_url": None, "video_url": None}
    await on_b.connection.close()


async def test_status_counts_the_whole_cluster(setup: Setup):
    """Four held jobs fill both workers (2 x 2); a fifth waits in the queue: every instance says so."""
    stream = await open_stream(setup.a)
    for _ in range(5):
        setup.runway.outcomes.append("hold")
    with setup.a.client() as api_a, setup.b.client() as api_b:
        jobs = [api_a.post("/api/v1/generate", json=remote_job(f"a held train number {index}")).json() for index in range(5)]
        for job in jobs[:4]:  # procrastinate hands out jobs in order
            await until_video_step_runs(stream, job["id"])
        for api in (api_a, api_b):
            status = api.get("/api/v1/status").json()
            assert (status["active_jobs"], status["queue_length"], status["workers_alive"]) == (4, 1, 2), status
        for job in jobs:
            assert api_b.delete(f"/api/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        status = api_a.get("/api/v1/status").json()
        assert (status["active_jobs"], status["queue_length"]) == (0, 0), status
    await stream.connection.close()


async def test_cancel_on_b_reaches_the_worker_and_the_remote_task(setup: Setup):
    on_a = await open_stream(setup.a)
    setup.runway.outcomes.append("hold")
    with setup.a.client() as api_a, setup.b.client() as api_b:
        job = api_a.post("/api/v1/generate", json=remote_job("a river filmed until someone cancels it")).json()
        await until_video_step_runs(on_a, job["id"])
        [task] = [task for task in setup.runway.tasks.values() if task.body.get("promptText") == job["prompt"]]
        worker = setup.cluster.worker_running(job["id"])

        cancelled = api_b.delete(f"/api/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        end = await on_a.until(ends_job(job["id"]))
        assert end["type"] == "job_update" and end["data"]["status"] == "cancelled"
        # The worker's coroutine stopped (procrastinate's abort) and cancelled the Runway task.
        assert len(setup.runway.seen("DELETE", f"/v1/tasks/{task.id}")) == 1 and task.status == "CANCELLED"
        video_log = api_a.get(f"/api/v1/jobs/{job['id']}").json()["steps"][1]["log"]
        assert any("cancelled at runway" in line for line in video_log), video_log
        assert setup.cluster.queued_procrastinate_jobs(job["id"]) <= 1  # the aborted one, as procrastinate ends it
        assert worker.process.poll() is None  # the worker lives on
        again = api_b.delete(f"/api/v1/jobs/{job['id']}")
        assert again.status_code == 409 and again.json()["code"] == "JOB_NOT_CANCELLABLE"
    await on_a.connection.close()


@pytest.mark.parametrize("video", ["local", "runway"])
async def test_worker_killed_mid_job_another_worker_finishes_it(setup: Setup, video: str):
    """SIGKILL: no goodbye, no released lease. The job is picked up once the worker is taken for
    dead (PROMPTREEL_STALLED_AFTER_SECONDS, 2 s here); a Runway task is polled again, not paid twice."""
    stream = await open_stream(setup.b)
    if video == "runway":
        setup.runway.outcomes.append("hold")
    request = (
        local_job("a windmill at dusk, across a worker crash", videoProvider="local")
        if video == "local"
        else remote_job("a tram at night, across a worker crash")
    )
    with setup.a.client() as api:
        job = api.post("/api/v1/generate", json=request).json()
        await until_video_step_runs(stream, job["id"])
        victim = setup.cluster.worker_running(job["id"])
        victim.stop(signal.SIGKILL)
        try:
            if video == "runway":
                [task] = [task for task in setup.runway.tasks.values() if task.body.get("promptText") == job["prompt"]]
                survivor_polls = len(setup.runway.seen("GET", f"/v1/tasks/{task.id}"))
                await setup.runway.until_request("GET", f"/v1/tasks/{task.id}", count=survivor_polls + 1)
                setup.runway.release(task.id)
            end = await stream.until(ends_job(job["id"]), timeout=90)
            assert end["type"] == "job_completed", end
            assert_in_order(stream.events, job["id"])
            final = api.get(f"/api/v1/jobs/{job['id']}").json()
            assert any("resumed after a restart" in line for line in final["steps"][1]["log"]), final["steps"][1]["log"]
            assert final["steps"][0]["status"] == "completed"
            if video == "runway":
                assert len([t for t in setup.runway.tasks.values() if t.body.get("promptText") == job["prompt"]]) == 1
                assert final["cost"]["videoGeneration"] == 0.25  # paid once
            assert setup.cluster.owner_pid(job["id"]) != victim.pid
        finally:
            victim.start()  # the next test has its two workers again
    await stream.connection.close()


async def test_client_reconnecting_to_another_instance_catches_up(setup: Setup):
    first = await open_stream(setup.b)
    watcher = await open_stream(setup.a)
    with setup.a.client() as api_a:
        job = api_a.post(
            "/api/v1/generate", json=local_job("a kite over dunes, watched with a flaky connection", videoProvider="local")
        ).json()
        await until_video_step_runs(first, job["id"])
        await first.connection.close()  # the connection to B drops mid-job
        seen = assert_in_order(first.events, job["id"])
        await watcher.until(ends_job(job["id"]))
        missed = api_a.get(f"/api/v1/jobs/{job['id']}/events", params={"after": seen[-1]["seq"]}).json()
        assert [event["seq"] for event in missed] == list(range(seen[-1]["seq"] + 1, seen[-1]["seq"] + 1 + len(missed)))
        assert missed[-1]["type"] == "job_completed"
        # Media URLs name the instance a client talks to; apart from that, B's part and A's rest are A's whole.
        # (Signatures are cut off: they may roll over to a new expiry between two reads.)
        on_a = [
            {
                **event,
                "data": {
                    k: v.replace(setup.b.url, setup.a.url) if isinstance(v, str) else v
                    for k, v in unsigned(event["data"]).items()
                },
            }
            for event in seen
        ]
        assert on_a + [{**e, "data": unsigned(e["data"])} for e in missed] == [
            {**e, "data": unsigned(e["data"])} for e in watcher.of_job(job["id"])
        ]
    await watcher.connection.close()


@pytest.mark.browser
def test_studio_on_b_shows_a_job_made_on_a_live(setup: Setup, browser):
    """A studio tab is one more listener of its instance's bus: it sees the cluster's events, and
    its thumbnail and downloads come from the bucket."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(setup.b.url + "/")
        page.wait_for_function("() => window.did_handshake === true")  # the tab is live
        with setup.a.client() as api_a:
            job = api_a.post(
                "/api/v1/generate", json=local_job("a hot-air balloon over a valley, from host A", videoProvider="local")
            ).json()
        item = page.locator(f'[data-job-id="{job["id"]}"]')
        expect(item.get_by_test_id("job-prompt")).to_have_text(job["prompt"])
        expect(item.get_by_test_id("job-status")).to_have_text("Completed", timeout=120_000)
        thumbnail = item.get_by_test_id("thumbnail")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
        video = page.request.get(setup.b.url + item.get_by_test_id("download-video").get_attribute("href"))
        assert video.status == 200 and video.headers["content-type"] == "video/mp4" and len(video.body()) > 10_000
        page.screenshot(path=str(setup.cluster.instances[1].data_dir / "studio-on-b.png"))
    finally:
        page.close()
