"""Procedural training pictures for the demo model: simple captioned scenes drawn with numpy.

Why procedural: the demo model must be trainable offline, in minutes, from nothing but code in this
repository, and its text conditioning must matter. Each scene is a sky over a ground (a horizon with
a colour gradient and mild low-frequency texture) with one or two objects from a small vocabulary
(house, tree, sun, cat, car, boat) in a few colours, and its caption names all of it, e.g.
"a red house and a green tree in a meadow under a blue sky" or "a yellow sun over the sea at sunset".
Shapes are filled with analytic signed distances and a one-pixel soft edge (anti-aliasing without
supersampling), so a whole data set renders in seconds and a VAE with a factor-8 bottleneck can
reconstruct it well. Everything is a pure function of the numpy Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Color = tuple[float, float, float]

COLORS: dict[str, Color] = {
    "red": (0.85, 0.14, 0.12),
    "blue": (0.14, 0.30, 0.85),
    "green": (0.18, 0.62, 0.20),
    "yellow": (0.96, 0.86, 0.16),
    "white": (0.95, 0.95, 0.94),
    "black": (0.08, 0.08, 0.10),
    "orange": (0.96, 0.55, 0.10),
    "purple": (0.52, 0.22, 0.70),
    "pink": (0.96, 0.56, 0.72),
    "brown": (0.50, 0.30, 0.14),
}

# sky name -> (caption phrase, colour at the top, colour at the horizon)
SKIES: dict[str, tuple[str, Color, Color]] = {
    "blue": ("under a blue sky", (0.16, 0.40, 0.80), (0.66, 0.82, 0.95)),
    "grey": ("under a grey sky", (0.45, 0.47, 0.52), (0.74, 0.75, 0.77)),
    "sunset": ("at sunset", (0.40, 0.22, 0.50), (0.98, 0.58, 0.26)),
    "night": ("at night", (0.02, 0.03, 0.12), (0.10, 0.14, 0.30)),
}

# ground name -> (phrase for things on it, phrase for things over it, near colour, far colour)
GROUNDS: dict[str, tuple[str, str, Color, Color]] = {
    "meadow": ("in a meadow", "over a meadow", (0.24, 0.52, 0.16), (0.50, 0.70, 0.30)),
    "field": ("in a field", "over a yellow field", (0.78, 0.62, 0.16), (0.92, 0.80, 0.40)),
    "sea": ("on the sea", "over the sea", (0.05, 0.20, 0.45), (0.20, 0.45, 0.70)),
    "snow": ("in the snow", "over the snow", (0.86, 0.88, 0.94), (0.97, 0.97, 1.00)),
    "desert": ("in the desert", "over the desert", (0.80, 0.56, 0.30), (0.93, 0.78, 0.52)),
}

# The colours each object is drawn in (a sun is never purple, a tree never blue).
OBJECT_COLORS: dict[str, tuple[str, ...]] = {
    "house": ("red", "blue", "white", "yellow", "brown", "pink", "green"),
    "tree": ("green", "orange", "yellow", "brown", "pink"),
    "sun": ("yellow", "orange", "white", "red"),
    "cat": ("black", "white", "orange", "brown"),
    "car": ("red", "blue", "green", "yellow", "white", "black", "purple"),
    "boat": ("red", "white", "blue", "yellow", "black"),
}
GROUND_OBJECTS = ("house", "tree", "cat", "car")


@dataclass(frozen=True)
class Scene:
    """A rendered picture (float32 [H, W, 3] in [0, 1]) and its caption."""

    pixels: np.ndarray
    caption: str


class Canvas:
    """An RGB float image painted with soft-edged analytic shapes, in pixel coordinates."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self.x, self.y = xs + 0.5, ys + 0.5
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)

    def paint(self, distance: np.ndarray, color: Color | np.ndarray, opacity: float = 1.0) -> None:
        """Fill where the signed distance (pixels, negative inside) is below 0, edge 1 px wide."""
        a = (np.clip(0.5 - distance, 0.0, 1.0) * opacity)[..., None]
        self.rgb = self.rgb * (1 - a) + np.asarray(color, dtype=np.float32) * a

    def circle(self, cx: float, cy: float, r: float) -> np.ndarray:
        return np.hypot(self.x - cx, self.y - cy) - r

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return (np.hypot((self.x - cx) / rx, (self.y - cy) / ry) - 1.0) * min(rx, ry)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return np.maximum(np.maximum(x0 - self.x, self.x - x1), np.maximum(y0 - self.y, self.y - y1))

    def polygon(self, points: list[tuple[float, float]]) -> np.ndarray:
        """Signed distance-like field of a convex polygon (vertices in either winding order)."""
        edges = list(zip(points, points[1:] + points[:1]))
        winding = 1.0 if sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in edges) > 0 else -1.0
        d = np.full((self.h, self.w), -np.inf, dtype=np.float32)
        for (x0, y0), (x1, y1) in edges:
            nx, ny = winding * (y1 - y0), winding * (x0 - x1)  # outward normal
            norm = float(np.hypot(nx, ny)) or 1.0
            d = np.maximum(d, ((self.x - x0) * nx + (self.y - y0) * ny) / norm)
        return d

    def noise(self, rng: np.random.Generator, cell: float) -> np.ndarray:
        """Smooth value noise in about [-1, 1] with features `cell` pixels wide (bilinear grid)."""
        gw, gh = int(self.w / cell) + 2, int(self.h / cell) + 2
        grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
        gx, gy = self.x / cell, self.y / cell
        ix, iy = gx.astype(int), gy.astype(int)
        fx, fy = gx - ix, gy - iy
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        top = grid[iy, ix] * (1 - fx) + grid[iy, ix + 1] * fx
        bottom = grid[iy + 1, ix] * (1 - fx) + grid[iy + 1, ix + 1] * fx
        return top * (1 - fy) + bottom * fy


def _jitter(rng: np.random.Generator, color: Color, amount: float = 0.05) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 1).astype(np.float32)


def _mix(a: Color | np.ndarray, b: Color | np.ndarray, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, np.float32)[..., None]
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def _background(c: Canvas, rng: np.random.Generator, sky: str, ground: str, horizon: float) -> None:
    _, top, low = SKIES[sky]
    t = np.clip(c.y / horizon, 0, 1) ** rng.uniform(0.8, 1.6)
    c.rgb = _mix(_jitter(rng, top), _jitter(rng, low), t)
    if sky == "night":  # a few stars
        for _ in range(int(rng.integers(3, 9))):
            sx, sy = rng.uniform(0, c.w), rng.uniform(0, horizon * 0.8)
            c.paint(c.circle(sx, sy, rng.uniform(0.4, 0.9)), (0.95, 0.95, 0.85), 0.8)
    elif sky in ("blue", "grey") and rng.random() < 0.5:  # a soft cloud
        cx, cy = rng.uniform(0, c.w), rng.uniform(0.15, 0.6) * horizon
        rx, ry = rng.uniform(0.12, 0.25) * c.w, rng.uniform(0.04, 0.08) * c.h
        cloud = (0.9, 0.9, 0.92) if sky == "grey" else (0.97, 0.97, 0.99)
        c.paint(c.ellipse(cx, cy, rx, ry) * 0.4, cloud, 0.8)
    _, _, near, far = GROUNDS[ground]
    edge = horizon + rng.uniform(-0.03, 0.03) * c.h * np.sin(c.x / c.w * rng.uniform(2, 6) + rng.uniform(0, 6))
    if ground == "sea":
        edge = np.full_like(c.x, horizon)
    depth = np.clip((c.y - horizon) / max(c.h - horizon, 1.0), 0, 1)
    base = _mix(_jitter(rng, far), _jitter(rng, near), depth**0.8)
    if ground == "sea":
        waves = 0.5 + 0.5 * np.sin(c.y * rng.uniform(0.9, 1.3) + 0.6 * np.sin(c.x * 0.3 + rng.uniform(0, 6)))
        base = base * (1 + 0.06 * waves)[..., None]
    else:
        base = base * (1 + 0.06 * c.noise(rng, c.w / rng.uniform(3, 6)))[..., None]
    c.paint(edge - c.y, base)


def _house(c: Canvas, rng: np.random.Generator, color: str, cx: float, base: float, size: float) -> None:
    w, h = size, size * rng.uniform(0.6, 0.85)
    wall = _jitter(rng, COLORS[color])
    roof_color = _jitter(rng, COLORS[str(rng.choice(["red", "brown", "black", "blue"]))] if color != "red"
                         else COLORS[str(rng.choice(["brown", "black"]))])
    x0, x1, top = cx - w / 2, cx + w / 2, base - h
    c.paint(c.box(x0, top, x1, base), wall)
    c.paint(c.box(x0, top, x0 + w * 0.12, base), wall * 0.85)  # shaded corner
    apex = top - size * rng.uniform(0.35, 0.55)
    c.paint(c.polygon([(x0 - size * 0.1, top + 0.5), (x1 + size * 0.1, top + 0.5), (cx, apex)]), roof_color)
    dw = w * 0.2
    dx = cx + rng.uniform(-0.2, 0.2) * w
    c.paint(c.box(dx - dw / 2, base - h * 0.55, dx + dw / 2, base), (0.30, 0.18, 0.10))
    if size > 14:
        side = -1 if dx > cx else 1
        wx = cx + side * w * 0.3
        c.paint(c.box(wx - w * 0.1, top + h * 0.2, wx + w * 0.1, top + h * 0.45), (0.75, 0.86, 0.95))


def _tree(c: Canvas, rng: np.random.Generator, color: str, cx: float, base: float, size: float) -> None:
    trunk_w = size * 0.14
    c.paint(c.box(cx - trunk_w, base - size * 0.7, cx + trunk_w, base), (0.36, 0.22, 0.10))
    r = size * rng.uniform(0.38, 0.5)
    cy = base - size * 0.7 - r * 0.6
    leaves = _jitter(rng, COLORS[color])
    c.paint(c.circle(cx, cy, r), leaves)
    c.paint(c.circle(cx + r * 0.3, cy - r * 0.3, r * 0.45), np.clip(leaves * 1.15, 0, 1), 0.6)


def _cat(c: Canvas, rng: np.random.Generator, color: str, cx: float, base: float, size: float) -> None:
    fur = _jitter(rng, COLORS[color])
    bw, bh = size * 0.45, size * 0.28
    c.paint(c.ellipse(cx, base - bh, bw, bh), fur)
    side = 1 if rng.random() < 0.5 else -1
    hx, hy, hr = cx + side * bw * 0.8, base - bh * 2.0, size * 0.22
    c.paint(c.polygon([(hx - hr, hy - hr * 0.2), (hx - hr * 0.2, hy - hr * 0.5), (hx - hr * 0.8, hy - hr * 1.6)]), fur)
    c.paint(c.polygon([(hx + hr * 0.2, hy - hr * 0.5), (hx + hr, hy - hr * 0.2), (hx + hr * 0.8, hy - hr * 1.6)]), fur)
    c.paint(c.circle(hx, hy, hr), fur)
    eye = (0.2, 0.7, 0.2) if color in ("black", "brown") else (0.1, 0.1, 0.1)
    if size > 16:
        for ex in (hx - hr * 0.4, hx + hr * 0.4):
            c.paint(c.circle(ex, hy - hr * 0.1, max(0.6, hr * 0.15)), eye)
    c.paint(c.box(cx - side * bw * 1.3, base - bh * 2.2, cx - side * bw * 0.9, base - bh * 0.8), fur)  # tail


def _car(c: Canvas, rng: np.random.Generator, color: str, cx: float, base: float, size: float) -> None:
    paint = _jitter(rng, COLORS[color])
    w, h = size, size * 0.28
    wheel = size * 0.13
    y1 = base - wheel
    c.paint(c.box(cx - w / 2, y1 - h, cx + w / 2, y1) - size * 0.04, paint)
    c.paint(c.polygon([(cx - w * 0.3, y1 - h + 0.5), (cx + w * 0.25, y1 - h + 0.5), (cx + w * 0.12, y1 - h * 1.9),
                       (cx - w * 0.2, y1 - h * 1.9)]), paint)
    c.paint(c.polygon([(cx - w * 0.22, y1 - h * 1.05), (cx + w * 0.18, y1 - h * 1.05), (cx + w * 0.09, y1 - h * 1.75),
                       (cx - w * 0.15, y1 - h * 1.75)]), (0.70, 0.82, 0.92))
    for wx in (cx - w * 0.3, cx + w * 0.3):
        c.paint(c.circle(wx, base - wheel, wheel), (0.06, 0.06, 0.06))
        c.paint(c.circle(wx, base - wheel, wheel * 0.45), (0.6, 0.6, 0.6))


def _boat(c: Canvas, rng: np.random.Generator, color: str, cx: float, base: float, size: float) -> None:
    hull = _jitter(rng, COLORS[color])
    w, h = size, size * 0.22
    c.paint(c.polygon([(cx - w / 2, base - h), (cx + w / 2, base - h), (cx + w * 0.35, base), (cx - w * 0.35, base)]), hull)
    c.paint(c.box(cx - 0.6, base - h - size * 0.8, cx + 0.6, base - h), (0.3, 0.2, 0.1))
    sail = (0.96, 0.96, 0.92) if color != "white" else (0.9, 0.3, 0.2)
    c.paint(c.polygon([(cx + 1, base - h - size * 0.75), (cx + 1, base - h - 1), (cx + w * 0.4, base - h - 1)]), sail)


def _sun(c: Canvas, rng: np.random.Generator, color: str, cx: float, cy: float, size: float) -> None:
    col = _jitter(rng, COLORS[color])
    glow = np.exp(-np.maximum(c.circle(cx, cy, size * 0.5), 0) / (size * 0.4))
    c.rgb = c.rgb + (glow * 0.25)[..., None] * (col - c.rgb)
    c.paint(c.circle(cx, cy, size * 0.5), col)


DRAW = {"house": _house, "tree": _tree, "cat": _cat, "car": _car, "boat": _boat}


def _article(color: str) -> str:
    return "an" if color[0] in "aeiou" else "a"


def render_scene(rng: np.random.Generator, width: int = 64, height: int = 64) -> Scene:
    """Draw one random captioned scene of `width` x `height` pixels."""
    c = Canvas(width, height)
    s = min(width, height)
    sky = str(rng.choice(list(SKIES)))
    kind = rng.random()
    if kind < 0.12:  # a sun (or a moon-like white sun) as the subject
        ground = str(rng.choice(list(GROUNDS)))
        horizon = rng.uniform(0.55, 0.8) * height
        sky = str(rng.choice(["blue", "grey", "sunset"]))
        _background(c, rng, sky, ground, horizon)
        color = str(rng.choice(OBJECT_COLORS["sun"]))
        size = rng.uniform(0.2, 0.4) * s
        _sun(c, rng, color, rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.7) * horizon, size)
        ground_over = GROUNDS[ground][1]
        words = f"{_article(color)} {color} sun {ground_over}"
        if rng.random() < 0.5:
            words += f" {SKIES[sky][0]}"
        return Scene(np.clip(c.rgb, 0, 1), words)

    if kind < 0.27:
        ground, subjects = "sea", ["boat"]
    else:
        ground = str(rng.choice([g for g in GROUNDS if g != "sea"]))
        first = str(rng.choice(GROUND_OBJECTS, p=[0.4, 0.2, 0.2, 0.2]))
        subjects = [first]
        if rng.random() < 0.3:
            subjects.append(str(rng.choice([o for o in GROUND_OBJECTS if o != first])))
    with_sun = sky != "night" and rng.random() < 0.25
    horizon = rng.uniform(0.45, 0.7) * height
    _background(c, rng, sky, ground, horizon)
    phrases = []
    if with_sun:
        sun_color = str(rng.choice(OBJECT_COLORS["sun"][:2]))
        _sun(c, rng, sun_color, rng.uniform(0.1, 0.9) * width, rng.uniform(0.15, 0.5) * horizon,
             rng.uniform(0.12, 0.22) * s)
    # Left-to-right slots so two objects do not sit on top of each other.
    slots = [rng.uniform(0.2, 0.8)] if len(subjects) == 1 else sorted([rng.uniform(0.15, 0.4), rng.uniform(0.6, 0.85)])
    if len(subjects) == 2 and rng.random() < 0.5:
        slots.reverse()
    for name, slot in zip(subjects, slots):
        color = str(rng.choice(OBJECT_COLORS[name]))
        size = {"house": 0.45, "tree": 0.45, "cat": 0.4, "car": 0.45, "boat": 0.45}[name] * s * rng.uniform(0.75, 1.3)
        if len(subjects) == 2:
            size *= 0.8
        base = horizon + rng.uniform(0.25, 0.75) * (height - horizon)
        if name == "boat":
            base = horizon + rng.uniform(0.3, 0.7) * (height - horizon)
        DRAW[name](c, rng, color, slot * width, base, size)
        named = rng.random() < 0.85  # sometimes the colour is left unsaid, as in "a house in a meadow"
        phrases.append(f"{_article(color)} {color} {name}" if named else f"a {name}")
    if with_sun:
        phrases.append(f"{_article(sun_color)} {sun_color} sun")
    caption = " and ".join(phrases) + f" {GROUNDS[ground][0]} {SKIES[sky][0]}"
    return Scene(np.clip(c.rgb, 0, 1).astype(np.float32), caption)
