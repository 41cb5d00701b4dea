"""Real media for the fakes to serve: PNG images made with Pillow, H.264 MP4s made with PyAV."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import av
import numpy as np
from PIL import Image


@lru_cache(maxsize=16)
def png_image(width: int, height: int, noisy: bool = False) -> bytes:
    """A gradient PNG; `noisy` makes one that hardly compresses (about 3 bytes a pixel), the
    size of a real photographic PNG, to test Runway's data URI limit."""
    if noisy:
        pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        pixels = np.stack(
            [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), np.full((height, width), 128.0)], axis=-1
        )
        pixels = pixels.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@lru_cache(maxsize=2)
def solid_png(width: int, height: int) -> bytes:
    """A black RGB PNG written row by row, never held whole: 13000x13000 (676 MB decoded as
    RGBA) is about 500 KB, what a hostile provider could answer to exhaust a server's memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    parts = [compressor.compress(row) for _ in range(height)]
    data = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@lru_cache(maxsize=8)
def mp4_video(width: int, height: int, seconds: int, fps: int = 24) -> bytes:
    """An H.264 MP4 of `seconds` at `fps`: a bar sweeping over a gradient."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "35"}
        base = np.zeros((height, width, 3), dtype=np.uint8)
        base[..., 0] = np.linspace(30, 200, width, dtype=np.uint8)[None, :]
        base[..., 2] = np.linspace(200, 30, height, dtype=np.uint8)[:, None]
        frames = seconds * fps
        for index in range(frames):
            frame = base.copy()
            left = index * (width - 40) // max(1, frames - 1)
            frame[:, left : left + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
