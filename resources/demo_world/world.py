"""A procedurally generated world of captioned 128x128 pictures whose ground truth is known.

Why: the first demo model (resources/demo_model) draws 64x64 blobs, so nobody can see whether an edit
such as "a red house" -> "a blue house", let alone "a cat sitting" -> "a cat jumping", worked. This
world gives every picture a structured description (background, subjects, every attribute) and a
true mask for each subject, and can render a source picture together with its ground-truth edited
target. A model trained on it (train.py) is one on which edits can be seen and measured.

The world:
* backgrounds: a ground (meadow, desert, snow, sea, beach) under a sky (blue, sunset, night, grey),
  with gradients and texture;
* one or two subjects, each with a kind, a colour, a texture (plain, striped, dotted), a size (small,
  medium, big), a position (left, middle, right) and, for the articulated figures (a person, a cat,
  a dog), a pose (standing, sitting, jumping, running, and for the person waving: arms raised);
  rigid objects are a house, a tree, a car, a boat and a sun;
* a caption that names every attribute, e.g. "a red striped cat jumping on the left in a meadow under
  a blue sky". The unmarked values (plain texture, medium size, middle position) are the ones a
  caption leaves unsaid, as English does ("a green tree"); `Subject.words()` lists what is said.

Rendering is a pure function of the `Description` (every random choice, down to colour jitter, is
drawn from seeds stored in it), so an edit changes only what it names. Shapes are analytic signed
distances with a one-pixel soft edge, drawn with resources/demo_model/scenes.py's Canvas; limbs are
capsules (segments with a radius). Numpy only; a scene takes a few milliseconds.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


def _demo_model_scenes():
    """resources/demo_model/scenes.py, loaded by path (not through sys.path, where its folder's
    train.py and check.py would shadow other modules of those names)."""
    name = "retake_demo_model_scenes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "demo_model" / "scenes.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: its dataclass looks its module up
        spec.loader.exec_module(module)
    return sys.modules[name]


COLORS, Canvas = _demo_model_scenes().COLORS, _demo_model_scenes().Canvas  # the first demo model's colours and soft-edged canvas

SIZE = 128

FIGURES = ("person", "cat", "dog")
LAND_KINDS = ("person", "cat", "dog", "house", "tree", "car")
KINDS = (*LAND_KINDS, "boat", "sun")
POSES: dict[str, tuple[str, ...]] = {
    "person": ("standing", "sitting", "jumping", "running", "waving"),
    "cat": ("standing", "sitting", "jumping", "running"),
    "dog": ("standing", "sitting", "jumping", "running"),
}
ALL_COLORS = tuple(COLORS)  # red blue green yellow white black orange purple pink brown
KIND_COLORS: dict[str, tuple[str, ...]] = {
    **{kind: ALL_COLORS for kind in ("person", "cat", "dog", "house", "car", "boat")},
    "tree": ("green", "yellow", "orange", "red", "pink", "purple", "brown"),
    "sun": ("yellow", "orange", "red", "white"),
}
TEXTURES = ("plain", "striped", "dotted")
SIZES = {"small": 0.72, "medium": 1.0, "big": 1.25}
POSITIONS = {"left": 0.26, "middle": 0.5, "right": 0.74}
UNSAID = {"plain", "medium", "middle"}  # the unmarked values a caption leaves out

# ground -> (caption phrase, far colour, near colour)
GROUNDS: dict[str, tuple[str, tuple, tuple]] = {
    "meadow": ("in a meadow", (0.50, 0.70, 0.30), (0.22, 0.50, 0.15)),
    "desert": ("in the desert", (0.93, 0.78, 0.52), (0.80, 0.56, 0.30)),
    "snow": ("in the snow", (0.97, 0.97, 1.00), (0.84, 0.87, 0.94)),
    "sea": ("on the sea", (0.20, 0.45, 0.70), (0.05, 0.20, 0.45)),
    "beach": ("on the beach", (0.95, 0.86, 0.62), (0.86, 0.72, 0.46)),
}
# sky -> (caption phrase, colour at the top, colour at the horizon, light on the ground)
SKIES: dict[str, tuple[str, tuple, tuple, tuple]] = {
    "blue": ("under a blue sky", (0.16, 0.40, 0.80), (0.66, 0.82, 0.95), (1.0, 1.0, 1.0)),
    "sunset": ("at sunset", (0.40, 0.22, 0.50), (0.98, 0.58, 0.26), (0.95, 0.78, 0.62)),
    "night": ("at night", (0.02, 0.03, 0.12), (0.10, 0.14, 0.30), (0.35, 0.40, 0.55)),
    "grey": ("under a grey sky", (0.45, 0.47, 0.52), (0.74, 0.75, 0.77), (0.82, 0.82, 0.82)),
}
EDIT_KINDS = ("pose", "color", "replace", "add", "texture")
REFERENCE = "reference"  # the edit of reference_pair: a subject replaced by one shown in a second picture


# --------------------------------------------------------------------------------------------------
# Descriptions


@dataclass(frozen=True)
class Subject:
    """One thing in the picture. `facing` (+1 right, -1 left) and `seed` (placement and colour
    jitter) are rendering details the caption does not name; an edit keeps them."""

    kind: str
    color: str
    texture: str = "plain"
    size: str = "medium"
    position: str = "middle"
    pose: str | None = None
    facing: int = 1
    seed: int = 0

    def words(self) -> list[str]:
        """The attribute words the caption says for this subject (unmarked values are unsaid)."""
        values = [self.size, self.color, self.texture, self.kind, self.pose, self.position]
        return [v for v in values if v is not None and v not in UNSAID]

    def phrase(self) -> str:
        head = [w for w in (self.size, self.color, self.texture, self.kind, self.pose) if w and w not in UNSAID]
        text = ("an " if head[0][0] in "aeiou" else "a ") + " ".join(head)
        return text if self.position == "middle" else f"{text} on the {self.position}"


@dataclass(frozen=True)
class Background:
    ground: str
    sky: str
    horizon: float  # fraction of the height
    seed: int = 0

    def phrase(self) -> str:
        return f"{GROUNDS[self.ground][0]} {SKIES[self.sky][0]}"


@dataclass(frozen=True)
class Description:
    background: Background
    subjects: tuple[Subject, ...]

    @property
    def caption(self) -> str:
        return " and ".join(s.phrase() for s in self.subjects) + " " + self.background.phrase()


@dataclass(frozen=True)
class Scene:
    """A rendered picture, its caption and description, and each subject's visible pixels."""

    image: np.ndarray  # uint8 [H, W, 3]
    caption: str
    description: Description
    masks: tuple[np.ndarray, ...]  # bool [H, W], one per description.subjects, in that order
    coverage: tuple[np.ndarray, ...]  # float32 [H, W] in [0, 1]: how much of each pixel the subject
    #                                   covers and nothing drawn later hides; masks = coverage > 0.5


def _subject(rng: np.random.Generator, kind: str, position: str) -> Subject:
    return Subject(
        kind=kind,
        color=str(rng.choice(KIND_COLORS[kind])),
        texture="plain" if kind == "sun" else str(rng.choice(TEXTURES, p=[0.5, 0.25, 0.25])),
        size=str(rng.choice(list(SIZES), p=[0.3, 0.4, 0.3])),
        position=position,
        pose=str(rng.choice(POSES[kind])) if kind in POSES else None,
        facing=int(rng.choice([-1, 1])),
        seed=int(rng.integers(2**31)),
    )


def sample_description(rng: np.random.Generator) -> Description:
    """A random scene: a background and one or two subjects (about half of them articulated figures)."""
    sky = str(rng.choice(list(SKIES), p=[0.4, 0.2, 0.2, 0.2]))
    ground = str(rng.choice(list(GROUNDS), p=[0.28, 0.2, 0.2, 0.14, 0.18]))
    background = Background(ground, sky, float(rng.uniform(0.40, 0.56)), int(rng.integers(2**31)))
    weights = np.array([0.26, 0.17, 0.17, 0.14, 0.13, 0.13])
    first = "boat" if ground == "sea" else str(rng.choice(LAND_KINDS, p=weights))
    second = None
    if rng.random() < 0.35:
        if sky != "night" and rng.random() < 0.3:
            second = "sun"
        elif ground != "sea":
            rest = [k for k in LAND_KINDS if k != first]
            second = str(rng.choice(rest, p=weights[[LAND_KINDS.index(k) for k in rest]] / weights[[LAND_KINDS.index(k) for k in rest]].sum()))
    if second is None or second == "sun":
        positions = [str(rng.choice(list(POSITIONS)))]
    else:
        positions = ["left", "right"] if rng.random() < 0.5 else ["right", "left"]
    subjects = [_subject(rng, first, positions[0])]
    if second == "sun":
        subjects.append(_subject(rng, "sun", str(rng.choice(list(POSITIONS)))))
    elif second is not None:
        subjects.append(_subject(rng, second, positions[1]))
    return Description(background, tuple(subjects))


# --------------------------------------------------------------------------------------------------
# Drawing


def _capsule(c: Canvas, a: tuple[float, float], b: tuple[float, float], r: float) -> np.ndarray:
    """Signed distance to the segment a-b thickened by r (a limb)."""
    px, py = c.x - a[0], c.y - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    h = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(px - h * dx, py - h * dy) - r


def _union(*fields: np.ndarray) -> np.ndarray:
    out = fields[0]
    for f in fields[1:]:
        out = np.minimum(out, f)
    return out


class _Frame:
    """Maps a figure's local coordinates (u forward along `facing`, v up, in units of `scale` pixels,
    origin on the ground under its centre) to pixels."""

    def __init__(self, cx: float, base: float, scale: float, facing: int) -> None:
        self.cx, self.base, self.scale, self.facing = cx, base, scale, facing

    def __call__(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + self.facing * u * self.scale, self.base - v * self.scale


# Person joints (u, v) in units of its height: head, neck, hip, then (elbow, hand) x 2, (knee, foot) x 2.
_PERSON: dict[str, dict[str, tuple[float, float]]] = {
    "standing": dict(head=(0, .88), neck=(0, .76), hip=(0, .45), e1=(-.11, .6), h1=(-.16, .45), e2=(.11, .6),
                     h2=(.16, .45), k1=(-.05, .23), f1=(-.08, .03), k2=(.05, .23), f2=(.08, .03)),
    "waving": dict(head=(0, .88), neck=(0, .76), hip=(0, .45), e1=(-.13, .9), h1=(-.17, 1.05), e2=(.13, .9),
                   h2=(.17, 1.05), k1=(-.05, .23), f1=(-.08, .03), k2=(.05, .23), f2=(.08, .03)),
    "jumping": dict(head=(0, 1.08), neck=(0, .96), hip=(0, .65), e1=(-.17, 1.02), h1=(-.3, 1.12), e2=(.17, 1.02),
                    h2=(.3, 1.12), k1=(-.13, .5), f1=(-.08, .3), k2=(.13, .5), f2=(.08, .3)),
    "running": dict(head=(.09, .86), neck=(.06, .75), hip=(0, .45), e1=(-.07, .6), h1=(-.16, .5), e2=(.15, .62),
                    h2=(.22, .74), k1=(.17, .29), f1=(.15, .04), k2=(-.06, .23), f2=(-.24, .15)),
    "sitting": dict(head=(-.14, .52), neck=(-.13, .40), hip=(-.12, .08), e1=(-.22, .24), h1=(-.28, .06),
                    e2=(-.02, .28), h2=(.07, .2), k1=(.08, .11), f1=(.28, .05), k2=(.06, .2), f2=(.25, .06)),
}

# Cat/dog parts (u, v) in units of its length: body (rear, front), head, legs (hip/shoulder, paw) x 4, tail points.
_ANIMAL: dict[str, dict[str, tuple]] = {
    "standing": dict(body=((-.28, .42), (.26, .42)), head=(.44, .6), legs=(((.22, .4), (.24, .04)), ((.15, .4), (.15, .04)),
                     ((-.22, .4), (-.22, .04)), ((-.29, .4), (-.31, .04))), tail=((-.36, .46), (-.48, .58), (-.47, .74))),
    "sitting": dict(body=((-.16, .2), (.08, .5)), head=(.18, .76), legs=(((.08, .44), (.1, .04)), ((.02, .44), (.03, .04)),
                    ((-.14, .14), (.02, .04)), ((-.2, .14), (-.06, .04))), tail=((-.28, .08), (-.42, .05), (-.52, .08))),
    "jumping": dict(body=((-.26, .56), (.2, .74)), head=(.38, .92), legs=(((.2, .7), (.42, .66)), ((.13, .67), (.36, .58)),
                    ((-.22, .5), (-.4, .3)), ((-.28, .52), (-.48, .34))), tail=((-.34, .58), (-.48, .66), (-.58, .78))),
    "running": dict(body=((-.28, .46), (.26, .46)), head=(.45, .62), legs=(((.22, .44), (.42, .18)), ((.15, .44), (.31, .1)),
                    ((-.22, .44), (-.42, .2)), ((-.29, .44), (-.5, .26))), tail=((-.36, .5), (-.5, .54), (-.62, .6))),
}

Part = tuple[np.ndarray, object]  # (signed distance, "body" for the subject's textured colour, or an RGB)


def _person(c: Canvas, f: _Frame, pose: str, rng: np.random.Generator) -> list[Part]:
    j = {k: f(*v) for k, v in _PERSON[pose].items()}
    h = f.scale
    limb = 0.05 * h
    body = _union(
        c.circle(*j["head"], 0.1 * h),
        _capsule(c, j["neck"], j["hip"], 0.08 * h),
        _capsule(c, j["neck"], j["e1"], limb), _capsule(c, j["e1"], j["h1"], limb),
        _capsule(c, j["neck"], j["e2"], limb), _capsule(c, j["e2"], j["h2"], limb),
        _capsule(c, j["hip"], j["k1"], limb * 1.15), _capsule(c, j["k1"], j["f1"], limb * 1.15),
        _capsule(c, j["hip"], j["k2"], limb * 1.15), _capsule(c, j["k2"], j["f2"], limb * 1.15),
    )
    hx, hy = j["head"]
    eye = c.circle(hx + f.facing * 0.045 * h, hy - 0.015 * h, max(0.7, 0.018 * h))
    return [(body, "body"), (eye, (0.05, 0.05, 0.05))]


def _animal(c: Canvas, f: _Frame, pose: str, rng: np.random.Generator, dog: bool) -> list[Part]:
    p = _ANIMAL[pose]
    L = f.scale
    rear, front = f(*p["body"][0]), f(*p["body"][1])
    hx, hy = f(*p["head"])
    hr = 0.13 * L
    parts = [_capsule(c, rear, front, 0.13 * L), _capsule(c, front, (hx, hy), 0.08 * L), c.circle(hx, hy, hr)]
    parts += [_capsule(c, f(*a), f(*b), 0.05 * L) for a, b in p["legs"]]
    tail = [f(*t) for t in p["tail"]]
    hu, hv = p["head"]
    if dog:
        parts.append(_capsule(c, f(hu + .08, hv - .02), f(hu + .2, hv - .05), 0.065 * L))  # snout
        parts += [_capsule(c, tail[0], tail[1], 0.045 * L)]
        ears = [_capsule(c, f(hu - .04, hv + .1), f(hu - .1, hv - .06), 0.05 * L)]
    else:
        parts += [_capsule(c, tail[0], tail[1], 0.035 * L), _capsule(c, tail[1], tail[2], 0.035 * L)]
        ears = [c.polygon([f(hu + a, hv + .06), f(hu + a + .1, hv + .08), f(hu + a + .03, hv + .22)]) for a in (-.11, .02)]
    body = _union(*parts, *ears)
    eye = c.circle(*f(hu + .06, hv + .03), max(0.7, 0.025 * L))
    return [(body, "body"), (eye, (0.05, 0.05, 0.05))]


def _house(c: Canvas, f: _Frame, rng: np.random.Generator, color: str) -> list[Part]:
    w = f.scale
    h = w * 0.72
    x0, x1, top, base = f.cx - w / 2, f.cx + w / 2, f.base - h, f.base
    roof_names = ["brown", "black"] if color in ("red", "brown") else ["red", "brown", "black"]
    roof = np.asarray(COLORS[str(rng.choice(roof_names))], np.float32) * 0.85
    dx = f.cx + f.facing * 0.2 * w
    wx = f.cx - f.facing * 0.22 * w
    return [
        (c.box(x0, top, x1, base), "body"),
        (c.polygon([(x0 - w * 0.1, top + 0.5), (x1 + w * 0.1, top + 0.5), (f.cx, top - w * 0.45)]), roof),
        (c.box(dx - w * 0.1, base - h * 0.55, dx + w * 0.1, base), (0.30, 0.18, 0.10)),
        (c.box(wx - w * 0.11, top + h * 0.22, wx + w * 0.11, top + h * 0.5), (0.75, 0.86, 0.95)),
    ]


def _tree(c: Canvas, f: _Frame, rng: np.random.Generator) -> list[Part]:
    h = f.scale
    trunk = c.box(f.cx - 0.07 * h, f.base - 0.5 * h, f.cx + 0.07 * h, f.base)
    cy = f.base - 0.68 * h
    crown = _union(c.circle(f.cx, cy, 0.28 * h), c.circle(f.cx - 0.16 * h, cy + 0.1 * h, 0.18 * h),
                   c.circle(f.cx + 0.16 * h, cy + 0.1 * h, 0.18 * h))
    return [(trunk, (0.36, 0.22, 0.10)), (crown, "body")]


def _car(c: Canvas, f: _Frame, rng: np.random.Generator) -> list[Part]:
    w = f.scale
    wheel = 0.13 * w
    y1 = f.base - wheel
    hb = 0.28 * w
    u = f.facing
    cabin = [(f.cx - u * w * 0.3, y1 - hb + 0.5), (f.cx + u * w * 0.22, y1 - hb + 0.5), (f.cx + u * w * 0.1, y1 - hb * 1.9),
             (f.cx - u * w * 0.22, y1 - hb * 1.9)]
    glass = [(f.cx - u * w * 0.23, y1 - hb * 1.05), (f.cx + u * w * 0.15, y1 - hb * 1.05),
             (f.cx + u * w * 0.06, y1 - hb * 1.75), (f.cx - u * w * 0.17, y1 - hb * 1.75)]
    parts: list[Part] = [(_union(c.box(f.cx - w / 2, y1 - hb, f.cx + w / 2, y1) - 0.04 * w, c.polygon(cabin)), "body"),
                         (c.polygon(glass), (0.70, 0.82, 0.92))]
    for wx in (f.cx - w * 0.3, f.cx + w * 0.3):
        parts += [(c.circle(wx, y1, wheel), (0.06, 0.06, 0.06)), (c.circle(wx, y1, wheel * 0.45), (0.6, 0.6, 0.6))]
    return parts


def _boat(c: Canvas, f: _Frame, rng: np.random.Generator, color: str) -> list[Part]:
    w, cx, base = f.scale, f.cx, f.base
    h = 0.22 * w
    sail = (0.96, 0.96, 0.92) if color != "white" else (0.85, 0.25, 0.2)
    return [
        (c.box(cx - 0.7, base - h - 0.8 * w, cx + 0.7, base - h), (0.3, 0.2, 0.1)),
        (c.polygon([(cx + 1.5, base - h - 0.75 * w), (cx + 1.5, base - h - 1), (cx + f.facing * 0.4 * w, base - h - 1)]
                   if f.facing > 0 else
                   [(cx - 1.5, base - h - 0.75 * w), (cx - 0.4 * w, base - h - 1), (cx - 1.5, base - h - 1)]), sail),
        (c.polygon([(cx - w / 2, base - h), (cx + w / 2, base - h), (cx + w * 0.35, base), (cx - w * 0.35, base)]), "body"),
    ]


def _texture(c: Canvas, base: np.ndarray, texture: str, period: float, ox: float, oy: float) -> np.ndarray | np.ndarray:
    """The subject's colour field: plain, or with soft stripes / dots of a darker (or lighter) shade."""
    if texture == "plain":
        return base
    lum = float(base @ np.array([0.3, 0.59, 0.11], np.float32))
    shade = base * 0.4 if lum > 0.3 else base * 0.35 + 0.45
    if texture == "striped":
        s = np.sin(2 * np.pi * (c.y - oy) / period)
        a = np.clip(0.5 + s * period / (2 * np.pi), 0, 1)
    else:
        fx = np.mod(c.x - ox, period) - period / 2
        fy = np.mod(c.y - oy, period) - period / 2
        a = np.clip(0.5 - (np.hypot(fx, fy) - 0.27 * period), 0, 1)
    return base * (1 - a[..., None]) + shade * a[..., None]


def _draw_background(c: Canvas, bg: Background) -> float:
    """Paint sky and ground; returns the horizon in pixels."""
    rng = np.random.default_rng(bg.seed)
    H, W = c.h, c.w
    horizon = bg.horizon * H
    _, top, low, light = SKIES[bg.sky]
    jit = lambda col, a=0.04: np.clip(np.asarray(col, np.float32) + rng.uniform(-a, a, 3), 0, 1).astype(np.float32)  # noqa: E731
    t = np.clip(c.y / horizon, 0, 1) ** rng.uniform(0.8, 1.5)
    c.rgb = jit(top) * (1 - t[..., None]) + jit(low) * t[..., None]
    if bg.sky == "night":
        for _ in range(int(rng.integers(6, 14))):
            c.paint(c.circle(rng.uniform(0, W), rng.uniform(0, horizon * 0.85), rng.uniform(0.5, 1.0)), (0.95, 0.95, 0.85), 0.8)
    elif bg.sky in ("blue", "grey"):
        for _ in range(int(rng.integers(0, 3))):
            cx, cy = rng.uniform(0, W), rng.uniform(0.15, 0.6) * horizon
            cloud = (0.88, 0.88, 0.9) if bg.sky == "grey" else (0.97, 0.97, 0.99)
            c.paint(c.ellipse(cx, cy, rng.uniform(0.1, 0.2) * W, rng.uniform(0.03, 0.06) * H) * 0.4, cloud, 0.8)
    _, far, near = GROUNDS[bg.ground]
    flat = bg.ground in ("sea", "beach")
    edge = horizon if flat else horizon + rng.uniform(0.01, 0.035) * H * np.sin(c.x / W * rng.uniform(2, 6) + rng.uniform(0, 6))
    depth = np.clip((c.y - horizon) / max(H - horizon, 1.0), 0, 1)
    ground = jit(far) * (1 - depth[..., None] ** 0.8) + jit(near) * depth[..., None] ** 0.8
    if bg.ground == "sea":
        waves = np.sin(c.y * rng.uniform(0.9, 1.3) * (1 + depth) + 0.7 * np.sin(c.x * 0.2 + rng.uniform(0, 6)))
        ground = ground * (1 + 0.07 * waves)[..., None]
    else:
        coarse, fine = c.noise(rng, W / rng.uniform(3, 6)), c.noise(rng, rng.uniform(2.5, 4))
        grain = {"meadow": 0.12, "desert": 0.06, "snow": 0.025, "beach": 0.06}[bg.ground]
        ground = ground * (1 + 0.07 * coarse + grain * fine)[..., None]
    if bg.ground == "beach":  # a band of sea between the sand and the sky
        shore = horizon + rng.uniform(0.15, 0.25) * (H - horizon)
        sea = _mix_rows(jit(GROUNDS["sea"][1]), jit(GROUNDS["sea"][2]), depth * 2)
        ground = np.where((c.y < shore)[..., None], sea * (1 + 0.05 * np.sin(c.y * 1.1))[..., None], ground)
    c.paint(edge - c.y, np.clip(ground * np.asarray(light, np.float32), 0, 1))
    return horizon


def _mix_rows(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)[..., None]
    return a * (1 - t) + b * t


_BASE_SCALE = {"person": 0.42, "cat": 0.32, "dog": 0.33, "house": 0.34, "tree": 0.46, "car": 0.38, "boat": 0.36, "sun": 0.09}


def _window(c: Canvas, x0: float, y0: float, x1: float, y1: float) -> tuple[Canvas, tuple[slice, slice]]:
    """A Canvas over the pixels [x0, x1) x [y0, y1) of `c` (same pixel coordinates), and its slices:
    a subject's shapes are evaluated only around it, which makes drawing several times faster."""
    xa, ya = max(0, int(x0)), max(0, int(y0))
    xb, yb = min(c.w, max(xa + 1, int(np.ceil(x1)))), min(c.h, max(ya + 1, int(np.ceil(y1))))
    win = Canvas.__new__(Canvas)
    win.w, win.h = xb - xa, yb - ya
    win.x, win.y = c.x[ya:yb, xa:xb], c.y[ya:yb, xa:xb]
    sl = (slice(ya, yb), slice(xa, xb))
    win.rgb = c.rgb[sl]
    return win, sl


def _draw_subject(full: Canvas, s: Subject, horizon: float, ground: str) -> np.ndarray:
    """Paint one subject; returns its coverage (alpha in [0, 1])."""
    rng = np.random.default_rng(s.seed)
    W, H = full.w, full.h
    dx, depth = rng.uniform(-0.035, 0.035) * W, rng.uniform(0.45, 0.75)  # drawn first for every kind alike
    color = np.clip(np.asarray(COLORS[s.color], np.float32) + rng.uniform(-0.04, 0.04, 3), 0, 1).astype(np.float32)
    cx = POSITIONS[s.position] * W + dx
    scale = _BASE_SCALE[s.kind] * SIZES[s.size] * H
    if s.kind == "sun":
        cy = horizon * (0.25 + 0.3 * depth)
        c, sl = full, (slice(None), slice(None))
        glow = np.exp(-np.maximum(c.circle(cx, cy, scale), 0) / (scale * 0.8))  # warm, whatever the colour:
        c.rgb = c.rgb + (glow * 0.25)[..., None] * (np.float32([1.0, 0.93, 0.75]) - c.rgb)  # a colour edit stays on the disc
        parts: list[Part] = [(c.circle(cx, cy, scale), "body")]
        oy = cy
    else:
        land = horizon + (0.2 if ground == "beach" else 0.0) * (H - horizon)
        base = land + depth * (H - land) * (0.8 if s.kind == "boat" else 0.9)
        f = _Frame(cx, base, scale, s.facing)
        c, sl = _window(full, cx - 0.85 * scale, base - 1.35 * scale, cx + 0.85 * scale, base + 0.1 * scale)
        if s.kind == "person":
            parts = _person(c, f, s.pose or "standing", rng)
        elif s.kind in ("cat", "dog"):
            parts = _animal(c, f, s.pose or "standing", rng, dog=s.kind == "dog")
        elif s.kind == "house":
            parts = _house(c, f, rng, s.color)
        elif s.kind == "tree":
            parts = _tree(c, f, rng)
        elif s.kind == "car":
            parts = _car(c, f, rng)
        else:
            parts = _boat(c, f, rng, s.color)
        oy = base
    body = _texture(c, color, s.texture, max(3.0, 0.13 * scale if s.kind in FIGURES else 0.11 * scale), cx, oy)
    alpha = np.zeros((c.h, c.w), np.float32)
    for distance, paint in parts:
        a = np.clip(0.5 - distance, 0.0, 1.0)
        col = body if isinstance(paint, str) else np.asarray(paint, np.float32)
        c.rgb = c.rgb * (1 - a[..., None]) + col * a[..., None]
        alpha = np.maximum(alpha, a)
    full.rgb[sl] = c.rgb
    out = np.zeros((H, W), np.float32)
    out[sl] = alpha
    return out


def render(description: Description, size: int = SIZE) -> Scene:
    """Draw a description: a pure function of it (and of `size`)."""
    c = Canvas(size, size)
    horizon = _draw_background(c, description.background)
    order = sorted(range(len(description.subjects)), key=lambda i: description.subjects[i].kind != "sun")
    coverage: list[np.ndarray] = [np.zeros((size, size), np.float32)] * len(description.subjects)
    for i in order:
        alpha = _draw_subject(c, description.subjects[i], horizon, description.background.ground)
        coverage = [cov * (1 - alpha) for cov in coverage]  # what this subject hides of the earlier ones
        coverage[i] = alpha
    image = (np.clip(c.rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    masks = tuple(cov > 0.5 for cov in coverage)
    return Scene(image, description.caption, description, masks, tuple(coverage))


def render_scene(rng: np.random.Generator, size: int = SIZE) -> Scene:
    """A random scene of the world."""
    return render(sample_description(rng), size)


# --------------------------------------------------------------------------------------------------
# Edits with a ground truth


@dataclass(frozen=True)
class EditPair:
    """A source picture, its ground-truth edited target (same background and identities), and the
    pixels the edit may change: wherever the edited subject covers any of a pixel in either picture
    (outside it the two pictures are identical)."""

    kind: str  # one of EDIT_KINDS, or REFERENCE
    source: Scene
    target: Scene
    subject: int  # index of the edited (or, for "add", the added) subject in target.description
    mask: np.ndarray  # bool [H, W]
    reference: Scene | None = None  # REFERENCE only: the picture of the subject to put in
    reference_subject: int | None = None  # ... and its index in reference.description


def _pick(rng: np.random.Generator, options: list) -> object:
    return options[int(rng.integers(len(options)))]


def edit_pair(rng: np.random.Generator, kind_of_edit: str, size: int = SIZE) -> EditPair:
    """Render a random source scene and its target for one edit:

    pose    a person, cat or dog changes pose ("a cat sitting" -> "a cat jumping");
    color   a subject changes colour ("a red house" -> "a blue house");
    replace a land subject becomes another kind, keeping colour, texture, size, position and, where
            the new kind has it, the pose ("a red cat sitting" -> "a red dog sitting");
    add     a second land subject appears on the other side ("a tree on the left" ->
            "a tree on the left and a car on the right");
    texture a subject's texture changes (plain, striped, dotted).
    """
    if kind_of_edit not in EDIT_KINDS:
        raise ValueError(f"unknown edit {kind_of_edit!r}; one of {EDIT_KINDS}")
    while True:
        desc = sample_description(rng)
        subs = list(desc.subjects)
        if kind_of_edit == "add":
            if len(subs) != 1 or subs[0].kind not in LAND_KINDS or subs[0].position == "middle":
                continue
            other = "right" if subs[0].position == "left" else "left"
            new = _subject(rng, str(_pick(rng, [k for k in LAND_KINDS if k != subs[0].kind])), other)
            target = Description(desc.background, (subs[0], new))
            src, tgt = render(desc, size), render(target, size)
            return EditPair(kind_of_edit, src, tgt, 1, tgt.coverage[1] > 0)
        if kind_of_edit == "pose":
            candidates = [i for i, s in enumerate(subs) if s.kind in FIGURES]
        elif kind_of_edit == "replace":
            candidates = [i for i, s in enumerate(subs) if s.kind in LAND_KINDS]
        elif kind_of_edit == "texture":
            candidates = [i for i, s in enumerate(subs) if s.kind != "sun"]
        else:
            candidates = list(range(len(subs)))
        if not candidates:
            continue
        i = int(_pick(rng, candidates))
        s = subs[i]
        if kind_of_edit == "pose":
            new = replace(s, pose=str(_pick(rng, [p for p in POSES[s.kind] if p != s.pose])))
        elif kind_of_edit == "color":
            new = replace(s, color=str(_pick(rng, [c for c in KIND_COLORS[s.kind] if c != s.color])))
        elif kind_of_edit == "texture":
            new = replace(s, texture=str(_pick(rng, [t for t in TEXTURES if t != s.texture])))
        else:
            taken = {o.kind for o in subs}
            kind = str(_pick(rng, [k for k in LAND_KINDS if k not in taken]))
            pose = (s.pose if s.pose in POSES.get(kind, ()) else "standing") if kind in FIGURES else None
            color = s.color if s.color in KIND_COLORS[kind] else str(_pick(rng, list(KIND_COLORS[kind])))
            new = replace(s, kind=kind, pose=pose, color=color)
        subs[i] = new
        target = Description(desc.background, tuple(subs))
        src, tgt = render(desc, size), render(target, size)
        return EditPair(kind_of_edit, src, tgt, i, (src.coverage[i] > 0) | (tgt.coverage[i] > 0))


def reference_pair(rng: np.random.Generator, size: int = SIZE) -> EditPair:
    """A source scene, a reference picture of one specific subject, and the target: the source with a
    land subject replaced by the reference's subject.

    The reference subject is of another kind than any in the source, of another colour, striped or
    dotted, drawn alone in the middle of another (land) scene in a pose of its own. The target takes
    its kind, colour and texture, and keeps the replaced subject's size, position, facing and
    placement seed, and its pose where the new kind has that pose (else the reference's pose).
    In this world the reference subject can be named in words, so the target caption names it too.
    """
    while True:
        desc = sample_description(rng)
        subs = list(desc.subjects)
        candidates = [i for i, s in enumerate(subs) if s.kind in LAND_KINDS]
        if not candidates:
            continue
        i = int(_pick(rng, candidates))
        s = subs[i]
        kind = str(_pick(rng, [k for k in LAND_KINDS if k not in {o.kind for o in subs}]))
        color = str(_pick(rng, [c for c in KIND_COLORS[kind] if c != s.color]))
        texture = str(_pick(rng, ["striped", "dotted"]))
        shown = replace(_subject(rng, kind, "middle"), color=color, texture=texture,
                        size=str(_pick(rng, ["medium", "big"])))
        ground = sample_description(rng).background
        while ground.ground == "sea":
            ground = sample_description(rng).background
        pose = (s.pose if s.pose in POSES.get(kind, ()) else shown.pose) if kind in FIGURES else None
        subs[i] = replace(s, kind=kind, color=color, texture=texture, pose=pose)
        src, tgt = render(desc, size), render(Description(desc.background, tuple(subs)), size)
        reference = render(Description(ground, (shown,)), size)
        return EditPair(REFERENCE, src, tgt, i, (src.coverage[i] > 0) | (tgt.coverage[i] > 0), reference, 0)


def contact_sheet(scenes: list[Scene], columns: int = 8) -> np.ndarray:
    """Scenes side by side (uint8), for looking at the world."""
    rows = [np.concatenate([s.image for s in scenes[k : k + columns]] + [np.zeros_like(scenes[0].image)] * max(0, k + columns - len(scenes)), axis=1)
            for k in range(0, len(scenes), columns)]
    return np.concatenate(rows, axis=0)


if __name__ == "__main__":  # python resources/demo_world/world.py out.png: a contact sheet and its captions
    from PIL import Image

    rng = np.random.default_rng(0)
    scenes = [render_scene(rng) for _ in range(24)]
    scenes += [p for k in EDIT_KINDS for p in (lambda e: (e.source, e.target))(edit_pair(rng, k))]
    Image.fromarray(contact_sheet(scenes)).save(sys.argv[1] if len(sys.argv) > 1 else "/tmp/demo_world.png")
    for i, s in enumerate(scenes):
        print(i, s.caption)
