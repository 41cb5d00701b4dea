"""The landscape painters: sky, sun and stars, clouds, land, city, trees, water and shore, weather, and
the finish. Each paints one layer into the scene's canvas, back to front, in the order the planner
(scene.py) gives them."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from backend.render.canvas import (
    F32,
    Scene,
    air,
    blur,
    facet_shade,
    fbm2d,
    fill,
    haze_for,
    int_hash,
    lit,
    mix,
    noise1d,
    noise2d,
    normalised,
    resize,
    shifted,
    smoothstep,
)
from backend.render.prompt_scene import RGB, SceneSpec, stable_digest

GROUND_ALBEDO: dict[str, RGB] = {
    "snow": (0.90, 0.93, 0.98), "desert": (0.86, 0.58, 0.34), "field": (0.30, 0.50, 0.18),
    "forest": (0.10, 0.24, 0.14), "beach": (0.90, 0.76, 0.55), "rock": (0.42, 0.38, 0.36),
    "valley": (0.36, 0.46, 0.20),
}  # fmt: skip


# --------------------------------------------------------------------------- sky, sun, stars


def sky_rows(scene: Scene) -> np.ndarray:
    """The sky gradient, one colour per row (H x 3): zenith -> middle -> horizon."""
    zen, mid, hor = (np.asarray(c, F32) for c in scene.spec.palette.sky)
    t = np.clip(scene.ys[:, 0] / max(scene.horizon, 1), 0, 1)[:, None]
    upper = mix(zen, mid, smoothstep(0, 1, t / 0.6))
    lower = mix(mid, hor, smoothstep(0, 1, (t - 0.6) / 0.4) ** 0.8)
    return np.where(t < 0.6, upper, lower)


def sun_distance(scene: Scene, rows: slice = slice(None)) -> np.ndarray:
    return np.hypot(scene.xs - scene.sun_x, scene.ys[rows] - scene.sun_y) / scene.unit


def paint_sky(scene: Scene) -> None:
    spec, p = scene.spec, scene.spec.palette
    scene.img[:] = sky_rows(scene)[:, None, :]
    near, far = {"golden": (0.4, 0.28), "sunset": (0.55, 0.4), "dawn": (0.4, 0.3),
                 "day": (0.3, 0.12), "night": (0.1, 0.06)}[spec.light]  # fmt: skip
    if spec.weather == "storm":
        near, far = near * 0.3, far * 0.3
    elif spec.weather == "fog":
        near *= 0.5  # the disc's own glow drowns in the fog; the wide glow stays
    d = sun_distance(scene)
    glow = near * np.exp(-d / 0.08) + far * np.exp(-d / 0.4)
    above = np.maximum(scene.horizon - scene.ys, 0) / scene.h
    if spec.light in ("golden", "sunset", "dawn"):  # the band of warm light along the horizon
        glow = glow + 0.25 * np.exp(-above / 0.1) * np.exp(-np.abs(scene.xs - scene.sun_x) / (0.8 * scene.w))
    # glow adds less where the sky is already bright, so it never flattens to white (rows are flat so far)
    room = 1 - 0.5 * smoothstep(0.3, 1.0, scene.img[:, :1].mean(-1))
    scene.img += (glow * room)[..., None] * np.asarray(p.sun, F32)
    if "city" in spec.elements and spec.light == "night":  # light pollution over the skyline
        scene.img += (0.45 * np.exp(-above / 0.16))[..., None] * np.asarray(p.haze, F32)


def paint_space(scene: Scene) -> None:
    rng, p = scene.rng("space"), scene.spec.palette
    w4, h4 = scene.w // 4, scene.h // 4
    scene.img[:] = mix((0.004, 0.005, 0.016), np.asarray(p.sky[0], F32), 0.4)
    pairs = [((0.55, 0.18, 0.85), (0.10, 0.50, 0.90)), ((0.90, 0.22, 0.45), (0.35, 0.20, 0.85)),
             ((0.10, 0.60, 0.75), (0.70, 0.25, 0.80))]  # fmt: skip
    c1, c2 = pairs[scene.spec.digest % 3]
    tints = scene.spec.tints
    if tints:  # named colours lead; the second defaults to a contrasting hue
        c1, c2 = tints[0], (tints[1] if len(tints) > 1 else c2)
    shape = fbm2d(rng, w4, h4, 3, 2, octaves=5)
    detail = fbm2d(rng, w4, h4, 7, 5, octaves=4)
    # a diagonal band so the nebula reads as one structure, not uniform fog
    angle = rng.uniform(-0.6, 0.6)
    u = (np.arange(w4)[None, :] / w4 - 0.5) * math.sin(angle) + (np.arange(h4)[:, None] / h4 - 0.5) * math.cos(angle)
    band = np.exp(-(((u + rng.uniform(-0.1, 0.1)) / 0.3) ** 2)).astype(F32)
    density = smoothstep(0.3, 0.85, shape * 0.6 + band * 0.5) * band
    dust = smoothstep(0.52, 0.72, detail) * band * smoothstep(0.3, 0.6, shape)
    colour = mix(c1, c2, smoothstep(0.35, 0.65, detail)[..., None]) * (density[..., None] * 0.8)
    colour += np.asarray((1.0, 0.9, 0.95), F32) * (smoothstep(0.7, 1.0, shape * band) * 0.35)[..., None]
    colour *= 1 - 0.85 * dust[..., None]
    scene.img += resize(colour, scene.w, scene.h)
    scene.star_density = resize(band * (1 - dust), scene.w, scene.h)


def paint_stars(scene: Scene) -> None:
    rng = scene.rng("stars")
    space = "space" in scene.spec.elements
    count = int(scene.w * scene.h / (350 if space else 900))
    x = rng.uniform(0, scene.w - 1.001, count)
    y = rng.uniform(0, scene.h - 1.001, count)
    if scene.star_density is not None:  # crowd the stars into the galaxy band
        keep = rng.random(count) < 0.3 + 0.7 * scene.star_density[y.astype(int), x.astype(int)]
        x, y = x[keep], y[keep]
    bright = (rng.pareto(1.8, len(x)) * 0.3 + 0.12).astype(F32)
    if not space:  # stars fade out into the horizon's haze
        bright *= smoothstep(0.0, 0.45, (scene.horizon - y) / max(scene.horizon, 1)).astype(F32)
    tint = mix((1.0, 0.86, 0.72), (0.72, 0.84, 1.0), rng.random((len(x), 1)).astype(F32))
    stars = np.zeros_like(scene.img)
    x0, y0 = x.astype(int), y.astype(int)
    fx, fy = (x - x0).astype(F32), (y - y0).astype(F32)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(stars, (y0 + dy, x0 + dx), tint * (bright * weight)[:, None])
    scene.img += np.minimum(stars, 3.0)


def paint_sun(scene: Scene) -> None:
    spec, p = scene.spec, scene.spec.palette
    if spec.weather == "storm":
        return
    night = spec.light == "night"
    radius = scene.unit * (0.032 if night else 0.05 if spec.light == "sunset" else 0.04)
    scene.sun_radius = radius
    rows = slice(max(0, int(scene.sun_y - radius * 8)), max(1, min(scene.horizon + 1, int(scene.sun_y + radius * 8))))
    d = sun_distance(scene, rows) * scene.unit
    disc = np.clip(radius - d + 0.75, 0, 1)
    colour = np.asarray(p.sun, F32)
    if night:  # the moon: soft maria and a pale halo
        n = rows.stop - rows.start
        maria = fbm2d(scene.rng("moon"), scene.w, n, scene.w / radius * 1.5, n / radius * 1.5, octaves=2)
        body = colour * (0.78 + 0.22 * smoothstep(0.35, 0.65, maria)[..., None])
        scene.blend(body, disc, rows)
        scene.img[rows] += (0.2 * np.exp(-d / (radius * 2.2)))[..., None] * colour
    elif spec.weather == "fog":  # a veiled sun: a pale disc in a wide soft glow
        scene.blend(mix(colour, (1.0, 1.0, 0.95), 0.4), disc * 0.6, rows)
    else:
        scene.blend(mix(colour, (1.0, 1.0, 0.95), 0.6) * 1.5, disc, rows)
        scene.img[rows] += (0.4 * np.exp(-d / (radius * 1.3)))[..., None] * colour


def paint_planet(scene: Scene) -> None:
    rng, spec = scene.rng("planet"), scene.spec
    radius = scene.unit * rng.uniform(0.2, 0.3)
    left = rng.random() < 0.5
    cx = scene.w * (rng.uniform(0.18, 0.32) if left else rng.uniform(0.68, 0.82))
    cy = min(scene.horizon - radius * 0.4, scene.h * rng.uniform(0.3, 0.42))
    colours = [(0.85, 0.55, 0.35), (0.35, 0.55, 0.85), (0.75, 0.45, 0.75), (0.45, 0.75, 0.70)]
    base = np.asarray(colours[(spec.digest >> 3) % 4], F32)
    rows = slice(max(0, int(cy - radius * 1.3)), min(scene.h, int(cy + radius * 1.3)))
    nx, ny = (scene.xs - cx) / radius, (scene.ys[rows] - cy) / radius
    r = np.sqrt(nx * nx + ny * ny)
    nz = np.sqrt(np.clip(1 - r * r, 0, 1))
    lx = 0.65 if left else -0.65  # lit from the frame's centre
    shade = np.clip(nx * lx - ny * 0.3 + nz * 0.7, 0, 1)
    bands = noise2d(rng, scene.w, rows.stop - rows.start, 3, radius * 2 / scene.unit * 18)  # latitude bands
    surface = base * (0.6 + 0.5 * bands[..., None]) * (0.03 + 0.97 * shade[..., None] ** 0.9)
    scene.blend(surface, np.clip((1 - r) * radius + 0.5, 0, 1), rows)
    rim = np.exp(-np.abs(r - 1) * 25) * np.clip(nx * lx - ny * 0.3 + 0.4, 0, 1)
    scene.img[rows] += (0.6 * rim)[..., None] * mix(base, (0.7, 0.85, 1.0), 0.6)


# --------------------------------------------------------------------------- clouds


def paint_clouds(scene: Scene) -> None:
    spec, p = scene.spec, scene.spec.palette
    rng = scene.rng("clouds")
    cover = {"storm": 0.9, "fog": 0.3}.get(spec.weather, 0.38 if "clouds" in spec.elements else 0.22)
    cover += {"epic": 0.08, "calm": -0.06}.get(spec.mood, 0.0)
    w2, h2 = scene.w // 2, max(4, scene.horizon // 2)
    aspect = scene.w / scene.unit
    t = np.linspace(0, 1, h2, dtype=F32)[:, None]  # 0 at the top, 1 at the horizon
    big = fbm2d(rng, w2, h2, 2.5 * aspect, 2.5, octaves=5)
    small = fbm2d(rng, w2, h2, 6 * aspect, 10, octaves=4)
    dens = mix(big, small, smoothstep(0.15, 0.85, t))  # perspective: clouds shrink toward the horizon
    dens = dens * (1 - 0.5 * smoothstep(0.75, 1.0, t))  # and thin out just above it
    level = float(np.quantile(dens, 1 - cover))
    alpha = smoothstep(level - 0.01, level + 0.4 * float(dens.std()), dens)
    # light: edges facing the sun are bright, the far side of each cloud is in its own shadow
    step_x = -1 if scene.sun_x > scene.w / 2 else 1
    step_y = 1 if scene.sun_y > scene.horizon * 0.35 else -1
    thick = sum(shifted(alpha, step_y * k // 2, step_x * k) for k in (3, 6, 12)) / 3
    puffs = fbm2d(rng, w2, h2, 14 * aspect, 20, octaves=3)  # billows inside each cloud
    sunlit = np.clip(0.55 + (alpha - thick) * 1.4 + (puffs - 0.5) * 0.8, 0, 1)[..., None]
    zen, mid = np.asarray(p.sky[0], F32), np.asarray(p.sky[1], F32)
    bright = {"day": 1.0, "golden": 0.95, "dawn": 0.9, "sunset": 0.9, "night": 0.18}[spec.light]
    storm = spec.weather == "storm"
    whiten = {"day": 0.7, "dawn": 0.35, "night": 0.3}.get(spec.light, 0.12)
    lit_col = mix(mix(p.sun, (1, 1, 1), whiten), mid, 0.5 if spec.light == "night" else 0.15) * bright
    grey = 0.35 if spec.light == "day" else 0.12
    shade_col = mix(mix(zen, mid, 0.6), (0.55, 0.58, 0.66), grey) * (0.95 if bright > 0.5 else 0.75)
    if storm:  # slate, heavy, barely lit
        lit_col, shade_col = mix((0.5, 0.53, 0.6), p.sun, 0.2) * bright, np.asarray((0.16, 0.18, 0.23), F32)
    col = mix(shade_col, lit_col, sunlit)
    ys2 = np.arange(h2, dtype=F32)[:, None] * 2
    xs2 = np.arange(w2, dtype=F32)[None, :] * 2
    if spec.light in ("golden", "sunset", "dawn") and not storm:  # clouds near a low sun blaze
        near_sun = np.exp(-np.hypot(xs2 - scene.sun_x, ys2 - scene.sun_y) / (scene.unit * 0.4))
        col += (near_sun * 0.3)[..., None] * sunlit * np.asarray(p.sun, F32)
    if scene.sun_radius:  # keep the disc clear: a half-veiled sun or moon reads as a smudge
        near_disc = np.hypot(xs2 - scene.sun_x, ys2 - scene.sun_y) / scene.sun_radius
        alpha = alpha * (0.15 + 0.85 * smoothstep(1.3, 3.5, near_disc))
    col = resize(col, scene.w, scene.horizon)
    alpha = resize(alpha * (0.9 if not storm else 0.97), scene.w, scene.horizon)
    scene.blend(col, np.clip(alpha, 0, 1), slice(0, scene.horizon))


# --------------------------------------------------------------------------- land


def ridge_lines(scene: Scene, name: str, heights: list[float], rough: bool) -> list[np.ndarray]:
    """One ridge line (y per column) per layer, far to near, standing on the horizon."""
    rng = scene.rng(name)
    ridges = []
    for i, height in enumerate(heights):
        cells = (1.2 + i * 0.8) * scene.w / scene.unit
        if rough:
            profile = normalised(noise1d(rng, scene.w, cells, octaves=7, ridged_octaves=2, gain=0.47)) ** 1.3
        else:
            profile = normalised(noise1d(rng, scene.w, cells * 0.7, octaves=3, gain=0.35))
        ridges.append(scene.horizon - scene.horizon * height * (0.2 + 0.8 * profile))
    return ridges


def paint_mountains(scene: Scene) -> None:
    spec = scene.spec
    rng = scene.rng("mountain-texture")
    n = 5 if spec.mood == "epic" else 4
    tall = 0.78 if spec.mood == "epic" else 0.62
    heights = [tall * (1 - 0.2 * i) for i in range(n)]
    snowy = "snow" in spec.elements or spec.mood == "epic" or spec.light == "dawn"
    rock, snow = lit(GROUND_ALBEDO["rock"], scene, 0.9), lit(GROUND_ALBEDO["snow"], scene)
    skylit = mix(spec.palette.shadow, spec.palette.sky[0], 0.35)  # shadowed faces take the sky's blue
    # the ground or the water that always follows covers everything below the horizon: stop there
    bottom = min(scene.h, scene.horizon + 2)
    for i, ridge in enumerate(ridge_lines(scene, "mountains", heights, rough=True)):
        depth = i / max(1, n - 1)
        top = max(0, int(ridge.min()) - 1)
        rows = slice(top, bottom)
        y = scene.ys[rows]
        shade = facet_shade(scene, ridge, rows, scene.horizon * heights[i] * 0.5)
        texture = fbm2d(rng, scene.w, scene.h - top, 40 * scene.w / scene.unit, 14, octaves=3, rows=bottom - top)
        shade = np.clip(shade + (texture - 0.5) * 0.35, 0, 1)[..., None]
        near_dark = 1 - 0.4 * depth  # nearer ranges are seen more in shadow
        colour = mix(skylit * 0.8 * near_dark, rock * 1.4 * near_dark, shade)
        if snowy and heights[i] > 0.35:
            line = scene.horizon * (1 - heights[i] * (0.62 + 0.18 * noise1d(rng, scene.w, 10, 3)))
            # the cap ends a few pixels below its lowest point: mix only the rows above that
            capped = slice(0, max(0, int(line.max() + 4 + scene.unit * 0.02) + 2 - top))
            cap = smoothstep(4, -4, y[capped] - line[None, :] + (texture[capped] - 0.5) * scene.unit * 0.04)
            snowcap = mix(skylit * 1.6 + 0.05, snow * 1.15, shade[capped])
            colour[capped] = mix(colour[capped], snowcap, cap[..., None])
        # valley mist: each range fades into the air toward its foot, so the next one stands out
        mist = smoothstep(scene.horizon - scene.horizon * heights[i] * 0.55, scene.horizon, y)
        mist_amount = 0.5 if spec.weather == "clear" else 0.8
        haze = np.clip(haze_for(scene, depth) + mist * mist_amount * (1 - 0.4 * depth), 0, 0.97)
        colour = mix(colour, air(scene), haze[..., None])
        fill(scene, ridge, colour, rows)


def paint_hills(scene: Scene) -> None:
    albedo = ground_albedo(scene.spec)
    for i, ridge in enumerate(ridge_lines(scene, "hills", [0.26, 0.18, 0.1], rough=False)):
        scene.hill_ridges.append(ridge)
        depth = 0.3 + i * 0.25
        rows = slice(max(0, int(ridge.min()) - 1), scene.h)
        shade = facet_shade(scene, ridge, rows, scene.unit * 0.15)[..., None]
        colour = lit(albedo, scene, 0.85) * (0.75 + 0.4 * shade)
        colour = mix(colour, air(scene), haze_for(scene, depth) + 0.15 * (1 - depth))
        fill(scene, ridge, colour, rows)


def ground_albedo(spec: SceneSpec) -> RGB:
    for name in ("snow", "desert", "field", "forest"):
        if name in spec.elements:
            return GROUND_ALBEDO[name]
    return GROUND_ALBEDO["valley"]


def paint_far_dunes(scene: Scene) -> None:
    rng = scene.rng("far-dunes")
    for i, height in enumerate((0.1, 0.06)):
        profile = normalised(noise1d(rng, scene.w, (2 + i) * scene.w / scene.unit, 3, ridged_octaves=1, gain=0.3))
        paint_dune(scene, scene.horizon - scene.horizon * height * (0.3 + 0.7 * profile), 0.15 + 0.2 * i)


def paint_dune(scene: Scene, ridge: np.ndarray, depth: float) -> None:
    """Sand: sharp crests, a lit windward face and a shadowed lee face, fine wind ripples."""
    rows = slice(max(0, int(ridge.min()) - 1), scene.h)
    below = scene.ys[rows] - ridge[None, :]
    face = smoothstep(0.3, 0.7, facet_shade(scene, ridge, rows, scene.unit * 0.5))
    sand = lit(GROUND_ALBEDO["desert"], scene)
    colour = mix(sand * 0.5, sand * 1.2, face[..., None])
    ripples = np.sin(scene.xs * 0.09 + below * 0.5 + np.sin(scene.xs * 0.011) * 6)
    colour = colour * (1 + (0.025 * depth * ripples)[..., None])
    colour = mix(colour, air(scene), haze_for(scene, depth))
    fill(scene, ridge, colour, rows)


def paint_ground(scene: Scene) -> None:
    """Land from the horizon to the frame's bottom: rolling swells, nearer = larger, darker, richer."""
    spec, p = scene.spec, scene.spec.palette
    rng = scene.rng("ground")
    span = scene.h - scene.horizon
    desert = "desert" in spec.elements
    starts = [0.0, 0.2, 0.45, 0.72]
    albedo = ground_albedo(spec)
    swells = []  # (depth, ridge, texture), all drawn first: each swell is painted only down to the next
    for i, start in enumerate(starts):
        depth = 0.4 + 0.6 * i / (len(starts) - 1)
        tilt = (scene.xs[0] / scene.w - 0.5) * span * rng.uniform(-0.3, 0.3) * (i > 0)
        swell = span * (0.06 + 0.1 * i) * noise1d(rng, scene.w, 1.0 + i * 0.6, octaves=3, ridged_octaves=desert)
        ridge = scene.horizon + span * start - swell + tilt
        if i == 0:
            ridge = np.minimum(scene.horizon + span * 0.02 - swell * 0.3, scene.horizon + 1.0)
        if desert:
            paint_dune(scene, ridge, depth)
            continue
        top = max(0, int(ridge.min()) - 1)
        swells.append((depth, ridge, fbm2d(rng, scene.w, scene.h - top, scene.w / 14, 6 + 14 * depth, octaves=3)))
    for i, (depth, ridge, texture) in enumerate(swells):
        top = max(0, int(ridge.min()) - 1)
        # the next swell covers everything a pixel below its lowest point
        bottom = min(scene.h, int(swells[i + 1][1].max()) + 2) if i + 1 < len(swells) else scene.h
        rows = slice(top, max(top, bottom))
        below = scene.ys[rows] - ridge[None, :]
        shade = facet_shade(scene, ridge, rows, span * 0.3)[..., None]
        base = lit(albedo, scene, 0.6 + 0.4 * depth)
        colour = mix(mix(p.shadow, base, 0.55), base * 1.25, shade) * (1.05 - 0.25 * depth)
        colour = colour * (0.88 + 0.24 * texture[: rows.stop - top, :, None])
        # each swell's crest catches the light; its foot falls into shade
        crest = np.exp(-np.maximum(below, 0) / (scene.unit * 0.03)) * 0.3 * p.brightness
        colour = colour + crest[..., None] * np.asarray(p.light, F32) * np.asarray(albedo, F32)
        colour *= (1 - 0.25 * smoothstep(0, span * 0.4, below))[..., None]
        colour = mix(colour, air(scene), haze_for(scene, depth))
        fill(scene, ridge, colour, rows)
        if "field" in spec.elements and i >= len(swells) - 2:
            paint_flowers(scene, ridge, i == len(swells) - 1)


def paint_flowers(scene: Scene, ridge: np.ndarray, near: bool) -> None:
    """Dots of colour that grow toward the viewer, drawn far to near."""
    rng, p = scene.rng(f"flowers-{near}"), scene.spec.palette
    top = max(0, int(ridge.min()))
    layer = Image.new("RGB", (scene.w, scene.h - top))
    mask = Image.new("L", (scene.w, scene.h - top))
    draw_colour, draw_mask = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    count = int(scene.w * (scene.h - top) / (160 if near else 400))
    ys = np.sort(rng.uniform(0, 1, count) ** 0.8) * (scene.h - top) + top
    xs = rng.uniform(0, scene.w, count)
    patches = noise2d(rng, scene.w // 8, (scene.h - top) // 8 + 1, 6, 3)  # flowers grow in drifts
    accents = [lit(np.asarray(a, F32) * 1.25, scene, 1.0) for a in p.accents]
    for x, y, pick, jitter in zip(xs, ys, rng.integers(0, len(accents), count), rng.random(count), strict=True):
        if y < ridge[int(x)] + 2 or patches[int(y - top) // 8, int(x) // 8] < 0.35 + 0.25 * jitter:
            continue
        closeness = (y - top) / (scene.h - top)
        r = scene.unit * (0.0012 + (0.008 if near else 0.002) * closeness**2) * (0.6 + 0.8 * jitter)
        rgb = tuple(int(min(1.0, v) * 255) for v in accents[pick] * (0.6 + 0.4 * closeness))
        box = (x - r, y - top - r * 0.75, x + r, y - top + r * 0.75)
        draw_colour.ellipse(box, fill=rgb)
        draw_mask.ellipse(box, fill=255)
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), F32) / 255
    scene.blend(np.asarray(layer, F32) / 255, alpha, slice(top, scene.h))


# --------------------------------------------------------------------------- city


def paint_city(scene: Scene) -> None:
    night = scene.spec.light in ("night", "sunset") or scene.spec.weather == "storm"
    for i, (scale, tallest) in enumerate(((0.55, 0.3), (0.8, 0.46), (1.0, 0.7))):
        paint_buildings(scene, i, scale, tallest * scene.horizon, depth=0.2 + 0.4 * i, night=night)


def paint_buildings(scene: Scene, layer: int, scale: float, tallest: float, depth: float, night: bool) -> None:
    spec, p = scene.spec, scene.spec.palette
    rng = scene.rng(f"city-{layer}")
    lefts, widths = [], []
    x = -rng.uniform(0, 40)
    while x < scene.w:
        lefts.append(x)
        widths.append(scene.unit * rng.uniform(0.025, 0.07) * scale)
        x += widths[-1] + scene.unit * rng.uniform(-0.004, 0.006)  # slight overlaps read as depth
    n = len(lefts)
    heights = tallest * np.clip(rng.beta(2.0, 3.2, n) + (rng.random(n) < 0.12) * 0.35, 0.12, 1.0)
    centre = rng.uniform(0.3, 0.7) * scene.w  # a skyline swells toward its downtown
    heights *= 0.5 + 0.5 * np.exp(-(((np.asarray(lefts) - centre) / (scene.w * 0.3)) ** 2))
    tops = scene.horizon - heights
    col_bid = np.full(scene.w, -1, np.int32)
    col_top = np.full(scene.w, float(scene.h), F32)
    for b in range(n):
        a, z = max(0, int(lefts[b])), min(scene.w, int(lefts[b] + widths[b]))
        if a >= z:
            continue
        col_bid[a:z], col_top[a:z] = b, tops[b]
        if rng.random() < 0.25:  # set-back crown
            inset = max(1, int(widths[b] * 0.2))
            col_top[a : a + inset] = col_top[z - inset : z] = tops[b] + heights[b] * 0.08
        if rng.random() < 0.18:  # antenna
            mid = (a + z) // 2
            col_top[mid - 1 : mid + 1] = tops[b] - heights[b] * rng.uniform(0.08, 0.2)
    rows = slice(max(0, int(col_top.min()) - 1), scene.horizon + 2)
    y = scene.ys[rows]
    bid = np.maximum(col_bid, 0)
    left = np.asarray(lefts, F32)[bid][None, :]
    width = np.asarray(widths, F32)[bid][None, :]
    top = col_top[None, :]
    fx = (scene.xs - left) / width
    tone = rng.random((n, 1)).astype(F32) * 0.25 + 0.85 + rng.random((n, 3)).astype(F32) * 0.08
    variety = tone[bid][None, :, :]  # each tower its own tone
    height_t = smoothstep(scene.horizon, top, y)[..., None]  # 0 at street level, 1 at the roof
    if night:
        body = mix(p.shadow, p.haze, 0.15) * variety * (0.9 + 0.5 * height_t)
    else:
        face = lit((0.58, 0.6, 0.64), scene, 0.95)
        sunny = (fx < 0.65) if scene.sun_left else (fx > 0.35)
        body = mix(face * 0.55, face * 1.1, sunny[..., None] * 1.0) * variety * (0.75 + 0.35 * height_t)
    # windows: a grid per building, floors and windows switched on by hash
    sx, sy = scene.unit * 0.011 * scale, scene.unit * 0.016 * scale
    gx, gy = (scene.xs - left) / sx, (y - top) / sy
    in_cell = ((gx % 1) < 0.55) & ((gy % 1) < 0.5) & (gy > 0.8) & (fx > 0.06) & (fx < 0.94)
    salt = stable_digest(spec.digest, scene.seed, layer) & 0xFFFF
    cell_x, cell_y = gx.astype(np.int32), gy.astype(np.int32)
    building_on, floor_on = int_hash(bid[None, :], salt), int_hash(bid[None, :], cell_y, salt + 2)
    on = int_hash(bid[None, :], cell_x, cell_y, salt + 1)
    share = {"night": 0.6, "sunset": 0.45, "dawn": 0.15, "golden": 0.1, "day": 0.0}[spec.light]
    lit_window = in_cell & (on < share * (0.3 + building_on) * (0.4 + floor_on))
    warm = np.asarray(p.accents[0] if "neon" not in spec.elements else (1.0, 0.82, 0.55), F32)
    window = mix(warm, (0.75, 0.88, 1.0), (on > share * 0.7)[..., None] * 0.6) * (0.8 + 0.6 * on[..., None])
    colour = np.where(lit_window[..., None], window * 1.2, body)
    if not night:  # glass: faint cells even when unlit, reflecting the sky
        colour = np.where(in_cell[..., None], mix(colour, p.sky[1], 0.25) * 0.9, colour)
    signs = neon_signs(scene, rng, lefts, widths, tops, rows) if "neon" in spec.elements and layer > 0 else None
    if signs is not None:
        colour = colour + signs
    colour = mix(colour, p.haze, min(0.9, haze_for(scene, depth) * (1.3 if night else 1.0)))
    alpha = np.clip(y - top + 0.5, 0, 1) * (col_bid >= 0)[None, :]
    scene.blend(colour, alpha, rows)
    if signs is not None:  # neon tubes light the air around them
        small = resize(signs, scene.w // 2, signs.shape[0] // 2) / 2
        halo = blur(small, 3) + blur(small, 10)
        scene.img[rows] += resize(halo, scene.w, signs.shape[0]) * 1.4


def neon_signs(
    scene: Scene, rng: np.random.Generator, lefts: list[float], widths: list[float], tops: np.ndarray, rows: slice
) -> np.ndarray:
    """Saturated bars and rooftop tubes; the bloom pass turns them into glow."""
    sign = Image.new("RGB", (scene.w, rows.stop - rows.start))
    draw = ImageDraw.Draw(sign)
    accents = scene.spec.palette.accents
    for left, width, top in zip(lefts, widths, tops, strict=True):
        if rng.random() > 0.5 or width < 4:
            continue
        c = tuple(int(v * 255) for v in accents[rng.integers(0, len(accents))])
        t = top - rows.start
        if rng.random() < 0.55:  # vertical sign
            x = left + width * rng.uniform(0.15, 0.7)
            y = t + (scene.horizon - top) * rng.uniform(0.05, 0.5)
            draw.rectangle((x, y, x + max(3, width * 0.12), y + scene.unit * rng.uniform(0.04, 0.12)), fill=c)
        else:  # roofline tube
            draw.rectangle((left + 1, t, left + width - 2, t + 2), fill=c)
    return np.asarray(sign, F32) / 255 * 1.8


# --------------------------------------------------------------------------- trees


def conifer(x: float, base: float, height: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """A fir silhouette: many drooping tiers of uneven branches, so no two trees match."""
    tiers = int(rng.integers(7, 12))
    half = height * rng.uniform(0.17, 0.24)
    right: list[tuple[float, float]] = []
    left: list[tuple[float, float]] = []
    for k in range(tiers):
        t = (k + 1) / tiers
        y = base - height + height * 0.92 * t
        for side, out in ((1, right), (-1, left)):
            w = half * (0.15 + 0.85 * t) * rng.uniform(0.75, 1.2)
            out += [(x + side * w, y + height * 0.015), (x + side * w * rng.uniform(0.3, 0.5), y - height * 0.035)]
    trunk = height * 0.025
    return [(x, base - height), *right[:-1], (x + trunk, base), (x - trunk, base), *left[:-1][::-1]]


def paint_trees(
    scene: Scene, trees: list[tuple[float, float, float]], colour: np.ndarray, rng: np.random.Generator, rows: slice
) -> None:
    mask = Image.new("L", (scene.w, rows.stop - rows.start))
    draw = ImageDraw.Draw(mask)
    for x, base, height in trees:
        draw.polygon([(px, py - rows.start) for px, py in conifer(x, base, height, rng)], fill=255)
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.7)), F32) / 255
    scene.blend(colour, alpha, rows)


def paint_treeline(scene: Scene) -> None:
    """Rows of firs standing on the horizon, hazier with distance."""
    rng = scene.rng("treeline")
    for i in range(3):
        depth = 0.25 + 0.2 * i
        size = scene.unit * (0.05 + 0.04 * i)
        trees, x = [], rng.uniform(-size, 0)
        while x < scene.w + size:
            trees.append((x, scene.horizon + 2 + size * 0.1 * i, size * rng.uniform(0.6, 1.3)))
            x += size * rng.uniform(0.12, 0.35)
        colour = mix(lit(GROUND_ALBEDO["forest"], scene, 0.7), air(scene), haze_for(scene, depth) + 0.1)
        rows = slice(max(0, int(scene.horizon - size * 1.5)), scene.horizon + 3 + int(size * 0.2 * i))
        paint_trees(scene, trees, colour, rng, rows)


def paint_near_trees(scene: Scene) -> None:
    """Rows of bigger firs toward the viewer, thinning out in the middle so the view stays open."""
    rng = scene.rng("near-trees")
    water = "water" in scene.spec.elements
    count = 2 if water else 4
    for i in range(count):
        depth = 0.5 + 0.5 * i / (count - 1)
        size = scene.unit * (0.3 + 0.5 * i / (count - 1)) * (0.9 if water else 1.0)
        span = scene.h - scene.horizon
        base = scene.h + size * 0.05 if water else scene.horizon + span * (0.15 + 0.3 * i)
        trees = []
        for x in rng.uniform(-0.05, 1.05, 9 + 5 * (count - i)) * scene.w:
            edge = min(x, scene.w - x) / scene.w
            if edge < 0.2 + 0.05 * (count - i) or rng.random() < 0.2:  # keep the middle clear
                trees.append((x, base + rng.uniform(0, span * 0.1), size * rng.uniform(0.7, 1.1)))
        colour = mix(lit(GROUND_ALBEDO["forest"], scene, 0.5) * 0.7, air(scene), haze_for(scene, depth))
        paint_trees(scene, trees, colour, rng, slice(0, scene.h))


# --------------------------------------------------------------------------- water & shore


def water_waves(scene: Scene, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Wave slopes (across, toward the viewer) seen in perspective: small and dense far away."""
    rng = scene.rng("waves")
    t = (np.arange(n, dtype=F32)[:, None] + 1) / n  # 0 at the horizon .. 1 at the frame's bottom
    dist = 1.0 / (t + 0.04)  # distance along the water surface
    dist_per_px = 1.0 / ((t + 0.04) ** 2 * n)
    u = (scene.xs - scene.w / 2) / scene.unit * dist
    sx, sy = np.zeros((n, scene.w), F32), np.zeros((n, scene.w), F32)
    for _ in range(9):
        angle, k = rng.uniform(-0.7, 0.7), math.exp(rng.uniform(math.log(30), math.log(220)))
        phase = k * (u * math.sin(angle) + dist * math.cos(angle)) + rng.uniform(0, 2 * math.pi)
        # waves finer than a few pixels would alias into noise: fade them out toward the horizon
        resolved = smoothstep(1.2, 0.5, k * dist_per_px)
        c = np.cos(phase) * resolved
        sx += c * math.sin(angle)
        sy += c * math.cos(angle)
    patches = resize(noise2d(rng, scene.w // 8, n // 8 + 1, 8 * scene.w / scene.unit, 6), scene.w, n, exact=True)
    amp = (0.5 + 0.8 * patches) / 4.5
    # where the waves are too fine to draw, thin horizontal streaks stand in for them
    streaks = (noise2d(rng, scene.w, n, 5 * scene.w / scene.unit, n / 3) - 0.5) * smoothstep(0.4, 0.0, t)
    return sx * amp, sy * amp + streaks * 1.2


def paint_water(scene: Scene) -> None:
    """Below the horizon: a rippled mirror of everything above it, clearer toward the horizon."""
    spec, p = scene.spec, scene.spec.palette
    hz = scene.horizon
    n = scene.h - hz
    t = (np.arange(n, dtype=F32) / max(1, n))[:, None]
    slope_x, slope_y = water_waves(scene, n)
    calm = "lake" in spec.elements or spec.mood == "calm"
    roughness = 0.5 if calm else 1.6 if spec.weather == "storm" else 1.0
    reach = scene.unit * ((0.006 if calm else 0.03) + 0.05 * t) * roughness
    src_x = np.clip(scene.xs + slope_x * reach, 0, scene.w - 1).astype(np.int32)
    src_y = np.clip(hz - 1 - np.arange(n)[:, None] + slope_y * reach * 1.5, 0, hz - 1).astype(np.int32)
    reflection = scene.img[src_y, src_x]
    if scene.sun_radius:  # ripples never mirror the sun's disc whole: the glitter below stands in for it
        r = scene.sun_radius * 1.8
        beside = scene.img[:hz][:, np.clip([scene.sun_x - r, scene.sun_x + r], 0, scene.w - 1).astype(int)].mean(1)
        in_disc = smoothstep(r, r * 0.6, np.hypot(src_x - scene.sun_x, src_y - scene.sun_y))
        reflection = mix(reflection, beside[src_y], in_disc[..., None])
    # broken water stretches bright lights into vertical columns
    reflection = resize(resize(reflection, scene.w, max(1, n // 8)), scene.w, n) * 0.45 + reflection * 0.55
    deep = mix(mix(p.sky[0], p.sky[1], 0.3), p.shadow, 0.4) * 0.6
    mirror = (0.9 - 0.35 * t) * (0.9 if spec.weather == "clear" else 0.7)
    water = mix(deep, reflection, mirror[..., None])
    water += (smoothstep(0.25, 0.6, -slope_y) * 0.08)[..., None] * np.asarray(p.sky[1], F32)  # sky on wave backs
    if spec.weather != "storm" and spec.light != "day":  # the sun's (or moon's) glitter path
        width = scene.unit * (0.02 + 0.25 * t)
        path = np.exp(-(((scene.xs - scene.sun_x) / width) ** 2))
        glade = np.exp(-(((scene.xs - scene.sun_x) / (scene.unit * (0.03 + 0.12 * t))) ** 2)) * np.exp(-t / 0.35)
        water += (glade * (0.3 if spec.light != "night" else 0.12))[..., None] * np.asarray(p.sun, F32)
        if spec.light == "night":
            glint = smoothstep(0.5, 0.7, slope_y) * path * 0.45
        else:
            glint = smoothstep(0.3, 0.55, slope_y) * path * 1.4
        water += glint[..., None] * np.asarray(p.sun, F32)
    scene.img[hz:] = water


def paint_shore(scene: Scene) -> None:
    """A foreground bank: sand with a wet edge and foam, or meadow, or snow."""
    spec = scene.spec
    rng = scene.rng("shore")
    kind = next(k for k in ("beach", "field", "snow", "desert") if k in spec.elements)
    line = scene.h * rng.uniform(0.8, 0.86) - scene.h * 0.05 * noise1d(rng, scene.w, 1.2, octaves=3)
    line = line + (scene.xs[0] / scene.w - 0.5) * scene.h * rng.choice([-1, 1]) * rng.uniform(0.1, 0.2)
    scene.shore_line = line
    rows = slice(max(0, int(line.min()) - 2), scene.h)
    below = scene.ys[rows] - line[None, :]
    albedo = GROUND_ALBEDO["beach" if kind in ("beach", "desert") else kind]
    ground = mix(lit(albedo, scene, 0.95), np.asarray(albedo, F32) * scene.spec.palette.brightness, 0.35)
    ground = ground * (1 - 0.3 * smoothstep(0, scene.h * 0.2, below))[..., None]
    n = scene.h - rows.start
    grain = noise2d(rng, scene.w, n, scene.w / 3, n / 3) * 0.4 + noise2d(rng, scene.w, n, 12, 4) * 0.6
    ground = ground * (0.9 + 0.2 * grain[..., None])
    if kind in ("beach", "desert"):
        wet = smoothstep(scene.unit * 0.035, 0, below)[..., None]
        ground = mix(ground, ground * 0.55 + scene.img[rows] * 0.4, wet)
        foam = np.exp(-(((below + scene.unit * 0.006) / (scene.unit * 0.005)) ** 2)) * smoothstep(0.3, 0.7, grain)
        scene.blend(lit((1, 1, 1), scene) + 0.08, foam * 0.9, rows)
    fill(scene, line, ground, rows)
    if kind == "field":
        paint_flowers(scene, line, True)


# --------------------------------------------------------------------------- weather


def paint_fog(scene: Scene) -> None:
    """Banks of fog hugging the land, thickest near the horizon, and shafts of light from the sun."""
    p, rng = scene.spec.palette, scene.rng("fog")
    banks = resize(fbm2d(rng, scene.w // 4, scene.h // 4, 4 * scene.w / scene.unit, 6, octaves=3), scene.w, scene.h)
    around = np.exp(-(((scene.ys - scene.horizon) / (scene.h * 0.25)) ** 2))
    scene.blend(mix(p.haze, p.sky[2], 0.3), np.clip(0.12 + around * (0.3 + 0.6 * banks), 0, 0.85))
    if scene.spec.light != "night":
        angle = np.arctan2(scene.ys - scene.sun_y, scene.xs - scene.sun_x)
        rays = noise1d(rng, 1440, 120, octaves=2)[((angle + math.pi) / (2 * math.pi) * 1439).astype(int)]
        reach = np.exp(-sun_distance(scene) / 0.8)
        shafts = smoothstep(0.5, 0.85, rays) * reach * 0.14 * smoothstep(0, scene.unit * 0.15, scene.ys - scene.sun_y)
        scene.img += shafts[..., None] * np.asarray(p.sun, F32)


def paint_storm(scene: Scene) -> None:
    """Slanted rain (or none, for snow) and a lightning bolt on most seeds."""
    rng, p = scene.rng("storm"), scene.spec.palette
    if "snow" not in scene.spec.elements:
        rain = Image.new("L", (scene.w, scene.h))
        draw = ImageDraw.Draw(rain)
        slant = rng.uniform(0.15, 0.35)
        for x, y, length in zip(rng.uniform(-100, scene.w, 1600), rng.uniform(0, scene.h, 1600),
                                rng.uniform(15, 45, 1600), strict=True):  # fmt: skip
            draw.line((x, y, x + length * slant, y + length), fill=int(rng.integers(30, 90)), width=1)
        alpha = np.asarray(rain.filter(ImageFilter.GaussianBlur(0.6)), F32) / 255
        scene.blend(mix(p.haze, (0.85, 0.88, 0.95), 0.5), alpha * 0.8)
    if rng.random() < 0.7:
        bolt = Image.new("L", (scene.w, scene.h))
        draw = ImageDraw.Draw(bolt)
        x, y = rng.uniform(0.2, 0.8) * scene.w, 0.0
        while y < scene.horizon * 0.9:
            nx, ny = x + rng.normal(0, scene.unit * 0.02), y + rng.uniform(0.02, 0.06) * scene.unit
            draw.line((x, y, nx, ny), fill=255, width=3)
            x, y = nx, ny
        core = np.asarray(bolt.filter(ImageFilter.GaussianBlur(1)), F32) / 255
        glow = np.asarray(bolt.filter(ImageFilter.GaussianBlur(scene.unit * 0.03)), F32) / 255
        scene.img += (core * 1.5 + glow * 3)[..., None] * np.asarray((0.85, 0.88, 1.0), F32)


def paint_snowfall(scene: Scene) -> None:
    rng = scene.rng("snowfall")
    flakes = Image.new("L", (scene.w, scene.h))
    draw = ImageDraw.Draw(flakes)
    for x, y, r in zip(rng.uniform(0, scene.w, 1500), rng.uniform(0, scene.h, 1500), rng.pareto(4, 1500) + 1, strict=True):
        r = min(r * scene.unit * 0.001, scene.unit * 0.005)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(90, 220)))
    alpha = np.asarray(flakes.filter(ImageFilter.GaussianBlur(0.8)), F32) / 255
    scene.blend((0.95, 0.96, 1.0), alpha * 0.85)


# --------------------------------------------------------------------------- finish


def paint_bloom(scene: Scene) -> None:
    """Bright things (sun, windows, neon, glints) bleed light into their surroundings."""
    h4, w4 = scene.h // 4, scene.w // 4
    # 4x4 means, summed one axis at a time (numpy reduces contiguous axes much faster)
    small = scene.img[: h4 * 4, : w4 * 4].reshape(h4, 4, w4 * 12).sum(1).reshape(h4, w4, 4, 3).sum(2) / 16
    hot = Image.fromarray((np.clip((small - 0.72) / 2, 0, 1) * 255).astype(np.uint8), "RGB")
    glow = np.zeros((h4, w4, 3), F32)
    for radius, weight in ((2, 0.6), (7, 0.4), (20, 0.3)):
        glow += np.asarray(hot.filter(ImageFilter.GaussianBlur(radius)), F32) * (2 * weight / 255)
    strength = 1.6 if scene.spec.mood == "dreamy" else 1.0
    scene.img += resize(glow, scene.w, scene.h) * strength


def paint_finish(scene: Scene) -> None:
    """Tone curve, mood grade, vignette and grain (which also dithers away banding)."""
    spec, img = scene.spec, scene.img
    bright = img > 0.8  # a soft highlight shoulder, worked out only where it applies
    img[bright] = 0.8 + 0.2 * (1 - np.exp(-(img[bright] - 0.8) / 0.2))
    contrast, lift, saturation = {
        "epic": (1.1, 0.0, 1.08), "calm": (0.94, 0.02, 0.95), "dreamy": (0.9, 0.04, 0.95),
        "moody": (1.05, 0.0, 0.9), "vibrant": (1.05, 0.0, 1.25),
    }.get(spec.mood, (1.0, 0.0, 1.0))  # fmt: skip
    luma = img @ np.asarray((0.2126, 0.7152, 0.0722), F32)
    if saturation != 1.0:  # in place: luma + (img - luma) * saturation
        img -= luma[..., None]
        img *= saturation
        img += luma[..., None]
    if contrast != 1.0 or lift:  # in place: (img - 0.5) * contrast + 0.5 + lift * (1 - img)
        img *= contrast - lift
        img += 0.5 - 0.5 * contrast + lift
    r = np.hypot((scene.xs - scene.w / 2) / (scene.w / 2), (scene.ys - scene.h / 2) / (scene.h / 2))
    img *= (1 - 0.28 * smoothstep(0.55, 1.45, r))[..., None]
    grain = scene.rng("grain").standard_normal((scene.h, scene.w), dtype=F32)
    img += (grain * (0.01 + 0.012 * (1 - np.clip(luma, 0, 1))))[..., None]
