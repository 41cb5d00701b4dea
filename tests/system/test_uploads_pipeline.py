"""A user's own picture animated end to end against a real server: a JPEG taken with a rotated EXIF
orientation becomes the job's upright, fitted PNG (decoded and looked at), animated by the local
video provider and by Runway's fake (which receives that picture); the job object and the /ws
events keep the guide's shape; an upload a job still needs is not deleted under it."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.fakes import FakeRunway, provider_env
from tests.support import pictures
from tests.support.server import Server
from tests.support.streams import ends_job, open_stream

RGB = tuple[int, int, int]


@pytest.fixture(scope="module")
def runway() -> Iterator[FakeRunway]:
    fake = FakeRunway().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def server(runway: FakeRunway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = provider_env(runway=runway)
    srv = Server(tmp_path_factory.mktemp("uploads-pipeline") / "data", PROMPTREEL_POLL_INTERVAL="0.05", **env).start()
    yield srv
    srv.stop()


def upload_rotated_jpeg(api: httpx.Client) -> dict[str, Any]:
    response = api.post("/api/v1/uploads", files={"file": ("photo.jpg", pictures.rotated_jpeg(300, 200), "image/jpeg")})
    assert response.status_code == 201, response.text
    return response.json()


def is_red(pixel: RGB) -> bool:
    return pixel[0] > 180 and pixel[2] < 80


def is_blue(pixel: RGB) -> bool:
    return pixel[2] > 180 and pixel[0] < 80


def check_upright_crop(picture: Image.Image, width: int, height: int) -> None:
    """The upright picture (red above blue) centre-cropped: red across the top, blue across the bottom.
    Left as stored (sideways) it would be red on the left and blue on the right."""
    assert picture.size == (width, height)
    rgb = picture.convert("RGB")
    for x in (width // 10, width // 2, width - width // 10):
        assert is_red(rgb.getpixel((x, height // 10))), f"top at x={x}: {rgb.getpixel((x, height // 10))}"
        assert is_blue(rgb.getpixel((x, height - height // 10))), f"bottom at x={x}: {rgb.getpixel((x, height - height // 10))}"


async def run(server: Server, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit, await the end; the job as GET answers it, and the job's /ws events."""
    stream = await open_stream(server)
    try:
        with server.client() as api:
            response = api.post("/api/v1/generate", json=body)
            assert response.status_code == 201, response.text
            created = response.json()
            assert created["provider"] == "upload" and created["status"] == "pending"
            await stream.until(ends_job(created["id"]))
            return api.get(f"/api/v1/jobs/{created['id']}").json(), stream.of_job(created["id"])
    finally:
        await stream.connection.close()


def download(server: Server, job_id: str, kind: str) -> bytes:
    with server.client() as api:
        response = api.get(f"/api/v1/jobs/{job_id}/download/{kind}")
    assert response.status_code == 200, response.text
    return response.content


def first_frame(mp4: bytes) -> Image.Image:
    with av.open(io.BytesIO(mp4)) as container:
        return next(container.decode(video=0)).to_image()


def check_guide_shapes(job: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """The job object and the events of the guide, nothing renamed for an upload's job."""
    assert {
        "id",
        "prompt",
        "provider",
        "status",
        "progress",
        "created_at",
        "updated_at",
        "metadata",
        "image_url",
        "video_url",
        "cost",
    } <= set(job)
    assert set(job["cost"]) == {"imageGeneration", "videoGeneration", "total"}
    assert {event["type"] for event in events} == {"job_update", "step_update", "job_completed"}
    for event in events:
        assert set(event) >= {"type", "jobId", "data"}
        if event["type"] == "job_update":
            assert set(event["data"]) == {"id", "status", "progress", "updated_at"}
        elif event["type"] == "step_update":
            assert set(event["data"]) == {"id", "name", "status", "progress", "startTime", "endTime"}
        else:
            assert set(event["data"]) == {"id", "status", "progress", "image_url", "video_url", "cost"}
    assert events[-1]["type"] == "job_completed"


async def test_a_rotated_jpeg_is_animated_upright_by_the_local_provider(server: Server):
    with server.client() as api:
        upload = upload_rotated_jpeg(api)
    body = {
        "prompt": "slow push in",
        "settings": {"sourceImage": upload["id"], "videoProvider": "local", "imageSize": "1024x1024"},
    }
    job, events = await run(server, body)
    assert job["status"] == "completed", job
    assert job["provider"] == "upload"
    metadata = job["metadata"]
    assert metadata["sourceImage"] == upload["id"]
    assert (metadata["sourceWidth"], metadata["sourceHeight"], metadata["sourceName"], metadata["fit"]) == (
        200,
        300,
        "photo.jpg",
        "crop",
    )
    assert metadata["imageModel"] == "upload" and metadata["videoProvider"] == "local"
    assert job["cost"] == {"imageGeneration": 0.0, "videoGeneration": 0.0, "total": 0.0}
    image_log = job["steps"][0]["log"]
    assert any("no image provider, no cost" in line for line in image_log), image_log
    check_guide_shapes(job, events)

    with Image.open(io.BytesIO(download(server, job["id"], "image"))) as image:
        assert image.format == "PNG"
        check_upright_crop(image, 1024, 1024)
    frame = first_frame(download(server, job["id"], "video")).convert("RGB")
    width, height = frame.size
    # The video animates that picture: its first frame is red above and blue below too.
    assert is_red(frame.getpixel((width // 2, height // 8))) and is_blue(frame.getpixel((width // 2, height - height // 8)))


async def test_contain_fits_the_whole_picture_on_a_blurred_fill(server: Server):
    with server.client() as api:
        upload = upload_rotated_jpeg(api)
    settings = {"sourceImage": upload["id"], "videoProvider": "local", "imageSize": "1792x1024", "fit": "contain"}
    job, _ = await run(server, {"prompt": "leaves moving", "provider": "upload", "settings": settings})
    assert job["status"] == "completed", job
    with Image.open(io.BytesIO(download(server, job["id"], "image"))) as image:
        assert image.size == (1792, 1024)
        rgb = image.convert("RGB")
        # The whole upright picture, 683x1024, in the middle: red at its very top, blue at its very bottom.
        assert is_red(rgb.getpixel((896, 8))) and is_blue(rgb.getpixel((896, 1015)))
        # Beside it the blurred fill of itself, not black bars.
        assert sum(rgb.getpixel((100, 512))) > 100


async def test_runway_receives_the_upright_fitted_picture(server: Server, runway: FakeRunway):
    with server.client() as api:
        upload = upload_rotated_jpeg(api)
    body = {"prompt": "slow push in, leaves moving", "settings": {"sourceImage": upload["id"], "videoProvider": "runway"}}
    job, events = await run(server, body)
    assert job["status"] == "completed", job
    assert job["cost"]["imageGeneration"] == 0.0 and job["cost"]["videoGeneration"] > 0
    check_guide_shapes(job, events)
    task = next(t for t in runway.tasks.values() if t.body.get("promptText") == body["prompt"])
    uri = task.body["promptImage"]
    assert uri.startswith("data:image/")
    sent = base64.b64decode(uri.partition(",")[2])
    assert sent == download(server, job["id"], "image")
    with Image.open(io.BytesIO(sent)) as picture:
        check_upright_crop(picture, 1024, 1024)


async def test_an_upload_a_job_still_needs_is_not_deleted_under_it(server: Server, runway: FakeRunway):
    stream = await open_stream(server)
    try:
        with server.client() as api:
            upload = upload_rotated_jpeg(api)
            runway.outcomes.append("hold")  # the video step runs until released
            body = {"prompt": "held while deleting", "settings": {"sourceImage": upload["id"], "videoProvider": "runway"}}
            job = api.post("/api/v1/generate", json=body).json()
            task = await runway.until(
                lambda: next((t for t in runway.tasks.values() if t.body.get("promptText") == body["prompt"]), None)
            )
            refused = api.delete(f"/api/v1/uploads/{upload['id']}")
            assert refused.status_code == 409, refused.text
            assert refused.json()["code"] == "UPLOAD_IN_USE" and refused.json()["details"]["jobs"] == [job["id"]]
            # A second job may use the same upload meanwhile.
            again = api.post("/api/v1/generate", json={**body, "settings": {**body["settings"], "videoProvider": "local"}})
            assert again.status_code == 201, again.text
            runway.release(task.id)
            await stream.until(ends_job(job["id"]))
            await stream.until(ends_job(again.json()["id"]))
            assert api.delete(f"/api/v1/uploads/{upload['id']}").status_code == 204
            # The jobs keep their own fitted picture.
            assert api.get(f"/api/v1/jobs/{job['id']}/download/image").status_code == 200
            gone = api.post("/api/v1/generate", json=body)
            assert gone.status_code == 422 and gone.json()["details"]["field"] == "settings.sourceImage", gone.text
    finally:
        await stream.connection.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "p", "provider": "local", "settings": {"sourceImage": "upl_0123456789ab"}}, "provider"),
        ({"prompt": "p", "provider": "upload"}, "settings.sourceImage"),
        ({"prompt": "p", "settings": {"sourceImage": "not-an-upload"}}, "settings.sourceImage"),
        ({"prompt": "p", "settings": {"sourceImage": "upl_0123456789ab"}}, "settings.sourceImage"),
        ({"prompt": "p", "settings": {"sourceImage": "upl_0123456789ab", "fit": "stretch"}}, "settings.fit"),
        ({"prompt": "p"}, "provider"),
    ],
    ids=[
        "with-another-provider",
        "upload-without-picture",
        "malformed-id",
        "unknown-id",
        "unknown-fit",
        "no-provider-no-picture",
    ],
)
def test_mismatched_requests_are_refused_naming_the_field(server: Server, body: dict[str, Any], field: str):
    with server.client() as api:
        before = len(api.get("/api/v1/jobs").json())
        response = api.post("/api/v1/generate", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "VALIDATION_ERROR"
        assert response.json()["details"]["field"] == field
        assert len(api.get("/api/v1/jobs").json()) == before
