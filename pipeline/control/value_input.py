"""StyleDiffusion's controllers: a learned value input for cross-attention, and the maps it is held to.

StyleDiffusion (Li et al.) keeps the keys of cross-attention on the prompt's embedding (the "where")
and gives the values another input (the "what"): an embedding mapped from the photo, per step. In
the contract that is a rewrite: `ValueInput` replaces the value rows of chosen conditional rows by
the layer's own value projection (`to_v`) of the learned embedding, in every cross-attention layer.
Nothing is detached, so the gradient of a loss reaches the mapping network that made the embedding.

`CrossMaps` records the conditional cross-attention probabilities at the 16x16 level (at 512 px) of
the down and up blocks, the maps the attention regularisation compares (the authors' "down_cross"
and "up_cross" maps of 16x16 queries); recorded during training they keep their gradients.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from diffusers import UNet2DConditionModel

from pipeline.control.contract import AttentionCall, Controller, put_rows
from pipeline.control.p2p import BLEND_LEVEL
from pipeline.control.places import LayerPlace, layer_places


def value_projections(unet: UNet2DConditionModel) -> dict[str, torch.nn.Module]:
    """Each cross-attention layer's value projection, by place name (the processor's name)."""
    projections = {}
    for place in layer_places(unet):
        if place.kind == "cross":
            attention = unet.get_submodule(place.name.removesuffix(".processor"))
            if attention.norm_cross:  # SD 1.x has none; the value input would skip it
                raise ValueError(f"{place.name}: a cross-attention layer that normalises its input is not supported")
            projections[place.name] = attention.to_v
    return projections


@dataclass
class ValueInput(Controller):
    """The value input of cross-attention, replaced for some conditional rows at some steps.

    `values[(step, prompt)]` is a [tokens, width] embedding (the width of the text embedding): at that
    step, every cross-attention layer computes the values of that prompt's conditional row from it
    with its own `to_v`, instead of from the prompt's embedding; the keys stay the prompt's.
    Unconditional rows and (step, prompt) pairs without an entry are left as they are. Each prompt's
    embeddings are stacked into one table with a row per step (zeros where it has none), read by the
    step as data (`AttentionCall.per_step`), so a CUDA graph can replay the calls of many steps.
    """

    graph_safe: ClassVar[bool] = True

    projections: Mapping[str, torch.nn.Module]
    values: Mapping[tuple[int, int], torch.Tensor]
    _prompts: dict[int, tuple[int, ...]] = field(default_factory=dict)
    _tables: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_step: dict[int, list[int]] = {}
        for step, prompt in sorted(self.values):
            by_step.setdefault(step, []).append(prompt)
        self._prompts = {step: tuple(prompts) for step, prompts in by_step.items()}
        for prompt in sorted({p for _, p in self.values}):
            steps = {s: t for (s, p), t in self.values.items() if p == prompt}
            blank = torch.zeros_like(next(iter(steps.values())))
            self._tables[prompt] = torch.stack([steps.get(s, blank) for s in range(max(steps) + 1)])

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "cross" and step in self._prompts

    def graph_key(self, place: LayerPlace, step: int) -> Hashable:
        return self._prompts.get(step) if self.active(place, step) else None

    def rewrite(self, call: AttentionCall) -> None:
        project = self.projections[call.place.name]
        _, heads, _, head_dim = call.v.shape
        v = call.v.clone()
        for prompt in self._prompts[call.step]:
            rows = call.layout.select("cond", prompt)
            if rows:
                value = project(call.per_step(self._tables[prompt]).to(call.v.device))
                put_rows(v, rows, value.view(1, -1, heads, head_dim).transpose(1, 2).to(v.dtype))
        call.v = v


@dataclass
class CrossMaps(Controller):
    """Records, per step, the cross-attention maps [heads, queries, tokens] of one prompt's conditional
    row at BLEND_LEVEL in the down and up blocks, in execution order (float32, gradients kept). Never
    captured as a CUDA graph (graph_safe stays False): it keeps every call's maps."""

    prompt: int = 0
    maps: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "cross" and place.block != "mid" and place.level == BLEND_LEVEL

    def prob_rows(self, call: AttentionCall) -> list[int]:
        return call.layout.select("cond", self.prompt)

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        row = call.layout.select("cond", self.prompt)[0]
        self.maps.setdefault(call.step, []).append(probs[rows.index(row)].float())
        return probs
