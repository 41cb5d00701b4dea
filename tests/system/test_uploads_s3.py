"""Uploads in S3 media storage (moto's emulator): the clean picture is one object under the prefix,
a job animates it from there, DELETE and expiry remove the object."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import pictures
from tests.support.s3 import MotoServer, moto_server
from tests.support.server import Server
from tests.support.streams import ends_job, open_stream


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


async def test_an_upload_lives_in_the_bucket_and_is_animated_from_there(tmp_path: Path, moto: MotoServer):
    bucket = moto.new_bucket()
    server = Server(tmp_path / "data", **moto.env(bucket)).start()
    stream = await open_stream(server)
    try:
        with server.client() as api:
            upload = api.post("/api/v1/uploads", files={"file": ("photo.jpg", pictures.rotated_jpeg(300, 200), "image/jpeg")})
            assert upload.status_code == 201, upload.text
            upload_id = upload.json()["id"]
            key = f"promptreel/uploads/{upload_id}"
            assert moto.keys(bucket, "promptreel/uploads/") == [key]
            stored = moto.get(bucket, key)["Bytes"]
            assert b"Exif" not in stored and len(stored) == upload.json()["bytes"]
            assert not (tmp_path / "data" / "media" / "uploads").exists()  # nothing on the local disk

            body = {"prompt": "slow push in", "settings": {"sourceImage": upload_id, "videoProvider": "local"}}
            job = api.post("/api/v1/generate", json=body).json()
            await stream.until(ends_job(job["id"]))
            done = api.get(f"/api/v1/jobs/{job['id']}").json()
            assert done["status"] == "completed", done
            image = api.get(f"/api/v1/jobs/{job['id']}/download/image")
            with Image.open(io.BytesIO(image.content)) as picture:
                rgb = picture.convert("RGB")
                assert picture.size == (1024, 1024)
                assert rgb.getpixel((512, 100))[0] > 180 and rgb.getpixel((512, 924))[2] > 180  # upright: red above blue

            assert api.delete(f"/api/v1/uploads/{upload_id}").status_code == 204
            assert moto.keys(bucket, "promptreel/uploads/") == []
    finally:
        await stream.connection.close()
        server.stop()
