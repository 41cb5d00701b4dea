"""Checking media that came from outside (provider outputs, a video step's input, later uploads)
against the limits, before anything decodes them whole.

An image's pixel count is read from its header before a single pixel is decoded: a 13000x13000
PNG of one colour is a few hundred KB on the wire but 676 MB once decoded. Pillow's own guard,
`Image.MAX_IMAGE_PIXELS`, is set here to the same limit, so that any other place that opens an
image refuses such a file too. Nothing changes it afterwards: a caller whose own limit is larger
(users' uploads) gets past it for that one call only (`open_image`), never for the whole process.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import av
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError, WebPImagePlugin

if TYPE_CHECKING:
    from backend.settings import Settings

#: The largest image the product takes: outputs are 1792x1024 at most today; this leaves room
#: for larger provider sizes (a 4096x4096 image decodes to 64 MB as RGBA).
MAX_IMAGE_PIXELS = 4096 * 4096
#: The image formats providers answer with; no other Pillow decoder is ever tried.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Between one and two times the limit Pillow only warns; open_image refuses those itself.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

#: The decoders of IMAGE_FORMATS, to read an image's size from its header past Pillow's own guard.
_HEADER_READERS = (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile, WebPImagePlugin.WebPImageFile)


class MediaRejected(ValueError):
    """Media refused by a check; the message says why, in words for the user."""


class NotAnImage(MediaRejected):
    """The file is not a PNG, JPEG or WebP image."""


@dataclass(frozen=True)
class MediaLimits:
    """What media may weigh; the defaults are the settings' own (PROMPTREEL_MAX_IMAGE_BYTES, ...)."""

    image_bytes: int = 50 * 2**20
    video_bytes: int = 300 * 2**20
    image_pixels: int = MAX_IMAGE_PIXELS

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(image_bytes=settings.max_image_bytes, video_bytes=settings.max_video_bytes)


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def _byte_size(source: Path | IO[bytes]) -> int:
    if isinstance(source, Path):
        return source.stat().st_size
    position = source.tell()
    size = source.seek(0, 2)
    source.seek(position)
    return size


def _declared_size(source: Path | IO[bytes], refusal: Image.DecompressionBombError) -> str:
    """An image's size as its header declares it ("13000x13000 pixels"), for the message when
    Image.open refuses it: Pillow's refusal names only a pixel count, which is the fallback (the
    WebP reader refuses in its own header check). The constructors read the header, nothing more."""
    for reader in _HEADER_READERS:
        if not isinstance(source, Path):
            source.seek(0)
        try:
            with reader(source) as image:
                return f"{image.size[0]}x{image.size[1]} pixels"
        except (SyntaxError, OSError, ValueError, Image.DecompressionBombError):
            continue
    found = re.search(r"\((\d+) pixels\)", str(refusal))
    return megapixels(int(found.group(1))) if found else "too many pixels"


def _open_past_pillows_guard(source: IO[bytes], formats: tuple[str, ...]) -> Image.Image:
    """What Image.open does for `formats`, less its process-wide pixel guard: for a caller whose own
    limit is above that guard; open_image checks that limit next. The format's reader reads the
    header only; nothing is decoded here."""
    source.seek(0)
    prefix = source.read(16)
    for name in formats:
        if name not in Image.OPEN:
            Image.init()
        factory, accept = Image.OPEN[name]
        taken = accept(prefix) if accept is not None else True
        if isinstance(taken, str) or not taken:  # a str is Pillow's reason for not taking it
            continue
        source.seek(0)
        try:
            return factory(source, "")
        except (SyntaxError, IndexError, TypeError, struct.error):  # as Image.open: not this format, try the next
            continue
    raise UnidentifiedImageError("cannot identify image file")


@contextmanager
def open_image(
    source: Path | IO[bytes], limits: MediaLimits, *, whose: str, formats: tuple[str, ...] = IMAGE_FORMATS
) -> Iterator[Image.Image]:
    """The image, opened but not decoded, once its size in bytes and in pixels is within the limits.

    `whose` names it in the messages ("Replicate's image"). Raises MediaRejected for anything too
    large or that is not one of `formats` (Pillow's names; PNG, JPEG or WebP unless told). Decoding
    (`load`, `convert`, `thumbnail`) is the caller's.
    """
    size = _byte_size(source)
    if size > limits.image_bytes:
        raise MediaRejected(f"{whose} is {megabytes(size)}, more than the {megabytes(limits.image_bytes)} allowed")
    try:
        if Image.MAX_IMAGE_PIXELS is not None and limits.image_pixels > Image.MAX_IMAGE_PIXELS:
            # Read whole (within the byte limit just checked) when a path: the image owns no file then.
            image = _open_past_pillows_guard(io.BytesIO(source.read_bytes()) if isinstance(source, Path) else source, formats)
        else:
            image = Image.open(source, formats=formats)
    except Image.DecompressionBombError as error:  # more than twice Pillow's limit
        declared = _declared_size(source, error)
        raise MediaRejected(f"{whose} is {declared}, more than the {megapixels(limits.image_pixels)} allowed") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise NotAnImage(f"{whose} is not a PNG, JPEG or WebP image") from error
    with image:
        width, height = image.size
        if width * height > limits.image_pixels:
            raise MediaRejected(f"{whose} is {width}x{height} pixels, more than the {megapixels(limits.image_pixels)} allowed")
        yield image


def probe_video(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int, float]:
    """(width, height, seconds) of a file that really decodes as video; raises ValueError if not,
    or if its frames (from the stream's header, before any is decoded) exceed `max_pixels`."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels:
                raise ValueError(f"its frames are {width}x{height} pixels, more than the {megapixels(max_pixels)} allowed")
            frame = next(container.decode(stream), None)
            if frame is None:
                raise ValueError("no frame decodes")
            seconds = float(container.duration / av.time_base) if container.duration else 0.0
            return frame.width, frame.height, seconds
    except (av.FFmpegError, StopIteration, OSError) as error:
        raise ValueError(str(error)) from error
