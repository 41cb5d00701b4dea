"""A hostile (or compromised) provider against the real server: outputs that would exhaust its
memory, and output URLs that point it at internal services (SSRF). Each job must fail with a
plain step error that leaks nothing, the server's memory must stay bounded, and the internal
service must never be reached."""

from __future__ import annotations

import asyncio
import gzip
import io
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from backend.media.checks import MediaLimits, MediaRejected, open_image
from backend.media.local import LocalMediaStore
from backend.providers.base import ProviderError, VideoRequest
from backend.providers.local import LocalVideoProvider
from backend.providers.openai_images import OpenAIImageProvider as DalleImageProvider
from backend.providers.output_urls import OutputUrlPolicy, PinnedRequest
from backend.providers.remote import API_ANSWER_BYTES, NO_KEEPALIVE, open_pinned
from backend.providers.replicate_images import ReplicateImageProvider
from backend.providers.retry import RetryPolicy
from backend.providers.runway import image_data_uri
from backend.settings import Settings
from components.job_card import THUMBNAIL_ROUTE
from tests.fakes import FakeOpenAI, FakeReplicate, provider_env
from tests.fakes.base import Reply
from tests.fakes.hostile import SECRET, SecretServer
from tests.fakes.media import png_image, solid_png
from tests.support.server import Server
from tests.system.test_providers_server import job_request, run_job
from tests.unit.test_providers import RecordingContext, image_request

POLL = {"PROMPTREEL_POLL_INTERVAL": "0.05"}
#: What a hostile answer may add to the server's peak memory: far below the 500 MB to 1.5 GB
#: these answers took before outputs were streamed to disk and images checked before decoding.
MEMORY_BOUND = 200 * 2**20


def peak_memory(server: Server) -> int:
    """The server process's peak resident memory (VmHWM), in bytes."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture(scope="module")
def replicate() -> Iterator[FakeReplicate]:
    with FakeReplicate() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture(scope="module")
def secret() -> Iterator[SecretServer]:
    with SecretServer() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def fresh_server(replicate: FakeReplicate, tmp_path: Path) -> Iterator[Server]:
    """A server of its own for each memory test: its peak memory says what that one job took."""
    server = Server(tmp_path / "data", **provider_env(replicate=replicate), **POLL).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def studio(replicate: FakeReplicate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("hostile") / "data", **provider_env(replicate=replicate), **POLL).start()
    yield server
    server.stop()


# -- item 3: answers that would exhaust the server's memory ------------------------------------


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ("huge_image", "Image generation failed: Replicate's image is 13000x13000 pixels, more than the 16.8 megapixels allowed"),
        (
            "endless_output",
            "Image generation failed: Replicate's output is larger than the 50 MB allowed (PROMPTREEL_MAX_IMAGE_BYTES)",
        ),
    ],
    ids=["13000x13000-png", "endless-output"],
)
async def test_an_oversized_output_fails_the_step_with_bounded_memory(
    fresh_server: Server, replicate: FakeReplicate, outcome: str, error: str
):
    replicate.outcomes.append(outcome)
    before = peak_memory(fresh_server)
    end, job = await run_job(fresh_server, job_request(f"a hostile answer: {outcome}", "flux1", "local"))
    grown = peak_memory(fresh_server) - before
    assert end["type"] == "job_failed", job
    assert job["error"] == error
    assert grown < MEMORY_BOUND, f"the server's peak memory grew by {grown / 2**20:.0f} MB"
    assert job["steps"][0]["status"] == "failed"
    assert_charged_for_the_refused_output(job)
    with fresh_server.client() as api:  # nothing was stored
        assert api.get(f"/api/v1/jobs/{job['id']}/download/image").status_code == 404


def assert_charged_for_the_refused_output(job: dict) -> None:
    """The prediction succeeded (Replicate charged for it) before its output was refused: the failed
    job's cost says so (flux-schnell, $0.003), and the step's log tells why."""
    assert job["cost"] == {"imageGeneration": 0.003, "videoGeneration": 0.0, "total": 0.003}, job["cost"]
    assert "the provider had finished this step: charged $0.0030" in job["steps"][0]["log"][-1]


def double_gzip_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes compressed twice: a few kB on the wire, sent as `Content-Encoding: gzip, gzip`."""
    return gzip.compress(gzip.compress(bytes(inflated), 9), 9)


@pytest.mark.parametrize("route", ["poll", "files"], ids=["poll-answer", "output"])
async def test_a_compressed_answer_is_refused_before_it_is_inflated(fresh_server: Server, replicate: FakeReplicate, route: str):
    """The server asks for no compression; httpx used to inflate whatever came, each chunk whole,
    before any cap counted it: 2 kB of `gzip, gzip` grew the server by twice the inflated size."""
    bomb = double_gzip_bomb(256 * 2**20)
    assert len(bomb) < 4096
    replicate.script(
        route,
        Reply(
            200,
            bomb,
            headers={"Content-Encoding": "gzip, gzip"},
            media_type="application/json" if route == "poll" else "image/png",
        ),
    )
    before = peak_memory(fresh_server)
    end, job = await run_job(fresh_server, job_request(f"a compressed answer: {route}", "flux1", "local"))
    grown = peak_memory(fresh_server) - before
    assert end["type"] == "job_failed", job
    assert job["error"] == "Image generation failed: Replicate answered compressed, which was not asked for; refused"
    if route == "files":  # the prediction had succeeded: Replicate charged for it
        assert_charged_for_the_refused_output(job)
    else:  # the poll answer itself was refused: nothing says the prediction succeeded
        assert job["cost"]["total"] == 0
    assert grown < MEMORY_BOUND, f"the server's peak memory grew by {grown / 2**20:.0f} MB"
    assert all(seen.headers.get("accept-encoding") == "identity" for seen in replicate.seen())


async def test_an_api_answer_larger_than_an_answer_may_be_is_refused_while_read(replicate: FakeReplicate):
    """A poll answer is read whole: it stops at API_ANSWER_BYTES instead of taking whatever comes."""
    replicate.script("poll", Reply(200, b'{"status": "processing", "logs": "' + b"x" * (API_ANSWER_BYTES + 1) + b'"}'))
    provider = ReplicateImageProvider(
        Settings(
            _env_file=None, PROMPTREEL_POLL_INTERVAL=0.01, REPLICATE_API_TOKEN=replicate.key, REPLICATE_BASE_URL=replicate.url
        ),  # type: ignore[call-arg]
        policy=RetryPolicy(attempts=1),
    )
    with pytest.raises(ProviderError, match=r"^Replicate's answer is larger than the 4 MB allowed; refused$"):
        await provider.generate(image_request(), RecordingContext())


async def test_key_checks_and_dalle_refuse_a_compressed_answer(replicate: FakeReplicate):
    """The key checks run in the server too (its background checks), and DALL-E's client is OpenAI's own."""
    replicate.script("account", Reply(200, double_gzip_bomb(64 * 2**20), headers={"Content-Encoding": "gzip, gzip"}))
    provider = ReplicateImageProvider(
        Settings(_env_file=None, REPLICATE_API_TOKEN=replicate.key, REPLICATE_BASE_URL=replicate.url),  # type: ignore[call-arg]
    )
    with pytest.raises(ProviderError, match="answered compressed"):
        provider.check_key()
    with FakeOpenAI() as openai:
        openai.script("models", Reply(200, double_gzip_bomb(64 * 2**20), headers={"Content-Encoding": "gzip"}))
        dalle = DalleImageProvider(
            Settings(_env_file=None, OPENAI_API_KEY=openai.key, OPENAI_BASE_URL=openai.base_url),
            policy=RetryPolicy(attempts=1),  # type: ignore[call-arg]
        )
        with pytest.raises(ProviderError, match="answered compressed"):
            dalle.check_key()
        openai.script("images", Reply(200, double_gzip_bomb(64 * 2**20), headers={"Content-Encoding": "gzip, gzip"}))
        with pytest.raises(ProviderError, match=r"^OpenAI answered compressed, which was not asked for; refused$"):
            await dalle.generate(image_request(), RecordingContext())


# -- item 4: output URLs that point the server inside --------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "target", "error"),
    [
        ("points_inside", "http://127.0.0.1:{port}/admin/secret", "Replicate's output URL points at a private address; refused"),
        ("points_inside", "https://localhost:{port}/admin/secret", "Replicate's output URL points at a private address; refused"),
        (
            "points_inside",
            "https://[::ffff:127.0.0.1]:{port}/admin/secret",
            "Replicate's output URL points at a private address; refused",
        ),
        (
            "redirects_inside",
            "http://127.0.0.1:{port}/admin/secret",
            "Replicate's output URL redirects to a private address; refused",
        ),
        ("points_inside", "file:///etc/passwd", "Replicate's output URL points at something other than an https URL; refused"),
        # Not valid URLs: httpx's own errors ("For absolute URLs, path must be empty...") failed the job as internal errors.
        (
            "redirects_inside",
            "http:\\\\127.0.0.1\\x",
            "Replicate's output URL redirects to an address that is not a valid URL; refused",
        ),
        ("redirects_inside", "http://[::1", "Replicate's output URL redirects to an address that is not a valid URL; refused"),
        ("points_inside", "http://xn--/x", "Replicate's output URL points at an address that is not a valid URL; refused"),
    ],
    ids=[
        "loopback-other-port",
        "https-localhost",
        "ipv4-mapped-ipv6",
        "redirect-chain",
        "file-url",
        "backslash-redirect",
        "unclosed-ipv6-redirect",
        "bad-idna-host",
    ],
)
async def test_an_output_url_pointing_inside_is_refused_and_never_fetched(
    studio: Server, replicate: FakeReplicate, secret: SecretServer, outcome: str, target: str, error: str
):
    """The provider's API is on 127.0.0.1 (its own endpoint, where its outputs may be served):
    another port on the same loopback is another service, and is refused like any private address."""
    replicate.hostile_target = target.format(port=secret.port)
    replicate.outcomes.append(outcome)
    redirects_before = len(replicate.seen("GET", prefix="/redirect/"))
    end, job = await run_job(studio, job_request(f"a hostile URL: {outcome}", "flux1", "local"))
    assert end["type"] == "job_failed", job
    assert job["error"] == f"Image generation failed: {error}"
    assert secret.seen() == []  # never reached, not even once
    assert_charged_for_the_refused_output(job)
    if outcome == "redirects_inside":  # the chain was followed on the fake's own endpoint, up to the hop that left it
        assert len(replicate.seen("GET", prefix="/redirect/")) == redirects_before + 3
    log = "\n".join(line for step in job["steps"] for line in step["log"])
    assert SECRET not in log and str(secret.port) not in job["error"] and "bytes" not in job["error"]


async def test_a_declared_content_length_over_the_cap_is_refused_before_reading(replicate: FakeReplicate):
    """The fake declares 500 MB and then sends almost nothing: only a check of Content-Length
    ends this at once (reading would wait for bytes that never come)."""
    replicate.outcomes.append("declares_huge")
    provider = ReplicateImageProvider(
        Settings(
            _env_file=None, PROMPTREEL_POLL_INTERVAL=0.01, REPLICATE_API_TOKEN=replicate.key, REPLICATE_BASE_URL=replicate.url
        ),  # type: ignore[call-arg]
        policy=RetryPolicy(attempts=1),
    )
    with pytest.raises(
        ProviderError, match=r"^Replicate's output is larger than the 50 MB allowed \(PROMPTREEL_MAX_IMAGE_BYTES\)$"
    ):
        await asyncio.wait_for(provider.generate(image_request(), RecordingContext()), 20)


async def test_an_openai_answer_larger_than_an_image_may_be_is_refused_while_read():
    """DALL-E's image comes inside the JSON answer (base64): that answer is capped too."""
    with FakeOpenAI() as fake:
        fake.image_override = png_image(1024, 1024, noisy=True)  # about 3 MB, 4 MB as base64
        provider = DalleImageProvider(
            Settings(_env_file=None, OPENAI_API_KEY=fake.key, OPENAI_BASE_URL=fake.base_url, PROMPTREEL_MAX_IMAGE_BYTES=2**20),  # type: ignore[call-arg]
            policy=RetryPolicy(attempts=1),
        )
        with pytest.raises(ProviderError, match=r"^OpenAI's answer is larger than the 2.3 MB an image of at most 1 MB takes"):
            await provider.generate(image_request(), RecordingContext())


async def test_outputs_on_the_providers_own_endpoint_still_work(studio: Server, replicate: FakeReplicate):
    """The fakes serve outputs on their own server under another name (localhost vs 127.0.0.1):
    the same address and port as the API, so allowed, while the key still stays with the API."""
    end, job = await run_job(studio, job_request("a quiet harbour at dawn", "flux1", "local"))
    assert end["type"] == "job_completed", job
    [download] = replicate.seen("GET", prefix="/files/")[-1:]
    assert download.headers["host"].startswith("localhost:") and "authorization" not in download.headers


async def test_output_url_rules_without_a_server():
    policy = OutputUrlPolicy("https://api.replicate.com", provider="flux1", label="Replicate")
    [pinned] = await policy.pin(httpx.URL("https://93.184.215.14:8443/out.png?sig=1"))
    assert str(pinned.url) == "https://93.184.215.14:8443/out.png?sig=1" and pinned.headers == {"Host": "93.184.215.14:8443"}
    for refused in (
        "http://93.184.215.14/out.png",
        "https://10.0.0.7/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://0.0.0.0/x",
        "https://100.64.0.1/x",
        "ftp://93.184.215.14/x",
        "https://[2002:7f00:1::1]/x",
        "https://[64:ff9b::a00:7]/x",
        "https://[64:ff9b:1::7f00:1]/x",
        "https://[::7f00:1]/x",
        "https://[::ffff:0:a00:7]/x",
    ):
        with pytest.raises(ProviderError, match="refused"):
            await policy.pin(httpx.URL(refused))
    # A self-hosted gateway on a private address: its own endpoint is allowed, nothing else there.
    gateway = OutputUrlPolicy("http://10.0.0.5:8080", provider="flux1", label="Replicate")
    assert [str(pinned.url) for pinned in await gateway.pin(httpx.URL("http://10.0.0.5:8080/files/a.png"))] == [
        "http://10.0.0.5:8080/files/a.png"
    ]
    with pytest.raises(ProviderError, match="private address"):
        await gateway.pin(httpx.URL("http://10.0.0.5:9000/admin"))
    # Unless the setting trusts the network.
    trusting = OutputUrlPolicy("https://api.replicate.com", provider="flux1", label="Replicate", allow_private=True)
    assert [str(pinned.url) for pinned in await trusting.pin(httpx.URL("http://10.0.0.7/x"))] == ["http://10.0.0.7/x"]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ssl.SSLContext]]:
    """An https file server with a certificate for `localhost` (on 127.0.0.1 only), and a client
    TLS context that trusts it."""
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    authority.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))

    async def echo_host(request: Request) -> Response:
        return PlainTextResponse(request.headers["host"])

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # listening now: a client may connect before uvicorn's loop runs
    config = uvicorn.Config(
        Starlette(routes=[Route("/x", echo_host)]), ssl_certfile=str(folder / "server.pem"), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    yield sock.getsockname()[1], client_context
    server.should_exit = True
    thread.join(10)
    sock.close()


async def test_a_pinned_request_keeps_the_tls_name_check(tls_files: tuple[int, ssl.SSLContext]):
    """The request goes to the checked IP, but TLS still names and verifies the URL's host: a
    certificate for another name fails. When a checked address refuses the connection, the next
    one is tried (a name with an IPv6 and an IPv4 address of which one does not answer)."""
    port, context = tls_files
    policy = OutputUrlPolicy("https://api.example.com", provider="flux1", label="Replicate", allow_private=True)
    # as download() makes it: no pooled connection, which would carry one name's TLS session to another
    async with httpx.AsyncClient(verify=context, timeout=10, limits=NO_KEEPALIVE) as client:
        async with open_pinned(client, await policy.pin(httpx.URL(f"https://localhost:{port}/x")), {}) as response:
            await response.aread()
        assert response.status_code == 200 and response.text == f"localhost:{port}"
        with socket.socket() as unused:  # a port nobody listens on: the first address refuses
            unused.bind(("127.0.0.1", 0))
            closed = unused.getsockname()[1]
        reachable = next(
            pinned for pinned in await policy.pin(httpx.URL(f"https://localhost:{port}/x")) if pinned.url.host == "127.0.0.1"
        )
        refusing = PinnedRequest(reachable.url.copy_with(port=closed), reachable.headers, reachable.extensions)
        async with open_pinned(client, [refusing, reachable], {}) as response:
            await response.aread()
        assert response.text == f"localhost:{port}"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            async with open_pinned(client, await policy.pin(httpx.URL(f"https://127.0.0.1:{port}/x")), {}):
                pass


# -- the shared image check, and thumbnails ------------------------------------------------------


def check_image(source: io.BytesIO, limits: MediaLimits) -> tuple[str | None, tuple[int, int]]:
    """(format, size) of an image within the limits, as the providers and the media store open it."""
    with open_image(source, limits, whose="the image") as image:
        return image.format, image.size


def test_the_image_check_reads_only_the_header(tmp_path: Path):
    limits = MediaLimits()
    assert check_image(io.BytesIO(png_image(1792, 1024)), limits) == ("PNG", (1792, 1024))
    with pytest.raises(MediaRejected, match=r"the image is 5000x4000 pixels, more than the 16.8 megapixels allowed"):
        check_image(io.BytesIO(solid_png(5000, 4000)), limits)
    jpeg = io.BytesIO()
    Image.new("RGB", (20000, 1000)).save(jpeg, format="JPEG")  # past Pillow's own guard: its size is read from the header
    with pytest.raises(MediaRejected, match=r"the image is 20000x1000 pixels, more than the 16.8 megapixels allowed"):
        check_image(jpeg, limits)
    with pytest.raises(MediaRejected, match=r"more than the 1 MB allowed"):
        check_image(io.BytesIO(bytes(2 * 2**20)), MediaLimits(image_bytes=2**20))


async def test_concurrent_thumbnails_of_an_oversized_stored_image_decode_nothing(fresh_server: Server):
    """An image stored before these checks (or put there by hand) that is far too large: three
    studio lists asking for its thumbnail at once used to decode it three times over."""
    end, job = await run_job(fresh_server, job_request("a lighthouse in fog", "flux1", "local"))
    assert end["type"] == "job_completed", job
    (fresh_server.data_dir / "media" / job["id"] / "image.png").write_bytes(solid_png(8000, 8000))
    before = peak_memory(fresh_server)
    async with httpx.AsyncClient(base_url=fresh_server.url, timeout=60) as client:
        answers = await asyncio.gather(*(client.get(f"{THUMBNAIL_ROUTE}/{job['id']}.jpg") for _ in range(3)))
    grown = peak_memory(fresh_server) - before
    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert grown < MEMORY_BOUND, f"the server's peak memory grew by {grown / 2**20:.0f} MB"


async def test_the_video_steps_check_their_input_image_before_decoding_it(tmp_path: Path):
    image = tmp_path / "image.png"
    image.write_bytes(solid_png(13000, 13000))
    request = VideoRequest(prompt="a hostile input", image_path=image, duration=5, seed=1, output_path=tmp_path / "video.mp4")
    message = r"^the image to animate is 13000x13000 pixels, more than the 16.8 megapixels allowed$"
    with pytest.raises(ProviderError, match=message):
        await LocalVideoProvider().animate(request, RecordingContext())
    with pytest.raises(ProviderError, match=message):  # Runway's step reads it to send it
        image_data_uri(image)
    assert not request.output_path.exists()


def test_a_thumbnail_is_made_once_and_stored(tmp_path: Path):
    store = LocalMediaStore(tmp_path / "media")
    relative = store.write_image("job_thumbnail01", png_image(1792, 1024))
    first = store.thumbnail(relative)
    assert first is not None and (tmp_path / "media" / "job_thumbnail01" / "thumbnail.jpg").read_bytes() == first
    with Image.open(io.BytesIO(first)) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (256, 146)
    (tmp_path / "media" / relative).write_bytes(b"not read again")  # the stored thumbnail is served, the image not decoded
    assert store.thumbnail(relative) == first
    # An image stored before the checks existed, larger than allowed: no thumbnail, and no decoding.
    huge = store.write_image("job_thumbnail02", solid_png(13000, 13000))
    assert store.thumbnail(huge) is None
