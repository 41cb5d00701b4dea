"""ComfyUI workflows as files (the built-in ones and a user's own), the availability check against
the fake ComfyUI, and the transcoding of what a workflow saves into H.264 MP4."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
from pathlib import Path

import av
import pytest
from PIL import Image

from backend.media.checks import MediaLimits, MediaRejected
from backend.media.previews import clean_preview
from backend.providers.base import ImageRequest, ProviderError
from backend.providers.comfyui.discovery import comfyui_answers
from backend.providers.comfyui.media import as_png, to_mp4
from backend.providers.comfyui.provider import IMAGE_MODEL, VIDEO_MODEL, ComfyUIProvider, preview_frame
from backend.providers.comfyui.workflow import IMAGE_WORKFLOW, VIDEO_WORKFLOW, Workflow, WorkflowError
from backend.settings import Settings
from tests.fakes.base import Reply
from tests.fakes.fake_comfyui import FakeComfyUI, webp_animation
from tests.fakes.media import png_image, solid_png

#: A FLUX.1 schnell text-to-image workflow in API format, as a user exports it (no [models] in its mapping).
FLUX = {
    "10": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-schnell.safetensors", "weight_dtype": "default"}},
    "11": {
        "class_type": "DualCLIPLoader",
        "inputs": {"clip_name1": "t5xxl_fp8_e4m3fn.safetensors", "clip_name2": "clip_l.safetensors", "type": "flux"},
    },
    "12": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["11", 0]}},
    "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 0, "steps": 4, "cfg": 1.0, "model": ["10", 0], "latent_image": ["5", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["8", 0]}},
}
FLUX_MAPPING = """name = "FLUX.1 schnell"
output = "9"
[inputs]
prompt = "6.text"
seed = "3.seed"
width = "5.width"
height = "5.height"
"""


def user_workflow(tmp_path: Path, mapping: str = FLUX_MAPPING) -> Path:
    path = tmp_path / "flux.json"
    path.write_text(json.dumps(FLUX))
    path.with_suffix(".toml").write_text(mapping)
    return path


def test_the_built_in_workflows_name_their_inputs_models_and_frames():
    image = Workflow.load(IMAGE_WORKFLOW)
    assert [(f.folder, f.filename) for f in image.model_files] == [("checkpoints", "sd_xl_turbo_1.0_fp16.safetensors")]
    graph = image.filled({"prompt": "a fox", "seed": 9, "width": 1792, "height": 1024})
    assert graph["6"]["inputs"]["text"] == "a fox" and graph["13"]["inputs"]["noise_seed"] == 9
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (1792, 1024)
    assert image.graph["6"]["inputs"]["text"] == ""  # the loaded workflow is left as it was

    video = Workflow.load(VIDEO_WORKFLOW)
    assert {(f.folder, f.filename) for f in video.model_files} == {
        ("checkpoints", "ltx-video-2b-v0.9.5.safetensors"),
        ("text_encoders", "t5xxl_fp16.safetensors"),
    }
    assert "LTXVImgToVideo" in video.node_classes
    assert [video.frames_for(seconds, 24) for seconds in (2, 5, 10)] == [49, 121, 241]  # 8n+1, at least seconds x fps
    filled = video.filled({"fps": 24, "image": "up.png"})
    assert (
        filled["69"]["inputs"]["frame_rate"] == 24
        and filled["79"]["inputs"]["fps"] == 24
        and filled["78"]["inputs"]["image"] == "up.png"
    )


def test_a_users_workflow_without_a_models_list_has_its_files_read_from_the_loaders(tmp_path: Path):
    workflow = Workflow.load(user_workflow(tmp_path))
    assert {(f.folder, f.filename) for f in workflow.model_files} == {
        ("diffusion_models", "flux1-schnell.safetensors"),
        ("text_encoders", "t5xxl_fp8_e4m3fn.safetensors"),
        ("text_encoders", "clip_l.safetensors"),
        ("vae", "ae.safetensors"),
    }


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        (FLUX_MAPPING.replace('"6.text"', '"66.text"'), "inputs.prompt: '66.text' names no input of a node in flux.json"),
        (FLUX_MAPPING + 'steps = "3.steps"\n', "inputs.steps: unknown"),
        (FLUX_MAPPING.replace('output = "9"', 'output = "99"'), "output: no node '99' in flux.json"),
        ("output = 9", "flux.toml: "),
    ],
    ids=["unknown node", "unknown input", "unknown output", "bad mapping"],
)
def test_a_mapping_that_cannot_be_used_is_refused_with_the_file_and_field(tmp_path: Path, mapping: str, problem: str):
    with pytest.raises(WorkflowError) as refused:
        Workflow.load(user_workflow(tmp_path, mapping))
    assert problem in str(refused.value) and "flux.toml" in str(refused.value)


def test_the_availability_check_names_each_missing_node_and_model_file(tmp_path: Path):
    with FakeComfyUI() as fake:
        settings = Settings(COMFYUI_URL=fake.url, COMFYUI_IMAGE_WORKFLOW=user_workflow(tmp_path))  # type: ignore[call-arg]
        provider = ComfyUIProvider(settings)
        ok, reason = provider.check_model(IMAGE_MODEL, 5.0)
        assert ok is False and reason is not None
        assert "ComfyUI has no node `UNETLoader`" in reason and "ComfyUI has no node `EmptySD3LatentImage`" in reason
        assert "ComfyUI has no diffusion model `flux1-schnell.safetensors` in `diffusion_models`" in reason
        assert "ComfyUI has no VAE `ae.safetensors` in `vae`" in reason
        assert provider.check_model(VIDEO_MODEL, 5.0) == (True, None)  # the built-in video workflow: all there
        assert provider.check_key(5.0) == (True, None)
        assert fake.seen("GET", "/object_info/UNETLoader") and fake.seen("GET", "/models/diffusion_models")


def test_a_wrong_token_is_a_refused_key():
    with FakeComfyUI(token="right") as fake:
        settings = Settings(COMFYUI_URL=fake.url, COMFYUI_TOKEN="wrong")  # type: ignore[call-arg]
        ok, reason = ComfyUIProvider(settings).check_key(5.0)
    assert ok is False and reason is not None and "COMFYUI_TOKEN" in reason


def frames_of(path: Path) -> tuple[str, int, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, count, (stream.codec_context.width, stream.codec_context.height)


def test_an_animated_webp_and_an_image_sequence_become_h264_mp4(tmp_path: Path):
    webp = tmp_path / "out.webp"
    webp.write_bytes(webp_animation(96, 64, 17, 24))
    assert to_mp4([webp], tmp_path / "webp.mp4", 24) == (96, 64)
    assert frames_of(tmp_path / "webp.mp4") == ("h264", 17, (96, 64))

    frames = []
    for index in range(5):
        path = tmp_path / f"frame_{index}.png"
        path.write_bytes(png_image(65, 48))  # an odd width: 4:2:0 needs even sides
        frames.append(path)
    assert to_mp4(frames, tmp_path / "sequence.mp4", 8) == (64, 48)
    assert frames_of(tmp_path / "sequence.mp4") == ("h264", 5, (64, 48))


class Step:
    """The pipeline's side of a step, as the provider sees it (StepContext), recording what it is told."""

    def __init__(self) -> None:
        self.cancel_event = threading.Event()
        self.remote_id: str | None = None
        self.resumed = False
        self.lines: list[str] = []
        self.fractions: list[float] = []
        self.previews: list[bytes] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.fractions.append(fraction)

    def log(self, message: str) -> None:
        self.lines.append(message)

    async def save_remote_id(self, remote_id: str) -> None:
        self.remote_id = remote_id

    def remote_succeeded(self, model: str) -> None:
        self.lines.append(f"succeeded: {model}")

    def preview(self, frame: bytes) -> None:
        self.previews.append(frame)


async def test_a_workflow_comfyui_refuses_fails_with_the_node_type_and_its_words(tmp_path: Path):
    with FakeComfyUI() as fake:
        fake.remove_model("checkpoints", "sd_xl_turbo_1.0_fp16.safetensors")  # after the check: a stale verdict
        provider = ComfyUIProvider(Settings(COMFYUI_URL=fake.url, PROMPTREEL_DATA_DIR=tmp_path))  # type: ignore[call-arg]
        step = Step()
        with pytest.raises(ProviderError) as refused:
            await provider.generate(ImageRequest("a fox", 1024, 1024, "standard", 3), step)
    message = refused.value.message
    assert message.startswith("ComfyUI refused the workflow: Prompt outputs failed validation")
    assert "CheckpointLoaderSimple (node 4): Value not in list: ckpt_name: 'sd_xl_turbo_1.0_fp16.safetensors' not in" in message
    assert step.remote_id is None and not fake.history


async def test_an_image_step_in_process_reports_sampling_progress_and_returns_the_png(tmp_path: Path):
    with FakeComfyUI() as fake:
        fake.pause_at_step = 1  # the prompt runs when the provider follows it over /ws
        provider = ComfyUIProvider(Settings(COMFYUI_URL=fake.url, PROMPTREEL_DATA_DIR=tmp_path))  # type: ignore[call-arg]
        step = Step()
        task = asyncio.create_task(provider.generate(ImageRequest("a fox", 1024, 1792, "standard", 3), step))
        await fake.until(lambda: fake.paused.is_set())
        fake.release()
        result = await task
    assert result.model == IMAGE_MODEL and result.png == png_image(1024, 1792)
    assert step.remote_id in fake.history and f"succeeded: {IMAGE_MODEL}" in step.lines
    sampling = [f for f in step.fractions if 0.02 < f < 1]
    assert len(sampling) == fake.steps and sampling == sorted(sampling), (
        step.fractions,
        step.lines,
    )  # one per `progress` value/max
    assert not list((tmp_path / "tmp").iterdir())  # the downloaded files are gone
    # each sampling step's binary preview reached the step as the image alone (the 8-byte header taken off)
    assert step.previews == [fake.preview_image(value) for value in range(1, fake.steps + 1)]


def test_an_image_larger_than_the_limits_is_refused_before_it_is_decoded():
    with pytest.raises(ValueError, match="ComfyUI's image"):
        as_png(solid_png(13000, 13000), MediaLimits())
    assert as_png(png_image(64, 48), MediaLimits()) == (png_image(64, 48), (64, 48))


def test_binary_preview_frames_are_read_as_comfyuis_server_sends_them():
    jpeg, png = b"\xff\xd8\xff\xe0jpeg", b"\x89PNG\r\n\x1a\npng"
    assert preview_frame(struct.pack(">II", 1, 1) + jpeg, "p1") == jpeg  # PREVIEW_IMAGE, JPEG
    assert preview_frame(struct.pack(">II", 1, 2) + png, "p1") == png  # PREVIEW_IMAGE, PNG

    def with_metadata(metadata: dict[str, str], image: bytes) -> bytes:
        text = json.dumps(metadata).encode()
        return struct.pack(">II", 4, len(text)) + text + image  # PREVIEW_IMAGE_WITH_METADATA

    assert preview_frame(with_metadata({"prompt_id": "p1", "image_type": "image/jpeg"}, jpeg), "p1") == jpeg
    assert preview_frame(with_metadata({"prompt_id": "p2", "image_type": "image/jpeg"}, jpeg), "p1") is None  # another prompt's
    for other in (
        struct.pack(">II", 1, 7) + jpeg,  # an image type ComfyUI does not send
        struct.pack(">I", 3) + struct.pack(">I", 2) + b"12progress text",  # TEXT
        struct.pack(">II", 4, 500) + b"{not json",
        b"\x00\x00",
        struct.pack(">II", 1, 1),  # no image
    ):
        assert preview_frame(other, "p1") is None


def test_a_preview_is_stored_re_encoded_small_and_without_metadata():
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    buffer = io.BytesIO()
    Image.new("RGB", (1600, 800), (200, 40, 40)).save(buffer, format="JPEG", exif=exif.tobytes(), comment=b"hello")
    with Image.open(io.BytesIO(clean_preview(buffer.getvalue() + b"trailing bytes"))) as stored:
        assert stored.format == "JPEG" and stored.size == (512, 256)
        assert not stored.getexif() and "comment" not in stored.info and "exif" not in stored.info
    with pytest.raises(MediaRejected):
        clean_preview(b"<html>not an image</html>")
    huge = io.BytesIO()
    Image.new("L", (3000, 3000)).save(huge, format="PNG")
    with pytest.raises(MediaRejected):  # past the preview's pixel limit: refused from its header
        clean_preview(huge.getvalue())


def test_the_desktop_probe_takes_only_comfyuis_own_answer():
    with FakeComfyUI() as fake, FakeComfyUI(token="a-proxy-token") as guarded:
        url = fake.url
        assert comfyui_answers(fake.url)
        assert comfyui_answers(fake.url + "/")
        assert not comfyui_answers(guarded.url)  # 401: not one the desktop app can use as it is
        fake.script("system_stats", Reply(200, {"status": "ok"}))  # some other server's health answer
        assert not comfyui_answers(fake.url)
        fake.script("system_stats", Reply(200, "<html>a router's page</html>", media_type="text/html"))
        assert not comfyui_answers(fake.url)
    assert not comfyui_answers(url, timeout=0.5)  # gone: nothing answers
