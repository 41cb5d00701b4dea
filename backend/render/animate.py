"""Turn a still image into a short H.264 clip: the `local` video provider's renderer.

The input may be any picture (a DALL-E image as much as our own), so all motion is image-based:
an eased camera push or pull with a pan, parallax (the lower, presumably nearer part of the frame
travels further than the top), and light that moves — a soft sheen sweeping across plus a gentle
breathing of exposure. Each frame is one Pillow MESH warp (horizontal strips, each its own quad)
of a slightly oversized source, lit by two Pillow channel operations, then encoded by libx264.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageChops

from backend.providers.base import ProgressFn, StepCancelled

#: Runway's output sizes, by orientation.
OUTPUT_SIZES = {"landscape": (1280, 720), "portrait": (720, 1280), "square": (960, 960)}

MARGIN = 1.15  # source is this much larger than the frame: room to zoom, pan and shift rows
STRIPS = 24  # mesh strips: enough that the per-row parallax curve looks smooth
CRF, PRESET = "20", "veryfast"


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
    move = CameraMove.from_seed(seed)
    source = fit_source(image, size)
    sheen = LightSweep(size, move)
    # a half-written file must never sit at output_path: write beside it, rename when complete
    temp = output_path.with_name(f".{output_path.name}.{os.getpid()}.{threading.get_ident()}.part")
    container = av.open(str(temp), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"crf": CRF, "preset": PRESET}
        # a fixed thread count keeps the bytes identical on any machine (x264's output depends on it)
        stream.codec_context.thread_type, stream.codec_context.thread_count = "FRAME", 2
        for index in range(frames):
            if cancel is not None and cancel.is_set():
                raise StepCancelled()
            t = index / max(1, frames - 1)
            picture = sheen.apply(warp(source, size, move, ease(t)), t)
            frame = av.VideoFrame.from_image(picture)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
            if progress is not None:
                progress(0.98 * (index + 1) / frames)
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


def _discard(container, temp: Path) -> None:
    with contextlib.suppress(av.FFmpegError, OSError):  # a broken half-file is about to be deleted anyway
        container.close()
    temp.unlink(missing_ok=True)


def fit_source(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the output's aspect and resample once (Lanczos) to MARGIN x the output size."""
    width, height = size
    image = image.convert("RGB")
    aspect = width / height
    w, h = image.size
    if w / h > aspect:
        crop_w = h * aspect
        box = ((w - crop_w) / 2, 0, (w + crop_w) / 2, h)
    else:
        crop_h = w / aspect
        box = (0, (h - crop_h) / 2, w, (h + crop_h) / 2)
    return image.resize((round(width * MARGIN), round(height * MARGIN)), Image.LANCZOS, box=box)


def warp(source: Image.Image, size: tuple[int, int], move: CameraMove, e: float) -> Image.Image:
    """One frame of the camera move at eased progress e (0..1), as a strip-wise mesh warp."""
    width, height = size
    sw, sh = source.size
    zoom = move.zoom_from + (move.zoom_to - move.zoom_from) * e

    closeness = e if move.pushes_in else 1 - e  # 1 where the camera is nearest the scene

    def row(y: float) -> tuple[float, float, float]:
        """Source x of the frame's left and right edges, and source y, for output row y."""
        near = _smoothstep(0.35, 1.0, y / height)  # lower rows count as nearer to the camera
        half_w = sw / 2 / (zoom * (1 + move.dolly * closeness * near))
        shift = (move.pan_x + move.parallax * near) * (e - 0.5) * sw
        shift = max(-(sw / 2 - half_w), min(sw / 2 - half_w, shift))  # never look past the source
        half_h = sh / 2 / zoom
        dy = max(-(sh / 2 - half_h), min(sh / 2 - half_h, move.pan_y * (e - 0.5) * sh))
        sy = sh / 2 + dy + (y / height - 0.5) * 2 * half_h
        return sw / 2 + shift - half_w, sw / 2 + shift + half_w, sy

    mesh = []
    rows = [row(height * k / STRIPS) for k in range(STRIPS + 1)]
    for k in range(STRIPS):
        (l0, r0, y0), (l1, r1, y1) = rows[k], rows[k + 1]
        box = (0, round(height * k / STRIPS), width, round(height * (k + 1) / STRIPS))
        mesh.append((box, (l0, y0, l1, y1, r1, y1, r0, y0)))
    # bilinear is enough: the source is only ~1.0-1.15x the frame, so nothing aliases
    return source.transform(size, Image.MESH, mesh, resample=Image.BILINEAR)


class LightSweep:
    """A soft diagonal sheen that crosses the frame once, plus a slow breathing of exposure."""

    STRENGTH = 0.09  # peak brightening of the sheen
    BREATHE = 0.025

    def __init__(self, size: tuple[int, int], move: CameraMove):
        width, height = size
        self.size, self.move = size, move
        self.slant = math.tan(move.sweep_angle) * height  # horizontal offset of the band, top to bottom
        self.travel = width + abs(self.slant) + width * 0.6
        # one wide band image; each frame crops a window of it, so the band slides at no cost
        band_w = int(width + self.travel)
        xs = np.arange(band_w, dtype=np.float32)[None, :]
        ys = np.arange(height, dtype=np.float32)[:, None]
        centre = band_w / 2 + (ys / height - 0.5) * self.slant
        shape = np.exp(-(((xs - centre) / (width * 0.16)) ** 2)) * self.STRENGTH
        self.band = Image.fromarray(np.repeat((shape * 255).astype(np.uint8)[..., None], 3, axis=2), "RGB")

    def apply(self, picture: Image.Image, t: float) -> Image.Image:
        width, height = self.size
        progress = ease(t) if self.move.sweep_forward else 1 - ease(t)
        left = round(self.travel * (1 - progress))
        band = self.band.crop((left, 0, left + width, height))
        breathe = 1 + self.BREATHE * math.sin(2 * math.pi * t + self.move.breathe_phase)
        # (p + p * band) * breathe, in two C passes
        return ImageChops.add(picture, ImageChops.multiply(picture, band), scale=1 / breathe)


def _smoothstep(edge0: float, edge1: float, x: float) -> float:
    t = min(1.0, max(0.0, (x - edge0) / (edge1 - edge0)))
    return t * t * (3 - 2 * t)
