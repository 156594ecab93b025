"""P2Plus (StyleDiffusion, Li et al.): Prompt-to-Prompt plus self-attention replacement in the
unconditional branch.

Prompt-to-Prompt controls the conditional rows only. With guidance w = 7.5 the unconditional branch
enters the noise with weight 1 - w, and its self-attention still carries the source's structure
freely; P2Plus also gives the target's unconditional row the source's unconditional self-attention
maps for a first fraction tau_u of the steps, at the layers where P2P replaces self-attention (all
but the finest level, the authors' "at most 32x32 queries" at 512 px). With tau_u = 0 it is P2P.
The authors' suggested default is tau_u = 0, and 0.5 when the target's structure must differ from
the source's (a tent becoming a tiger).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from pipeline.control.contract import AttentionCall, Controller
from pipeline.control.p2p import PromptToPromptEditor
from pipeline.control.places import LayerPlace


def _uncond_pair(call: AttentionCall) -> tuple[int, int]:
    """Batch rows of the source's and the target's unconditional branch."""
    return call.layout.select("uncond", 0)[0], call.layout.select("uncond", 1)[0]


@dataclass
class UnconditionalSelfReplace(Controller):
    """The target's unconditional self-attention maps replaced by the source's in steps [start, end)."""

    graph_safe: ClassVar[bool] = True

    span: tuple[int, int]
    min_level: int = PromptToPromptEditor.self_min_level

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "self" and self.span[0] <= step < self.span[1] and place.level >= self.min_level

    def prob_rows(self, call: AttentionCall) -> tuple[int, int]:
        return _uncond_pair(call)

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        src, tgt = (rows.index(r) for r in _uncond_pair(call))
        probs = probs.clone()
        probs[tgt] = probs[src]
        return probs
