"""`promptreel generate --image photo.jpg "slow push in" --video-provider runway`: the user's
picture, taken with a rotated EXIF orientation, animated from the command line (Runway's fake
receives the upright, fitted picture); refused pictures and argument mistakes say why."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import av
from PIL import Image

from tests.fakes import FakeRunway, provider_env
from tests.support import pictures
from tests.support.server import ROOT, clean_env


def run_cli(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=clean_env(data_dir, PROMPTREEL_POLL_INTERVAL="0.05", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_upright(picture: Image.Image, width: int, height: int) -> None:
    """Red across the top, blue across the bottom: the upright picture (as stored, it lies on its side)."""
    assert picture.size == (width, height)
    rgb = picture.convert("RGB")
    for x in (width // 10, width // 2, width - width // 10):
        top, bottom = rgb.getpixel((x, height // 10)), rgb.getpixel((x, height - height // 10))
        assert top[0] > 180 and top[2] < 80, f"top at x={x}: {top}"
        assert bottom[2] > 180 and bottom[0] < 80, f"bottom at x={x}: {bottom}"


def test_generate_animates_a_picture_with_runway(tmp_path: Path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(pictures.rotated_jpeg(300, 200))
    runway = FakeRunway().start()
    try:
        result = run_cli(
            "generate", "--image", str(photo), "slow push in, leaves moving", "--video-provider", "runway",
            "-o", str(tmp_path / "out"), data_dir=tmp_path / "data", **provider_env(runway=runway),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "upload → runway" in result.stderr
        paths = [Path(line) for line in result.stdout.splitlines() if line.startswith("/")]
        assert [path.suffix for path in paths] == [".png", ".mp4"]
        assert "image $0.000" in result.stdout
        with Image.open(paths[0]) as image:
            check_upright(image, 1024, 1024)
        task = next(iter(runway.tasks.values()))
        assert task.body["promptText"] == "slow push in, leaves moving"
        assert base64.b64decode(task.body["promptImage"].partition(",")[2]) == paths[0].read_bytes()
        with av.open(str(paths[1])) as container:
            assert next(container.decode(video=0)).width > 0  # Runway's video, downloaded and decodable
        # The upload served its purpose: the job keeps its own fitted copy.
        assert not list((tmp_path / "data" / "media" / "uploads").iterdir())
    finally:
        runway.stop()


def test_generate_animates_a_picture_locally_with_contain(tmp_path: Path):
    photo = tmp_path / "photo.png"
    buffer = io.BytesIO()
    pictures.stored_sideways(300, 200).transpose(Image.Transpose.ROTATE_270).save(buffer, format="PNG")  # upright already
    photo.write_bytes(buffer.getvalue())
    result = run_cli(
        "generate", "--image", str(photo), "leaves moving", "--fit", "contain", "--size", "1792x1024",
        "-o", str(tmp_path / "out"), data_dir=tmp_path / "data",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines() if line.startswith("/")]
    with Image.open(paths[0]) as image:
        assert image.size == (1792, 1024)
        rgb = image.convert("RGB")
        assert rgb.getpixel((896, 8))[0] > 180 and rgb.getpixel((896, 1015))[2] > 180


def test_refused_pictures_and_mistakes_say_why(tmp_path: Path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(pictures.png_declaring(100_000, 100_000))
    data_dir = tmp_path / "data"
    for args, fragment in (
        (["generate", "--image", str(text), "x"], "not a PNG, JPEG, WebP, AVIF or HEIC"),
        (["generate", "--image", str(bomb), "x"], "100000x100000 pixels"),
        (["generate", "--image", str(tmp_path / "missing.jpg"), "x"], "no such file"),
        (["generate", "--image", str(text), "--provider", "local", "x"], "leave out --provider"),
    ):
        result = run_cli(*args, data_dir=data_dir)
        assert result.returncode == 2, result.stderr
        assert fragment in result.stderr, result.stderr
