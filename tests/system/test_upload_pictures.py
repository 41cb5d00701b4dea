"""Uploads and Pillow's process-wide pixel guard (Image.MAX_IMAGE_PIXELS, set once in
backend/media/checks.py): the upload limit, even when it is larger, never loosens the guard that
every other decoding (provider outputs, the studio) relies on; a picture within the upload limit is
still taken, fitted and previewed, and one above it is refused from its header."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from backend.errors import ImageInvalid
from backend.media.checks import MAX_IMAGE_PIXELS, MediaLimits, MediaRejected, open_image
from backend.settings import Settings
from backend.system import System
from backend.uploads.images import PictureRefused, clean_picture, fit_picture
from components.picture_input import preview_url
from tests.support import pictures

#: A guard far below the upload limit, as checks.py's 16.8 MP is below the default 40 MP.
GUARD = 1_000_000
UPLOAD_LIMIT = 4_000_000


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[System]:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", GUARD)
    built = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path, PROMPTREEL_MAX_UPLOAD_PIXELS=str(UPLOAD_LIMIT)))
    built.migrate()
    yield built
    built.engine.dispose()


async def test_the_upload_limit_leaves_pillows_guard_alone(system: System):
    assert Image.MAX_IMAGE_PIXELS == GUARD
    large = pictures.png(2000, 1500)  # 3 MP: more than twice the guard, within the upload limit
    # Everything else that opens an image still has the guard.
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(large))

    upload = await system.uploads.create(io.BytesIO(large), len(large), "large.png")
    assert (upload.width, upload.height) == (2000, 1500)
    assert Image.MAX_IMAGE_PIXELS == GUARD
    stored = system.uploads.read(upload)
    assert stored is not None
    # The job's image step and the studio's preview open it past the guard too, for this picture only.
    with Image.open(io.BytesIO(fit_picture(stored, 512, 512, "crop", upload.width * upload.height))) as fitted:
        assert fitted.size == (512, 512)
    assert preview_url(stored, upload.width * upload.height).startswith("data:image/jpeg;base64,")

    over = pictures.png_declaring(2100, 2000)  # 4.2 MP: refused from its header, before any decoding
    with pytest.raises(ImageInvalid) as refused:
        await system.uploads.create(io.BytesIO(over), len(over), "over.png")
    assert refused.value.details == {"reason": "too_many_pixels"}
    assert Image.MAX_IMAGE_PIXELS == GUARD


def provider_style_opens(large_webp: bytes) -> None:
    """What any other decoding sees of Pillow's guard (checks.py's 16.8 MP): a provider's image."""
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
    twenty = pictures.png_declaring(5000, 4000)  # 20 MP: Pillow warns between one and two times its guard
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        Image.open(io.BytesIO(twenty)).close()
    assert [warning.category for warning in caught] == [Image.DecompressionBombWarning]
    with pytest.raises(Image.DecompressionBombError):  # past twice it: refused by the WebP reader itself
        Image.open(io.BytesIO(large_webp))
    with pytest.raises(MediaRejected) as refused:
        with open_image(io.BytesIO(twenty), MediaLimits(), whose="Replicate's image"):
            pass
    assert str(refused.value) == "Replicate's image is 5000x4000 pixels, more than the 16.8 megapixels allowed"


async def test_a_large_webp_upload_leaves_pillows_guard_to_every_other_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 15, with the product's own limits (16.8 MP guard, 40 MP uploads): a 36 MP WebP is taken,
    fitted and previewed, and while it decodes (in its own thread), a provider's image opened in
    another thread still meets Pillow's guard at 16.8 MP."""
    system = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path))
    system.migrate()
    assert system.settings.max_upload_pixels == 40_000_000
    large = pictures.webp_with_header(6000, 6000, "VP8X")  # the reviewer's header: 36 MP, under 40
    decoding = ImageOps.exif_transpose
    seen: list[bool] = []

    def meanwhile_in_another_thread(image: Image.Image, **options: bool) -> Image.Image:
        # Called by clean_picture inside open_image, just before it decodes the upload.
        with ThreadPoolExecutor(1) as other:
            other.submit(provider_style_opens, large).result(timeout=60)
        seen.append(True)
        return decoding(image, **options)

    monkeypatch.setattr(ImageOps, "exif_transpose", meanwhile_in_another_thread)
    try:
        upload = await system.uploads.create(io.BytesIO(large), len(large), "large.webp")
        assert seen == [True]
        assert (upload.content_type, upload.width, upload.height) == ("image/webp", 6000, 6000)
        stored = system.uploads.read(upload)
        assert stored is not None
        with Image.open(io.BytesIO(fit_picture(stored, 512, 512, "contain", upload.width * upload.height))) as fitted:
            assert fitted.size == (512, 512)
        assert preview_url(stored, upload.width * upload.height).startswith("data:image/jpeg;base64,")

        over = pictures.webp_with_header(6500, 6308, "VP8X")
        with pytest.raises(ImageInvalid) as refused:
            await system.uploads.create(io.BytesIO(over), len(over), "over.webp")
        assert refused.value.details == {"reason": "too_many_pixels"}
        assert refused.value.message == "The picture is 6500x6308 pixels, more than the 40.0 megapixels allowed."
        with pytest.raises(PictureRefused):  # refused in this thread too
            clean_picture(io.BytesIO(over), system.settings.max_upload_pixels)
        # Once its uploads' calls are done, refused or not, this thread has Pillow's guard as before.
        provider_style_opens(large)
    finally:
        system.engine.dispose()
