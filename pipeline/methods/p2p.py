"""`p2p`: null-text (or direct, negative-prompt, plain DDIM) inversion + Prompt-to-Prompt editing.

Inversion: DDIM inversion of the photo at guidance 1 with the source prompt, then, by default,
null-text optimisation of one unconditional embedding per step (Mokady et al.); the other choices
are described in pipeline.inversion.source.

Editing: source and target prompts are sampled together from z*_T with the stored per-step
unconditional embeddings, the target's attention maps replaced by the source's (pipeline.p2p).
Defaults are those of the authors' null-text notebook (REFERENCE_NOTES.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from pipeline.control.blend import MaskBlend
from pipeline.control.contract import Controller
from pipeline.control.p2p import LocalBlend, PromptToPromptEditor, refine_edit, replace_edit, reweight_edit, step_span
from pipeline.events import Stage
from pipeline.inversion.source import SourceBranch, SourceInversionParams, invert_source, source_branch
from pipeline.methods.base import EDIT_MASK, EditOutput, Inputs, InputSpec, Prompts, Tensors
from pipeline.params import param
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, Sampling, denoise
from pipeline.text import pair_word_masks, prompt_words, refine_mapper, replace_mapper, word_mask, word_weights


@dataclass(frozen=True)
class P2PControlParams:
    """Prompt-to-Prompt's controls, for every method that edits with them (p2p, specref,
    stylediffusion). The Params class that has them also declares `steps` and `guidance`, which
    `p2p_controllers` and `p2p_edit` read too."""

    mode: str = param(
        "auto", kind="choice", choices=("auto", "replace", "refine"),
        help="replace swaps words (same word count), refine aligns added or removed words; "
        "auto picks replace when the word counts match.",
    )
    cross_replace: tuple[float, float] = param(
        (0.0, 0.8), kind="step_range", minimum=0.0, maximum=1.0,
        help="Steps in which the target takes the source's cross-attention maps.",
    )
    cross_replace_words: tuple[tuple[str, float], ...] = param(
        (), kind="word_values", minimum=0.0, maximum=1.0,
        help="Per target word, the fraction of steps its maps are replaced (overrides cross_replace's end).",
    )
    self_replace: tuple[float, float] = param(
        (0.0, 0.4), kind="step_range", minimum=0.0, maximum=1.0,
        help="Steps in which the target takes the source's self-attention maps (0.3-0.7 useful).",
    )
    reweight: tuple[tuple[str, float], ...] = param(
        (), kind="word_values", minimum=-10.0, maximum=10.0,
        help="Per target word, a factor on its cross-attention maps (e.g. fluffy:2).",
    )
    blend_words: tuple[str, ...] = param(
        (), kind="words",
        help="Local blend: words (of either prompt) whose region may change; elsewhere the source is kept.",
    )
    blend_subtract: tuple[str, ...] = param(
        (), kind="words", help="Local blend: words whose region must not change.",
    )
    blend_threshold: float = param(
        0.3, kind="float", minimum=0.0, maximum=1.0, help="Local blend: attention threshold of the mask.",
    )
    blend_start: float = param(
        0.2, kind="step_fraction", minimum=0.0, maximum=1.0, help="Local blend: when blending starts.",
    )


@dataclass(frozen=True)
class P2PParams(P2PControlParams, SourceInversionParams):
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (EDIT_MASK,)


class PromptToPrompt:
    """Null-text inversion + Prompt-to-Prompt (paper 004)."""

    id: ClassVar[str] = "p2p"
    title: ClassVar[str] = "Prompt-to-Prompt"
    summary: ClassVar[str] = (
        "Change words of the description; attention maps keep layout and identity. "
        "Null-text inversion makes the photo reproducible at full guidance."
    )
    Params = P2PParams
    parts: ClassVar[tuple[str, ...]] = ()

    def check(self, tokenizer: Any, prompts: Prompts, params: P2PParams) -> None:
        """Build the controllers once on the CPU so word errors surface before any inversion."""
        p2p_controllers(tokenizer, prompts, params, torch.device("cpu"), params.blend_words)

    def invert(self, ctx: RunContext, latent: torch.Tensor, prompts: Prompts, params: P2PParams,
               inputs: Inputs) -> Tensors:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        return invert_source(ctx, schedule, latent, prompts.source, params.inversion, guidance=params.guidance,
                             inner_steps=params.inner_steps, early_stop=params.early_stop)

    def edit(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: P2PParams,
             inputs: Inputs) -> EditOutput:
        return p2p_edit(ctx, inversion, prompts, params, inputs, blend_words=params.blend_words)


def p2p_edit(
    ctx: RunContext, inversion: Tensors, prompts: Prompts, params: P2PControlParams, inputs: Inputs, *,
    blend_words: Sequence[str], extra: Sequence[Controller] = (), source: SourceBranch | None = None,
) -> EditOutput:
    """Sample [source, target] from z*_T with the P2P controllers (a local blend of `blend_words`, unless a
    painted edit mask stands in for it) followed by `extra` ones, which see the editor's edited maps.
    `source` reproduces the source branch (default: the one `params.inversion` names).

    Methods that add attention control to a P2P edit (SpecRef, StyleDiffusion) call this with their
    controllers.
    """
    schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
    cond = ctx.encode_text([prompts.source, prompts.target])
    mask = inputs.masks.get(EDIT_MASK.name)  # a painted region stands in for the local blend
    controllers, local = p2p_controllers(ctx.bundle.tokenizer, prompts, params, ctx.device,
                                         blend_words if mask is None else ())
    blend = MaskBlend(mask) if mask is not None else local
    if source is None:
        source = source_branch(ctx, params.inversion, inversion, prompts.source, params.steps)
    run = Sampling(cond, source.uncond[:, None].expand(-1, 2, -1, -1), params.guidance, [*controllers, *extra],
                   source.correct, blend)
    z_T = inversion["latents"][-1:].to(ctx.device).expand(2, -1, -1, -1)
    z = denoise(ctx, schedule, z_T, run, stage=Stage.EDITING)
    region = mask if mask is not None else None if local is None else local.region(z.shape[-2:])
    return EditOutput(z[1:2], z[0:1], None if region is None else region[-1:].float(),
                      EDIT_MASK.name if mask is not None else None)


def p2p_controllers(
    tok: Any, prompts: Prompts, params: P2PControlParams, device: torch.device, blend_words: Sequence[str]
) -> tuple[list[Controller], LocalBlend | None]:
    """The editor, then the local blend (returned on its own too; it exists only when there are blend
    words). The order is the reference's as executed: its attention store keeps the very tensor the
    editor then edits in place, so the blend's mask is computed from the EDITED maps (for a swapped
    word, the target row holds the source word's map; reweighting is included)."""
    editor = _editor(tok, prompts.source, prompts.target, params, device)
    local = _local_blend(tok, prompts.source, prompts.target, params, blend_words, device) if blend_words else None
    return [editor] + ([local] if local is not None else []), local


def _editor(tok: Any, source: str, target: str, params: P2PControlParams, device: torch.device) -> PromptToPromptEditor:
    mode = params.mode
    if mode == "auto":
        same_count = len(prompt_words(tok, source)) == len(prompt_words(tok, target))
        mode = "replace" if same_count else "refine"
    if mode == "replace":
        edit = replace_edit(replace_mapper(tok, source, target).to(device))
    else:
        mapper, alphas = refine_mapper(tok, source, target)
        edit = refine_edit(mapper.to(device), alphas.to(device))
    if params.reweight:
        edit = reweight_edit(edit, word_weights(tok, target, dict(params.reweight)).to(device))
    steps = params.steps
    alpha = torch.zeros(steps, tok.model_max_length)
    start, end = step_span(params.cross_replace, steps)
    alpha[start:end] = 1.0
    for word, fraction in params.cross_replace_words:
        tokens = word_mask(tok, target, [word]).bool()
        alpha[:, tokens] = 0.0
        alpha[start : step_span((0.0, fraction), steps)[1], tokens] = 1.0
    return PromptToPromptEditor(edit, alpha.to(device), step_span(params.self_replace, steps))


def _local_blend(tok: Any, source: str, target: str, params: P2PControlParams, blend_words: Sequence[str],
                 device: torch.device) -> LocalBlend:
    subtract = None
    if params.blend_subtract:
        subtract = pair_word_masks(tok, source, target, params.blend_subtract).to(device)
    words = pair_word_masks(tok, source, target, blend_words).to(device)
    return LocalBlend(words, params.blend_threshold, int(params.blend_start * params.steps), subtract)
