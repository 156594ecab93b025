"""Mask painting on 8-bit arrays (0: keep, 255: may change), kept free of Qt so it is easy to test.

A brush dab is a disc whose edge falls off over (1 - hardness) of its radius; painting raises the
mask to the dab, erasing lowers it, so overlapping dabs along a stroke never accumulate into a
harder edge than the brush has.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def empty_mask(width: int, height: int) -> np.ndarray:
    return np.zeros((height, width), np.uint8)


def dab(mask: np.ndarray, x: float, y: float, radius: float, hardness: float, erase: bool = False) -> Box | None:
    """Stamp one brush dab at (x, y) in place; returns the box it touched (None if outside)."""
    height, width = mask.shape
    r = max(radius, 0.5)
    x0, y0 = max(int(np.floor(x - r)), 0), max(int(np.floor(y - r)), 0)
    x1, y1 = min(int(np.ceil(x + r)) + 1, width), min(int(np.ceil(y + r)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    ys, xs = np.mgrid[y0:y1, x0:x1]
    distance = np.hypot(xs + 0.5 - x, ys + 0.5 - y)
    soft = max(r * (1.0 - hardness), 1e-3)
    alpha = np.clip((r - distance) / soft, 0.0, 1.0)
    region = mask[y0:y1, x0:x1]
    if erase:
        np.minimum(region, np.round(255 * (1 - alpha)).astype(np.uint8), out=region)
    else:
        np.maximum(region, np.round(255 * alpha).astype(np.uint8), out=region)
    return x0, y0, x1, y1


def stroke(mask: np.ndarray, start: tuple[float, float], end: tuple[float, float], radius: float, hardness: float,
           erase: bool = False) -> Box | None:
    """Dabs from `start` to `end` a quarter radius apart (the first dab is the caller's)."""
    (ax, ay), (bx, by) = start, end
    count = max(int(np.hypot(bx - ax, by - ay) / max(radius / 4, 0.5)), 1)
    box = None
    for i in range(1, count + 1):
        t = i / count
        box = union(box, dab(mask, ax + (bx - ax) * t, ay + (by - ay) * t, radius, hardness, erase))
    return box


def union(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
