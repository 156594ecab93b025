"""Attention control through diffusers attention processors.

Every attention layer of the UNet gets one `ControlledProcessor` (installed with
`unet.set_attn_processor`, never by patching `forward`) that knows its place: down, mid or up
block, self or cross attention, resolution level, and its index in execution order. At each call it
asks the hub whether any controller wants this layer at this step. If none does, it hands the call
to diffusers' SDPA processor (no attention probabilities are ever formed); otherwise it forms the
probabilities of the conditional rows explicitly, lets each controller store or edit them in turn,
and still uses SDPA for the unconditional rows, which no method edits.

Controllers are small objects with two methods, `wants` and `edit`; methods compose them (a store
for local blend, then a Prompt-to-Prompt editor) instead of subclassing one another.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

_NAME = re.compile(
    r"^(?:(?P<block>down|up)_blocks\.(?P<bi>\d+)|mid_block)\.attentions\.(?P<ai>\d+)"
    r"\.transformer_blocks\.(?P<ti>\d+)\.attn(?P<kind>[12])\.processor$"
)
_BLOCK_ORDER = {"down": 0, "mid": 1, "up": 2}


@dataclass(frozen=True)
class LayerPlace:
    """Where an attention layer sits in the UNet.

    level: 0 at the latent's own resolution, 1 at half of it, and so on (SD 1.x at 512x512: level
    0 is 64x64, 1 is 32x32, 2 is 16x16, 3 is 8x8). index: position among all attention layers in
    execution order (down, mid, up). transformer: position among transformer blocks in execution
    order (the 16 layers MasaCtrl and SpecRef count).
    """

    name: str
    block: Literal["down", "mid", "up"]
    kind: Literal["self", "cross"]
    level: int
    index: int
    transformer: int


def layer_places(unet: UNet2DConditionModel) -> list[LayerPlace]:
    """The places of all attention layers, in execution order, derived from processor names."""
    n_down = len(unet.config.down_block_types)
    n_up = len(unet.config.up_block_types)
    parsed = []
    for name in unet.attn_processors:
        m = _NAME.match(name)
        if m is None:
            raise ValueError(f"unexpected attention layer {name!r}: not an SD 1.x UNet")
        block = m["block"] or "mid"
        bi = int(m["bi"]) if m["bi"] is not None else 0
        level = {"down": bi, "mid": n_down - 1, "up": n_up - 1 - bi}[block]
        order = (_BLOCK_ORDER[block], bi, int(m["ai"]), int(m["ti"]))
        parsed.append((order, int(m["kind"]), name, block, level))
    parsed.sort()
    transformers = {order: i for i, order in enumerate(sorted({p[0] for p in parsed}))}
    return [
        LayerPlace(name, block, "self" if kind == 1 else "cross", level, index, transformers[order])
        for index, (order, kind, name, block, level) in enumerate(parsed)
    ]


class AttentionController(Protocol):
    """Stores or edits attention probabilities of the conditional rows at chosen layers and steps."""

    def wants(self, place: LayerPlace, step: int) -> bool:
        """Whether this controller needs the probabilities of `place` at `step`."""
        ...

    def edit(self, place: LayerPlace, step: int, probs: torch.Tensor) -> torch.Tensor:
        """Receive probs [prompts, heads, queries, keys]; return them, edited or not."""
        ...


class AttentionHub:
    """Routes attention calls to controllers; the sampling loop sets `step` before each UNet call.

    `prompts` is the number of prompts sampled together. A UNet batch of twice that size is a
    classifier-free-guidance batch [uncond..., cond...] and only its conditional half is controlled,
    as in the reference code; a batch of `prompts` rows is all conditional.
    """

    def __init__(self, controllers: Sequence[AttentionController], prompts: int) -> None:
        self.controllers = list(controllers)
        self.prompts = prompts
        self.step = 0

    def active(self, place: LayerPlace) -> list[AttentionController]:
        return [c for c in self.controllers if c.wants(place, self.step)]


class ControlledProcessor:
    """Attention for one layer: SDPA when nobody is watching, explicit probabilities when someone is."""

    def __init__(self, place: LayerPlace, hub: AttentionHub) -> None:
        self.place = place
        self.hub = hub
        self.fast = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor:
        controllers = self.hub.active(self.place)
        if not controllers or attention_mask is not None:
            return self.fast(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return self._controlled(attn, hidden_states, encoder_hidden_states, temb, controllers)

    def _controlled(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        temb: torch.Tensor | None,
        controllers: list[AttentionController],
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.shape if hidden_states.ndim == 4 else None
        if spatial is not None:
            b, c, h, w = spatial
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch = hidden_states.shape[0]
        q, k, v = (_heads(attn, x) for x in (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)))

        first = batch - self.hub.prompts  # the conditional rows start here
        if first not in (0, self.hub.prompts):
            raise ValueError(f"batch of {batch} does not match {self.hub.prompts} prompts")
        parts = []
        if first:
            parts.append(F.scaled_dot_product_attention(q[:first], k[:first], v[:first], scale=attn.scale))
        qc, kc = q[first:], k[first:]
        n, heads, nq, d = qc.shape
        probs = attn.get_attention_scores(qc.reshape(n * heads, nq, d), kc.reshape(n * heads, -1, d))
        probs = probs.view(n, heads, nq, -1)
        for controller in controllers:
            probs = controller.edit(self.place, self.hub.step, probs)
        parts.append(probs.to(v.dtype) @ v[first:])

        out = torch.cat(parts).transpose(1, 2).reshape(batch, -1, attn.heads * d)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial is not None:
            out = out.transpose(-1, -2).reshape(spatial)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """[batch, tokens, heads*dim] -> [batch, heads, tokens, dim]."""
    b, n, _ = x.shape
    return x.view(b, n, attn.heads, -1).transpose(1, 2)


@contextlib.contextmanager
def controlled(unet: UNet2DConditionModel, hub: AttentionHub) -> Iterator[list[LayerPlace]]:
    """Install one ControlledProcessor per layer for the duration of a run, then restore the originals."""
    original = dict(unet.attn_processors)
    places = layer_places(unet)
    unet.set_attn_processor({p.name: ControlledProcessor(p, hub) for p in places})
    try:
        yield places
    finally:
        unet.set_attn_processor(original)  # it pops entries: `original` is ours to give away
