"""Things standing in the scene: lighthouses, boats, castles, houses, trees, bridges, windmills,
birds, balloons, people and cars, drawn when the prompt names them.

Each object is a handful of flat-shaded polygons drawn into a small supersampled sprite, then
composited into the canvas with atmospheric haze, a rim of light on the sun's side when the sun is
low, a wobbling reflection when it stands on water, and glows for lamps and windows after dark.
Placement (side, distance, size) comes from the scene's seeded generators, so it varies per seed
and stays deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from backend.render.canvas import F32, Slots, air, haze_for, int_hash, lit, mix, smoothstep
from backend.render.prompt_scene import RGB

#: Back to front: sky things first, then far to near.
OBJECT_ORDER = ("birds", "balloon", "bridge", "lighthouse", "castle", "windmill", "house", "tree", "boat",
                "car", "person")  # fmt: skip


# --------------------------------------------------------------------------- sprite


class Sprite:
    """A supersampled premultiplied RGBA buffer over a box of the canvas, composited once."""

    def __init__(self, scene, x0: float, y0: float, x1: float, y1: float, ss: int = 3):
        self.scene, self.ss = scene, ss
        self.x0, self.y0 = int(math.floor(x0)), int(math.floor(y0))
        self.x1, self.y1 = int(math.ceil(x1)) + 1, int(math.ceil(y1)) + 1
        w, h = (self.x1 - self.x0) * ss, (self.y1 - self.y0) * ss
        self.rgb = np.zeros((h, w, 3), F32)
        self.a = np.zeros((h, w), F32)
        self.X = self.x0 + (np.arange(w, dtype=F32)[None, :] + 0.5) / ss  # canvas coordinates
        self.Y = self.y0 + (np.arange(h, dtype=F32)[:, None] + 0.5) / ss

    def _box(self, pts) -> tuple[int, int, int, int] | None:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        a = max(0, int((min(xs) - self.x0) * self.ss) - 2)
        b = min(self.a.shape[1], int((max(xs) - self.x0) * self.ss) + 3)
        c = max(0, int((min(ys) - self.y0) * self.ss) - 2)
        d = min(self.a.shape[0], int((max(ys) - self.y0) * self.ss) + 3)
        return (a, c, b, d) if a < b and c < d else None

    def _paint(self, box, draw_fn, colour, alpha: float) -> None:
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

    def _local(self, pts, a, c):
        return [((x - self.x0) * self.ss - a, (y - self.y0) * self.ss - c) for x, y in pts]

    def poly(self, pts, colour, alpha: float = 1.0) -> None:
        box = self._box(pts)
        if box:
            self._paint(box, lambda d, a, c: d.polygon(self._local(pts, a, c), fill=255), colour, alpha)

    def ellipse(self, cx, cy, rx, ry, colour, alpha: float = 1.0) -> None:
        pts = [(cx - rx, cy - ry), (cx + rx, cy + ry)]
        box = self._box(pts)
        if box:
            self._paint(box, lambda d, a, c: d.ellipse(self._local(pts, a, c), fill=255), colour, alpha)

    def line(self, pts, width: float, colour, alpha: float = 1.0) -> None:
        box = self._box([(x + dx, y + dy) for x, y in pts for dx in (-width, width) for dy in (-width, width)])
        if box:
            w = max(1, round(width * self.ss))
            self._paint(box, lambda d, a, c: d.line(self._local(pts, a, c), fill=255, width=w, joint="curve"),
                        colour, alpha)  # fmt: skip

    def cut(self, pts) -> None:
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

    def rect(self, x0, y0, x1, y1, colour, alpha: float = 1.0) -> None:
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
        b = int(round(base)) - self.y0  # sprite row of the water line
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


def glow(scene, x: float, y: float, radius: float, colour: RGB, strength: float) -> None:
    """Additive light around a point: a lamp, a lit window, a burner."""
    r = radius * 5
    x0, x1 = max(0, int(x - r)), min(scene.w, int(x + r) + 1)
    y0, y1 = max(0, int(y - r)), min(scene.h, int(y + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    d = np.hypot(scene.xs[:, x0:x1] - x, scene.ys[y0:y1] - y) / radius
    light = strength * (np.exp(-d * d) * 0.7 + np.exp(-d) * 0.3)
    scene.img[y0:y1, x0:x1] += light[..., None] * np.asarray(colour, F32)


# --------------------------------------------------------------------------- light & placement


def dark_out(scene) -> bool:
    """Lamps and windows are lit."""
    return scene.spec.light in ("night", "sunset") or scene.spec.weather == "storm"


def body(scene, albedo: RGB, amount: float = 1.0) -> np.ndarray:
    """An object's surface colour under the scene's light; after dark, a silhouette darker than the sky."""
    colour = lit(albedo, scene, amount)
    return colour * 0.55 if scene.spec.light == "night" else colour


def side_shade(scene, base, cx: float, half: float, round_: bool = True) -> Callable:
    """A colour function: the sun's side of a shape is lit, the other side in shadow."""
    base = np.asarray(base, F32)
    side = -1.0 if scene.sun_left else 1.0
    low = 0.55 if scene.spec.light != "night" else 0.8

    def colour(X, Y):
        nx = np.clip((X - cx) / max(half, 1e-3), -1, 1)
        if round_:
            k = np.clip(0.35 + 0.65 * nx * side + 0.3 * np.sqrt(1 - nx * nx), 0, 1)
        else:
            k = np.where(nx * side > 0, 1.0, 0.0).astype(F32)
        k = np.broadcast_to(k, np.broadcast(X, Y).shape)
        return base * (low + (1.25 - low) * k)[..., None]

    return colour


def land_at(scene, x: float) -> float:
    """Where the ground meets the sky (or the water) at column x: the nearest hill's crest, else the horizon."""
    xi = int(np.clip(x, 0, scene.w - 1))
    if scene.hill_ridges:
        return float(scene.hill_ridges[-1][xi])
    return float(scene.horizon)


def on_water(scene) -> bool:
    return "water" in scene.spec.elements


def ground_spot(scene, rng, slots: Slots, half: float, near: tuple[float, float]) -> tuple[float, float, float]:
    """(x, base y, depth) for a thing standing on land: a hill's crest, the shore, or the ground."""
    e = scene.spec.elements
    if scene.shore_line is not None:  # stand on the bank in the foreground
        x = slots.pick(rng, scene, half)
        line = float(scene.shore_line[int(np.clip(x, 0, scene.w - 1))])
        return x, line + (scene.h - line) * rng.uniform(0.15, 0.45), 0.9
    if on_water(scene):  # a far shore: the horizon, where an islet is drawn under it
        return slots.pick(rng, scene, half), float(scene.horizon) + 1, 0.45
    if scene.hill_ridges and rng.random() < 0.75:  # on a crest
        ridge = np.minimum.reduce(scene.hill_ridges)
        x = slots.pick(rng, scene, half)
        lo, hi = int(max(0, x - scene.w * 0.12)), int(min(scene.w - 1, x + scene.w * 0.12))
        x = float(lo + np.argmin(ridge[lo:hi]))
        slots.taken[-1] = (x - half, x + half)
        xs = slice(int(max(0, x - half)), int(min(scene.w, x + half)) + 1)
        return x, float(ridge[xs].max()) + 1, 0.55
    span = scene.h - scene.horizon
    lo, hi = (0.42, 0.58) if "forest" in e else (0.12, 0.88)
    x = slots.pick(rng, scene, half, lo, hi)
    t = rng.uniform(*near)
    return x, scene.horizon + span * t, 0.5 + 0.5 * t


def shadow_under(sprite: Sprite, scene, x: float, y: float, half: float) -> None:
    """A soft contact shadow so a thing sits on the ground instead of floating."""
    col = np.asarray(scene.spec.palette.shadow, F32)
    sprite.ellipse(x, y, half * 1.3, max(1.5, half * 0.12), col, 0.45)


# --------------------------------------------------------------------------- painters


def _count(scene, name: str, one: int, many: tuple[int, int], rng) -> int:
    return int(rng.integers(*many)) if name in scene.spec.plural else one


def paint_lighthouse(scene) -> None:
    rng, p = scene.rng("obj-lighthouse"), scene.spec.palette
    u, hz = scene.unit, scene.horizon
    left = rng.random() < 0.5
    height = u * rng.uniform(0.26, 0.32)
    # a dark headland of basalt rising from the water on one side
    lip = scene.w * rng.uniform(0.24, 0.34)
    top = hz - u * rng.uniform(0.04, 0.09)
    foot_y = hz + (scene.h - hz) * rng.uniform(0.3, 0.45)
    bumps = rng.uniform(-1, 1, 8) * u * 0.012
    edge_x = -u * 0.05
    pts = [(edge_x, top - u * 0.03 + bumps[0])]
    for k in range(1, 7):
        pts.append((lip * k / 7, top + bumps[k] - u * 0.03 * (1 - k / 7)))
    face = [(lip, top + u * 0.01), (lip + u * 0.02, top + u * 0.06), (lip + u * 0.035, top + u * 0.07),
            (lip + u * 0.05, (top + foot_y) / 2), (lip + u * 0.075, (top + foot_y) / 2 + u * 0.02),
            (lip + u * 0.09, foot_y), (lip + u * 0.14, scene.h + 2)]  # fmt: skip
    pts += face + [(edge_x, scene.h + 2)]
    if not left:
        pts = [(scene.w - x, y) for x, y in pts]
    x0 = min(x for x, _ in pts)
    x1 = max(x for x, _ in pts) + u * 0.08
    y0 = min(y for _, y in pts) - height - u * 0.02
    sp = Sprite(scene, x0 if left else x0 - u * 0.08, y0, x1 if left else scene.w, scene.h, ss=2)
    rock = body(scene, (0.38, 0.36, 0.38), 1.0)
    lip_x = scene.w - lip if not left else lip
    sign = 1 if left else -1
    col_w = u * 0.016
    salt = int(rng.integers(0, 1 << 16))

    def basalt(X, Y):  # columns of basalt, each its own tone, darker joints between them, darker below
        idx = np.floor(X / col_w).astype(np.int32)
        tone = 0.72 + 0.4 * int_hash(idx, salt)
        frac = X / col_w - idx
        joint = 1 - 0.45 * np.exp(-((np.minimum(frac, 1 - frac) / 0.08) ** 2))
        lit_side = 1.0 + 0.15 * (frac - 0.5) * (-1 if scene.sun_left else 1)
        depth = 1.15 - 0.55 * np.clip((Y - top) / (scene.h - top), 0, 1)
        k = tone * joint * lit_side * depth
        return rock * np.broadcast_to(k, np.broadcast(X, Y).shape)[..., None]

    sp.poly(pts, basalt)
    grass = body(scene, (0.36, 0.44, 0.2), 0.95)
    cap = pts[:8] + [(x, y + u * 0.014) for x, y in pts[:8][::-1]]
    sp.poly(cap, side_shade(scene, grass, lip_x, u * 0.3))
    # foam: short wisps where the waves break against the cliff's foot (on water only, not on a beach)
    white = lit((1, 1, 1), scene) * (0.6 if scene.spec.light == "night" else 1.0) + 0.05
    shore = scene.shore_line
    for _ in range(14):
        t = rng.uniform(0, 1) ** 1.5
        fy = foot_y + (scene.h - foot_y) * t
        fx = lip_x + sign * (u * 0.09 + u * 0.05 * t + rng.uniform(-0.005, 0.03) * u)
        if shore is not None and fy > shore[int(np.clip(fx, 0, scene.w - 1))] - 2:
            continue
        length = u * rng.uniform(0.02, 0.05) * (0.5 + t)
        sp.line([(fx, fy), (fx + sign * length, fy + rng.uniform(-1, 1))], u * (0.002 + 0.003 * t), white, 0.6)
    # the tower: tapered, banded red and white, a gallery, a lantern and a dome
    tx = lip_x - (1 if left else -1) * u * rng.uniform(0.06, 0.12)
    crest = sorted(pts[:9])
    base = float(np.interp(tx, [x for x, _ in crest], [y for _, y in crest])) + u * 0.004
    bw, tw = u * 0.032, u * 0.02
    ttop = base - height * 0.78
    white, red = body(scene, (0.92, 0.9, 0.86)), body(scene, (0.75, 0.12, 0.1))
    sp.poly([(tx - bw, base), (tx + bw, base), (tx + tw, ttop), (tx - tw, ttop)], side_shade(scene, white, tx, bw))
    for k in range(3):
        a, b = 0.12 + 0.27 * k, 0.25 + 0.27 * k
        ya, yb = base - (base - ttop) * a, base - (base - ttop) * b
        wa, wb = bw + (tw - bw) * a, bw + (tw - bw) * b
        sp.poly([(tx - wa, ya), (tx + wa, ya), (tx + wb, yb), (tx - wb, yb)], side_shade(scene, red, tx, wa))
    dark = body(scene, (0.15, 0.15, 0.17))
    sp.rect(tx - tw * 1.5, ttop - u * 0.006, tx + tw * 1.5, ttop + u * 0.004, dark)
    lamp_top = ttop - height * 0.13
    night = dark_out(scene) or scene.spec.weather == "fog" or scene.spec.light == "dawn"
    lamp = np.asarray((1.0, 0.9, 0.6), F32) * (1.6 if night else 1.0)
    sp.rect(tx - tw * 0.85, lamp_top, tx + tw * 0.85, ttop - u * 0.006, lamp if night else body(scene, (0.5, 0.55, 0.6)))
    for k in (-0.85, 0, 0.85):
        sp.line([(tx + tw * k, lamp_top), (tx + tw * k, ttop - u * 0.006)], u * 0.0025, dark)
    sp.poly([(tx - tw * 1.1, lamp_top), (tx + tw * 1.1, lamp_top), (tx, lamp_top - height * 0.07)], red * 0.8)
    # a keeper's cottage at its foot
    hx = tx + (1 if left else -1) * u * 0.06
    sp.rect(hx - u * 0.035, base - u * 0.035, hx + u * 0.035, base + u * 0.01, side_shade(scene, white, hx, u * 0.035, False))
    sp.poly([(hx - u * 0.042, base - u * 0.033), (hx + u * 0.042, base - u * 0.033), (hx, base - u * 0.06)], red * 0.75)
    sp.commit(0.8, reflect_at=foot_y)
    ly = (lamp_top + ttop) / 2
    if night:
        glow(scene, hx, base - u * 0.012, u * 0.006, p.accents[0], 1.0)
        paint_beam(scene, tx, ly, left, u)
        glow(scene, tx, ly, u * 0.02, (1.0, 0.9, 0.65), 1.2)
    else:
        glow(scene, tx, ly, u * 0.012, (1.0, 0.9, 0.65), 0.35)


def paint_beam(scene, x: float, y: float, left: bool, u: float) -> None:
    """A pale wedge of light swept out over the sea, fading with distance."""
    direction = 1 if left else -1  # toward the open sea, the frame's middle
    x0, x1 = (int(x), scene.w) if direction > 0 else (0, int(x) + 1)
    y0, y1 = max(0, int(y - u * 0.35)), min(scene.h, int(y + u * 0.25))
    dx = (scene.xs[:, x0:x1] - x) * direction
    dy = scene.ys[y0:y1] - y
    ang = np.arctan2(dy, np.maximum(dx, 1e-3)) + 0.06  # aimed a touch above level
    spread = 0.05 + 0.0
    dist = np.hypot(dx, dy) / u
    beam = np.exp(-((ang / spread) ** 2)) * np.exp(-dist / 0.7) * (dx > 0) * smoothstep(0.0, 0.03, dist)
    beam = beam * 0.55
    scene.img[y0:y1, x0:x1] += beam[..., None] * np.asarray((1.0, 0.92, 0.72), F32)


def paint_boat(scene) -> None:
    rng = scene.rng("obj-boat")
    slots = Slots()
    n = _count(scene, "boat", 1, (2, 4), rng)
    words = scene.spec.words
    paper = "paper" in words or "origami" in words
    big = bool(words & {"ship", "ships", "galleon", "schooner", "ferry"})
    hz = scene.horizon
    bottom = float(scene.shore_line.min()) - scene.unit * 0.04 if scene.shore_line is not None else scene.h * 0.95
    specs = []
    for i in range(n):
        t = rng.uniform(0.45, 0.8) if i == 0 else rng.uniform(0.08, 0.4)
        y = hz + (bottom - hz) * t
        size = scene.unit * (0.05 + 0.3 * t) * (1.4 if big else 1.0) * (1.3 if paper else 1.0)
        x = slots.pick(rng, scene, size * 0.7, 0.18, 0.82)
        specs.append((y, x, size, t))
    for y, x, size, t in sorted(specs):
        if paper:
            draw_paper_boat(scene, x, y, size * 0.55, rng, 0.6 + 0.4 * t)
        else:
            draw_sailboat(scene, x, y, size, rng, 0.6 + 0.4 * t, big)


def draw_paper_boat(scene, x: float, y: float, size: float, rng, depth: float) -> None:
    sp = Sprite(scene, x - size, y - size * 0.9, x + size, y + size * 0.2)
    paper = body(scene, (0.98, 0.97, 0.93)) * 1.15  # paper catches whatever light there is
    paper = np.maximum(paper, mix(scene.spec.palette.haze, (1, 1, 1), 0.3) * 0.95)
    h = size * 0.32
    # hull: a trapezoid; sail: the tall folded triangle, its sunny half brighter
    sp.poly([(x - size, y - h), (x + size, y - h), (x + size * 0.62, y), (x - size * 0.62, y)], paper * 0.8)
    sp.poly([(x - size * 0.62, y - h), (x + size * 0.62, y - h), (x, y - h * 0.2)], paper * 0.62)
    sp.poly([(x - size * 0.5, y - h), (x, y - size * 0.85), (x, y - h)], paper * (1.05 if scene.sun_left else 0.7))
    sp.poly([(x, y - h), (x, y - size * 0.85), (x + size * 0.5, y - h)], paper * (0.7 if scene.sun_left else 1.05))
    sp.commit(depth, reflect_at=y)


def draw_sailboat(scene, x: float, y: float, size: float, rng, depth: float, big: bool) -> None:
    sp = Sprite(scene, x - size, y - size * 1.3, x + size, y + size * 0.15)
    hull = body(scene, (0.25, 0.18, 0.14) if big else (0.85, 0.85, 0.82))
    sail = body(scene, (0.95, 0.93, 0.86))
    facing = 1 if rng.random() < 0.5 else -1
    L, H = size * (0.7 if big else 0.5), size * 0.09
    sp.poly([(x - L, y - H * 1.4), (x + L, y - H * 1.6), (x + L * 0.8, y), (x - L * 0.75, y)], side_shade(scene, hull, x, L))
    dark = body(scene, (0.12, 0.1, 0.09))
    masts = (-0.45, 0.05, 0.5) if big else (0.0,)
    for k, m in enumerate(masts):
        mx = x + L * m * facing
        mh = size * (1.05 if big and k == 1 else 0.85 if big else 1.0)
        sp.line([(mx, y - H), (mx, y - mh)], max(1.0, size * 0.012), dark)
        if big:  # square sails, billowing
            for j in range(3):
                top = y - mh + mh * 0.08 + j * mh * 0.28
                wdt = size * (0.22 - 0.03 * j)
                sp.poly([(mx - wdt, top), (mx + wdt, top), (mx + wdt * 1.05, top + mh * 0.22),
                         (mx - wdt * 1.05, top + mh * 0.22)], side_shade(scene, sail, mx, wdt))  # fmt: skip
        else:  # main sail and jib
            sp.poly([(mx + facing * size * 0.02, y - mh), (mx + facing * size * 0.02, y - H * 2),
                     (mx - facing * size * 0.5, y - H * 2)], side_shade(scene, sail, mx - facing * size * 0.25, size * 0.25))  # fmt: skip
            sp.poly([(mx + facing * size * 0.04, y - mh * 0.92), (mx + facing * size * 0.42, y - H * 1.8),
                     (mx + facing * size * 0.04, y - H * 1.8)], side_shade(scene, sail, mx + facing * size * 0.2, size * 0.2))  # fmt: skip
    sp.commit(depth, reflect_at=y)
    if dark_out(scene):
        glow(scene, x + facing * L * 0.6, y - H * 2, size * 0.02 + 1, (1.0, 0.8, 0.5), 0.9)


def paint_castle(scene) -> None:
    rng = scene.rng("obj-castle")
    u = scene.unit
    size = u * rng.uniform(0.18, 0.24)
    x, base, depth = ground_spot(scene, rng, scene.slots, size * 0.9, (0.15, 0.35))
    if on_water(scene) and scene.shore_line is None:
        size *= 0.8
    sp = Sprite(scene, x - size * 1.2, base - size * 1.6, x + size * 1.2, base + size * 0.2)
    stone = body(scene, (0.62, 0.58, 0.52), 0.95)
    roof = body(scene, (0.28, 0.2, 0.32) if scene.spec.light != "day" else (0.35, 0.25, 0.4))
    if on_water(scene) and scene.shore_line is None:
        islet(sp, scene, x, base, size * 1.25)
    wall_top = base - size * 0.42
    sp.rect(x - size, wall_top, x + size, base + size * 0.05, side_shade(scene, stone, x, size, False))
    merlon = size * 0.09
    for k in np.arange(-size, size, merlon * 2):
        sp.rect(x + k, wall_top - merlon, x + k + merlon, wall_top + 1, stone)
    windows = []
    towers = [(-1.0, 0.75, 0.14), (1.0, 0.75, 0.14), (-0.35, 1.1, 0.2), (0.3, 0.95, 0.16)]
    for fx, fh, fw in towers:
        tx, tw, th = x + fx * size, size * fw, size * fh * rng.uniform(0.9, 1.15)
        sp.rect(tx - tw, base - th, tx + tw, base + size * 0.05, side_shade(scene, stone, tx, tw))
        sp.poly([(tx - tw * 1.25, base - th + 1), (tx + tw * 1.25, base - th + 1), (tx, base - th - tw * 2.6)],
                side_shade(scene, roof, tx, tw * 1.2))  # fmt: skip
        windows.append((tx, base - th * 0.7, tw * 0.28))
    sp.poly([(x - size * 0.12, base + 1), (x - size * 0.12, base - size * 0.18), (x, base - size * 0.26),
             (x + size * 0.12, base - size * 0.18), (x + size * 0.12, base + 1)], body(scene, (0.1, 0.08, 0.07)))  # fmt: skip
    lit_up = dark_out(scene)
    win_col = np.asarray(scene.spec.palette.accents[0], F32) * 1.5 if lit_up else body(scene, (0.1, 0.1, 0.12))
    for wx, wy, ww in windows:
        sp.rect(wx - ww, wy - ww * 2.2, wx + ww, wy, win_col)
    sp.commit(depth, reflect_at=base if on_water(scene) and scene.shore_line is None else None)
    if lit_up:
        for wx, wy, ww in windows:
            glow(scene, wx, wy - ww, ww * 3 + 1, scene.spec.palette.accents[0], 0.35)


def islet(sp: Sprite, scene, x: float, base: float, half: float) -> None:
    """A low rocky island for a building on open water to stand on."""
    rock = body(scene, (0.3, 0.32, 0.25), 0.8)
    pts = [
        (x - half * 1.5, base + 2),
        (x - half * 1.1, base - half * 0.08),
        (x - half * 0.4, base - half * 0.14),
        (x + half * 0.5, base - half * 0.12),
        (x + half * 1.2, base - half * 0.05),
        (x + half * 1.6, base + 2),
    ]
    sp.poly(pts, side_shade(scene, rock, x, half * 1.5))


def house_at(scene, sp: Sprite, x: float, base: float, size: float, rng, windows: list) -> None:
    snow = "snow" in scene.spec.elements
    log = "cabin" in scene.spec.words or "forest" in scene.spec.elements or snow
    wall = body(scene, (0.45, 0.3, 0.2) if log else (0.9, 0.86, 0.78), 0.95)
    roof = body(scene, (0.32, 0.18, 0.14) if not snow else (0.25, 0.2, 0.18))
    w, h = size, size * 0.55
    sp.rect(x - w, base - h, x + w, base + 1, side_shade(scene, wall, x, w, False))
    if log:  # logs: dark lines across the walls
        for k in range(1, 6):
            yy = base - h * k / 6
            sp.line([(x - w, yy), (x + w, yy)], max(1.0, size * 0.012), wall * 0.6, 0.8)
    peak = base - h - size * 0.6
    sp.rect(x + w * 0.45, peak + size * 0.05, x + w * 0.65, base - h, body(scene, (0.35, 0.3, 0.3)))  # chimney
    sp.poly([(x - w * 1.2, base - h + 2), (x + w * 1.2, base - h + 2), (x + w * 0.1, peak), (x - w * 0.1, peak)],
            side_shade(scene, roof, x, w, False))  # fmt: skip
    if snow:
        white = body(scene, (0.92, 0.95, 1.0))
        white = np.maximum(white, np.asarray(scene.spec.palette.haze, F32) * 0.8)
        sp.poly([(x - w * 1.22, base - h + 2), (x - w * 0.1, peak - 2), (x + w * 0.1, peak - 2), (x + w * 1.22, base - h + 2),
                 (x + w * 1.1, base - h - size * 0.06), (x - w * 1.1, base - h - size * 0.06)], white)  # fmt: skip
    lit_up = dark_out(scene)
    colour = np.asarray((1.0, 0.72, 0.38), F32) * 1.6 if lit_up else body(scene, (0.15, 0.18, 0.22))
    for fx in (-0.55, 0.45):
        wx, wy = x + w * fx, base - h * 0.55
        sp.rect(wx - w * 0.17, wy - h * 0.2, wx + w * 0.17, wy + h * 0.2, colour)
        sp.line([(wx, wy - h * 0.2), (wx, wy + h * 0.2)], max(1.0, size * 0.015), wall * 0.5)
        windows.append((wx, wy, w * 0.17))
    sp.rect(x - w * 0.08, base - h * 0.62, x + w * 0.12, base + 1, body(scene, (0.2, 0.12, 0.08)))


def paint_house(scene) -> None:
    rng = scene.rng("obj-house")
    n = _count(scene, "house", 1, (2, 4), rng)
    for i in range(n):
        size = scene.unit * rng.uniform(0.05, 0.07) * (1.0 if i == 0 else 0.7)
        x, base, depth = ground_spot(scene, rng, scene.slots, size * 1.4, (0.2, 0.4))
        size *= 0.6 + 0.8 * (base - scene.horizon) / max(1, scene.h - scene.horizon) if base > scene.horizon + 2 else 0.8
        sp = Sprite(scene, x - size * 1.8, base - size * 1.3, x + size * 1.8, base + size * 0.2)
        if on_water(scene) and scene.shore_line is None:
            islet(sp, scene, x, base, size * 1.6)
        shadow_under(sp, scene, x, base, size)
        windows: list = []
        house_at(scene, sp, x, base, size, rng, windows)
        sp.commit(depth, reflect_at=base if on_water(scene) and scene.shore_line is None else None)
        if dark_out(scene):
            for wx, wy, ww in windows:
                glow(scene, wx, wy, ww * 2.5 + 1, (1.0, 0.7, 0.35), 0.45)
            if "snow" in scene.spec.elements or scene.shore_line is not None or base > scene.horizon:
                lightpool(scene, x, base, size)


def lightpool(scene, x: float, base: float, size: float) -> None:
    """Warm window light spilling on the ground in front of a house."""
    y0, y1 = int(base), min(scene.h, int(base + size * 0.9))
    x0, x1 = max(0, int(x - size * 2.5)), min(scene.w, int(x + size * 2.5))
    if y0 >= y1 or x0 >= x1:
        return
    d = np.hypot((scene.xs[:, x0:x1] - x) / (size * 1.6), (scene.ys[y0:y1] - base) / (size * 0.45))
    scene.img[y0:y1, x0:x1] += (0.22 * np.exp(-d * d))[..., None] * np.asarray((1.0, 0.7, 0.38), F32)


def paint_tree(scene) -> None:
    rng = scene.rng("obj-tree")
    n = _count(scene, "tree", 1, (2, 4), rng)
    for i in range(n):
        size = scene.unit * rng.uniform(0.12, 0.17) * (1 if i == 0 else 0.6)
        x, base, depth = ground_spot(scene, rng, scene.slots, size * 0.6, (0.25, 0.5))
        sp = Sprite(scene, x - size, base - size * 1.3, x + size, base + size * 0.15)
        if on_water(scene) and scene.shore_line is None:
            islet(sp, scene, x, base, size * 0.6)
        shadow_under(sp, scene, x, base, size * 0.4)
        bark = body(scene, (0.22, 0.16, 0.12))
        th = size * 0.55
        sp.poly([(x - size * 0.05, base + 1), (x + size * 0.05, base + 1), (x + size * 0.025, base - th),
                 (x - size * 0.025, base - th)], bark)  # fmt: skip
        for sx in (-1, 1):
            sp.line([(x, base - th * 0.6), (x + sx * size * 0.25, base - th * 1.05)], size * 0.025, bark)
        desert = "desert" in scene.spec.elements
        leaf = body(scene, (0.2, 0.36, 0.14) if not desert else (0.3, 0.36, 0.16), 0.95)
        cy = base - th - size * (0.05 if desert else 0.15)
        blobs = rng.uniform(-1, 1, (9, 2))
        flat = 0.45 if desert else 0.9  # an acacia's flat crown in the desert
        for bx, by in blobs:
            r = size * rng.uniform(0.18, 0.26)
            sp.ellipse(x + bx * size * 0.32, cy + by * size * 0.16 * flat, r, r * flat * 0.85,
                       side_shade(scene, leaf, x, size * 0.5))  # fmt: skip
        sp.commit(depth)


def paint_bridge(scene) -> None:
    rng = scene.rng("obj-bridge")
    u, hz = scene.unit, scene.horizon
    water = on_water(scene)
    y = hz + (scene.h - hz) * rng.uniform(0.08, 0.18) if water else hz + (scene.h - hz) * 0.05
    n = int(rng.integers(4, 7))
    span = scene.w * 1.04 / n
    x0 = -scene.w * 0.02 - rng.uniform(0, span * 0.5)
    x1 = x0 + span * (n + 1)
    deck = y - u * rng.uniform(0.1, 0.14)
    sp = Sprite(scene, max(-2, x0), deck - u * 0.03, min(scene.w + 2, x1), y + 2, ss=2)
    stone = body(scene, (0.62, 0.56, 0.48), 0.9)
    sp.rect(x0, deck - u * 0.012, x1, y + 2, side_shade(scene, stone, scene.w / 2, scene.w / 2))
    sp.rect(x0, deck - u * 0.022, x1, deck - u * 0.012, stone * 1.12)  # parapet
    sp.rect(x0, deck + u * 0.004, x1, deck + u * 0.009, stone * 0.75)  # string course
    for k in range(n + 1):  # open arches between the piers
        a, b = x0 + k * span + span * 0.13, x0 + (k + 1) * span - span * 0.13
        half, spring = (b - a) / 2, y - (y - deck) * 0.35
        rise = min(half, spring - deck - u * 0.02)
        arch = [(a, y + 3)] + [((a + b) / 2 - math.cos(t) * half, spring - math.sin(t) * rise)
                               for t in np.linspace(0, math.pi, 24)] + [(b, y + 3)]  # fmt: skip
        ring = [((a + b) / 2 - math.cos(t) * (half + u * 0.008), spring - math.sin(t) * (rise + u * 0.008))
                for t in np.linspace(0, math.pi, 24)]  # fmt: skip
        sp.line(ring, u * 0.004, stone * 0.8)
        sp.cut(arch)
    sp.commit(0.55, reflect_at=y if water else None)
    if dark_out(scene):
        for k in range(n + 1):
            glow(scene, x0 + k * span + span * 0.5, deck - u * 0.03, u * 0.004, (1.0, 0.8, 0.5), 0.8)


def paint_windmill(scene) -> None:
    rng = scene.rng("obj-windmill")
    n = _count(scene, "windmill", 1, (2, 4), rng)
    for i in range(n):
        size = scene.unit * rng.uniform(0.14, 0.19) * (1 if i == 0 else 0.6)
        x, base, depth = ground_spot(scene, rng, scene.slots, size * 0.6, (0.15, 0.35))
        sp = Sprite(scene, x - size * 0.8, base - size * 1.6, x + size * 0.8, base + size * 0.15)
        if on_water(scene) and scene.shore_line is None:
            islet(sp, scene, x, base, size * 0.5)
        wall = body(scene, (0.7, 0.62, 0.5), 0.95)
        bw, tw, th = size * 0.16, size * 0.09, size * 0.8
        sp.poly(
            [(x - bw, base + 1), (x + bw, base + 1), (x + tw, base - th), (x - tw, base - th)], side_shade(scene, wall, x, bw)
        )
        cap = body(scene, (0.3, 0.22, 0.2))
        sp.poly([(x - tw * 1.3, base - th + 1), (x + tw * 1.3, base - th + 1), (x, base - th - size * 0.15)], cap)
        hub = (x, base - th - size * 0.02)
        sail = body(scene, (0.85, 0.8, 0.72))
        frame = body(scene, (0.18, 0.14, 0.12))
        turn = rng.uniform(0, math.pi / 2)
        for k in range(4):
            t = turn + k * math.pi / 2
            dx, dy = math.cos(t), math.sin(t)
            nx, ny = -dy, dx
            L, W = size * 0.62, size * 0.09
            quad = [(hub[0] + dx * L * 0.15, hub[1] + dy * L * 0.15), (hub[0] + dx * L, hub[1] + dy * L),
                    (hub[0] + dx * L + nx * W, hub[1] + dy * L + ny * W),
                    (hub[0] + dx * L * 0.15 + nx * W, hub[1] + dy * L * 0.15 + ny * W)]  # fmt: skip
            sp.poly(quad, sail, 0.85)
            sp.line([hub, (hub[0] + dx * L, hub[1] + dy * L)], max(1.0, size * 0.015), frame)
        sp.ellipse(hub[0], hub[1], size * 0.025, size * 0.025, frame)
        sp.rect(x - bw * 0.2, base - size * 0.16, x + bw * 0.2, base + 1, frame)
        sp.commit(depth)
        if dark_out(scene):
            glow(scene, x, base - size * 0.35, size * 0.03, (1.0, 0.7, 0.35), 0.6)


def paint_birds(scene) -> None:
    rng = scene.rng("obj-birds")
    many = "birds" in scene.spec.plural or rng.random() < 0.6
    n = int(rng.integers(5, 12)) if many else int(rng.integers(1, 3))
    cx = scene.w * rng.uniform(0.25, 0.75)
    cy = scene.horizon * rng.uniform(0.18, 0.45)
    if abs(cx - scene.sun_x) < scene.unit * 0.1 and abs(cy - scene.sun_y) < scene.unit * 0.1:
        cx += scene.unit * 0.2
    p = scene.spec.palette
    colour = mix(p.shadow, p.sky[0], 0.25) * 0.8
    if scene.spec.light == "night":
        colour = mix(p.sky[0], (0, 0, 0), 0.5)
    u = scene.unit
    sp = Sprite(scene, cx - u * 0.3, cy - u * 0.15, cx + u * 0.3, cy + u * 0.15)
    direction = 1 if rng.random() < 0.5 else -1
    for k in range(n):
        # a loose V formation, each bird its own size and wingbeat
        row = k - n // 2
        bx = cx + direction * (-abs(row) * u * 0.035 + rng.normal(0, u * 0.012))
        by = cy + row * u * 0.022 + rng.normal(0, u * 0.008)
        s = u * rng.uniform(0.012, 0.02)
        lift = rng.uniform(-0.3, 0.7)
        pts = [(bx - s, by - s * lift), (bx - s * 0.45, by - s * (0.35 + lift * 0.3)), (bx, by),
               (bx + s * 0.45, by - s * (0.35 + lift * 0.3)), (bx + s, by - s * lift)]  # fmt: skip
        sp.line(pts, max(1.0, s * 0.16), colour)
    sp.commit(0.6, rim=0)


def paint_balloon(scene) -> None:
    rng = scene.rng("obj-balloon")
    n = _count(scene, "balloon", 1, (3, 6), rng)
    accents = [np.asarray(a, F32) for a in scene.spec.palette.accents]
    hues = [(0.85, 0.2, 0.15), (0.95, 0.7, 0.15), (0.2, 0.45, 0.8), (0.9, 0.45, 0.2), (0.3, 0.6, 0.4)]
    slots = Slots()
    items = []
    for i in range(n):
        t = rng.uniform(0.4, 1.0) if i == 0 else rng.uniform(0.1, 0.7)
        r = scene.unit * (0.025 + 0.07 * t)
        x = slots.pick(rng, scene, r * 1.3, 0.1, 0.9)
        y = scene.horizon * rng.uniform(0.2, 0.6) + (1 - t) * scene.horizon * 0.15
        items.append((t, x, y, r))
    for t, x, y, r in sorted(items):
        a = np.asarray(hues[int(rng.integers(0, len(hues)))], F32)
        b = accents[int(rng.integers(0, len(accents)))] if rng.random() < 0.4 else np.asarray((0.95, 0.92, 0.85), F32)
        sp = Sprite(scene, x - r * 1.2, y - r * 1.2, x + r * 1.2, y + r * 2.2)
        ca, cb = body(scene, a, 1.0), body(scene, b * 0.9, 1.0)
        side = -1.0 if scene.sun_left else 1.0
        low = 0.45 if scene.spec.light != "night" else 0.8

        def envelope(X, Y, ca=ca, cb=cb, x=x, y=y, r=r, side=side, low=low):
            nx = np.clip((X - x) / r, -1, 1)
            ang = np.arcsin(nx)  # gores: vertical stripes that bunch toward the edges
            stripe = (np.floor(ang / (math.pi / 7) + 10) % 2)[..., None]
            nz = np.sqrt(np.clip(1 - nx * nx, 0, 1))
            k = np.clip(0.3 + 0.6 * nx * side + 0.5 * nz - 0.3 * np.clip((Y - y) / r, 0, 1), 0, 1)
            k = np.broadcast_to(k, np.broadcast(X, Y).shape)
            return mix(ca, cb, stripe) * (low + (1.3 - low) * k)[..., None]

        sp.ellipse(x, y, r, r * 1.05, envelope)
        sp.poly([(x - r * 0.93, y + r * 0.35), (x + r * 0.93, y + r * 0.35), (x + r * 0.28, y + r * 1.45),
                 (x - r * 0.28, y + r * 1.45)], envelope)  # fmt: skip
        rope = body(scene, (0.25, 0.2, 0.15))
        for sx in (-1, 1):
            sp.line([(x + sx * r * 0.26, y + r * 1.45), (x + sx * r * 0.15, y + r * 1.75)], max(1.0, r * 0.02), rope)
        sp.rect(x - r * 0.17, y + r * 1.75, x + r * 0.17, y + r * 1.98, body(scene, (0.45, 0.3, 0.18)))
        sp.commit(0.3 + 0.5 * t)
        if dark_out(scene) or scene.spec.light == "dawn":
            glow(scene, x, y + r * 1.5, r * 0.25, (1.0, 0.6, 0.25), 0.5 if scene.spec.light == "dawn" else 0.9)


def person_at(sp: Sprite, scene, x: float, base: float, s: float, rng, colour) -> None:
    """A small standing figure in a long coat, seen from behind; perhaps a pack and a staff."""
    sp.ellipse(x, base - s * 0.89, s * 0.062, s * 0.072, colour)
    sp.poly([(x - s * 0.03, base - s * 0.83), (x + s * 0.03, base - s * 0.83), (x + s * 0.035, base - s * 0.79),
             (x - s * 0.035, base - s * 0.79)], colour)  # fmt: skip
    coat = [(x - s * 0.05, base - s * 0.8), (x + s * 0.05, base - s * 0.8), (x + s * 0.11, base - s * 0.76),
            (x + s * 0.12, base - s * 0.6), (x + s * 0.15, base - s * 0.32), (x - s * 0.15, base - s * 0.32),
            (x - s * 0.12, base - s * 0.6), (x - s * 0.11, base - s * 0.76)]  # fmt: skip
    sp.poly(coat, colour)
    stride = rng.uniform(0.02, 0.08)
    for sx in (-1, 1):
        sp.poly(
            [
                (x + sx * s * 0.09, base - s * 0.34),
                (x + sx * s * 0.015, base - s * 0.34),
                (x + sx * (s * 0.03 + stride * s), base),
                (x + sx * (s * 0.075 + stride * s), base),
            ],
            colour,
        )
    if rng.random() < 0.6:  # a backpack
        sp.ellipse(x, base - s * 0.6, s * 0.1, s * 0.13, colour * 1.1)
    if rng.random() < 0.5:  # a walking staff
        sx = 1 if rng.random() < 0.5 else -1
        sp.line([(x + sx * s * 0.17, base - s * 1.02), (x + sx * s * 0.26, base)], max(1.0, s * 0.018), colour)


def paint_person(scene) -> None:
    rng = scene.rng("obj-person")
    n = _count(scene, "person", 1, (2, 4), rng)
    p = scene.spec.palette
    colour = mix(p.shadow, body(scene, (0.3, 0.25, 0.22)), 0.5 if scene.spec.light in ("day", "golden") else 0.15)
    span = scene.h - scene.horizon
    for i in range(n):
        if scene.shore_line is not None:
            x = scene.slots.pick(rng, scene, scene.unit * 0.03)
            line = float(scene.shore_line[int(np.clip(x, 0, scene.w - 1))])
            base = line + (scene.h - line) * rng.uniform(0.3, 0.6)
        elif on_water(scene):  # a figure on the near bank: a low ledge of rock at the bottom
            x = scene.slots.pick(rng, scene, scene.unit * 0.03, 0.3, 0.7)
            base = scene.h - span * 0.12
        else:
            x = scene.slots.pick(rng, scene, scene.unit * 0.03, 0.3, 0.7)
            base = scene.horizon + span * rng.uniform(0.45, 0.7)
        s = scene.unit * 0.05 + (base - scene.horizon) / max(1, span) * scene.unit * 0.12
        s *= 1 if i == 0 else rng.uniform(0.8, 0.95)
        sp = Sprite(scene, x - s * 2.5, base - s * 1.1, x + s * 2.5, min(scene.h, base + s * 0.3) + s * 0.3)
        if on_water(scene) and scene.shore_line is None:
            rock = body(scene, (0.25, 0.24, 0.22), 0.7)
            sp.poly([(x - s * 2.4, scene.h + 5), (x - s * 1.8, base + s * 0.02), (x + s * 1.6, base - s * 0.02),
                     (x + s * 2.4, scene.h + 5)], side_shade(scene, rock, x, s * 2))  # fmt: skip
        if scene.spec.light in ("golden", "sunset", "dawn"):  # a long shadow away from the sun
            d = 1 if scene.sun_left else -1
            sp.poly([(x - s * 0.1, base), (x + s * 0.1, base), (x + d * s * 2.2, base + s * 0.12),
                     (x + d * s * 2.0, base + s * 0.2)], p.shadow, 0.35)  # fmt: skip
        person_at(sp, scene, x, base, s, rng, colour)
        sp.commit(0.95)


def paint_car(scene) -> None:
    rng = scene.rng("obj-car")
    n = _count(scene, "car", 1, (2, 4), rng)
    span = scene.h - scene.horizon
    road_y = scene.horizon + span * rng.uniform(0.35, 0.5)
    road_h = span * 0.16
    asphalt = body(scene, (0.2, 0.2, 0.22), 0.8)
    if dark_out(scene):
        asphalt = asphalt + np.asarray(scene.spec.palette.haze, F32) * 0.12
    sp = Sprite(scene, 0, road_y - road_h * 0.5, scene.w - 1, road_y + road_h * 0.5, ss=1)
    sp.rect(-1, road_y - road_h * 0.5, scene.w, road_y + road_h * 0.5, asphalt)
    paint = body(scene, (0.9, 0.85, 0.7)) * 0.9
    for k in np.arange(0, scene.w, scene.unit * 0.12):
        sp.rect(k, road_y - 1.5, k + scene.unit * 0.06, road_y + 1.5, paint)
    sp.commit(0.8, rim=0)
    lit_up = dark_out(scene)
    hues = [(0.75, 0.1, 0.1), (0.15, 0.3, 0.6), (0.85, 0.85, 0.85), (0.15, 0.15, 0.17), (0.9, 0.7, 0.15)]
    slots = Slots()
    for i in range(n):
        s = scene.unit * rng.uniform(0.085, 0.1)
        x = slots.pick(rng, scene, s * 1.2, 0.15, 0.85)
        lane = road_y + (road_h * 0.28 if i % 2 == 0 else -road_h * 0.05)
        d = 1 if (i % 2 == 0) else -1
        sp = Sprite(scene, x - s * 1.3, lane - s * 0.6, x + s * 1.3, lane + s * 0.15)
        hue = hues[int(rng.integers(0, len(hues)))]
        colour = body(scene, scene.spec.tints[0] if i == 0 and scene.spec.tints else hue)
        if lit_up:  # paint picks up the city's glow
            colour = colour + np.asarray(scene.spec.palette.haze, F32) * 0.35
        sp.ellipse(x, lane, s * 1.2, s * 0.08, scene.spec.palette.shadow, 0.5)
        sp.poly([(x - s, lane - s * 0.12), (x + s, lane - s * 0.12), (x + s * 1.02, lane - s * 0.32),
                 (x + s * 0.85 * d if d > 0 else x + s * 0.95, lane - s * 0.38), (x - s * 0.95, lane - s * 0.38),
                 (x - s * 1.02, lane - s * 0.3)], side_shade(scene, colour, x, s, False))  # fmt: skip
        glass = mix(body(scene, (0.5, 0.6, 0.7)), scene.spec.palette.sky[1], 0.4)
        sp.poly([(x - s * 0.55, lane - s * 0.38), (x + s * 0.45, lane - s * 0.38), (x + s * 0.25, lane - s * 0.6),
                 (x - s * 0.4, lane - s * 0.6)], colour * 0.95)  # fmt: skip
        sp.poly([(x - s * 0.45, lane - s * 0.4), (x + s * 0.38, lane - s * 0.4), (x + s * 0.2, lane - s * 0.55),
                 (x - s * 0.33, lane - s * 0.55)], glass)  # fmt: skip
        tyre = body(scene, (0.05, 0.05, 0.05))
        for wx in (-0.6, 0.6):
            sp.ellipse(x + s * wx, lane - s * 0.12, s * 0.17, s * 0.17, tyre)
            sp.ellipse(x + s * wx, lane - s * 0.12, s * 0.07, s * 0.07, body(scene, (0.6, 0.6, 0.6)))
        sp.commit(0.9)
        if lit_up:
            glow(scene, x + d * s * 1.0, lane - s * 0.26, s * 0.06, (1.0, 0.95, 0.8), 1.5)
            glow(scene, x + d * s * 2.2, lane + s * 0.02, s * 0.5, (1.0, 0.9, 0.7), 0.12)  # light on the road
            glow(scene, x - d * s * 1.0, lane - s * 0.26, s * 0.04, (1.0, 0.15, 0.1), 1.0)


PAINTERS: dict[str, Callable] = {
    "lighthouse": paint_lighthouse, "boat": paint_boat, "castle": paint_castle, "house": paint_house,
    "tree": paint_tree, "bridge": paint_bridge, "windmill": paint_windmill, "birds": paint_birds,
    "balloon": paint_balloon, "person": paint_person, "car": paint_car,
}  # fmt: skip
