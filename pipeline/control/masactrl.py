"""MasaCtrl's mutual self-attention (Cao et al., ICCV 2023; TencentARC/MasaCtrl) as controllers.

In controlled self-attention layers the target's queries attend to the source's keys and values, in
both guidance halves (the batch is [uncond src, uncond tgt, cond src, cond tgt]); the source rows
are left alone. The authors' defaults: from step 4 of 50 and from transformer layer 10 of the 16 of
SD 1.x, self-attention only. Layer 10 is the first decoder layer at the second-finest level, so the
authors' layers are stated here by place ("decoder-fine": decoder layers at the two finest levels),
which selects exactly layers 10-15 on SD 1.x and the same part of any other UNet (the demo model has
10 transformer layers, not 16).

Mask-guided variant (their MutualSelfAttentionControlMask): the target's queries attend once to
the source's foreground keys (keys outside mask_s hidden) and once to its background keys; the two
outputs are combined by mask_t. Masks are resized to each layer's grid with nearest-neighbour
interpolation, as theirs. Where a mask leaves one side empty (no foreground or no background key at
this resolution), the layer falls back to plain mutual attention instead of a softmax over nothing
(decided on the device, so the call can be captured as a CUDA graph).
Automatic masks (their MaskAuto) come from the cross-attention maps of chosen words at the 16x16
level (at 512 px) of the current step, averaged over heads and layers, min-max normalised and
thresholded at 0.1; before any map of the current step exists, plain mutual attention runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from pipeline.control.contract import AttentionCall, Controller, attend, key_bias, take_rows
from pipeline.control.p2p import BLEND_LEVEL
from pipeline.control.places import LayerPlace

LAYER_CHOICES = ("decoder-fine", "decoder", "all")


def controls_layer(place: LayerPlace, layers: str) -> bool:
    """Whether mutual self-attention runs at this place for a LAYER_CHOICES choice."""
    if place.kind != "self":
        return False
    if layers == "decoder-fine":
        return place.block == "up" and place.level <= 1
    return layers == "all" or place.block == "up"


def grid_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A [1, 1, h, w] mask at a layer's grid, flattened to [h*w] booleans (nearest, as the authors)."""
    return F.interpolate(mask.float(), size=grid, mode="nearest").flatten() >= 0.5


@dataclass
class WordMaps(Controller):
    """Stores this step's cross-attention maps of chosen words (row 0: source, row 1: target) at the
    16x16 level, and gives them as min-max-normalised masks thresholded at `threshold`."""

    graph_safe: ClassVar[bool] = True  # its sum starts afresh at each step, within the call's own kernels

    words: torch.Tensor  # [2, 77] 0/1: the words' tokens in the source and in the target prompt
    threshold: float = 0.1
    _step: int = -1
    _sum: torch.Tensor | None = None
    _count: int = 0
    _grid: tuple[int, int] = (0, 0)

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "cross" and place.level == BLEND_LEVEL

    def prob_rows(self, call: AttentionCall) -> tuple[int, int]:
        return call.layout.select("cond", 0)[0], call.layout.select("cond", 1)[0]

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        if call.step != self._step:
            self._step, self._sum, self._count = call.step, None, 0
        pair = take_rows(probs, [rows.index(r) for r in self.prob_rows(call)]).float().mean(1)  # [2, queries, 77]
        maps = (pair * self.words.to(pair)[:, None, :]).sum(-1)  # [2, queries]
        self._sum = maps if self._sum is None else self._sum + maps
        self._count += 1
        self._grid = call.spatial
        return probs

    def masks(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mask_s, mask_t) as [1, 1, h, w] of this step's maps so far, or None before any."""
        if self._sum is None or self._step != step:
            return None
        maps = (self._sum / self._count).view(2, 1, *self._grid)
        low = maps.amin(dim=(2, 3), keepdim=True)
        high = maps.amax(dim=(2, 3), keepdim=True)
        maps = (maps - low) / (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
        mask = (maps >= self.threshold).float()
        return mask[:1], mask[1:]


@dataclass
class MutualSelfAttention(Controller):
    """The target's queries attend to the source's keys and values in the chosen layers and steps.

    `masks` gives fixed (mask_s, mask_t) at latent size; `word_maps` derives them per step instead.
    """

    graph_safe: ClassVar[bool] = True

    start_step: int
    layers: str
    masks: tuple[torch.Tensor, torch.Tensor] | None = None
    word_maps: WordMaps | None = None
    source: int = 0
    target: int = 1
    _grids: dict[tuple[int, tuple[int, int]], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=dict)

    def active(self, place: LayerPlace, step: int) -> bool:
        return step >= self.start_step and controls_layer(place, self.layers)

    def rewrite(self, call: AttentionCall) -> None:
        order = list(range(len(call.layout)))
        for s, t in call.layout.pairs(self.source, self.target):
            order[t] = s
        call.k, call.v = take_rows(call.k, order), take_rows(call.v, order)

    def rewrite_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        masks = self.masks if self.word_maps is None else self.word_maps.masks(call.step)
        if masks is None:
            return out
        key = (call.step if self.word_maps is not None else -1, call.spatial)  # fixed masks: once per grid
        if key not in self._grids:
            self._grids[key] = _at_grid(masks, call.spatial)
        keys_fg, queries_fg, split = self._grids[key]
        fg_bias = key_bias(keys_fg, call.q.dtype).view(1, 1, 1, -1)
        bg_bias = key_bias(~keys_fg, call.q.dtype).view(1, 1, 1, -1)
        queries_fg = queries_fg.to(out.dtype)[:, None]
        out = out.clone()
        for s, t in call.layout.pairs(self.source, self.target):
            q, k, v = call.q[t : t + 1], call.k[t : t + 1], call.v[t : t + 1]  # k, v: the source's, after rewrite
            fg, bg = attend(q, k, v, fg_bias), attend(q, k, v, bg_bias)
            # where one side has no keys at this resolution: plain mutual attention
            out[t] = torch.where(split, (fg * queries_fg + bg * (1 - queries_fg))[0].to(out.dtype), out[t])
        return out


def _at_grid(masks: tuple[torch.Tensor, torch.Tensor], grid: tuple[int, int]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source keys in the foreground, target queries in the foreground, whether the keys have both a
    foreground and a background at this grid) at a layer's grid; the last as a tensor, never read
    on the host."""
    keys_fg = grid_mask(masks[0], grid)
    queries_fg = grid_mask(masks[1], grid)
    return keys_fg, queries_fg, keys_fg.any() & ~keys_fg.all()
