"""ComfyUI's outputs as promptreel stores them: PNG images and H.264 MP4 videos.

A video workflow may save an animated WebP or GIF (SaveAnimatedWEBP), an image sequence (SaveImage
of every frame) or a video file; each is re-encoded with the local renderer's H.264 stream."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageSequence

from backend.media.checks import MediaLimits, MediaRejected, open_image
from backend.render.animate import _discard, open_stream


def as_png(data: bytes, limits: MediaLimits) -> tuple[bytes, tuple[int, int]]:
    """The image as PNG bytes (as it is when it already is one) and its size; ValueError if it does
    not decode or is larger than `limits` allow (checked from its header, before it is decoded)."""
    try:
        with open_image(io.BytesIO(data), limits, whose="ComfyUI's image") as image:
            image.load()
            if image.format == "PNG":
                return data, image.size
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            return buffer.getvalue(), image.size
    except MediaRejected as error:
        raise ValueError(str(error)) from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"not an image: {error}") from error


def _frames(files: list[Path]) -> Iterator[Image.Image]:
    """Every frame of the outputs, in order: the frames of an animation, a video's, or one per image."""
    for path in files:
        try:
            with Image.open(path) as image:
                for frame in ImageSequence.Iterator(image):
                    yield frame.convert("RGB")
            continue
        except OSError:
            pass  # not an image: a video file
        with av.open(str(path)) as container:
            for video_frame in container.decode(video=0):
                yield video_frame.to_image()


def is_h264_mp4(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return container.format.name.startswith("mov") and container.streams.video[0].codec_context.name == "h264"
    except (av.FFmpegError, IndexError, OSError):
        return False


def to_mp4(files: list[Path], output_path: Path, fps: float) -> tuple[int, int]:
    """Encode the frames of `files` as an H.264 MP4 at `output_path` (even sides); returns its size."""
    if len(files) == 1 and is_h264_mp4(files[0]):
        with av.open(str(files[0])) as source:
            context = source.streams.video[0].codec_context
            kept = (context.width, context.height)
        os.replace(files[0], output_path)
        return kept
    rate = Fraction(fps).limit_denominator(1001)
    temp = output_path.with_name(f".{output_path.name}.{os.getpid()}.part")
    container = av.open(str(temp), mode="w", format="mp4", options={"movflags": "+faststart"})
    size: tuple[int, int] | None = None
    try:
        stream: av.VideoStream | None = None
        for index, image in enumerate(_frames(files)):
            if stream is None:
                size = (image.width // 2 * 2, image.height // 2 * 2)
                stream = open_stream(container, size, max(1, round(fps)))
                stream.codec_context.time_base = 1 / rate
            assert size is not None  # set with the stream, from the first frame
            if image.size != size:
                image = image.resize(size)
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None or size is None:
            raise ValueError("the workflow's output has no frame")
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        os.replace(temp, output_path)
    except BaseException:
        _discard(container, temp)
        raise
    return size
