"""Users' pictures, which are hostile until checked: what they are (by their first bytes, whatever
their name or declared type says), whether they can be taken, the clean copy that is stored, and
fitting one to a job's size.

Every check runs before the pixels are decoded (backend/media/checks.py: `open_image` reads the
size from the header, with Pillow's own pixel guard raised to the upload limit first). The stored
copy is re-encoded from the decoded pixels, turned upright by its EXIF orientation first, so no
EXIF (GPS), XMP, ICC or text chunk of the user's file is ever stored or served.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, Any, Literal

from PIL import Image, ImageFilter, ImageOps

from backend.media.checks import MediaLimits, MediaRejected, NotAnImage, megapixels, open_image

#: The formats taken, by their signatures (RIFF....WEBP: the four bytes between are the size).
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: Absurd dimensions, even within the pixel limit (a 1x40,000,000 strip): the longest side, and how
#: many times longer than the other side it may be.
MAX_SIDE = 16384
MAX_ASPECT = 20
#: What a refusal's `details.reason` says.
Reason = Literal["truncated", "corrupt", "too_many_pixels", "dimensions", "animated"]
Fit = Literal["crop", "contain"]


class PictureRefused(Exception):
    """The file cannot be taken: `reason` (stable, for clients) and a sentence for the user."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class NotAPicture(Exception):
    """The first bytes are not those of a PNG, JPEG or WebP."""


@dataclass(frozen=True)
class CleanPicture:
    data: bytes
    content_type: str
    width: int
    height: int


def sniff(head: bytes) -> str | None:
    """The format that the file's first bytes announce (PNG, JPEG, WEBP), None for any other."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def allow_pixels(pixels: int) -> None:
    """Raise Pillow's own guard (Image.MAX_IMAGE_PIXELS, set in checks.py) to `pixels` when the upload
    limit is larger; never lower it. `open_image` still refuses anything above each caller's limit."""
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, pixels)


def _check_dimensions(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise PictureRefused("dimensions", f"The picture is {width}x{height} pixels: it has no pixels.")
    if max(width, height) > MAX_SIDE:
        raise PictureRefused("dimensions", f"The picture is {width}x{height} pixels: a side is longer than {MAX_SIDE} pixels.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise PictureRefused(
            "dimensions", f"The picture is {width}x{height} pixels: one side is more than {MAX_ASPECT} times the other."
        )


def _refusal_of_decoding(error: Exception) -> PictureRefused:
    if "truncated" in str(error).lower():
        return PictureRefused("truncated", "The picture is truncated: the file ends before its pixels do.")
    return PictureRefused("corrupt", "The picture is corrupt: its pixels cannot be decoded.")


def _without_metadata(image: Image.Image) -> Image.Image:
    """The pixels alone: only a palette's transparency is kept of the file's extras."""
    kept: dict[str | tuple[int, int], Any] = {key: image.info[key] for key in ("transparency",) if key in image.info}
    image.info = kept
    return image


def clean_picture(source: IO[bytes], pixel_limit: int) -> CleanPicture:
    """The picture, checked and re-encoded upright without metadata, in its own format.

    Raises NotAPicture (by the first bytes) or PictureRefused. Blocking and CPU-bound: run it in
    a thread. The caller has checked the size in bytes already.
    """
    source.seek(0)
    kind = sniff(source.read(16))
    source.seek(0)
    if kind is None:
        raise NotAPicture
    limits = MediaLimits(image_bytes=2**62, image_pixels=pixel_limit)
    try:
        with open_image(source, limits, whose="The picture") as image:
            if image.format != kind:  # the first bytes said one thing, the decoder found another
                raise PictureRefused("corrupt", "The picture is corrupt: its contents do not match its type.")
            _check_dimensions(*image.size)
            if getattr(image, "n_frames", 1) > 1:
                raise PictureRefused("animated", "The picture is animated (several frames): upload a still image.")
            try:
                upright = ImageOps.exif_transpose(image)  # decodes it
            except (OSError, SyntaxError, ValueError, EOFError) as error:
                raise _refusal_of_decoding(error) from error
    except NotAnImage as error:  # the signature matched, but Pillow cannot read the header
        raise PictureRefused("corrupt", "The picture is corrupt: its header cannot be read.") from error
    except MediaRejected as error:  # over the pixel limit (open_image's own message names the size)
        raise PictureRefused("too_many_pixels", f"{error} (limit {megapixels(pixel_limit)}).") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _refusal_of_decoding(error) from error
    clean = _without_metadata(upright)
    buffer = io.BytesIO()
    if kind == "JPEG":
        clean.save(buffer, format="JPEG", quality=95)
    elif kind == "WEBP":
        clean.save(buffer, format="WEBP", quality=95)
    else:
        clean.save(buffer, format="PNG")
    return CleanPicture(buffer.getvalue(), CONTENT_TYPES[kind], clean.width, clean.height)


def fit_picture(data: bytes, width: int, height: int, fit: Fit, pixel_limit: int) -> bytes:
    """A stored upload as the pipeline's PNG of exactly width x height: upright (by any EXIF
    orientation left), then a centre crop (`crop`) or the whole picture on a blurred fill of itself
    (`contain`). Blocking and CPU-bound: run it in a thread."""
    limits = MediaLimits(image_bytes=2**62, image_pixels=pixel_limit)
    with open_image(io.BytesIO(data), limits, whose="The upload") as image:
        image.draft("RGB", (width * 2, height * 2))  # a large JPEG decodes at a fraction of its size
        picture = ImageOps.exif_transpose(image).convert("RGB")
    size = (width, height)
    factor = min(picture.width // (2 * width), picture.height // (2 * height))
    if factor >= 2:  # a cheap box reduction to about twice the target first: LANCZOS over 40 MP takes seconds
        picture = picture.reduce(factor)
    if fit == "crop":
        fitted = ImageOps.fit(picture, size, Image.Resampling.LANCZOS)
    else:
        # The fill is blurred small and enlarged: the same look as blurring it whole, a fraction of the work.
        small = ImageOps.fit(picture, (max(1, width // 8), max(1, height // 8)), Image.Resampling.BILINEAR)
        fitted = small.filter(ImageFilter.GaussianBlur(max(size) / 320)).resize(size, Image.Resampling.BILINEAR)
        front = ImageOps.contain(picture, size, Image.Resampling.LANCZOS)
        fitted.paste(front, ((width - front.width) // 2, (height - front.height) // 2))
    buffer = io.BytesIO()
    fitted.save(buffer, format="PNG")
    return buffer.getvalue()
