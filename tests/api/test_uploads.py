"""POST/GET/DELETE /api/v1/uploads against a real server: pictures taken upright and without their
metadata, hostile files refused with the documented errors, and uploads owned like jobs."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from tests.support import pictures
from tests.support.server import Server

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef01"


@pytest.fixture(scope="module")
def small_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose uploads may weigh 1 MB at most."""
    srv = Server(tmp_path_factory.mktemp("uploads") / "data", PROMPTREEL_MAX_UPLOAD_BYTES=str(2**20)).start()
    yield srv
    srv.stop()


def upload(client: httpx.Client, data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> httpx.Response:
    return client.post("/api/v1/uploads", files={"file": (name, data, content_type)})


def check_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code
    return body


def test_a_rotated_jpeg_is_stored_upright_without_its_exif(shared_server: Server):
    with shared_server.client() as client:
        response = upload(client, pictures.rotated_jpeg(300, 200), name="../../etc/holiday.jpg")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["id"].startswith("upl_")
        assert response.headers["location"] == f"/api/v1/uploads/{body['id']}"
        # Stored 300x200 sideways, orientation 6: upright it is 200 wide and 300 high.
        assert (body["contentType"], body["width"], body["height"]) == ("image/jpeg", 200, 300)
        assert body["name"] == "holiday.jpg"  # the last part only: a name, never a path
        assert body["expires_at"] > body["created_at"]
        assert client.get(f"/api/v1/uploads/{body['id']}").json() == body

        content = client.get(f"/api/v1/uploads/{body['id']}/content")
        assert content.status_code == 200
        assert content.headers["content-type"] == "image/jpeg"
        assert len(content.content) == body["bytes"]
        with Image.open(io.BytesIO(content.content)) as stored:
            assert stored.size == (200, 300)
            assert not stored.getexif(), "EXIF (orientation, GPS) must be stripped"
            assert "exif" not in stored.info
            rgb = stored.convert("RGB")
            top, bottom = rgb.getpixel((100, 40)), rgb.getpixel((100, 260))
        assert top[0] > 200 and top[2] < 60, f"the top half is red when upright, got {top}"
        assert bottom[2] > 200 and bottom[0] < 60, f"the bottom half is blue when upright, got {bottom}"


def test_a_phones_jpeg_with_a_multi_picture_index_is_taken_as_its_photo(shared_server: Server):
    """Phones write JPEGs with an MPF index (a depth map, a stereo pair): Pillow opens them as MPO.
    The photo is the first picture; the upload keeps it alone, as a plain JPEG."""
    photo, depth = Image.new("RGB", (320, 240), (200, 30, 30)), Image.new("RGB", (160, 120), (20, 20, 20))
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[depth])
    with Image.open(io.BytesIO(buffer.getvalue())) as opened:
        assert (opened.format, opened.n_frames) == ("MPO", 2)  # what the test sends is what phones send
    with shared_server.client() as client:
        response = upload(client, buffer.getvalue(), name="IMG_2041.jpg")
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["contentType"], body["width"], body["height"]) == ("image/jpeg", 320, 240)
        stored = client.get(f"/api/v1/uploads/{body['id']}/content").content
    with Image.open(io.BytesIO(stored)) as kept:
        assert kept.format == "JPEG" and getattr(kept, "n_frames", 1) == 1 and "mp" not in kept.info
        red, green, _ = kept.convert("RGB").getpixel((160, 120))
        assert red > 180 and green < 60  # the photo, not the depth map


@pytest.mark.parametrize(("image_format", "content_type"), [("AVIF", "image/avif"), ("HEIF", "image/heic")], ids=["avif", "heic"])
def test_avif_and_heic_are_stored_upright_as_jpeg_without_their_exif(shared_server: Server, image_format: str, content_type: str):
    """AVIF (Pillow's libavif) and HEIC (pillow-heif): by multipart with a misleading name, and as a
    raw body; stored as JPEG, which every browser shows, upright and without the EXIF (GPS)."""
    data = pictures.rotated(image_format)
    with shared_server.client() as client:
        multipart = upload(client, data, name="IMG_0001.png", content_type="application/octet-stream")
        raw = client.post("/api/v1/uploads", content=data, headers={"Content-Type": content_type})
        for response in (multipart, raw):
            assert response.status_code == 201, response.text
            body = response.json()
            assert (body["contentType"], body["width"], body["height"]) == ("image/jpeg", 200, 300)
            content = client.get(f"/api/v1/uploads/{body['id']}/content")
            assert content.headers["content-type"] == "image/jpeg"
            with Image.open(io.BytesIO(content.content)) as stored:
                assert (stored.format, stored.size) == ("JPEG", (200, 300))
                assert not stored.getexif() and "exif" not in stored.info
                rgb = stored.convert("RGB")
                top, bottom = rgb.getpixel((100, 40)), rgb.getpixel((100, 260))
            assert top[0] > 180 and top[2] < 80, f"the top half is red when upright, got {top}"
            assert bottom[2] > 180 and bottom[0] < 80, f"the bottom half is blue when upright, got {bottom}"


def test_a_transparent_avif_is_stored_as_png(shared_server: Server):
    with shared_server.client() as client:
        response = upload(client, pictures.encoded(Image.new("RGBA", (64, 48), (0, 128, 0, 100)), "AVIF"), name="a.avif")
        assert response.status_code == 201, response.text
        assert response.json()["contentType"] == "image/png"
        with Image.open(io.BytesIO(client.get(f"/api/v1/uploads/{response.json()['id']}/content").content)) as stored:
            assert stored.mode == "RGBA" and stored.getpixel((10, 10))[3] < 255


def hostile_modern_pictures() -> list[tuple[bytes, str]]:
    cases = []
    for image_format in ("AVIF", "HEIF"):
        whole = pictures.rotated(image_format, 640, 480)
        cases += [
            (whole[: len(whole) // 2], "truncated"),  # the header whole, the coded picture cut
            (whole[:-40], "truncated"),  # HEIC: the EXIF item cut, which libheif would leave out
            (pictures.declaring(whole, 7000, 7000), "too_many_pixels"),  # 49 MP declared by a tiny file
            (pictures.two_frames(image_format), "animated"),
            # The header whole, the coded picture noise: libavif raised RuntimeError (a 500 before).
            (pictures.garbled(pictures.encoded(pictures.stored_sideways(), image_format)), "corrupt"),
        ]
    return cases


@pytest.mark.parametrize(
    ("data", "reasons"),
    [(data, {reason}) for data, reason in hostile_modern_pictures()]
    # A declared size past what the decoders' own limits accept: refused one way or the other, never decoded.
    + [
        (pictures.declaring(pictures.rotated(image_format), 100_000, 100_000), {"too_many_pixels", "corrupt"})
        for image_format in ("AVIF", "HEIF")
    ],
    ids=[f"{kind}-{case}" for kind in ("avif", "heic") for case in ("half", "end-cut", "bomb", "two-frames", "garbled")]
    + ["avif-huge", "heic-huge"],
)
def test_hostile_avif_and_heic_are_refused_naming_why(shared_server: Server, data: bytes, reasons: set[str]):
    with shared_server.client() as client:
        body = check_error(upload(client, data, name="x.heic", content_type="image/heic"), 422, "IMAGE_INVALID")
        assert body["details"]["reason"] in reasons, body
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [(pictures.png(64, 48), "image/png", "image/png"), (pictures.webp(64, 48), "image/webp", "image/webp")],
)
def test_a_raw_body_with_an_image_type_is_taken(shared_server: Server, data: bytes, content_type: str, expected: str):
    with shared_server.client() as client:
        response = client.post("/api/v1/uploads", content=data, headers={"Content-Type": content_type})
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["contentType"], body["width"], body["height"], body["name"]) == (expected, 64, 48, None)


def test_the_type_is_judged_by_the_bytes_not_the_name_or_declared_type(shared_server: Server):
    with shared_server.client() as client:
        # A PNG sent as photo.jpg, image/jpeg: it is a PNG.
        response = upload(client, pictures.png(), name="photo.jpg", content_type="image/jpeg")
        assert response.status_code == 201 and response.json()["contentType"] == "image/png"
        # Text, a GIF and an SVG dressed as pictures: 415.
        gif = io.BytesIO()
        Image.new("RGB", (8, 8)).save(gif, format="GIF")
        svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
        for data in (b"just some text, not a picture", gif.getvalue(), svg, b""):
            body = check_error(upload(client, data, name="photo.png", content_type="image/png"), 415, "UNSUPPORTED_MEDIA_TYPE")
            assert "PNG, JPEG, WebP, AVIF or HEIC" in body["error"]
            assert body["details"]["accepted"] == [
                "image/png",
                "image/jpeg",
                "image/webp",
                "image/avif",
                "image/heic",
                "image/heif",
            ]
        raw = client.post("/api/v1/uploads", content=b"<html>", headers={"Content-Type": "image/png"})
        check_error(raw, 415, "UNSUPPORTED_MEDIA_TYPE")
        check_error(
            client.post("/api/v1/uploads", content=b"x", headers={"Content-Type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE"
        )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (pictures.truncated_jpeg(), "truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, "corrupt"),
        (pictures.png_declaring(100_000, 100_000), "too_many_pixels"),  # a bomb: 10 gigapixels in 100 bytes
        (pictures.png_declaring(7000, 7000), "too_many_pixels"),  # 49 MP: over the 40 MP limit, under Pillow's 2x
        (pictures.png(20_000, 1), "dimensions"),
        (pictures.png(3000, 100), "dimensions"),  # 30 times longer than high
        (pictures.animated_png(), "animated"),
    ],
    ids=["truncated", "corrupt", "bomb", "over-the-limit", "too-long-a-side", "absurd-ratio", "animated"],
)
def test_hostile_pictures_are_refused_naming_why(shared_server: Server, data: bytes, reason: str):
    with shared_server.client() as client:
        body = check_error(upload(client, data, name="x.png", content_type="image/png"), 422, "IMAGE_INVALID")
        assert body["details"]["reason"] == reason
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("header", pictures.WEBP_HEADERS)
def test_a_webp_is_taken_up_to_the_upload_limit_past_twice_pillows_guard(shared_server: Server, header: str):
    """Issue 15: Pillow's WebP reader checks the size its header declares against the process-wide
    guard (16.8 MP, refusing past twice it), which refused a 36 MP WebP under the 40 MP upload limit
    as "36.0 megapixels, more than the 40.0 megapixels allowed"."""
    with shared_server.client() as client:
        data = pictures.webp_with_header(6000, 6000, header)  # 36 MP
        taken = client.post("/api/v1/uploads", content=data, headers={"Content-Type": "image/webp"})
        assert taken.status_code == 201, taken.text
        assert (taken.json()["contentType"], taken.json()["width"], taken.json()["height"]) == ("image/webp", 6000, 6000)

        over = pictures.webp_with_header(6500, 6308, header)  # 41.0 MP
        body = check_error(upload(client, over, name="x.webp", content_type="image/webp"), 422, "IMAGE_INVALID")
        assert body["details"] == {"reason": "too_many_pixels"}
        assert body["error"] == "The picture is 6500x6308 pixels, more than the 40.0 megapixels allowed."


def test_the_multipart_body_needs_its_file_field(shared_server: Server):
    with shared_server.client() as client:
        misnamed = client.post("/api/v1/uploads", files={"picture": ("a.png", pictures.png(), "image/png")})
        assert check_error(misnamed, 422, "VALIDATION_ERROR")["details"]["field"] == "picture"
        not_a_file = client.post("/api/v1/uploads", files={"file": (None, "just text")})
        assert check_error(not_a_file, 422, "VALIDATION_ERROR")["details"]["field"] == "file"


def test_a_body_over_the_limit_is_refused(small_limits: Server):
    big = pictures.png(8, 8) + b"\x00" * (2**20 + 1)
    with small_limits.client() as client:
        body = check_error(
            client.post("/api/v1/uploads", content=big, headers={"Content-Type": "image/png"}), 413, "PAYLOAD_TOO_LARGE"
        )
        assert body["details"]["maxBytes"] == 2**20
        check_error(upload(client, big, name="big.png", content_type="image/png"), 413, "PAYLOAD_TOO_LARGE")
        # Chunked, with no declared length: counted as it streams.
        chunked = client.post(
            "/api/v1/uploads", content=iter([big[:500_000], big[500_000:]]), headers={"Content-Type": "image/png"}
        )
        check_error(chunked, 413, "PAYLOAD_TOO_LARGE")
        # Within the limit, the same server takes a picture.
        assert upload(client, pictures.rotated_jpeg()).status_code == 201


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(small_limits: Server):
    """The answer comes while the client has sent only the headers of its 100 MB body."""
    with socket.create_connection(("127.0.0.1", small_limits.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {100 * 2**20}\r\n\r\n".encode()
        )
        received = b""
        while chunk := sock.recv(65536):  # the server closes after its answer (Connection: close)
            received += chunk
        answer = received.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "PAYLOAD_TOO_LARGE" in answer


@pytest.fixture(scope="module")
def two_users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("upload-owners") / "data", API_TOKENS=f"alice:{ALICE}, bob:{BOB}").start()
    yield srv
    srv.stop()


def client_of(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def test_uploads_are_owned_like_jobs(two_users: Server):
    with client_of(two_users, ALICE) as alice, client_of(two_users, BOB) as bob:
        with httpx.Client(base_url=two_users.url, timeout=30) as anonymous:
            check_error(upload(anonymous, pictures.png()), 401, "UNAUTHORIZED")
        upload_id = upload(alice, pictures.png()).json()["id"]
        for answer in (
            bob.get(f"/api/v1/uploads/{upload_id}"),
            bob.get(f"/api/v1/uploads/{upload_id}/content"),
            bob.delete(f"/api/v1/uploads/{upload_id}"),
        ):
            check_error(answer, 404, "UPLOAD_NOT_FOUND")
        # Bob cannot animate it either: to him it does not exist.
        job = bob.post("/api/v1/generate", json={"prompt": "slow push in", "settings": {"sourceImage": upload_id}})
        assert job.status_code == 422 and job.json()["details"]["field"] == "settings.sourceImage", job.text
        assert alice.get(f"/api/v1/uploads/{upload_id}").status_code == 200
        assert alice.delete(f"/api/v1/uploads/{upload_id}").status_code == 204
        check_error(alice.get(f"/api/v1/uploads/{upload_id}"), 404, "UPLOAD_NOT_FOUND")
        check_error(alice.delete(f"/api/v1/uploads/{upload_id}"), 404, "UPLOAD_NOT_FOUND")
        check_error(alice.get("/api/v1/uploads/../../etc/passwd"), 404, "NOT_FOUND")
        check_error(alice.get("/api/v1/uploads/upl_nothing-here"), 404, "UPLOAD_NOT_FOUND")


def test_the_stored_file_is_removed_by_delete(tmp_path: Path):
    server = Server(tmp_path / "data").start()
    try:
        with server.client() as client:
            upload_id = upload(client, pictures.rotated_jpeg()).json()["id"]
            stored = tmp_path / "data" / "media" / "uploads" / upload_id
            assert stored.is_file()
            assert b"Exif" not in stored.read_bytes()
            assert client.delete(f"/api/v1/uploads/{upload_id}").status_code == 204
            assert not stored.exists()
    finally:
        server.stop()


def test_an_upload_job_may_leave_out_the_prompt():
    """The prompt only says how the picture moves: left out or empty, the default motion prompt."""
    from backend.jobs.request import DEFAULT_MOTION_PROMPT, validate_request

    for body in ({"settings": {"sourceImage": "upl_abcdefgh12"}}, {"prompt": "", "settings": {"sourceImage": "upl_abcdefgh12"}}):
        request = validate_request(body)
        assert request.provider == "upload" and request.prompt == DEFAULT_MOTION_PROMPT
    with pytest.raises(ValidationError):  # a job that generates its picture still needs a scene
        validate_request({"provider": "local", "prompt": ""})
