"""Prompt-to-Prompt attention control (Hertz et al.) as controllers of the attention contract.

The sampled batch holds two prompts, [source, target]; as in the reference code only the conditional
rows are controlled. The editor replaces the target's
cross-attention maps with the source's (through a word-swap mapper, a refinement alignment, and/or a
per-token reweighting) for a range of steps, and its self-attention maps for another range, at all
but the finest resolution level (the reference's "at most 32x32 queries" at 512x512, stated
relative to the latent so that larger images keep the same layers). Local blend keeps the target
equal to the source outside the region the blend words attend to; a user mask can stand in for
that attention-derived mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from pipeline.control.blend import blend_towards_source
from pipeline.control.contract import AttentionCall, Controller, take_rows
from pipeline.control.places import LayerPlace

# maps the source's [heads, queries, 77] cross-attention (and the target's own) to the target's
CrossEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BLEND_LEVEL = 2  # the reference's 16x16 maps at 512x512: a quarter of the latent's resolution


def step_span(fractions: tuple[float, float], steps: int) -> tuple[int, int]:
    """A (start, end) fraction of the run as step indices [start, end), rounded down as the reference."""
    return int(fractions[0] * steps), int(fractions[1] * steps)


def replace_edit(mapper: torch.Tensor) -> CrossEdit:
    """Word swap: the target's token j looks where the source's mapped tokens looked."""
    return lambda base, target: torch.einsum("hqw,wn->hqn", base, mapper.to(base))


def refine_edit(mapper: torch.Tensor, alphas: torch.Tensor) -> CrossEdit:
    """Added words: aligned target tokens take the source map, new tokens (alpha 0) keep their own."""
    return lambda base, target: base[..., mapper] * alphas.to(base) + target * (1 - alphas.to(base))


def reweight_edit(inner: CrossEdit, factors: torch.Tensor) -> CrossEdit:
    """Scale chosen tokens' maps after the inner edit (no renormalisation, as in the reference)."""
    return lambda base, target: inner(base, target) * factors.to(base)


def _cond_pair(call: AttentionCall) -> tuple[int, int]:
    """Batch rows of the source's and the target's conditional branch."""
    return call.layout.select("cond", 0)[0], call.layout.select("cond", 1)[0]


@dataclass
class PromptToPromptEditor(Controller):
    """Replaces the target's cross- and self-attention with the source's in the chosen steps.

    cross_alpha[step, token] is the weight of the edited map for each target token at each step
    (1 inside the token's replace range, 0 outside), so per-word ranges need no special case.
    """

    graph_safe: ClassVar[bool] = True

    cross_edit: CrossEdit
    cross_alpha: torch.Tensor  # [steps, 77]
    self_span: tuple[int, int]
    self_min_level: int = 1
    _cross_steps: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        # read once here: asking a GPU tensor at every attention call would wait for the GPU each time
        self._cross_steps = tuple(self.cross_alpha.any(dim=1).tolist())

    def active(self, place: LayerPlace, step: int) -> bool:
        if place.kind == "cross":
            return self._cross_steps[step]
        return self.self_span[0] <= step < self.self_span[1] and place.level >= self.self_min_level

    def prob_rows(self, call: AttentionCall) -> tuple[int, int]:
        return _cond_pair(call)

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        src, tgt = (rows.index(r) for r in _cond_pair(call))
        base, target = probs[src], probs[tgt]
        if call.place.kind == "cross":
            alpha = call.per_step(self.cross_alpha).to(probs)
            target = self.cross_edit(base, target) * alpha + target * (1 - alpha)
        else:
            target = base
        probs = probs.clone()
        probs[tgt] = target.to(probs.dtype)
        return probs


@dataclass
class LocalBlend(Controller):
    """Attention-derived local blend: a controller that stores maps, and the latent blend they drive.

    It accumulates, over the steps so far, the cross-attention maps at BLEND_LEVEL in the down and
    up blocks, summed over the blend words' tokens (row 0: words of the source, row 1: of the
    target) and averaged over heads; the per-step mask is that sum, 3x3 max-pooled, resized to the
    latent, divided by its maximum and thresholded, OR-ed between source and target. Subtract
    words (without pooling, as in the reference) remove regions from it.

    It reads the maps it is given, so its place in the controller list decides which: placed after
    the PromptToPromptEditor (pipeline.methods.p2p.p2p_controllers does), it reads the target row
    AFTER the edit, as the reference executes (its AttentionStore appends the probability tensor
    that AttentionControlEdit.forward then overwrites in place, so LocalBlend averages edited maps:
    a swapped word's target row holds the source word's map inside the cross-replace steps, the
    target's own after them). The sums are kept in place in tensors made at the first call, so a
    CUDA graph that replays a call adds to them.
    """

    graph_safe: ClassVar[bool] = True

    words: torch.Tensor  # [2, 77] 0/1
    threshold: float
    start_step: int
    subtract: torch.Tensor | None = None  # [2, 77] 0/1
    _sums: dict[str, torch.Tensor] = field(default_factory=dict)

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "cross" and place.block != "mid" and place.level == BLEND_LEVEL

    def prob_rows(self, call: AttentionCall) -> tuple[int, int]:
        return _cond_pair(call)

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        pair = take_rows(probs, [rows.index(r) for r in _cond_pair(call)]).float()
        for key, tokens in (("words", self.words), ("subtract", self.subtract)):
            if tokens is not None:
                contribution = (pair * tokens.to(pair.device)[:, None, None, :]).sum(-1).mean(1)
                if key in self._sums:
                    self._sums[key].add_(contribution)
                else:
                    self._sums[key] = contribution
        return probs

    def region(self, size: torch.Size) -> torch.Tensor | None:
        """The current blend mask [2, 1, h, w] (bool) at latent size, or None before any map was stored."""
        if "words" not in self._sums:
            return None
        mask = self._mask("words", size, pool=True)
        if "subtract" in self._sums:
            mask = mask & ~self._mask("subtract", size, pool=False)
        return mask

    def __call__(self, step: int, z: torch.Tensor) -> torch.Tensor:
        mask = self.region(z.shape[-2:]) if step >= self.start_step else None
        return z if mask is None else blend_towards_source(z, mask.to(z.dtype))

    def _mask(self, key: str, size: torch.Size, pool: bool) -> torch.Tensor:
        h, w = (-(-n // 2**BLEND_LEVEL) for n in size)
        maps = self._sums[key].view(-1, 1, h, w)
        if pool:
            maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=tuple(size))
        maps = maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
        mask = maps > self.threshold
        return mask[:1] | mask
