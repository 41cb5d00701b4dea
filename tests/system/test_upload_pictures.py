"""Uploads and Pillow's process-wide pixel guard (Image.MAX_IMAGE_PIXELS, set once in
backend/media/checks.py): the upload limit, even when it is larger, never loosens the guard that
every other decoding (provider outputs, the studio) relies on; a picture within the upload limit is
still taken, fitted and previewed, and one above it is refused from its header."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from backend.errors import ImageInvalid
from backend.settings import Settings
from backend.system import System
from backend.uploads.images import fit_picture
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
