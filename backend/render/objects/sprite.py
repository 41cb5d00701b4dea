"""A supersampled sprite that a thing is drawn into, composited once into the canvas; and glows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from backend.render.canvas import F32, Scene, air, haze_for
from backend.render.prompt_scene import RGB

#: A polygon's corners, in canvas pixels.
Points = Sequence[tuple[float, float]]
#: A colour function: canvas coordinates (X, Y) -> an RGB per pixel.
ColourFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: What a shape is filled with: one colour, per-pixel colours, or a colour function.
Colour = RGB | np.ndarray | ColourFn


class Sprite:
    """A supersampled premultiplied RGBA buffer over a box of the canvas, composited once."""

    def __init__(self, scene: Scene, x0: float, y0: float, x1: float, y1: float, ss: int = 3):
        self.scene, self.ss = scene, ss
        self.x0, self.y0 = math.floor(x0), math.floor(y0)
        self.x1, self.y1 = math.ceil(x1) + 1, math.ceil(y1) + 1
        w, h = (self.x1 - self.x0) * ss, (self.y1 - self.y0) * ss
        self.rgb = np.zeros((h, w, 3), F32)
        self.a = np.zeros((h, w), F32)
        self.X = self.x0 + (np.arange(w, dtype=F32)[None, :] + 0.5) / ss  # canvas coordinates
        self.Y = self.y0 + (np.arange(h, dtype=F32)[:, None] + 0.5) / ss

    def _box(self, pts: Points) -> tuple[int, int, int, int] | None:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        a = max(0, int((min(xs) - self.x0) * self.ss) - 2)
        b = min(self.a.shape[1], int((max(xs) - self.x0) * self.ss) + 3)
        c = max(0, int((min(ys) - self.y0) * self.ss) - 2)
        d = min(self.a.shape[0], int((max(ys) - self.y0) * self.ss) + 3)
        return (a, c, b, d) if a < b and c < d else None

    def _paint(
        self,
        box: tuple[int, int, int, int],
        draw_fn: Callable[[ImageDraw.ImageDraw, int, int], None],
        colour: Colour,
        alpha: float,
    ) -> None:
        a, c, b, d = box
        mask = Image.new("L", (b - a, d - c))
        draw_fn(ImageDraw.Draw(mask), a, c)
        m = np.asarray(mask, F32) * (alpha / 255)
        if callable(colour):
            col = colour(self.X[:, a:b], self.Y[c:d])
        else:
            col = np.asarray(colour, F32)
        col = np.broadcast_to(col, (d - c, b - a, 3))
        self.rgb[c:d, a:b] = self.rgb[c:d, a:b] * (1 - m[..., None]) + col * m[..., None]
        self.a[c:d, a:b] = self.a[c:d, a:b] * (1 - m) + m

    def _local(self, pts: Points, a: int, c: int) -> list[tuple[float, float]]:
        return [((x - self.x0) * self.ss - a, (y - self.y0) * self.ss - c) for x, y in pts]

    def poly(self, pts: Points, colour: Colour, alpha: float = 1.0) -> None:
        box = self._box(pts)
        if box:
            self._paint(box, lambda d, a, c: d.polygon(self._local(pts, a, c), fill=255), colour, alpha)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour: Colour, alpha: float = 1.0) -> None:
        pts = [(cx - rx, cy - ry), (cx + rx, cy + ry)]
        box = self._box(pts)
        if box:
            self._paint(box, lambda d, a, c: d.ellipse(self._local(pts, a, c), fill=255), colour, alpha)

    def line(self, pts: Points, width: float, colour: Colour, alpha: float = 1.0) -> None:
        box = self._box([(x + dx, y + dy) for x, y in pts for dx in (-width, width) for dy in (-width, width)])
        if box:
            w = max(1, round(width * self.ss))
            self._paint(box, lambda d, a, c: d.line(self._local(pts, a, c), fill=255, width=w, joint="curve"),
                        colour, alpha)  # fmt: skip

    def cut(self, pts: Points) -> None:
        """Erase a polygon from what is drawn so far (an arch's opening)."""
        box = self._box(pts)
        if not box:
            return
        a, c, b, d = box
        mask = Image.new("L", (b - a, d - c))
        ImageDraw.Draw(mask).polygon(self._local(pts, a, c), fill=255)
        keep = 1 - np.asarray(mask, F32) / 255
        self.rgb[c:d, a:b] *= keep[..., None]
        self.a[c:d, a:b] *= keep

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour, alpha: float = 1.0) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour, alpha)

    def commit(self, depth: float, rim: float = 1.0, reflect_at: float | None = None) -> None:
        """Composite into the canvas: haze by depth, a sunlit rim, and a reflection on water."""
        scene = self.scene
        ss, (h, w) = self.ss, self.a.shape
        rgb = self.rgb.reshape(h // ss, ss, w // ss, ss, 3).mean((1, 3))
        a = self.a.reshape(h // ss, ss, w // ss, ss).mean((1, 3))
        spec, p = scene.spec, scene.spec.palette
        haze = haze_for(scene, depth)
        rgb = rgb + (np.asarray(air(scene), F32) * a[..., None] - rgb) * haze
        if rim and spec.weather != "storm" and spec.light != "day":  # low sun (or the moon) edges the sun side
            step = 2 if scene.sun_left else -2
            edge = np.clip(a - np.roll(a, step, axis=1), 0, 1) * (1 - haze)
            strength = 0.3 if spec.light == "night" else 0.55
            rgb = rgb + (edge * strength * rim)[..., None] * np.asarray(p.sun, F32)
        # clip the sprite to the canvas
        cx0, cy0 = max(0, self.x0), max(0, self.y0)
        cx1, cy1 = min(scene.w, self.x1), min(scene.h, self.y1)
        if cx0 >= cx1 or cy0 >= cy1:
            return
        if reflect_at is not None:
            self._reflect(rgb, a, reflect_at)
        sub = (slice(cy0 - self.y0, cy1 - self.y0), slice(cx0 - self.x0, cx1 - self.x0))
        region = scene.img[cy0:cy1, cx0:cx1]
        region *= 1 - a[sub][..., None]
        region += rgb[sub]

    def _reflect(self, rgb: np.ndarray, a: np.ndarray, base: float) -> None:
        """Mirror the sprite about the water line `base`, darkened and broken by ripples."""
        scene = self.scene
        b = round(base) - self.y0  # sprite row of the water line
        n = min(b, scene.h - (self.y0 + b))
        if n <= 2:
            return
        src = b - 1 - np.arange(n)
        keep = src >= 0
        src = np.clip(src, 0, a.shape[0] - 1)
        rows = np.arange(n, dtype=F32)
        shift = np.round(np.sin(rows * 0.9 + base) * (1 + rows * 0.04)).astype(np.int32)
        cols = np.clip(np.arange(a.shape[1])[None, :] + shift[:, None], 0, a.shape[1] - 1)
        fade = (0.7 * np.exp(-rows / max(4.0, n * 0.8)) * keep)[:, None]
        ra = a[src[:, None], cols] * fade
        rr = rgb[src[:, None], cols] * fade[..., None] * 0.8
        streak = (np.sin(rows * 2.1) > -0.6)[:, None]  # thin gaps where ripples break it
        ra, rr = ra * streak, rr * streak[..., None]
        y0 = self.y0 + b
        x0, x1 = max(0, self.x0), min(scene.w, self.x1)
        if x0 >= x1:
            return
        cs = slice(x0 - self.x0, x1 - self.x0)
        region = scene.img[y0 : y0 + n, x0:x1]
        water = (scene.ys[y0 : y0 + n] >= scene.horizon)[..., None]
        region[:] = np.where(water, region * (1 - ra[:, cs][..., None]) + rr[:, cs], region)


def glow(scene: Scene, x: float, y: float, radius: float, colour: RGB, strength: float) -> None:
    """Additive light around a point: a lamp, a lit window, a burner."""
    r = radius * 5
    x0, x1 = max(0, int(x - r)), min(scene.w, int(x + r) + 1)
    y0, y1 = max(0, int(y - r)), min(scene.h, int(y + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    d = np.hypot(scene.xs[:, x0:x1] - x, scene.ys[y0:y1] - y) / radius
    light = strength * (np.exp(-d * d) * 0.7 + np.exp(-d) * 0.3)
    scene.img[y0:y1, x0:x1] += light[..., None] * np.asarray(colour, F32)
