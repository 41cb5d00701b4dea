"""Previews of a running step (the frames ComfyUI sends while it samples), made safe to serve.

The bytes come from the provider's socket: they are never stored as they came. Each frame is
checked against small limits before it is decoded, decoded, shrunk to PREVIEW_PIXELS a side and
written again as a plain JPEG, so whatever else the frame carried (EXIF, ICC, comments, trailing
bytes) is dropped.
"""

from __future__ import annotations

import io

from PIL import Image

from backend.media.checks import MediaLimits, open_image

#: The longest side of a stored preview (the studio shows it in a card or beside the steps).
PREVIEW_PIXELS = 512
#: What a preview frame may weigh before it is decoded: ComfyUI's are a few hundred pixels a side.
PREVIEW_LIMITS = MediaLimits(image_bytes=4 * 2**20, image_pixels=2048 * 2048)


def clean_preview(frame: bytes) -> bytes:
    """The frame as a small JPEG without metadata; MediaRejected when it is too large or no image."""
    with open_image(io.BytesIO(frame), PREVIEW_LIMITS, whose="the preview frame") as image:
        image.draft("RGB", (PREVIEW_PIXELS, PREVIEW_PIXELS))  # a JPEG decodes at a fraction of its size
        picture = image.convert("RGB")
    picture.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS), Image.Resampling.BILINEAR)
    # Pixels only: a converted image keeps the source's `info` (EXIF, comment, ICC), which save() writes again.
    bare = Image.new("RGB", picture.size)
    bare.paste(picture)
    buffer = io.BytesIO()
    bare.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
