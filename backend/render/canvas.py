"""The canvas every painter draws on, and the helpers they share (landscape and objects alike).

`Scene` holds the float RGB canvas (0..1, display space) and the layout all layers agree on
(horizon, sun, scale); the functions below blend, resize, blur and make seeded noise on it.
Nothing here knows which painters exist: the landscape painters (landscape.py), the object
painters (objects/) and the planner (scene.py) all build on this module.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageFilter

from backend.render.prompt_scene import RGB, SceneSpec, stable_digest

F32 = np.float32
LAND = frozenset({"mountains", "hills", "desert", "snow", "field", "water", "city", "forest"})


class Scene:
    """The canvas plus the layout every layer agrees on (horizon, sun, scale)."""

    def __init__(self, spec: SceneSpec, seed: int, width: int, height: int):
        self.spec, self.seed = spec, seed
        self.w, self.h = width, height
        self.unit = min(width, height)
        self.img = np.zeros((height, width, 3), F32)
        self.ys = np.arange(height, dtype=F32)[:, None]
        self.xs = np.arange(width, dtype=F32)[None, :]
        self.star_density: np.ndarray | None = None  # set by the galaxy band
        layout = self.rng("layout")
        e = spec.elements
        if "space" in e and not e & LAND:
            frac = 1.0  # nothing but sky
        elif "space" in e:
            frac = 0.72
        elif "water" in e:
            frac = 0.56 if "city" not in e else 0.62
        elif "mountains" in e:
            frac = 0.68  # let the ranges own the frame
        else:
            frac = 0.6
        if frac < 1.0:
            frac += layout.uniform(-0.03, 0.03)
        self.horizon = int(height * frac)
        self.sun_x = width * layout.uniform(0.28, 0.72)
        self.sun_y = self.horizon * (1.0 - spec.sun_height) if frac < 1.0 else height * layout.uniform(0.2, 0.4)
        self.sun_left = self.sun_x < width / 2  # which side the land is lit from
        self.sun_radius = 0.0  # set once a sun or moon disc is drawn
        self.haze = {"fog": 0.85, "storm": 0.6}.get(spec.weather, 0.5)
        self.hill_ridges: list[np.ndarray] = []  # set by the hills, so objects can stand on a crest
        self.shore_line: np.ndarray | None = None  # set by the shore: where the near bank meets the water
        self.slots = Slots()  # columns objects on the ground have claimed

    def rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng(stable_digest(self.spec.digest, self.seed, name))

    def blend(self, colour: RGB | np.ndarray, alpha: np.ndarray, rows: slice = slice(None)) -> None:
        """Paint `colour` (RGB, or an array of colours) over the rows with coverage `alpha` (HxW)."""
        region = self.img[rows]
        region += (np.asarray(colour, F32) - region) * alpha[..., None]

    def to_image(self) -> Image.Image:
        return Image.fromarray(np.clip(self.img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")


def smoothstep(edge0: float, edge1: float | np.ndarray, x: np.ndarray | float) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def mix(a: RGB | np.ndarray, b: RGB | np.ndarray, t: np.ndarray | float) -> np.ndarray:
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    if isinstance(t, float) and a.ndim > b.ndim:  # an image faded toward a colour: two passes, not three
        out = a * F32(1 - t)
        out += b * F32(t)
        return out
    out = (b - a) * t
    out += a  # in place: one full-size temporary fewer
    return out


def resize(a: np.ndarray, width: int, height: int, exact: bool = False) -> np.ndarray:
    """Bicubic resize of a float array (HxW or HxWxC). Enlargements go through OpenCV, all channels
    in one pass (several times faster, a picture within a level or two); shrinking stays with PIL,
    which antialiases where OpenCV's cubic would alias. `exact` keeps PIL's own pixels, for maps
    that pick sample positions, where a tiny change moves a sample onto another pixel."""
    if not exact and width >= a.shape[1] and height >= a.shape[0] and (a.ndim == 2 or a.shape[2] <= 4):
        return cv2.resize(np.ascontiguousarray(a, F32), (width, height), interpolation=cv2.INTER_CUBIC)
    if a.ndim == 3:
        return np.stack([resize(a[..., c], width, height, exact) for c in range(a.shape[2])], axis=-1)
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, F32)).resize((width, height), Image.Resampling.BICUBIC))


def blur(a: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a 0..1 float map (through 8-bit: fine for soft masks)."""
    img = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), F32) / 255


def noise2d(
    rng: np.random.Generator, width: int, height: int, cells_x: float, cells_y: float, rows: int | None = None
) -> np.ndarray:
    """Smooth value noise in 0..1 with roughly cells_x by cells_y features. With `rows`, only the
    top rows of the width x height field are made: the same pixels, for less work."""
    cx, cy = max(1, round(cells_x)), max(1, round(cells_y))
    grid = rng.random((cy + 3, cx + 3), dtype=F32)
    rows = height if rows is None else rows
    img = Image.fromarray(grid).resize((width, rows), Image.Resampling.BICUBIC, box=(1, 1, cx + 1, 1 + cy * rows / height))
    return np.asarray(img)


def fbm2d(
    rng: np.random.Generator,
    width: int,
    height: int,
    cells_x: float,
    cells_y: float,
    octaves: int = 4,
    gain: float = 0.5,
    rows: int | None = None,
) -> np.ndarray:
    total, amp, norm = np.zeros((height if rows is None else rows, width), F32), 1.0, 0.0
    for o in range(octaves):
        total += amp * noise2d(rng, width, height, cells_x * 2**o, cells_y * 2**o, rows)
        norm += amp
        amp *= gain
    return total / norm


def noise1d(
    rng: np.random.Generator, n: int, cells: float, octaves: int = 1, ridged_octaves: int = 0, gain: float = 0.5
) -> np.ndarray:
    """A 1-D profile in 0..1; `ridged` octaves fold the noise into sharp crests (peaks, dunes)."""
    total, amp, norm = np.zeros(n, F32), 1.0, 0.0
    for o in range(octaves):
        v = noise2d(rng, n, 1, cells * 2**o, 1)[0]
        if o < ridged_octaves:
            v = 1 - np.abs(2 * v - 1)
        total += amp * v
        norm += amp
        amp *= gain
    return total / norm


def normalised(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / max(1e-6, float(a.max() - a.min()))


def blur1d(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.5:
        return a
    r = int(3 * sigma)
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return np.convolve(np.pad(a, r, mode="edge"), kernel / kernel.sum(), mode="valid").astype(F32)


def facet_shade(scene: Scene, ridge: np.ndarray, rows: slice, scale: float) -> np.ndarray:
    """How lit each pixel of a ridge's face is (0..1), from the slope toward the sun.

    Deeper below the ridge the slope is read from an ever smoother version of the ridge line,
    so lit and shadowed faces spread out from each peak like real spurs do.
    """
    sigmas = [1, 3, 6, 12, 24, 48, 96]
    side = -1 if scene.sun_left else 1
    slopes = np.stack([np.gradient(blur1d(ridge, s)) for s in sigmas]) * side
    below = np.maximum(scene.ys[rows] - ridge[None, :], 0)
    level = np.clip(np.log2(1 + below / 3), 0, len(sigmas) - 1.001)
    i0 = level.astype(np.int32)
    f = level - i0
    flat, at = slopes.ravel(), i0 * scene.w + np.arange(scene.w, dtype=np.int32)  # flat gathers are faster
    slope = flat.take(at) * (1 - f) + flat.take(at + scene.w) * f
    return 0.5 + 0.5 * np.tanh(slope * 2.5) * np.exp(-below / (scale * 1.2))


def shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """a moved by (-dy, -dx): out[y, x] = a[y + dy, x + dx], edges repeated (no wrap-around)."""
    h, w = a.shape[:2]
    ys = np.clip(np.arange(h) + dy, 0, h - 1)
    xs = np.clip(np.arange(w) + dx, 0, w - 1)
    return a[ys][:, xs]


def int_hash(*parts: np.ndarray | int) -> np.ndarray:
    """A vectorised integer hash to 0..1, for per-window / per-building randomness."""
    h: np.ndarray = np.asarray(2166136261, np.uint32)
    for p in parts:
        h = (h ^ np.asarray(p).astype(np.uint32)) * np.uint32(16777619)
        h ^= h >> np.uint32(13)
    h = h * np.uint32(2654435761)
    return (h >> np.uint32(8)).astype(F32) / F32(1 << 24)


def lit(albedo: RGB | np.ndarray, scene: Scene, amount: float = 1.0) -> np.ndarray:
    """Land colour under the scene's light: the shadow tone lifted by lit albedo."""
    p = scene.spec.palette
    return mix(p.shadow, np.asarray(albedo, F32) * np.asarray(p.light, F32), p.brightness * amount)


def haze_for(scene: Scene, depth: float) -> float:
    """Atmospheric perspective: the share of haze colour at depth 0 (far) .. 1 (near)."""
    if scene.spec.weather == "fog":  # fog swallows the middle distance and veils even the nearest things
        return min(0.95, scene.haze * (1 - depth) ** 0.7 + 0.15)
    return min(0.95, scene.haze * (1 - depth) ** 1.3 + 0.05)


def air(scene: Scene) -> np.ndarray:
    """The colour distant land fades into: the haze, cooled a little by the upper sky."""
    p = scene.spec.palette
    return mix(p.haze, p.sky[1], 0.3)


def fill(scene: Scene, ridge: np.ndarray, colour: RGB | np.ndarray, rows: slice | None = None) -> None:
    """Paint colour over everything below a per-column ridge line, anti-aliased.

    A full-size `colour` (each caller's own fresh array) is used up as scratch space: the blend
    runs in place in it, saving two frame-sized temporaries per layer with the same arithmetic."""
    rows = rows or slice(max(0, int(ridge.min()) - 1), scene.h)
    alpha = scene.ys[rows] - ridge[None, :]
    alpha += F32(0.5)
    np.clip(alpha, 0, 1, out=alpha)
    region = scene.img[rows]
    if not (isinstance(colour, np.ndarray) and colour.shape == region.shape and colour.dtype == F32):
        scene.blend(colour, alpha, rows)
        return
    colour -= region  # region + (colour - region) * alpha, as Scene.blend computes it
    colour *= alpha[..., None]
    region += colour


class Slots:
    """Keeps objects from standing on top of each other: each claims a span of columns."""

    def __init__(self):
        self.taken: list[tuple[float, float]] = []

    def pick(self, rng: np.random.Generator, scene: Scene, half: float, lo: float = 0.12, hi: float = 0.88) -> float:
        best, best_gap = 0.0, -1e9
        for _ in range(12):
            x = scene.w * rng.uniform(lo, hi)
            gap = min((max(a - (x + half), (x - half) - b) for a, b in self.taken), default=1e9)
            if gap > 0:
                best = x
                break
            if gap > best_gap:
                best, best_gap = x, gap
        self.taken.append((best - half, best + half))
        return best
