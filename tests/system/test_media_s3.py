"""S3 media storage against a real S3 emulator (moto in server mode, its own process).

Unit tests drive S3MediaStore over HTTP; end-to-end tests run the real server with its media in
a bucket and download what it made.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image

from backend.media.local import LocalMediaStore
from backend.media.s3 import S3MediaStore
from backend.media.store import MediaStorageError
from backend.settings import Settings
from backend.system import System, media_store_for
from components.job_card import THUMBNAIL_ROUTE
from tests.support.jobs import local_job
from tests.support.s3 import CREDENTIALS, MotoServer, moto_server
from tests.support.server import ROOT, Server, clean_env, free_port
from tests.support.streams import ends_job, open_stream

JOB = "job_abcdefgh1234"
PNG = b"\x89PNG\r\n\x1a\n-not-really-an-image"
ODD_JOB_IDS = ["../escape", "job_short", "job_abcdefgh/../../x", "job_abcdefgh1234\n", "", "JOB_abcdefgh1234", "job_abc defgh"]
ODD_PATHS = [
    None,
    "",
    "../job_abcdefgh1234/image.png",
    "job_abcdefgh1234/../../image.png",
    "/etc/passwd",
    "job_abcdefgh1234/other.txt",
    "promptreel/job_abcdefgh1234/image.png",
    "job_abcdefgh1234/image.png\n",
]


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.new_bucket()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 in this process finds the emulator's credentials where it finds real ones."""
    for name, value in {**CREDENTIALS, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)


def s3_settings(tmp_path: Path, moto: MotoServer, bucket: str, **extra: str) -> Settings:
    return Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path / "data", **moto.env(bucket, **extra))


@pytest.fixture
def store(tmp_path: Path, moto: MotoServer, bucket: str, aws_env: None) -> S3MediaStore:
    media = media_store_for(s3_settings(tmp_path, moto, bucket))
    assert isinstance(media, S3MediaStore)
    return media


# -- the store, unit by unit ------------------------------------------------------------


def test_write_image_puts_one_object_with_its_content_type(store: S3MediaStore, moto: MotoServer, bucket: str, tmp_path: Path):
    relative = store.write_image(JOB, PNG)
    assert relative == f"{JOB}/image.png"
    assert moto.keys(bucket) == [f"promptreel/{JOB}/image.png"]
    stored = moto.get(bucket, f"promptreel/{JOB}/image.png")
    assert stored["Bytes"] == PNG and stored["ContentType"] == "image/png"
    assert store.exists(relative) and store.read_bytes(relative) == PNG
    assert not store.exists(f"{JOB}/video.mp4") and store.read_bytes(f"{JOB}/video.mp4") is None
    store.check()  # the bucket answers
    assert not (tmp_path / "data" / "media").exists()  # nothing on the local disk


def test_video_step_files_are_staged_uploaded_and_cleaned(store: S3MediaStore, moto: MotoServer, bucket: str, tmp_path: Path):
    image = store.write_image(JOB, PNG)
    with store.staging(JOB) as staging:
        assert staging.is_dir() and not staging.is_relative_to(tmp_path / "data")
        local_image = store.local_file(image, staging)
        assert local_image is not None and local_image.parent == staging and local_image.read_bytes() == PNG
        assert store.local_file(f"{JOB}/video.mp4", staging) is None  # not there yet
        output = store.video_output(JOB, staging)
        output.write_bytes(b"an mp4" * 1000)
        assert store.commit_video(JOB, output) == f"{JOB}/video.mp4"
        assert not output.exists()  # uploaded, so the local copy is gone
    assert not staging.exists()
    stored = moto.get(bucket, f"promptreel/{JOB}/video.mp4")
    assert stored["Bytes"] == b"an mp4" * 1000 and stored["ContentType"] == "video/mp4"
    copy = tmp_path / "copy.mp4"
    store.save_copy(f"{JOB}/video.mp4", copy)
    assert copy.read_bytes() == b"an mp4" * 1000


def test_a_live_preview_is_one_object_overwritten_then_removed(store: S3MediaStore, moto: MotoServer, bucket: str):
    assert store.read_preview(JOB) is None
    store.write_preview(JOB, b"first jpeg")
    store.write_preview(JOB, b"second jpeg")  # the next preview takes the place of the one before
    assert moto.keys(bucket) == [f"promptreel/{JOB}/preview.jpg"]
    stored = moto.get(bucket, f"promptreel/{JOB}/preview.jpg")
    assert stored["Bytes"] == b"second jpeg" and stored["ContentType"] == "image/jpeg"
    assert store.read_preview(JOB) == b"second jpeg"  # what any instance's preview route reads
    store.remove_preview(JOB)
    store.remove_preview(JOB)  # none left: still fine
    assert store.read_preview(JOB) is None and moto.keys(bucket) == []


def test_staging_is_removed_when_the_step_fails(store: S3MediaStore):
    with pytest.raises(RuntimeError), store.staging(JOB) as staging:
        store.video_output(JOB, staging).write_bytes(b"half a video")
        raise RuntimeError("provider failed")
    assert not staging.exists()


def test_remove_job_deletes_every_object_of_the_job_and_nothing_else(store: S3MediaStore, moto: MotoServer, bucket: str):
    sibling = JOB + "5"  # its id starts with JOB's: a bare prefix match would take it too
    store.write_image(JOB, PNG)
    store.write_image(sibling, PNG)
    moto.client.put_object(Bucket=bucket, Key=f"promptreel/{JOB}/image.png.extra", Body=b"x")
    moto.client.put_object(Bucket=bucket, Key=f"{JOB}/image.png", Body=b"outside the prefix")
    moto.client.put_object(Bucket=bucket, Key=f"other/{JOB}/image.png", Body=b"another app's")
    store.remove_job(JOB)
    assert moto.keys(bucket) == sorted([f"promptreel/{sibling}/image.png", f"{JOB}/image.png", f"other/{JOB}/image.png"])
    assert not store.exists(f"{JOB}/image.png") and store.exists(f"{sibling}/image.png")
    store.remove_job(JOB)  # nothing left: still fine


@pytest.mark.parametrize("job_id", ODD_JOB_IDS)
def test_odd_job_ids_are_refused(store: S3MediaStore, job_id: str, moto: MotoServer, bucket: str):
    with pytest.raises(ValueError):
        store.write_image(job_id, PNG)
    with pytest.raises(ValueError), store.staging(job_id):
        pass
    moto.client.put_object(Bucket=bucket, Key="promptreel/job_abcdefgh1234/image.png", Body=b"x")
    store.remove_job(job_id)  # not a job of ours: nothing to remove
    assert moto.keys(bucket) == ["promptreel/job_abcdefgh1234/image.png"]


@pytest.mark.parametrize("relative", ODD_PATHS)
def test_stored_paths_never_leave_the_prefix(
    store: S3MediaStore, relative: str | None, moto: MotoServer, bucket: str, tmp_path: Path
):
    moto.client.put_object(Bucket=bucket, Key="promptreel/promptreel/job_abcdefgh1234/image.png", Body=b"x")
    moto.client.put_object(Bucket=bucket, Key="job_abcdefgh1234/image.png", Body=b"x")
    assert store.key_for(relative) is None
    assert not store.exists(relative)
    assert store.read_bytes(relative) is None
    assert store.local_file(relative, tmp_path) is None


@pytest.mark.parametrize(
    ("prefix", "key"), [("media", f"media/{JOB}/image.png"), ("/a/b/", f"a/b/{JOB}/image.png"), ("", f"{JOB}/image.png")]
)
def test_the_prefix_is_one_folder(tmp_path: Path, moto: MotoServer, bucket: str, aws_env: None, prefix: str, key: str):
    media = media_store_for(s3_settings(tmp_path, moto, bucket, PROMPTREEL_S3_PREFIX=prefix))
    media.write_image(JOB, PNG)
    assert moto.keys(bucket) == [key]
    media.remove_job(JOB)
    assert moto.keys(bucket) == []


def test_storage_failures_are_media_storage_errors(tmp_path: Path, moto: MotoServer, aws_env: None):
    missing = media_store_for(s3_settings(tmp_path, moto, "promptreel-no-such-bucket"))
    with pytest.raises(
        MediaStorageError, match=r"^could not store the image in S3 bucket 'promptreel-no-such-bucket': NoSuchBucket"
    ):
        missing.write_image(JOB, PNG)
    with pytest.raises(MediaStorageError, match="promptreel-no-such-bucket"):
        missing.check()
    missing.remove_job(JOB)  # logged, not raised: the job's row is already gone when this runs

    settings = Settings(
        _env_file=None,
        PROMPTREEL_DATA_DIR=tmp_path,
        PROMPTREEL_S3_BUCKET="b",
        PROMPTREEL_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
    )
    down = media_store_for(settings)
    with pytest.raises(
        MediaStorageError, match=r"^could not store the image in S3 bucket 'b': Could not connect to the endpoint URL"
    ):
        down.write_image(JOB, PNG)
    with pytest.raises(MediaStorageError, match="Could not connect"):
        down.exists(f"{JOB}/image.png")


def test_local_disk_stays_the_default(tmp_path: Path):
    media = media_store_for(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path))
    assert isinstance(media, LocalMediaStore) and media.root == (tmp_path / "media").resolve()
    image = media.write_image(JOB, PNG)
    with media.staging(JOB) as staging:
        assert media.local_file(image, staging) == media.root / image  # no copy: the file itself
        output = media.video_output(JOB, staging)
        output.write_bytes(b"an mp4")
        assert media.commit_video(JOB, output) == f"{JOB}/video.mp4"
    assert (media.root / JOB / "video.mp4").read_bytes() == b"an mp4"  # the final place, kept
    assert media.exists(image) and media.read_bytes(image) == PNG
    for relative in ODD_PATHS:
        assert not media.exists(relative) and media.read_bytes(relative) is None
    media.remove_job(JOB)
    assert not (media.root / JOB).exists()


def test_an_unwritable_local_folder_is_a_media_storage_error(tmp_path: Path):
    media = media_store_for(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path))
    (tmp_path / "media" / JOB).write_text("a file where the job's folder goes")
    with pytest.raises(MediaStorageError, match=r"^could not store the image in .*media"):
        media.write_image(JOB, PNG)
    with pytest.raises(MediaStorageError), media.staging(JOB):
        pass


# -- the real server with its media in S3 ------------------------------------------------


def local_media_files(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "media").rglob("*") if path.is_file()] if (data_dir / "media").exists() else []


def staged(tmp_dir: Path) -> list[str]:
    return [path.name for path in tmp_dir.iterdir() if path.name.startswith("promptreel-")]


async def test_a_job_stores_and_serves_its_media_from_s3(tmp_path: Path, moto: MotoServer, bucket: str, aws_env: None):
    data_dir, tmp_dir = tmp_path / "data", tmp_path / "tmp"
    tmp_dir.mkdir()
    server = Server(data_dir, **moto.env(bucket, TMPDIR=str(tmp_dir))).start()
    try:
        events = await open_stream(server)
        with server.client() as api:
            job = api.post("/api/v1/generate", json=local_job(seed=7)).json()
            done = await events.until(ends_job(job["id"]))
            assert done["type"] == "job_completed", done
            job_id, image_url, video_url = job["id"], done["data"]["image_url"], done["data"]["video_url"]

            assert moto.keys(bucket) == [f"promptreel/{job_id}/image.png", f"promptreel/{job_id}/video.mp4"]
            assert local_media_files(data_dir) == [] and staged(tmp_dir) == []

            image = api.get(image_url)
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.headers["content-disposition"] == f'attachment; filename="promptreel-{job_id}-image.png"'
            assert image.content == moto.get(bucket, f"promptreel/{job_id}/image.png")["Bytes"]
            with Image.open(io.BytesIO(image.content)) as decoded:
                assert decoded.format == "PNG" and decoded.size == (1024, 1024)

            video = api.get(video_url)
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            assert video.headers["accept-ranges"] == "bytes" and video.headers["content-length"] == str(len(video.content))
            with av.open(io.BytesIO(video.content)) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (960, 960)
                assert sum(1 for _ in container.decode(stream)) == 5 * 24

            size = len(video.content)
            part = api.get(video_url, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == video.content[100:200]
            assert part.headers["content-range"] == f"bytes 100-199/{size}" and part.headers["content-length"] == "100"
            tail = api.get(video_url, headers={"Range": "bytes=-50"})
            assert tail.status_code == 206 and tail.content == video.content[-50:]
            assert api.get(video_url, headers={"Range": f"bytes={size + 10}-"}).status_code == 416
            assert api.get(video_url, headers={"Range": "bytes=0-1,5-9"}).content == video.content  # one range or the whole file

            head = api.head(video_url)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(size) and head.headers["content-type"] == "video/mp4"
            assert head.headers["content-disposition"] == f'attachment; filename="promptreel-{job_id}-video.mp4"'

            thumbnail = api.get(f"{THUMBNAIL_ROUTE}/{job_id}.jpg")  # the studio's list reads the image from S3 too
            assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
            with Image.open(io.BytesIO(thumbnail.content)) as decoded:
                assert decoded.size == (256, 256)
            # made once and stored beside the image, for every instance (and removed with the job)
            assert moto.get(bucket, f"promptreel/{job_id}/thumbnail.jpg")["Bytes"] == thumbnail.content
        await events.connection.close()
    finally:
        server.stop()

    # Another instance, set to redirect: a short-lived presigned URL instead of streaming.
    server = Server(
        data_dir, **moto.env(bucket, PROMPTREEL_S3_DOWNLOADS="redirect", PROMPTREEL_S3_URL_EXPIRY_SECONDS="60")
    ).start()
    try:
        with server.client() as api:
            redirect = api.get(f"/api/v1/jobs/{job_id}/download/image")
            assert redirect.status_code == 307, redirect.text
            location = redirect.headers["location"]
            assert (
                location.startswith(f"{moto.endpoint_url}/{bucket}/promptreel/{job_id}/image.png?")
                and "X-Amz-Expires=60" in location
            )
            fetched = httpx.get(location)
            assert fetched.status_code == 200 and fetched.content == image.content
            assert fetched.headers["content-disposition"] == f'attachment; filename="promptreel-{job_id}-image.png"'
            assert api.head(f"/api/v1/jobs/{job_id}/download/image").headers["content-length"] == str(len(image.content))

            moto.client.delete_object(Bucket=bucket, Key=f"promptreel/{job_id}/video.mp4")
            gone = api.get(f"/api/v1/jobs/{job_id}/download/video")
            assert gone.status_code == 404 and gone.json()["code"] == "MEDIA_NOT_READY"
    finally:
        server.stop()

    # Removing the job (the studio's "remove") deletes its objects.
    moto.client.put_object(Bucket=bucket, Key="promptreel/job_someoneelse1/image.png", Body=b"another job's")
    system = System(s3_settings(tmp_path, moto, bucket))
    try:
        await system.jobs.remove(job_id)
    finally:
        await system.stop()
    assert moto.keys(bucket) == ["promptreel/job_someoneelse1/image.png"]


def test_generate_on_the_command_line_copies_the_media_out_of_s3(tmp_path: Path, moto: MotoServer, bucket: str):
    data_dir, out = tmp_path / "data", tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "app", "generate", "a red kite over hills", "--duration", "5", "--seed", "3", "-o", str(out)],
        cwd=ROOT,
        env=clean_env(data_dir, **moto.env(bucket)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines() if line.startswith("/")]
    assert [path.suffix for path in paths] == [".png", ".mp4"]
    job_id = paths[0].stem.removeprefix("promptreel-")
    assert paths[0].read_bytes() == moto.get(bucket, f"promptreel/{job_id}/image.png")["Bytes"]
    assert paths[1].read_bytes() == moto.get(bucket, f"promptreel/{job_id}/video.mp4")["Bytes"]
    assert local_media_files(data_dir) == []


async def test_a_cancelled_video_leaves_nothing_behind(tmp_path: Path, moto: MotoServer, bucket: str):
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    server = Server(tmp_path / "data", **moto.env(bucket, TMPDIR=str(tmp_dir))).start()
    try:
        events = await open_stream(server)
        with server.client() as api:
            job = api.post("/api/v1/generate", json=local_job("a neon city at night", videoDuration=10)).json()
            await events.until(
                lambda e: (
                    e.get("jobId") == job["id"]
                    and e["type"] == "step_update"
                    and e["data"]["id"] == "video_generation"
                    and e["data"]["progress"] >= 5
                )
            )
            assert staged(tmp_dir), "the video step stages its files in the temporary folder"
            assert api.delete(f"/api/v1/jobs/{job['id']}").json()["status"] == "cancelled"
            end = await events.until(ends_job(job["id"]))
            assert end["data"]["status"] == "cancelled"
            assert moto.keys(bucket) == [f"promptreel/{job['id']}/image.png"]
            assert staged(tmp_dir) == [] and local_media_files(tmp_path / "data") == []
            assert api.get(f"/api/v1/jobs/{job['id']}/download/video").json()["code"] == "MEDIA_NOT_READY"
            assert api.get(f"/api/v1/jobs/{job['id']}/download/image").status_code == 200
        await events.connection.close()
    finally:
        server.stop()


async def test_a_missing_bucket_fails_the_job_with_a_clear_message(tmp_path: Path, moto: MotoServer):
    server = Server(tmp_path / "data", **moto.env("promptreel-no-such-bucket")).start(ready_path="/docs")  # /health says 503
    try:
        events = await open_stream(server)
        with server.client() as api:
            job = api.post("/api/v1/generate", json=local_job()).json()
            end = await events.until(ends_job(job["id"]))
            assert end["type"] == "job_failed", end
            failed = api.get(f"/api/v1/jobs/{job['id']}").json()
            assert failed["status"] == "failed" and failed["error"] == (
                "Image generation failed: could not store the image in S3 bucket 'promptreel-no-such-bucket': "
                "NoSuchBucket: The specified bucket does not exist"
            )
            assert [step["status"] for step in failed["steps"]] == ["failed", "cancelled"]
            # The service stays up, and its health check says what is wrong.
            health = api.get("/health")
            assert health.status_code == 503 and health.json()["code"] == "MEDIA_UNAVAILABLE", health.text
            assert api.get(f"/api/v1/jobs/{job['id']}/download/image").json()["code"] == "MEDIA_NOT_READY"
            assert api.post("/api/v1/generate", json=local_job()).status_code == 201
        await events.connection.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text()  # a failed job, not an internal error


def test_remove_file_deletes_one_thrown_away_result(store: S3MediaStore, moto: MotoServer, bucket: str, tmp_path: Path):
    """A step result that came after a cancel goes; the job's other file stays (both stores)."""
    local = media_store_for(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path))
    for media in (store, local):
        image = media.write_image(JOB, PNG)
        with media.staging(JOB) as staging:
            output = media.video_output(JOB, staging)
            output.write_bytes(b"an mp4")
            video = media.commit_video(JOB, output)
        media.remove_file(video)
        assert not media.exists(video) and media.exists(image)
        media.remove_file(video)  # gone already: fine
        for relative in ODD_PATHS:
            if relative:
                media.remove_file(relative)  # never outside the media
        assert media.exists(image)
    assert moto.keys(bucket) == [f"promptreel/{JOB}/image.png"]
