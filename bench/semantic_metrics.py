"""The semantic benchmark's measures of one edit: what the judge sees, and what the pixels kept.

Why apart from the runner: these functions decide what "the edit worked" means, so they are small,
pure (numpy and torch on the CPU) and tested on pictures whose answer is known (the ground-truth
target scores as an edit, the unchanged source does not; identical pixels have unbounded PSNR).

* Judge-based, against the case's ground truth (judge.facts of the target description):
  `changed` keys are those whose value differs between source and target ("left.pose", or for an
  added subject its slot and every attribute). Edit success: the judge reads every changed key as
  the target has it. Preservation: the judge reads every other key of the target as it is (the
  background, the edited subject's other attributes, every other subject, and no subject where
  there is none).
* Pixels, against the source, outside the edit region dilated by `DILATE` pixels: PSNR (capped at
  PSNR_CAP dB, where the pixels are identical) and SSIM (Wang et al. 2004: an 11x11 Gaussian window
  of sigma 1.5, K1 0.01, K2 0.03, L 255, each colour channel, over the window centres that lie at
  least 5 pixels inside the picture, then averaged over channels and the pixels outside the region).
  With a dilation of 5 pixels or more no window of a kept pixel reaches the region itself, so what
  an edit does inside the region cannot lower these scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DILATE = 8  # one latent cell: edits work on 8x8-pixel latent cells
PSNR_CAP = 100.0
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

Facts = dict[str, str]


@dataclass(frozen=True)
class Verdict:
    """The judge's view of one result against the case's ground truth."""

    success: bool  # every changed key read as the target has it
    success_share: float  # the share of changed keys read right
    kept: bool  # every other key read as it is
    kept_share: float
    misses: tuple[str, ...]  # "key: read (wanted)" for each key read wrong, changed ones first


def changed_keys(source: Facts, target: Facts) -> tuple[str, ...]:
    """The keys an edit changes: those of the target whose value the source lacks or has otherwise."""
    return tuple(k for k in target if source.get(k) != target[k])


def verdict(read: Facts, source: Facts, target: Facts) -> Verdict:
    changed = changed_keys(source, target)
    others = [k for k in target if k not in changed]
    right = {k: read.get(k) == target[k] for k in target}
    misses = tuple(f"{k}: {read.get(k, '-')} ({target[k]})" for k in (*changed, *others) if not right[k])
    return Verdict(all(right[k] for k in changed), float(np.mean([right[k] for k in changed])) if changed else 1.0,
                   all(right[k] for k in others), float(np.mean([right[k] for k in others])) if others else 1.0,
                   misses)


def dilate(mask: np.ndarray, radius: int = DILATE) -> np.ndarray:
    """A bool mask grown by `radius` pixels (a square neighbourhood)."""
    if radius <= 0:
        return mask.copy()
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy() > 0.5


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB of two uint8 pictures [H, W, 3] over the pixels `where` (all if None), at most PSNR_CAP."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if where is not None:
        diff = diff[where]
    if diff.size == 0:
        return float("nan")
    mse = float(np.mean(diff**2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def _gaussian_window() -> torch.Tensor:
    r = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM per window centre of two uint8 pictures [H, W, 3], averaged over channels: [H-10, W-10]."""
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[:, None]
    w = _gaussian_window()
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + _C1) * (2 * sxy + _C2)) / ((mx**2 + my**2 + _C1) * (sxx + syy + _C2))
    return s.mean(0)[0].numpy()


def ssim(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean SSIM over the window centres in `where` (all if None); NaN when no centre is there."""
    s = ssim_map(a, b)
    if where is None:
        return float(s.mean())
    inner = where[5:-5, 5:-5]
    return float(s[inner].mean()) if inner.any() else float("nan")


def outside(region: np.ndarray, radius: int = DILATE) -> np.ndarray:
    """The pixels the edit must keep: outside the region grown by `radius`."""
    return ~dilate(region, radius)
