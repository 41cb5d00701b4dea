"""Users' pictures, which are hostile until checked: what they are (by their first bytes, whatever
their name or declared type says), whether they can be taken, the clean copy that is stored, and
fitting one to a job's size.

Every check runs before the pixels are decoded (backend/media/checks.py: `open_image` reads the
size from the header and refuses it above the upload limit; Pillow's process-wide guard, which
protects every other decoding, is left as it is), and only the decoder of the format that the first
bytes announce is tried. The stored copy is re-encoded from the decoded pixels, turned upright by
its EXIF orientation first, so no EXIF (GPS), XMP, ICC or text chunk of the user's file is ever
stored or served. AVIF (Pillow's own decoder, libavif) and HEIC (pillow-heif, libheif: the `heic`
extra) are taken when their decoder is there, and stored as JPEG (PNG when transparent), which
every browser shows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, Any, Literal

from PIL import Image, ImageFilter, ImageOps, features

from backend.media.checks import MediaLimits, MediaRejected, NotAnImage, open_image

try:  # HEIC: with pillow-heif installed (the `heic` extra)
    from pillow_heif import register_heif_opener
except ImportError:
    HEIF_DECODER = False
else:
    # Only the primary image of a user's file is read: no thumbnails, depth maps or auxiliary images.
    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    HEIF_DECODER = True

#: Every format that may be taken (Pillow's names): the content types a raw body may declare for it,
#: its name for users, and the file name endings a file picker offers.
KNOWN_FORMATS = {
    "PNG": (("image/png",), "PNG", (".png",)),
    "JPEG": (("image/jpeg",), "JPEG", (".jpg", ".jpeg")),
    "WEBP": (("image/webp",), "WebP", (".webp",)),
    "AVIF": (("image/avif",), "AVIF", (".avif",)),
    "HEIF": (("image/heic", "image/heif"), "HEIC", (".heic", ".heif")),
}
#: The formats taken here: AVIF and HEIC only where their decoder is installed.
TAKEN = tuple(kind for kind in KNOWN_FORMATS if {"AVIF": features.check("avif"), "HEIF": HEIF_DECODER}.get(kind, True))
#: The content types a raw body may declare (the bytes decide all the same).
TAKEN_CONTENT_TYPES = tuple(content_type for kind in TAKEN for content_type in KNOWN_FORMATS[kind][0])
#: "PNG, JPEG, WebP, AVIF or HEIC", for messages.
TAKEN_NAMES = ", ".join(KNOWN_FORMATS[kind][1] for kind in TAKEN[:-1]) + " or " + KNOWN_FORMATS[TAKEN[-1]][1]
#: A file input's `accept`: the types, and the endings too (a browser may not know HEIC's type).
FILE_PICKER_ACCEPT = ",".join(TAKEN_CONTENT_TYPES + tuple(ending for kind in TAKEN for ending in KNOWN_FORMATS[kind][2]))
#: The stored copy's format for what browsers show as it is; AVIF and HEIC become JPEG (PNG if transparent).
STORED_CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: ISO BMFF brands (the `ftyp` box) of an AVIF still or sequence, and of HEIC.
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
#: How much of the file `sniff` reads: an `ftyp` box lists its brands within these.
SNIFF_BYTES = 64
#: Top-level boxes walked by `_ends_inside_a_box` (a picture has three or four); past these the decoder judges.
MAX_BOXES = 64
#: Absurd dimensions, even within the pixel limit (a 1x40,000,000 strip): the longest side, and how
#: many times longer than the other side it may be.
MAX_SIDE = 16384
MAX_ASPECT = 20
#: What a decoder raises for a file it cannot decode: Pillow's own errors, and RuntimeError from
#: libavif (Pillow's AVIF plugin) and libheif (pillow-heif) for coded data they cannot decode.
DECODING_ERRORS = (OSError, SyntaxError, ValueError, EOFError, RuntimeError)
#: What a refusal's `details.reason` says.
Reason = Literal["truncated", "corrupt", "too_many_pixels", "dimensions", "animated"]
Fit = Literal["crop", "contain"]
TRUNCATED = "The picture is truncated: the file ends before its pixels do."


class PictureRefused(Exception):
    """The file cannot be taken: `reason` (stable, for clients) and a sentence for the user."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class NotAPicture(Exception):
    """The first bytes are not those of a format taken here (TAKEN)."""


@dataclass(frozen=True)
class CleanPicture:
    data: bytes
    content_type: str
    width: int
    height: int


def _brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO BMFF file's `ftyp` box (AVIF, HEIC), within `head`."""
    if head[4:8] != b"ftyp":
        return set()
    end = min(int.from_bytes(head[:4], "big"), len(head))
    return {head[8:12]} | {head[offset : offset + 4] for offset in range(16, end - 3, 4)}


def sniff(head: bytes) -> str | None:
    """The format that the file's first bytes announce (one of TAKEN), None for any other."""
    kind = None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "PNG"
    elif head.startswith(b"\xff\xd8\xff"):
        kind = "JPEG"
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":  # the four bytes between are the size
        kind = "WEBP"
    elif brands := _brands(head):
        # A generic `mif1` major brand names the codec among the compatible ones.
        kind = "AVIF" if brands & AVIF_BRANDS else "HEIF" if brands & HEIC_BRANDS else None
    return kind if kind in TAKEN else None


def _ends_inside_a_box(source: IO[bytes]) -> bool:
    """Whether an ISO BMFF file (AVIF, HEIC) ends before its last top-level box does, as a cut-off
    file does: libavif calls that an unreadable header, and libheif may decode what is left."""
    end = source.seek(0, io.SEEK_END)
    position = 0
    for _ in range(MAX_BOXES):
        if position + 8 > end:
            break
        source.seek(position)
        header = source.read(16)
        size = int.from_bytes(header[:4], "big")
        if size == 1 and len(header) == 16:  # a 64-bit size follows the box's type
            size = int.from_bytes(header[8:16], "big")
        if size < 8:  # 0: the last box runs to the end; below 8: malformed, the decoder's to judge
            break
        position += size
    source.seek(0)
    return position > end


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
    message = str(error).lower()
    if "truncated" in message or "end of file" in message:  # libheif: "Unexpected end of file"
        return PictureRefused("truncated", TRUNCATED)
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
    kind = sniff(source.read(SNIFF_BYTES))
    source.seek(0)
    if kind is None:
        raise NotAPicture
    if kind in ("AVIF", "HEIF") and _ends_inside_a_box(source):
        raise PictureRefused("truncated", TRUNCATED)
    limits = MediaLimits(image_bytes=2**62, image_pixels=pixel_limit)
    try:
        with open_image(source, limits, whose="The picture", formats=(kind,)) as image:
            # A phone's JPEG with a multi-picture index (MPF: a depth map, a stereo pair, a preview)
            # opens as MPO: its first picture is the photo, the others are not frames of a movie.
            camera_jpeg = kind == "JPEG" and image.format == "MPO"
            if image.format != kind and not camera_jpeg:  # the first bytes said one thing, the decoder found another
                raise PictureRefused("corrupt", "The picture is corrupt: its contents do not match its type.")
            _check_dimensions(*image.size)
            if getattr(image, "n_frames", 1) > 1 and not camera_jpeg:
                raise PictureRefused("animated", "The picture is animated (several frames): upload a still image.")
            try:
                upright = ImageOps.exif_transpose(image)  # decodes it
            except DECODING_ERRORS as error:
                raise _refusal_of_decoding(error) from error
    except NotAnImage as error:  # the signature matched, but Pillow cannot read the header
        raise PictureRefused("corrupt", "The picture is corrupt: its header cannot be read.") from error
    except MediaRejected as error:  # over the pixel limit: open_image's message names the size and the limit
        raise PictureRefused("too_many_pixels", f"{error}.") from error
    except DECODING_ERRORS as error:
        raise _refusal_of_decoding(error) from error
    clean = _without_metadata(upright)
    if kind not in STORED_CONTENT_TYPES:  # AVIF, HEIC
        kind = "PNG" if clean.has_transparency_data else "JPEG"
        clean = clean if kind == "PNG" else clean.convert("RGB")
    buffer = io.BytesIO()
    if kind in ("JPEG", "WEBP"):
        clean.save(buffer, format=kind, quality=95)
    else:
        clean.save(buffer, format="PNG")
    return CleanPicture(buffer.getvalue(), STORED_CONTENT_TYPES[kind], clean.width, clean.height)


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
