"""Checking media that came from outside (provider outputs, a video step's input, later uploads)
against the limits, before anything decodes them whole.

An image's pixel count is read from its header before a single pixel is decoded: a 13000x13000
PNG of one colour is a few hundred KB on the wire but 676 MB once decoded. Pillow's own guard,
`Image.MAX_IMAGE_PIXELS`, is set here to the same limit, so that any other place that opens an
image refuses such a file too. Nothing changes it afterwards. Within an `open_image` call (opening
and the caller's decoding) Pillow's guard applies that call's limit instead, whether smaller or
larger (users' uploads): the limit is held in a context variable, so it is that thread's (or
task's) alone, and every other opening in the process keeps Pillow's guard as it is. Pillow has no
per-call limit: its checks (Image.open's, the WebP reader's before it makes its decoder, crop's,
an MPO frame's) all call `Image._decompression_bomb_check`, which is wrapped here once for that.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import av
from PIL import Image, UnidentifiedImageError

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

#: The pixel limit of the open_image call under way in this context (thread or task), if any.
_call_pixel_limit: ContextVar[int | None] = ContextVar("call_pixel_limit", default=None)
_pillows_guard = Image._decompression_bomb_check


class _OverTheCallsLimit(Image.DecompressionBombError):
    def __init__(self, size: tuple[int, int]):
        super().__init__(f"{size[0]}x{size[1]} pixels")
        self.size = size


def _guard_at_the_calls_limit(size: tuple[int, int], *, error_only: bool = False) -> None:
    """Pillow's guard, at the limit of the open_image call under way in this context: anything over
    it is refused (not warned about: the WebP reader checks before its decoder allocates the canvas).
    Elsewhere, Pillow's own, against Image.MAX_IMAGE_PIXELS."""
    limit = _call_pixel_limit.get()
    if limit is None:
        _pillows_guard(size, error_only=error_only)
    elif max(1, size[0]) * max(1, size[1]) > limit:
        raise _OverTheCallsLimit(size)


Image._decompression_bomb_check = _guard_at_the_calls_limit


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


def _too_many_pixels(whose: str, size: tuple[int, int], limits: MediaLimits) -> MediaRejected:
    return MediaRejected(f"{whose} is {size[0]}x{size[1]} pixels, more than the {megapixels(limits.image_pixels)} allowed")


@contextmanager
def open_image(
    source: Path | IO[bytes], limits: MediaLimits, *, whose: str, formats: tuple[str, ...] = IMAGE_FORMATS
) -> Iterator[Image.Image]:
    """The image, opened but not decoded, once its size in bytes and in pixels is within the limits.

    `whose` names it in the messages ("Replicate's image"). Raises MediaRejected for anything too
    large or that is not one of `formats` (Pillow's names; PNG, JPEG or WebP unless told). Decoding
    (`load`, `convert`, `thumbnail`) is the caller's, within the `with` block: there, as while
    opening, Pillow's guard is at `limits.image_pixels` for this thread (or task) only.
    """
    size = _byte_size(source)
    if size > limits.image_bytes:
        raise MediaRejected(f"{whose} is {megabytes(size)}, more than the {megabytes(limits.image_bytes)} allowed")
    call = _call_pixel_limit.set(limits.image_pixels)
    try:
        try:
            # The format's reader reads the header only; the guard checks the size it declares.
            image = Image.open(source, formats=formats)
        except _OverTheCallsLimit as refusal:
            raise _too_many_pixels(whose, refusal.size, limits) from None
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise NotAnImage(f"{whose} is not a PNG, JPEG or WebP image") from error
        with image:
            if image.size[0] * image.size[1] > limits.image_pixels:  # the guard's to refuse; checked all the same
                raise _too_many_pixels(whose, image.size, limits)
            yield image
    finally:
        _call_pixel_limit.reset(call)


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
