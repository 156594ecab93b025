"""Render Retake's demo photo: a house in a meadow under a blue sky, drawn from code.

The demo must ship with the app, be free of anyone's copyright, and exercise what real photos do:
a non-square size (640x480, so aspect handling is tested), soft gradients and texture (so it is not
a flat cartoon the model would treat oddly), and one obvious subject for edits such as "a house" ->
"a house, chinese style". Drawing it from code makes it reproducible and reviewable: the same
numpy/Pillow versions give the same pixels every time (fixed seed, no fonts, no system state).

Run: .venv/bin/python resources/demo/render_demo.py   (writes house.png next to this file)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 640, 480
SCALE = 3  # drawn at 3x and downsampled: anti-aliased edges without an anti-aliasing rasteriser
HORIZON = 292
SEED = 20240611
SUN = (540.0, 78.0)

Color = tuple[float, float, float]


class Canvas:
    """A float RGB image at SCALE x the output size, painted in output coordinates."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.w, self.h = WIDTH * SCALE, HEIGHT * SCALE
        self.rgb = np.zeros((self.h, self.w, 3), dtype=np.float64)
        self.rng = rng
        ys, xs = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)
        self.x, self.y = xs / SCALE, ys / SCALE  # output-space coordinates of every pixel

    def mask(self, draw: callable, blur: float = 0.0) -> np.ndarray:
        """Coverage in [0, 1] of shapes drawn by `draw(ImageDraw, s)`, s scaling output coordinates."""
        layer = Image.new("L", (self.w, self.h), 0)
        draw(ImageDraw.Draw(layer), SCALE)
        if blur:
            layer = layer.filter(ImageFilter.GaussianBlur(blur * SCALE))
        return np.asarray(layer, dtype=np.float64) / 255.0

    def polygon(self, points: list[tuple[float, float]], blur: float = 0.0) -> np.ndarray:
        return self.mask(lambda d, s: d.polygon([(x * s, y * s) for x, y in points], fill=255), blur)

    def ellipse(self, box: tuple[float, float, float, float], blur: float = 0.0) -> np.ndarray:
        return self.mask(lambda d, s: d.ellipse([v * s for v in box], fill=255), blur)

    def paint(self, coverage: np.ndarray, color: Color | np.ndarray, opacity: float = 1.0) -> None:
        a = (coverage * opacity)[..., None]
        self.rgb = self.rgb * (1 - a) + np.asarray(color, dtype=np.float64) * a

    def noise(self, cell: float, octaves: int = 4) -> np.ndarray:
        """Smooth fractal noise in about [-1, 1]; `cell` is the largest feature size in pixels."""
        total = np.zeros((self.h, self.w))
        amplitude, norm = 1.0, 0.0
        for _ in range(octaves):
            gw, gh = max(2, int(WIDTH / cell) + 2), max(2, int(HEIGHT / cell) + 2)
            grid = Image.fromarray(self.rng.uniform(-1, 1, (gh, gw)).astype(np.float32), "F")
            total += amplitude * np.asarray(grid.resize((self.w, self.h), Image.Resampling.BICUBIC))
            norm += amplitude
            amplitude *= 0.5
            cell /= 2
        return total / norm

    def image(self) -> Image.Image:
        big = Image.fromarray(np.clip(np.rint(self.rgb), 0, 255).astype(np.uint8), "RGB")
        return big.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)


def mix(a: Color, b: Color, t: np.ndarray | float) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)[..., None]
    return np.asarray(a) * (1 - t) + np.asarray(b) * t


def sky(c: Canvas) -> None:
    t = np.clip(c.y / HORIZON, 0, 1) ** 1.3
    c.rgb = mix((52, 112, 196), (176, 210, 238), t)
    dist = np.hypot(c.x - SUN[0], c.y - SUN[1])
    glow = np.exp(-dist / 95.0) * 0.55 + np.exp(-dist / 28.0) * 0.4
    c.rgb += glow[..., None] * np.array([255, 236, 190]) * 0.55
    c.paint(np.clip((36 - dist) / 1.5, 0, 1), (255, 249, 226))  # the disc, crisp edged
    # Clouds: soft noise-shaped puffs, white on top with a grey-blue underside.
    for cx, cy, rx, ry in [(120, 70, 95, 26), (215, 52, 60, 18), (390, 120, 110, 24), (600, 175, 70, 14)]:
        shape = 1 - ((c.x - cx) / rx) ** 2 - ((c.y - cy) / ry) ** 2 + 0.55 * c.noise(22, 4)
        density = np.clip(shape * 2.2, 0, 1)
        shade = np.clip((c.y - (cy - ry)) / (2 * ry), 0, 1)
        c.paint(density, mix((255, 255, 255), (196, 208, 226), shade), 0.92)


def hills(c: Canvas) -> None:
    far = HORIZON - 38 + 14 * np.sin(c.x / 70 + 1.0) + 9 * np.sin(c.x / 23 + 2.0) + 4 * c.noise(40, 3)
    c.paint(np.clip(c.y - far, 0, 1), (128, 160, 150))
    near = HORIZON - 14 + 12 * np.sin(c.x / 95 + 4.0) + 5 * np.sin(c.x / 31) + 3 * c.noise(30, 3)
    texture = c.noise(12, 4)
    c.paint(np.clip(c.y - near, 0, 1), mix((92, 140, 88), (120, 160, 100), 0.5 + 0.5 * texture))


def meadow(c: Canvas) -> None:
    ground = np.clip(c.y - HORIZON, 0, 1)
    depth = np.clip((c.y - HORIZON) / (HEIGHT - HORIZON), 0, 1)
    base = mix((128, 176, 82), (62, 128, 44), depth ** 0.8)
    patches = c.noise(60, 5)
    base *= (1 + 0.12 * patches)[..., None]
    c.paint(ground, base)
    # Grass blades: short strokes, longer near the viewer, lighter tips.
    rng = c.rng
    layer = Image.fromarray(np.clip(np.rint(c.rgb), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(layer)
    for _ in range(9000):
        x = rng.uniform(0, WIDTH)
        y = rng.uniform(HORIZON + 2, HEIGHT + 6)
        d = (y - HORIZON) / (HEIGHT - HORIZON)
        length = 2 + 11 * d * rng.uniform(0.5, 1.2)
        lean = rng.normal(0, 0.35) * length
        tone = rng.uniform(-1, 1)
        color = tuple(int(v) for v in np.clip(np.array([80, 140, 50]) + tone * np.array([34, 36, 20]) - d * 18, 0, 255))
        draw.line([(x * SCALE, y * SCALE), ((x + lean) * SCALE, (y - length) * SCALE)], fill=color,
                  width=max(1, int(SCALE * (0.6 + d))))
    # A sprinkle of flowers, mostly in the foreground.
    for _ in range(160):
        x, y = rng.uniform(0, WIDTH), HORIZON + (HEIGHT - HORIZON) * rng.uniform(0.15, 1) ** 0.7
        r = (0.6 + 1.6 * (y - HORIZON) / (HEIGHT - HORIZON)) * SCALE
        color = [(250, 250, 244), (250, 222, 80), (236, 150, 190)][rng.integers(0, 3)]
        draw.ellipse([x * SCALE - r, y * SCALE - r, x * SCALE + r, y * SCALE + r], fill=color)
    c.rgb = np.asarray(layer, dtype=np.float64)


# The house: a front gable wall facing us, a side wall receding to the right, a tiled roof.
FRONT_L, FRONT_R, EAVE, BASE = 176.0, 316.0, 246.0, 372.0
APEX = (246.0, 170.0)
SIDE_R, SIDE_TOP_R, SIDE_BASE_R = 446.0, 252.0, 362.0
RIDGE_BACK = (376.0, 176.0)


def side_y(x: np.ndarray | float, top: float, bottom: float) -> np.ndarray | float:
    """Linear interpolation along the side wall from the front corner (x = FRONT_R) to the back."""
    t = (np.asarray(x) - FRONT_R) / (SIDE_R - FRONT_R)
    return top + (bottom - top) * t


def house(c: Canvas) -> None:
    # Soft ground shadow, cast left and back (the sun is high on the right).
    c.paint(c.polygon([(150, 360), (FRONT_L, BASE), (SIDE_R, SIDE_BASE_R), (452, 350), (160, 346)], blur=6), (30, 60, 20), 0.45)
    c.paint(c.ellipse((120, 352, 330, 392), blur=9), (30, 60, 20), 0.35)

    plank = 0.5 + 0.5 * np.cos(2 * np.pi * c.y / 9.0)  # horizontal siding boards
    grain = c.noise(8, 3)
    wall_front = mix((242, 232, 206), (226, 212, 180), 0.6 * plank ** 8) * (1 + 0.03 * grain)[..., None]
    wall_side = wall_front * 0.78

    front = c.polygon([(FRONT_L, EAVE), APEX, (FRONT_R, EAVE), (FRONT_R, BASE), (FRONT_L, BASE)])
    c.paint(front, wall_front)
    side = c.polygon([(FRONT_R, EAVE), (SIDE_R, SIDE_TOP_R), (SIDE_R, SIDE_BASE_R), (FRONT_R, BASE)])
    c.paint(side, wall_side)
    # Ambient occlusion under the eaves.
    under = np.clip(1 - (c.y - EAVE) / 22, 0, 1) * (c.y > EAVE - 2)
    c.paint(front * under, (120, 100, 80), 0.25)
    c.paint(side * np.clip(1 - (c.y - side_y(c.x, SIDE_TOP_R, SIDE_TOP_R)) / 22, 0, 1), (100, 85, 70), 0.3)
    # Stone foundation.
    c.paint(c.polygon([(FRONT_L, BASE - 10), (FRONT_R, BASE - 10), (FRONT_R, BASE), (FRONT_L, BASE)]),
            mix((150, 146, 140), (120, 116, 110), 0.5 + 0.5 * c.noise(5, 3)))
    c.paint(c.polygon([(FRONT_R, BASE - 10), (SIDE_R, SIDE_BASE_R - 9), (SIDE_R, SIDE_BASE_R), (FRONT_R, BASE)]),
            mix((124, 120, 114), (98, 96, 92), 0.5 + 0.5 * c.noise(5, 3)))

    # Roof plane over the side wall, with tile rows running parallel to the eave.
    roof = c.polygon([APEX, RIDGE_BACK, (SIDE_R + 10, SIDE_TOP_R + 2), (FRONT_R + 12, EAVE + 4)])
    along = (c.y - APEX[1]) - (c.x - APEX[0]) * 0.05
    rows = (along / 9.0) % 1.0
    tiles = mix((184, 78, 52), (150, 58, 40), np.clip(rows * 1.6 - 0.6, 0, 1) ** 2)
    light = np.clip((c.x - APEX[0]) / 260, 0, 1)
    tiles = tiles * (0.9 + 0.18 * light)[..., None] * (1 + 0.05 * c.noise(6, 3))[..., None]
    c.paint(roof, tiles)
    # Chimney on the roof.
    c.paint(c.polygon([(392, 186), (412, 186), (412, 222), (392, 222)]), mix((150, 70, 54), (128, 58, 46), 0.5 + 0.5 * c.noise(4, 2)))
    c.paint(c.polygon([(412, 186), (420, 190), (420, 226), (412, 222)]), (104, 48, 38))
    c.paint(c.polygon([(389, 181), (415, 181), (423, 186), (397, 186)]), (90, 88, 86))
    # Gable trim: the roof's thick front edge.
    trim = c.mask(lambda d, s: d.line([((FRONT_L - 12) * s, (EAVE + 5) * s), (APEX[0] * s, (APEX[1] - 4) * s),
                                       ((FRONT_R + 12) * s, (EAVE + 5) * s)], fill=255, width=int(9 * s), joint="curve"))
    c.paint(trim, (126, 50, 36))
    c.paint(c.mask(lambda d, s: d.line([((FRONT_L - 12) * s, (EAVE + 8) * s), (APEX[0] * s, (APEX[1] - 1) * s),
                                        ((FRONT_R + 12) * s, (EAVE + 8) * s)], fill=255, width=int(2 * s))),
            (92, 36, 26), 0.7)
    # A round attic window in the gable.
    c.paint(c.ellipse((APEX[0] - 13, 196, APEX[0] + 13, 222)), (250, 248, 240))
    glass(c, c.ellipse((APEX[0] - 10, 199, APEX[0] + 10, 219)), 199, 219)

    door(c)
    for x0 in (190.0, 278.0):
        window(c, x0, 270.0, 30.0, 36.0)
    for x0 in (346.0, 398.0):
        side_window(c, x0, 30.0)
    # Path from the door to the viewer.
    path = c.polygon([(230, BASE), (262, BASE), (300, HEIGHT + 2), (186, HEIGHT + 2)])
    stones = 0.5 + 0.5 * c.noise(7, 4)
    c.paint(path, mix((206, 190, 158), (176, 160, 130), stones), 0.95)
    # Bushes at the corners.
    for cx, cy, r in [(172, 366, 20), (196, 372, 15), (300, 370, 14), (458, 358, 22)]:
        bush(c, cx, cy, r)


def glass(c: Canvas, coverage: np.ndarray, top: float, bottom: float) -> None:
    t = np.clip((c.y - top) / max(bottom - top, 1), 0, 1)
    c.paint(coverage, mix((196, 222, 240), (84, 116, 150), t))
    sheen = np.clip(1 - np.abs((c.x - c.y * 0.6) % 26 - 6) / 3, 0, 1)
    c.paint(coverage * sheen, (236, 246, 252), 0.35)


def window(c: Canvas, x0: float, y0: float, w: float, h: float) -> None:
    c.paint(c.polygon([(x0 - 3, y0 - 3), (x0 + w + 3, y0 - 3), (x0 + w + 3, y0 + h + 3), (x0 - 3, y0 + h + 3)]), (250, 248, 240))
    glass(c, c.polygon([(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]), y0, y0 + h)
    cross = c.mask(lambda d, s: (d.line([((x0 + w / 2) * s, y0 * s), ((x0 + w / 2) * s, (y0 + h) * s)], fill=255, width=int(2 * s)),
                                 d.line([(x0 * s, (y0 + h / 2) * s), ((x0 + w) * s, (y0 + h / 2) * s)], fill=255, width=int(2 * s))))
    c.paint(cross, (250, 248, 240))
    c.paint(c.polygon([(x0 - 5, y0 + h + 3), (x0 + w + 5, y0 + h + 3), (x0 + w + 5, y0 + h + 6), (x0 - 5, y0 + h + 6)]), (200, 196, 186))
    # Shutters.
    for sx in (x0 - 13, x0 + w + 4):
        c.paint(c.polygon([(sx, y0 - 3), (sx + 9, y0 - 3), (sx + 9, y0 + h + 3), (sx, y0 + h + 3)]), (58, 98, 84))
        slats = 0.5 + 0.5 * np.cos(2 * np.pi * c.y / 4.0)
        c.paint(c.polygon([(sx + 1, y0), (sx + 8, y0), (sx + 8, y0 + h), (sx + 1, y0 + h)]) * slats, (40, 72, 62), 0.5)


def side_window(c: Canvas, x0: float, w: float) -> None:
    """A window on the receding side wall: a parallelogram following the wall's perspective."""
    top0, top1 = side_y(x0, 270, 264) + 0, side_y(x0 + w, 270, 264)
    h0, h1 = 38 * (1 - 0.08 * (x0 - FRONT_R) / 130), 38 * (1 - 0.08 * (x0 + w - FRONT_R) / 130)
    frame = c.polygon([(x0 - 3, top0 - 3), (x0 + w + 3, top1 - 3), (x0 + w + 3, top1 + h1 + 3), (x0 - 3, top0 + h0 + 3)])
    c.paint(frame, (214, 212, 204))
    pane = c.polygon([(x0, top0), (x0 + w, top1), (x0 + w, top1 + h1), (x0, top0 + h0)])
    glass(c, pane, min(top0, top1), max(top0 + h0, top1 + h1))
    c.paint(pane, (40, 60, 80), 0.15)
    mid_x = x0 + w / 2
    mid_top, mid_h = (top0 + top1) / 2, (h0 + h1) / 2
    cross = c.mask(lambda d, s: (d.line([(mid_x * s, mid_top * s), (mid_x * s, (mid_top + mid_h) * s)], fill=255, width=int(2 * s)),
                                 d.line([(x0 * s, (top0 + h0 / 2) * s), ((x0 + w) * s, (top1 + h1 / 2) * s)], fill=255, width=int(2 * s))))
    c.paint(cross, (214, 212, 204))


def door(c: Canvas) -> None:
    x0, x1, y0 = 228.0, 264.0, 300.0
    c.paint(c.polygon([(x0 - 4, y0 - 4), (x1 + 4, y0 - 4), (x1 + 4, BASE), (x0 - 4, BASE)]), (250, 248, 240))
    wood = mix((128, 74, 42), (98, 56, 32), 0.5 + 0.5 * np.sin(c.x * 1.7 + 3 * c.noise(6, 3)))
    c.paint(c.polygon([(x0, y0), (x1, y0), (x1, BASE), (x0, BASE)]), wood)
    for py0, py1 in ((y0 + 6, y0 + 32), (y0 + 40, BASE - 8)):
        for px0, px1 in ((x0 + 5, x0 + 16), (x1 - 16, x1 - 5)):
            c.paint(c.polygon([(px0, py0), (px1, py0), (px1, py1), (px0, py1)]), (84, 48, 28), 0.35)
    c.paint(c.ellipse((x1 - 9, 334, x1 - 4, 339)), (222, 190, 96))
    c.paint(c.polygon([(x0 - 6, y0 - 8), (x1 + 6, y0 - 8), (x1 + 6, y0 - 4), (x0 - 6, y0 - 4)]), (200, 196, 186))


def bush(c: Canvas, cx: float, cy: float, r: float) -> None:
    rng = c.rng
    for _ in range(14):
        bx, by = cx + rng.normal(0, r * 0.45), cy - abs(rng.normal(0, r * 0.35))
        br = r * rng.uniform(0.35, 0.6)
        blob = c.ellipse((bx - br, by - br, bx + br, by + br))
        lit = np.clip(((c.x - bx) * 0.6 - (c.y - by)) / (2 * br) + 0.5, 0, 1)
        c.paint(blob, mix((38, 88, 40), (104, 156, 66), lit))


def tree(c: Canvas) -> None:
    cx, top, ground = 548.0, 150.0, 392.0
    c.paint(c.ellipse((470, 380, 600, 404), blur=7), (30, 60, 20), 0.45)
    trunk = c.polygon([(540, ground), (556, ground), (553, 250), (562, 232), (552, 228), (548, 244), (540, 226), (533, 232), (543, 252)])
    bark = mix((108, 76, 50), (74, 50, 32), 0.5 + 0.5 * np.sin(c.x * 2.2 + 4 * c.noise(5, 3)))
    bark *= np.clip(0.75 + (c.x - 538) / 30, 0.7, 1.1)[..., None]
    c.paint(trunk, bark)
    rng = c.rng
    leaves = c.noise(3, 2)
    for i in range(70):
        angle = rng.uniform(0, 2 * np.pi)
        radius = rng.uniform(0, 1) ** 0.6
        bx = cx + np.cos(angle) * radius * 72
        by = 222 + np.sin(angle) * radius * 62
        br = rng.uniform(16, 28)
        blob = c.mask(lambda d, s: d.ellipse([(bx - br) * s, (by - br) * s, (bx + br) * s, (by + br) * s], fill=255))
        # Lit from the upper right; blobs further back are darker.
        lit = np.clip(((c.x - bx) * 0.7 - (c.y - by)) / (2.2 * br) + 0.45, 0, 1) * (0.6 + 0.4 * i / 70)
        color = mix((28, 74, 36), (122, 170, 72), lit) * (1 + 0.08 * leaves)[..., None]
        c.paint(blob, color)


def render() -> Image.Image:
    rng = np.random.default_rng(SEED)
    c = Canvas(rng)
    sky(c)
    hills(c)
    meadow(c)
    house(c)
    tree(c)
    # A touch of film grain so the demo reads as a photo-like image, not flat vector art.
    c.rgb += rng.normal(0, 2.0, c.rgb.shape[:2])[..., None]
    return c.image()


def main() -> None:
    out = Path(__file__).resolve().parent / "house.png"
    render().save(out, format="PNG", optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
