"""Turn a still image into a short H.264 clip: the `local` video provider's renderer.

The input may be any picture (a DALL-E image as much as our own), so all motion is image-based:
an eased camera push or pull with a pan, parallax (the lower, presumably nearer part of the frame
travels further than the top), and light that moves — a soft sheen sweeping across plus a gentle
breathing of exposure.

Frames are made in the encoder's own format: the slightly oversized source is converted to YUV
4:2:0 once, and each frame warps its three planes (OpenCV remap, each output row its own
horizontal span of the source) and lights them, straight into the frame's memory. A worker
thread makes the next frames while libx264 encodes this one (OpenCV and x264 release the GIL),
so painting and encoding overlap on two cores.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from backend.providers.base import ProgressFn, StepCancelled

#: Runway's output sizes, by orientation.
OUTPUT_SIZES = {"landscape": (1280, 720), "portrait": (720, 1280), "square": (960, 960)}

MARGIN = 1.15  # source is this much larger than the frame: room to zoom, pan and shift rows
CRF, PRESET = "20", "veryfast"
X264_THREADS = 2  # x264's output is the same for any count; 2 keeps the bare encode's own speed
# threads painting frames while x264 encodes: one beside x264's on two cores, two where there is room
PAINTERS = 2 if (os.cpu_count() or 1) > 2 else 1
FRAMES_AHEAD = PAINTERS + 2  # frames painted ahead of the encoder


def output_size_for(width: int, height: int) -> tuple[int, int]:
    """The output size for an image of this size, by its orientation."""
    ratio = width / height
    if ratio > 1.15:
        return OUTPUT_SIZES["landscape"]
    if ratio < 1 / 1.15:
        return OUTPUT_SIZES["portrait"]
    return OUTPUT_SIZES["square"]


@dataclass(frozen=True)
class CameraMove:
    """Everything the seed decides about the motion; distances are fractions of the source."""

    zoom_from: float
    zoom_to: float
    pan_x: float  # travel of the view's centre across the clip (centred: -half .. +half)
    pan_y: float
    parallax: float  # extra horizontal travel of the bottom rows
    dolly: float  # extra zoom of the bottom rows at the closest point of the move
    sweep_angle: float  # radians from vertical of the light sheen
    sweep_forward: bool  # left-to-right, or back
    breathe_phase: float

    @classmethod
    def from_seed(cls, seed: int) -> CameraMove:
        rng = random.Random(f"promptreel-camera-{seed}")
        push = rng.random() < 0.65  # pushing in reads as more "cinematic" than pulling out
        wide, close = 1.07, rng.uniform(1.12, MARGIN)
        heading = rng.uniform(0, 2 * math.pi)
        travel = rng.uniform(0.03, 0.045)
        sideways = math.cos(heading)
        return cls(
            zoom_from=wide if push else close,
            zoom_to=close if push else wide,
            pan_x=travel * sideways,
            pan_y=travel * math.sin(heading) * 0.5,  # vertical drift reads as tilt: keep it small
            parallax=math.copysign(rng.uniform(0.012, 0.02), sideways or 1.0),
            dolly=rng.uniform(0.02, 0.035),
            sweep_angle=rng.uniform(-0.6, 0.6),
            sweep_forward=rng.random() < 0.5,
            breathe_phase=rng.uniform(0, 2 * math.pi),
        )

    @property
    def pushes_in(self) -> bool:
        return self.zoom_to > self.zoom_from


def ease(t: float) -> float:
    """Ease in and out, but never to a full stop: the clip is already moving on its first frame."""
    return 0.35 * t + 0.65 * (0.5 - 0.5 * math.cos(math.pi * t))


def animate_image(
    image: Image.Image,
    output_path: Path,
    duration: int,
    seed: int,
    fps: int = 24,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[int, int]:
    """Write a `duration`-second MP4 of `image` with a gentle camera move; returns (width, height)."""
    output_path = Path(output_path)
    size = output_size_for(*image.size)
    frames = duration * fps
    painter = FramePainter(fit_source(image, size), size, CameraMove.from_seed(seed), frames)
    # a half-written file must never sit at output_path: write beside it, rename when complete
    temp = output_path.with_name(f".{output_path.name}.{os.getpid()}.{threading.get_ident()}.part")
    container = av.open(str(temp), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        stream = open_stream(container, size, fps)
        with ThreadPoolExecutor(max_workers=PAINTERS, thread_name_prefix="animate-frames") as painting:
            ahead: deque[Future[av.VideoFrame]] = deque()
            try:
                for index in range(frames):
                    while len(ahead) < FRAMES_AHEAD and index + len(ahead) < frames:
                        ahead.append(painting.submit(painter.paint, index + len(ahead)))
                    if cancel is not None and cancel.is_set():
                        raise StepCancelled()
                    frame = ahead.popleft().result()
                    frame.pts = index
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    if progress is not None:
                        progress(0.98 * (index + 1) / frames)
            finally:
                for pending in ahead:  # on a cancel or an error: at most the frame in hand is finished
                    pending.cancel()
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        os.replace(temp, output_path)
    except BaseException:
        _discard(container, temp)
        raise
    if progress is not None:
        progress(1.0)
    return size


def open_stream(container, size: tuple[int, int], fps: int) -> av.video.stream.VideoStream:
    """The H.264 stream every clip is encoded with (the benchmark's bare encode uses it too)."""
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = Fraction(1, fps)
    stream.options = {"crf": CRF, "preset": PRESET}
    stream.codec_context.thread_type, stream.codec_context.thread_count = "FRAME", X264_THREADS
    return stream


def _discard(container, temp: Path) -> None:
    with contextlib.suppress(av.FFmpegError, OSError):  # a broken half-file is about to be deleted anyway
        container.close()
    temp.unlink(missing_ok=True)


def fit_source(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the output's aspect and resample once (Lanczos) to MARGIN x the output size
    (rounded to even sides, as 4:2:0 needs)."""
    width, height = size
    image = image.convert("RGB")
    aspect = width / height
    w, h = image.size
    if w / h > aspect:
        crop_w = h * aspect
        box: tuple[float, float, float, float] = ((w - crop_w) / 2, 0, (w + crop_w) / 2, h)
    else:
        crop_h = w / aspect
        box = (0, (h - crop_h) / 2, w, (h + crop_h) / 2)
    return image.resize((2 * round(width * MARGIN / 2), 2 * round(height * MARGIN / 2)), Image.Resampling.LANCZOS, box=box)


def yuv_planes(image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U and V of an RGB image as 8-bit arrays, converted as the encoder would (swscale, BT.601)."""
    frame = av.VideoFrame.from_image(image).reformat(format="yuv420p")
    y, u, v = (np.ascontiguousarray(plane_array(frame, i)) for i in range(3))
    return y, u, v


def plane_array(frame: av.VideoFrame, index: int) -> np.ndarray:
    """A writable view of one plane of a frame, without its row padding."""
    plane = frame.planes[index]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


class FramePainter:
    """Makes frame `index` of the clip as a yuv420p VideoFrame; safe to call from a worker thread."""

    def __init__(self, source: Image.Image, size: tuple[int, int], move: CameraMove, frames: int):
        self.size, self.move, self.frames = size, move, frames
        self.source_size = source.size
        self.planes = yuv_planes(source)
        self.sheen = LightSweep(size, move)

    def paint(self, index: int) -> av.VideoFrame:
        t = index / max(1, self.frames - 1)
        e = ease(t)
        frame = av.VideoFrame(*self.size, "yuv420p")
        luma, *chroma = (plane_array(frame, number) for number in range(3))
        warp(self.planes[0], camera_maps(self.source_size, self.size, 1, self.move, e), out=luma)
        self.sheen.light_luma(luma, t, out=luma)
        lut = self.sheen.chroma_lut(t)
        chroma_maps = camera_maps(self.source_size, self.size, 2, self.move, e)  # one warp for U and V
        for source, plane in zip(self.planes[1:], chroma, strict=True):
            warp(source, chroma_maps, out=plane)
            cv2.LUT(plane, lut, dst=plane)
        return frame


def camera_maps(
    source_size: tuple[int, int], size: tuple[int, int], scale: int, move: CameraMove, e: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of one plane of the frame at eased progress e (0..1) samples the source:
    cv2.remap's x and y maps, in that plane's pixels.

    Geometry is worked out in the full-size frame; `scale` is the plane's subsampling (1 for
    luma, 2 for 4:2:0 chroma). Each output row is a horizontal span of the source: rigid at the
    top, wider and shifted further in the lower, nearer rows (parallax), so every row gets its
    own span (a smooth curve, where a mesh of strips would bend it in steps).
    """
    width, height = size
    sw, sh = source_size
    out_w, out_h = round(width / scale), round(height / scale)
    zoom = move.zoom_from + (move.zoom_to - move.zoom_from) * e
    closeness = e if move.pushes_in else 1 - e  # 1 where the camera is nearest the scene
    y = (np.arange(out_h) + 0.5) * scale  # frame rows through this plane's pixel centres
    near = _smoothstep(0.35, 1.0, y / height)  # lower rows count as nearer to the camera
    half_w = sw / 2 / (zoom * (1 + move.dolly * closeness * near))
    room = sw / 2 - half_w
    shift = np.clip((move.pan_x + move.parallax * near) * (e - 0.5) * sw, -room, room)  # never look past the source
    half_h = sh / 2 / zoom
    dy = max(-(sh / 2 - half_h), min(sh / 2 - half_h, move.pan_y * (e - 0.5) * sh))
    source_y = sh / 2 + dy + (y / height - 0.5) * 2 * half_h
    # output column x (its centre at x + 0.5) samples source x = left + (x + 0.5) / out_w * span;
    # remap counts pixel centres from 0, so both maps are shifted by half a pixel
    step = (2 * half_w / scale / out_w).astype(np.float32)
    start = ((sw / 2 + shift - half_w) / scale + step / 2 - 0.5).astype(np.float32)
    map_x = np.multiply.outer(step, np.arange(out_w, dtype=np.float32))
    map_x += start[:, None]
    map_y = np.empty_like(map_x)
    map_y[...] = (source_y / scale - 0.5).astype(np.float32)[:, None]
    return map_x, map_y


def warp(plane: np.ndarray, maps: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> None:
    """Resample a source plane through camera_maps into `out` (any strided view, e.g. a frame's plane).

    Bilinear is enough: the source is only ~1.0-1.15x the frame, so nothing aliases.
    """
    cv2.remap(plane, *maps, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_REPLICATE)


class LightSweep:
    """A soft diagonal sheen that crosses the frame once, plus a slow breathing of exposure.

    Both scale the picture's light: luma above black (16) by the sheen and the breathing, chroma
    around grey (128) by the breathing only (a sheen of light is white; at 9 % the difference
    from scaling RGB does not show).
    """

    STRENGTH = 0.09  # peak brightening of the sheen
    BREATHE = 0.025

    def __init__(self, size: tuple[int, int], move: CameraMove):
        width, height = size
        self.size, self.move = size, move
        self.slant = math.tan(move.sweep_angle) * height  # horizontal offset of the band, top to bottom
        self.travel = width + abs(self.slant) + width * 0.6
        # one wide gain map (1 + sheen); each frame takes a window of it, so the band slides at no cost
        band_w = math.ceil(width + self.travel) + 1  # room for the rounded window at either end
        xs = np.arange(band_w, dtype=np.float32)[None, :]
        ys = np.arange(height, dtype=np.float32)[:, None]
        centre = band_w / 2 + (ys / height - 0.5) * self.slant
        self.gain = 1 + np.exp(-(((xs - centre) / (width * 0.16)) ** 2)) * np.float32(self.STRENGTH)

    def breathe(self, t: float) -> float:
        return 1 + self.BREATHE * math.sin(2 * math.pi * t + self.move.breathe_phase)

    def light_luma(self, luma: np.ndarray, t: float, out: np.ndarray) -> None:
        """out = 16 + (luma - 16) x gain x breathing, rounded and saturated (out may be luma).

        Three OpenCV passes over 8-bit pixels (the gain product is worked in float inside the
        multiply); a warped frame's luma is never below black, so subtracting 16 loses nothing.
        """
        width, _ = self.size
        progress = ease(t) if self.move.sweep_forward else 1 - ease(t)
        left = round(self.travel * (1 - progress))
        above_black = cv2.subtract(luma, 16)  # type: ignore[call-overload]  # OpenCV's stubs leave out a scalar operand
        gain = self.gain[:, left : left + width]
        cv2.multiply(above_black, gain, dst=above_black, scale=self.breathe(t), dtype=cv2.CV_8U)
        cv2.add(above_black, 16, dst=out)

    def chroma_lut(self, t: float) -> np.ndarray:
        """The breathing for a chroma plane, as a cv2.LUT table."""
        values = np.round(128 + (np.arange(256) - 128) * self.breathe(t))
        return np.clip(values, 0, 255).astype(np.uint8)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)
