"""Pictures as users upload them, friendly and hostile, made in memory with Pillow (or by hand,
where Pillow refuses to make something that broken)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

import backend.uploads.images  # noqa: F401  (registers pillow-heif's HEIF opener and saver: `encoded`)

#: EXIF tags: Orientation (0x0112), and the GPS block's pointer (0x8825).
ORIENTATION = 0x0112
GPS_INFO = 0x8825


def stored_sideways(width: int = 300, height: int = 200) -> Image.Image:
    """A picture as a camera held upright stores it with EXIF orientation 6 (turn 90 degrees clockwise to
    view): the stored pixels are the upright picture turned 90 degrees counter-clockwise. The upright
    picture (height x width) is red in its top half and blue in its bottom half."""
    upright = Image.new("RGB", (height, width), "blue")
    upright.paste((255, 0, 0), (0, 0, height, width // 2))
    return upright.transpose(Image.Transpose.ROTATE_90)


def rotated_jpeg(width: int = 300, height: int = 200) -> bytes:
    """`stored_sideways` as a JPEG with orientation 6 and a GPS position in its EXIF."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif.get_ifd(GPS_INFO).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    buffer = io.BytesIO()
    stored_sideways(width, height).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def png(width: int = 64, height: int = 48, colour: str = "green") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def webp(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, format="WEBP")
    return buffer.getvalue()


#: The three headers a WebP may begin with, each declaring its size its own way: lossy, lossless, extended.
WEBP_HEADERS = ("VP8 ", "VP8L", "VP8X")


def webp_with_header(width: int, height: int, header: str) -> bytes:
    """A WebP of one colour with the given header (WEBP_HEADERS), quick to make even at tens of
    megapixels: lossy, lossless, or lossless with EXIF (which takes the extended header)."""
    options: dict[str, object] = {"method": 0}
    if header == "VP8 ":
        options["quality"] = 10
    else:
        options["lossless"] = True
    if header == "VP8X":
        exif = Image.Exif()
        exif[ORIENTATION] = 1
        options["exif"] = exif.tobytes()
    data = encoded(Image.new("RGB", (width, height), "orange"), "WEBP", **options)
    assert data[12:16] == header.encode(), data[:16]
    return data


def animated_png() -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb, or a lie)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = rotated_jpeg(600, 400)
    return data[: len(data) // 2]


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    """`image` saved as `image_format` (AVIF: Pillow's own encoder; HEIF: pillow-heif's, which
    backend.uploads.images registers)."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def rotated(image_format: str, width: int = 300, height: int = 200) -> bytes:
    """`stored_sideways` as AVIF or HEIC, with orientation 6 and a GPS position in its EXIF."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif.get_ifd(GPS_INFO).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    return encoded(stored_sideways(width, height), image_format, exif=exif.tobytes(), quality=90)


def two_frames(image_format: str) -> bytes:
    """An AVIF image sequence, or a HEIC with two top-level images (a burst)."""
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue")]
    return encoded(frames[0], image_format, save_all=True, append_images=frames[1:])


def declaring(data: bytes, width: int, height: int) -> bytes:
    """An AVIF or HEIC whose `ispe` box (the size its header declares) says width x height pixels:
    a decompression bomb when large (the coded picture stays as small as it was)."""
    at = data.index(b"ispe") + 8  # the box's type, then its version and flags (4 bytes)
    return data[:at] + struct.pack(">II", width, height) + data[at + 8 :]


def garbled(data: bytes) -> bytes:
    """An AVIF or HEIC whose header is whole but whose coded picture (the `mdat` box) is noise."""
    at = data.index(b"mdat") + 4
    return data[:at] + b"\x5a" * (len(data) - at)
