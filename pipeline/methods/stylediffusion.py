"""`stylediffusion`: the photo inverted into per-step value inputs of cross-attention, edited with P2Plus.

StyleDiffusion (paper 002, Li et al.; the authors' code: sen-mao/StyleDiffusion, stylediffusion.py).

Inversion (`invert`, stored in the project; a re-edit never retrains):
- DDIM inversion at guidance 1 with the source prompt, recording the conditional cross-attention
  maps of the 16x16 level (at 512 px) of the down and up blocks at every step;
- the photo's CLIP image features (the model's `image_encoder` part, pipeline.parts), computed once
  and stored (the authors recompute them at every UNet call);
- one mapping network per step, trained so guided sampling at 7.5 with the "" embedding retraces
  the DDIM trajectory while the maps stay near the recorded ones (pipeline.inversion.value_mapping
  has the architecture, schedule and its departures).
Stored: `latents` (z*_0..z*_T), `image_features` [N, D] and the networks' parameters stacked over the
steps (`mapping.*`): in fp32 at 512 px, 30 steps, ViT-B/16, 11.5 MiB (networks 9.0, features 0.6,
latents 1.9).

Editing (P2Plus): source and target are sampled together from z*_T with the "" unconditional
embedding (the authors optimise no null text). The source's conditional cross-attention takes its
values from the learned input c_src * a_i + b_i at every step; the target's from c_tgt * a_i + b_i
for the steps i < tau_v * T (`value_replace`), then from its own prompt, as the authors' code does
(the target's embedding goes through the same network). On top: Prompt-to-Prompt's controls
(cross-attention maps replaced for tau_c, self-attention maps for tau_s, refine or replace, reweight,
local blend or a painted mask; pipeline.methods.p2p) and P2Plus's unconditional self-attention
replacement for tau_u (pipeline.control.p2plus). The defaults are the authors' suggested ones:
tau_v 0.5, tau_c 0.6, tau_s 0.6, tau_u 0 (0.5 when the target's structure must change).

Departures: the CLIP encoder sees the VAE's reconstruction of the photo at its working size, resized
whole to the encoder's square input (the engine hands methods the photo's latent; the authors feed
the 512x512 centre crop itself), and see pipeline.inversion.value_mapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from pipeline.control.contract import Controller
from pipeline.control.p2p import step_span
from pipeline.control.p2plus import UnconditionalSelfReplace
from pipeline.control.value_input import CrossMaps, ValueInput, value_projections
from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.source import SourceBranch
from pipeline.inversion.value_mapping import from_tensors, to_tensors, train_mappings
from pipeline.methods.base import EDIT_MASK, EditOutput, Inputs, InputSpec, Prompts, Tensors
from pipeline.methods.p2p import P2PControlParams, p2p_controllers, p2p_edit
from pipeline.params import param
from pipeline.parts import IMAGE_ENCODER, image_features
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule

FEATURES = "image_features"


@dataclass(frozen=True)
class _MappingInversionParams:
    """The parameters of StyleDiffusion's inversion (first in its form)."""

    steps: int = param(30, kind="int", stage="inversion", minimum=5, maximum=200,
                       help="DDIM steps (the authors use 30).")
    guidance: float = param(
        7.5, kind="float", stage="inversion", minimum=1.0, maximum=20.0,
        help="Classifier-free guidance scale of the edit; the mapping networks are trained for this value.",
    )
    inner_steps: int = param(
        100, kind="int", stage="inversion", minimum=1, maximum=500,
        help="Adam iterations of the first step's network; step i gets inner * exp(-0.1 i) (about 1000 in all).",
    )
    early_stop: bool = param(
        True, kind="bool", stage="inversion",
        help="Stop a step's training once its loss is below 1e-5 + i * 2e-5.",
    )
    attention_weight: float = param(
        1.0, kind="float", stage="inversion", minimum=0.0, maximum=100.0,
        help="Weight of the attention regularisation (16x16 cross-attention maps held to DDIM inversion's; "
        "0: the latent loss only).",
    )


@dataclass(frozen=True)
class StyleDiffusionParams(P2PControlParams, _MappingInversionParams):
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (EDIT_MASK,)

    cross_replace: tuple[float, float] = param(
        (0.0, 0.6), kind="step_range", minimum=0.0, maximum=1.0,
        help="tau_c: steps in which the target takes the source's cross-attention maps.",
    )
    self_replace: tuple[float, float] = param(
        (0.0, 0.6), kind="step_range", minimum=0.0, maximum=1.0,
        help="tau_s: steps in which the target's conditional branch takes the source's self-attention maps.",
    )
    value_replace: float = param(
        0.5, kind="step_fraction", minimum=0.0, maximum=1.0,
        help="tau_v: until when the target's cross-attention values come from the learned input "
        "(the source's always do); later the target's own prompt gives them.",
    )
    uncond_self_replace: tuple[float, float] = param(
        (0.0, 0.0), kind="step_range", minimum=0.0, maximum=1.0,
        help="tau_u (P2Plus): steps in which the target's unconditional branch takes the source's "
        "self-attention maps; 0.5 helps when the object's shape must change.",
    )


class StyleDiffusion:
    """StyleDiffusion inversion + P2Plus editing (paper 002)."""

    id: ClassVar[str] = "stylediffusion"
    title: ClassVar[str] = "StyleDiffusion"
    summary: ClassVar[str] = (
        "Learns, per step, the value input of cross-attention from the photo (keys keep the prompt), then "
        "edits with P2Plus: Prompt-to-Prompt plus the unconditional branch's self-attention."
    )
    Params = StyleDiffusionParams
    parts: ClassVar[tuple[str, ...]] = (IMAGE_ENCODER,)

    def check(self, tokenizer: Any, prompts: Prompts, params: StyleDiffusionParams) -> None:
        """Build the P2P controllers once on the CPU so word errors surface before any inversion."""
        p2p_controllers(tokenizer, prompts, params, torch.device("cpu"), params.blend_words)

    def invert(self, ctx: RunContext, latent: torch.Tensor, prompts: Prompts, params: StyleDiffusionParams,
               inputs: Inputs) -> Tensors:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        cond = ctx.encode_text([prompts.source])
        maps = CrossMaps()
        trajectory = ddim_invert(ctx, schedule, latent, cond, controllers=[maps])
        features = image_features(ctx.bundle.parts[IMAGE_ENCODER], ctx.decode(latent))
        trained = train_mappings(ctx, schedule, trajectory, cond, ctx.encode_text([""]), features, maps.maps,
                                 scale=params.guidance, inner=params.inner_steps, early_stop=params.early_stop,
                                 attention_weight=params.attention_weight)
        return {"latents": trajectory, FEATURES: features[0], **to_tensors(trained.networks)}

    def edit(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: StyleDiffusionParams,
             inputs: Inputs) -> EditOutput:
        steps = params.steps
        source = SourceBranch(ctx.encode_text([""]).expand(steps, -1, -1), None)
        extra: list[Controller] = [
            UnconditionalSelfReplace(step_span(params.uncond_self_replace, steps)),
            learned_values(ctx, inversion, prompts, math.ceil(params.value_replace * steps)),  # i < tau_v * T
        ]
        return p2p_edit(ctx, inversion, prompts, params, inputs, blend_words=params.blend_words, extra=extra,
                        source=source)


def learned_values(ctx: RunContext, inversion: Tensors, prompts: Prompts, target_steps: int) -> ValueInput:
    """The value inputs of an edit: the source's (row 0) at every step, the target's (row 1) for the
    first `target_steps`, each its prompt's embedding through the stored network of the step."""
    networks = from_tensors(inversion, ctx.device)
    features = inversion[FEATURES][None].to(ctx.device, torch.float32)
    source, target = ctx.encode_text([prompts.source, prompts.target]).split(1)
    values = {}
    with torch.no_grad():
        for i, network in enumerate(networks):
            values[(i, 0)] = network.value_input(features, source)[0]
            if i < target_steps:
                values[(i, 1)] = network.value_input(features, target)[0]
    return ValueInput(value_projections(ctx.bundle.unet), values)
