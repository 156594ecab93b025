"""Per-step latent blends: keep the source outside the region an edit may change.

A blend is a callable (step, z) -> z applied after each sampling step to the [source, target, ...]
batch. The user's painted mask and Prompt-to-Prompt's attention-derived local blend both end in
`blend_towards_source`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Blend = Callable[[int, torch.Tensor], torch.Tensor]


def blend_towards_source(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep row 0 (source) as is; rows 1.. follow the source where mask is 0 and stay where it is 1."""
    return z[:1] + mask * (z - z[:1])


@dataclass
class MaskBlend:
    """A user-painted mask ([1, 1, h, w] at latent size): outside it the edit follows the source branch."""

    mask: torch.Tensor

    def __call__(self, step: int, z: torch.Tensor) -> torch.Tensor:
        return blend_towards_source(z, self.mask.to(z))
