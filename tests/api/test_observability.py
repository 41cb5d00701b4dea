"""Observability through the real server: JSON log lines, /metrics, /health."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeRunway, provider_env
from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import EventStream, ends_job, open_stream

TOKEN = "secret-token-123"
PROMPT = "An observability canary: a lighthouse in the fog"
QUERY_CANARY = "query-canary-7f3a"
BANNER = "promptreel serves on "
TRANSITIONS = ["pending", "generating_image", "generating_video"]


def log_lines(server: Server) -> list[dict[str, Any]]:
    """The server's log as JSON objects: apart from the start banner, every line must be one."""
    return [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip() and not line.startswith(BANNER)]


def of_job(lines: list[dict[str, Any]], event: str, job_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == event and line.get("job_id") == job_id]


def scrape(api: httpx.Client) -> dict[tuple[str, frozenset], float]:
    """/metrics as {(sample name, labels): value}, parsed by Prometheus's own parser."""
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_one_line_per_request_and_per_transition_without_secrets(tmp_path: Path):
    server = Server(tmp_path / "data", API_TOKEN=TOKEN, PROMPTREEL_LOG_REQUESTS="true").start()
    try:
        # The token in /ws's query string and a signed media URL's signature must stay out of the log.
        async with websockets.connect(f"{server.ws_url}?token={TOKEN}", max_size=None) as connection:
            stream = EventStream(connection)
            with server.client() as api:
                assert api.get("/api/v1/jobs").status_code == 401  # authentication is on
                api.headers["Authorization"] = f"Bearer {TOKEN}"
                created = api.post("/api/v1/generate", json=local_job(PROMPT))
                assert created.status_code == 201, created.text
                job_id = created.json()["id"]
                done = await stream.until(ends_job(job_id))
                assert done["type"] == "job_completed", done
                job = api.get(f"/api/v1/jobs/{job_id}").json()
                image_url = job["image_url"]
                assert "signature=" in image_url
                assert httpx.get(image_url, timeout=30).status_code == 200  # signed: no header needed
                video = api.get(f"/api/v1/jobs/{job_id}/download/video", headers={"Range": "bytes=0-99"})
                assert video.status_code == 206 and len(video.content) == 100  # a streamed range passes untouched
                assert api.get("/api/v1/jobs", params={"q": QUERY_CANARY}).json() == []
                metrics = scrape(api)
    finally:
        server.stop()  # every line is written once the server has stopped

    assert sample(metrics, "promptreel_jobs", status="completed") == 1
    assert sample(metrics, "promptreel_jobs", status="pending") == 0
    assert sample(metrics, "promptreel_queue_length") == 0
    assert sample(metrics, "promptreel_active_jobs") == 0
    for step in ("image_generation", "video_generation"):
        assert sample(metrics, "promptreel_step_duration_seconds_count", step=step, provider="local", status="completed") == 1
        assert sample(metrics, "promptreel_step_duration_seconds_sum", step=step, provider="local", status="completed") > 0
    assert sample(metrics, "promptreel_http_requests_total", method="POST", status="2xx") == 1
    assert sample(metrics, "promptreel_http_requests_total", method="GET", status="4xx") == 1

    lines = log_lines(server)
    assert all({"time", "level", "event"} <= set(line) for line in lines)
    requests = [
        line for line in lines if line["event"] == "http_request" and line["path"] != "/health"
    ]  # /health: the start's polls
    assert Counter((r["method"], r["path"], r["status"]) for r in requests) == Counter(
        [
            ("GET", "/api/v1/jobs", 401),
            ("POST", "/api/v1/generate", 201),
            ("GET", f"/api/v1/jobs/{job_id}", 200),
            ("GET", f"/api/v1/jobs/{job_id}/download/image", 200),
            ("GET", f"/api/v1/jobs/{job_id}/download/video", 206),
            ("GET", "/api/v1/jobs", 200),
            ("GET", "/metrics", 200),
        ]
    )
    assert not [line for line in lines if line["event"] == "log" and "/api/v1/" in line["message"]]  # no second access line
    by_path = {(r["path"], r["status"]): r for r in requests}
    assert by_path[("/api/v1/generate", 201)]["user"] == "default"  # the token's user, never the token
    assert "user" not in by_path[("/api/v1/jobs", 401)]
    assert by_path[(f"/api/v1/jobs/{job_id}/download/video", 206)]["bytes"] == 100
    assert all(r["client"] == "127.0.0.1" and r["duration_ms"] >= 0 for r in requests)
    sessions = [line for line in lines if line["event"] == "websocket"]
    assert [(s["path"], s["status"]) for s in sessions] == [("/ws", 101)]

    transitions = of_job(lines, "job_transition", job_id)
    assert [t["status"] for t in transitions] == [*TRANSITIONS, "completed"]
    assert [t["previous"] for t in transitions] == [None, *TRANSITIONS]
    assert transitions[-1]["progress"] == 100
    assert all(t["prompt_length"] == len(PROMPT) and "prompt" not in t for t in transitions)
    assert [(s["step"], s["provider"], s["status"]) for s in of_job(lines, "step_ended", job_id)] == [
        ("image_generation", "local", "completed"),
        ("video_generation", "local", "completed"),
    ]

    text = server.log_path.read_text()
    signature = image_url.partition("signature=")[2].partition("&")[0]
    for secret in (TOKEN, PROMPT, QUERY_CANARY, signature):
        assert secret not in text, f"{secret!r} is in the log"


def test_a_mistyped_path_leaves_its_query_string_out_of_the_log(tmp_path: Path):
    """NiceGUI logs "<url> not found" for a path it has no page for: a token or a media signature
    sent to a mistyped path used to stay in the log with it."""
    server = Server(tmp_path / "data", API_TOKEN=TOKEN).start()
    try:
        with server.client() as api:
            assert api.get("/stream", params={"token": TOKEN, "signature": QUERY_CANARY}).status_code == 404
    finally:
        server.stop()
    [line] = [line for line in log_lines(server) if line["event"] == "log" and "not found" in line["message"]]
    assert line["message"] == f"{server.url}/stream?… not found"
    text = server.log_path.read_text()
    assert TOKEN not in text and QUERY_CANARY not in text


async def test_failed_job_counts_a_provider_error_and_logs_the_prompt_when_asked(tmp_path: Path):
    runway = FakeRunway().start()
    runway.outcomes.append("fail:SAFETY.INPUT.IMAGE")
    env = {**provider_env(runway=runway), "PROMPTREEL_LOG_PROMPTS": "true", "PROMPTREEL_POLL_INTERVAL": "0.05"}
    server = Server(tmp_path / "data", **env).start()
    try:
        stream = await open_stream(server)
        with server.client() as api:
            created = api.post("/api/v1/generate", json=local_job(PROMPT, videoProvider="runway"))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            done = await stream.until(ends_job(job_id))
            await stream.connection.close()
            assert done["type"] == "job_failed", done
            metrics = scrape(api)
    finally:
        server.stop()
        runway.stop()

    assert sample(metrics, "promptreel_provider_errors_total", provider="runway", step="video_generation") == 1
    assert sample(metrics, "promptreel_jobs", status="failed") == 1
    assert (
        sample(metrics, "promptreel_step_duration_seconds_count", step="image_generation", provider="local", status="completed")
        == 1
    )
    assert (
        sample(metrics, "promptreel_step_duration_seconds_count", step="video_generation", provider="runway", status="failed")
        == 1
    )

    transitions = of_job(log_lines(server), "job_transition", job_id)
    assert [t["status"] for t in transitions] == [*TRANSITIONS, "failed"]
    assert "SAFETY.INPUT.IMAGE" in transitions[-1]["error"]
    assert all(t["prompt"] == PROMPT for t in transitions)  # PROMPTREEL_LOG_PROMPTS: in full


def test_health_checks_the_store_and_the_media_folder(server: Server, api: httpx.Client):
    assert api.get("/health").json() == {"status": "ok", "checks": {"store": "ok", "media": "ok"}}
    # Root writes through any mode bits: a file where the folder should be stops writes for everyone.
    media = server.data_dir / "media"
    aside = server.data_dir / "media-aside"
    media.rename(aside)
    media.write_text("not a folder")
    try:
        broken = api.get("/health")
        assert broken.status_code == 503, broken.text
        body = broken.json()
        assert body["code"] == "MEDIA_UNAVAILABLE" and "media" in body["error"]
        assert body["details"] == {"checks": {"store": "ok", "media": "failed"}}
    finally:
        media.unlink()
        aside.rename(media)
    assert server.process is not None and server.process.poll() is None  # still serving
    assert api.get("/health").status_code == 200
