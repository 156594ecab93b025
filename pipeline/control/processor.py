"""The attention processor installed once in every layer, and how a UNet call reaches controllers.

`install(unet)` gives each attention layer a `ControlledProcessor` that knows its place and holds no
run state: the controllers, row layout and step arrive with each UNet call in
`cross_attention_kwargs={"control": ControlState(...)}` (diffusers' `Attention.forward` hands the key
to processors that declare it). Without a state, or when no controller is active at this layer and
step, the call is exactly diffusers' AttnProcessor2_0 (SDPA, no probabilities formed). Otherwise the
phases of the contract (pipeline.control.contract) run in turn. Attention masks are honoured on both
paths.
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from pipeline.control.contract import AttentionCall, Controller, ControlState, attend, probabilities, put_rows, take_rows
from pipeline.control.places import LayerPlace, layer_places


class ControlledProcessor:
    """Attention for one layer: SDPA when no controller is active, the contract's phases when some are."""

    def __init__(self, place: LayerPlace) -> None:
        self.place = place
        self.plain = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        control: ControlState | None = None,
    ) -> torch.Tensor:
        active = control.active(self.place) if control is not None else []
        if not active:
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        assert control is not None
        return self._controlled(attn, hidden_states, encoder_hidden_states, attention_mask, temb, control, active)

    def _controlled(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
        control: ControlState,
        active: list[Controller],
    ) -> torch.Tensor:
        # The projections mirror AttnProcessor2_0 step for step, so a controller that changes nothing
        # gives bit-identical results.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, sequence = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[:2]
        if len(control.layout) != batch:
            raise ValueError(f"a batch of {batch} rows does not match the layout of {len(control.layout)}")
        bias = None
        if attention_mask is not None:
            bias = attn.prepare_attention_mask(attention_mask, sequence, batch)
            bias = bias.view(batch, attn.heads, -1, bias.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        call = AttentionCall(self.place, control.step, control.timestep, control.layout, query, key, value, bias,
                             attn.scale, _grid(query.shape[2], control.latent_size, self.place.level),
                             control.step_index)
        for controller in active:
            controller.rewrite(call)
        out = _attention(call, active)
        for controller in active:
            out = controller.rewrite_output(call, out)

        hidden_states = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _attention(call: AttentionCall, active: list[Controller]) -> torch.Tensor:
    """SDPA for rows nobody asked probabilities of; explicit, controller-edited probabilities for the rest."""
    wanted = sorted({r for c in active for r in c.prob_rows(call)})
    if not wanted:
        return attend(call.q, call.k, call.v, call.bias)
    probs = probabilities(take_rows(call.q, wanted), take_rows(call.k, wanted), call.scale, _rows(call.bias, wanted))
    for controller in active:
        probs = controller.edit_probs(call, wanted, probs)
    explicit = probs.to(call.v.dtype) @ take_rows(call.v, wanted)
    others = [i for i in range(len(call.layout)) if i not in wanted]
    if not others:
        return explicit
    plain = attend(take_rows(call.q, others), take_rows(call.k, others), take_rows(call.v, others),
                   _rows(call.bias, others))
    if _rising(wanted) and _rising(others):  # e.g. [uncond..., cond...]: no scatter
        return torch.cat([plain, explicit] if others[0] < wanted[0] else [explicit, plain])
    out = call.q.new_empty(*call.q.shape[:-1], call.v.shape[-1])
    put_rows(out, others, plain.to(out.dtype))
    put_rows(out, wanted, explicit.to(out.dtype))
    return out


def _rising(rows: list[int]) -> bool:
    """Whether the rows are a contiguous rising run (read as one view)."""
    return rows == list(range(rows[0], rows[-1] + 1))


def _rows(bias: torch.Tensor | None, rows: list[int]) -> torch.Tensor | None:
    return bias if bias is None or bias.shape[0] == 1 else take_rows(bias, rows)


def _grid(queries: int, latent_size: tuple[int, int], level: int) -> tuple[int, int]:
    """The (h, w) grid of a layer's queries: the latent halved `level` times (rounding up, as the UNet)."""
    h, w = latent_size
    for _ in range(level):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != queries:
        raise ValueError(f"{queries} queries do not form the {h}x{w} grid of level {level}")
    return h, w


def install(unet: UNet2DConditionModel) -> list[LayerPlace]:
    """Give every attention layer its ControlledProcessor, once per model; returns the places in execution order."""
    places = layer_places(unet)
    unet.set_attn_processor({p.name: ControlledProcessor(p) for p in places})
    return places
