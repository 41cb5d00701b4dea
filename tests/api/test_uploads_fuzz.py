"""Malformed pictures, drawn by hypothesis, fed to a live server: truncated files, wrong or right
magic bytes before garbage, headers that declare absurd sizes, empty files. Every answer is one of
the documented ones in the error format, nothing is stored for a refused file, and the server keeps
answering."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support import pictures
from tests.support.server import Server

EXAMPLES = int(os.environ.get("PROMPTREEL_UPLOAD_FUZZ_EXAMPLES", "80"))
SIGNATURES = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heicmiaf",
    b"GIF89a",
    b"BM",
    b"",
]
#: The formats drawn whole (AVIF: Pillow's encoder; HEIF: pillow-heif's, registered by tests.support.pictures).
FORMATS = ["PNG", "JPEG", "WEBP", "AVIF", "HEIF"]
#: What an upload may answer; 201 only for a file that really is a picture.
STATUSES = {201: None, 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "IMAGE_INVALID"}


def encoded(image_format: str, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 256, height % 256, 90)).save(buffer, format=image_format)
    return buffer.getvalue()


valid = st.builds(encoded, st.sampled_from(FORMATS), st.integers(1, 300), st.integers(1, 300))
truncated = st.tuples(valid, st.floats(0, 0.99)).map(lambda pair: pair[0][: int(len(pair[0]) * pair[1])])
wrong_magic = st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=2000)).map(lambda pair: pair[0] + pair[1])
declared = st.one_of(
    st.builds(pictures.png_declaring, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.builds(
        pictures.declaring,
        st.sampled_from(FORMATS[3:]).map(pictures.rotated),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
    ),
)
flipped = st.tuples(valid, st.integers(0, 10_000), st.integers(0, 255)).map(
    lambda case: case[0][: case[1] % len(case[0])] + bytes([case[2]]) + case[0][case[1] % len(case[0]) + 1 :]
)
malformed = st.one_of(truncated, wrong_magic, declared, flipped, st.just(b""), valid)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("uploads-fuzz") / "data", PROMPTREEL_RATE_LIMIT_PER_MINUTE="0").start()
    yield srv
    srv.stop()


def stored_uploads(server: Server) -> set[str]:
    folder = Path(server.data_dir) / "media" / "uploads"
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def test_malformed_pictures_get_documented_answers_and_the_server_keeps_serving(fuzzed_server: Server):
    with fuzzed_server.client() as api:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
        @given(
            data=malformed,
            multipart=st.booleans(),
            declared_type=st.sampled_from(["image/png", "image/jpeg", "image/webp", "image/avif", "image/heic"]),
        )
        def upload(data: bytes, multipart: bool, declared_type: str) -> None:
            before = stored_uploads(fuzzed_server)
            if multipart:
                response = api.post("/api/v1/uploads", files={"file": ("photo.png", data, declared_type)})
            else:
                response = api.post("/api/v1/uploads", content=data, headers={"Content-Type": declared_type})
            assert response.status_code in STATUSES, response.text
            body = response.json()
            if response.status_code == 201:
                assert body["id"].startswith("upl_") and body["width"] >= 1 and body["height"] >= 1
                assert stored_uploads(fuzzed_server) == before | {body["id"]}
            else:
                assert set(body) == {"error", "code", "details"} and body["code"] == STATUSES[response.status_code]
                assert stored_uploads(fuzzed_server) == before, "a refused file left something behind"
            assert api.get("/health").status_code == 200

        upload()
        assert api.get("/api/v1/status").status_code == 200
