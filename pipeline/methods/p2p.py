"""`p2p`: null-text (or negative-prompt, or plain DDIM) inversion + Prompt-to-Prompt editing.

Inversion: DDIM inversion of the photo at guidance 1 with the source prompt, then, by default,
null-text optimisation of one unconditional embedding per step (Mokady et al.); negative-prompt
inversion instead uses the source prompt's embedding as the unconditional one (no optimisation,
instant); `ddim` keeps the empty prompt (the baseline that drifts at guidance 7.5).

Editing: source and target prompts are sampled together from z*_T with the stored per-step
unconditional embeddings, the target's attention maps replaced by the source's (pipeline.p2p).
Defaults are those of the authors' null-text notebook (REFERENCE_NOTES.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from pipeline.attention import AttentionHub, controlled
from pipeline.errors import PromptError
from pipeline.inversion import null_text_optimise
from pipeline.methods.base import Tensors
from pipeline.p2p import LocalBlend, MaskBlend, PromptToPromptEditor, refine_edit, replace_edit, reweight_edit, step_span
from pipeline.params import param
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, Sampling, ddim_invert, denoise
from pipeline.text import prompt_words, refine_mapper, replace_mapper, word_mask, word_weights


@dataclass(frozen=True)
class P2PParams:
    inversion: str = param(
        "null-text", kind="choice", stage="inversion", choices=("null-text", "negative-prompt", "ddim"),
        help="How the photo is inverted: null-text (best fidelity, about a minute on a GPU), "
        "negative-prompt (instant, source prompt as negative prompt), ddim (plain, drifts).",
    )
    steps: int = param(50, kind="int", stage="inversion", minimum=5, maximum=200, help="DDIM steps.")
    guidance: float = param(
        7.5, kind="float", stage="inversion", minimum=1.0, maximum=20.0,
        help="Classifier-free guidance scale; null-text inversion is optimised for this value.",
    )
    inner_steps: int = param(
        10, kind="int", stage="inversion", minimum=1, maximum=100,
        help="Null-text: most Adam steps per timestep.",
    )
    early_stop: bool = param(
        True, kind="bool", stage="inversion",
        help="Null-text: stop a timestep's optimisation once the loss is below 1e-5 + i * 2e-5.",
    )
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


class PromptToPrompt:
    """Null-text inversion + Prompt-to-Prompt (paper 004)."""

    id: ClassVar[str] = "p2p"
    title: ClassVar[str] = "Prompt-to-Prompt"
    summary: ClassVar[str] = (
        "Change words of the description; attention maps keep layout and identity. "
        "Null-text inversion makes the photo reproducible at full guidance."
    )
    Params: ClassVar[type] = P2PParams

    def inversion_key_params(self, params: P2PParams) -> dict[str, Any]:
        key: dict[str, Any] = {"inversion": params.inversion, "steps": params.steps}
        if params.inversion == "null-text":
            key.update(guidance=params.guidance, inner_steps=params.inner_steps, early_stop=params.early_stop)
        return key

    def invert(self, ctx: RunContext, latent: torch.Tensor, source_prompt: str, params: P2PParams) -> Tensors:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        cond = ctx.encode_text([source_prompt])
        trajectory = ddim_invert(ctx, schedule, latent, cond)
        result = {"latents": trajectory}
        if params.inversion == "null-text":
            result["null_embeddings"] = null_text_optimise(
                ctx, schedule, trajectory, cond, ctx.encode_text([""]), params.guidance,
                params.inner_steps, params.early_stop,
            ).embeddings
        return result

    def check(self, tokenizer: Any, source_prompt: str, target_prompt: str, params: P2PParams) -> None:
        """Build the controllers once on the CPU so word errors surface before any inversion."""
        self._editor(tokenizer, source_prompt, target_prompt, params, torch.device("cpu"))
        if params.blend_words:
            self._local_blend(tokenizer, source_prompt, target_prompt, params, torch.device("cpu"))

    def edit(
        self,
        ctx: RunContext,
        inversion: Tensors,
        source_prompt: str,
        target_prompt: str,
        params: P2PParams,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        cond = ctx.encode_text([source_prompt, target_prompt])
        hub = AttentionHub([], prompts=2)
        blend = None
        if mask is not None:
            blend = MaskBlend(mask)
        elif params.blend_words:
            blend = self._local_blend(ctx.bundle.tokenizer, source_prompt, target_prompt, params, ctx.device)
            hub.controllers.append(blend)  # stores maps before the editor changes them, as the reference
        hub.controllers.append(self._editor(ctx.bundle.tokenizer, source_prompt, target_prompt, params, ctx.device))
        run = Sampling(cond, self._unconditional(ctx, inversion, source_prompt, params), params.guidance, hub, blend)
        z_T = inversion["latents"][-1:].to(ctx.device).expand(2, -1, -1, -1)
        with controlled(ctx.bundle.unet, hub):
            return denoise(ctx, schedule, z_T, run, stage="editing")

    def _unconditional(self, ctx: RunContext, inversion: Tensors, source: str, params: P2PParams) -> torch.Tensor:
        """Per-step unconditional embeddings [steps, 2, 77, D] for the [source, target] batch."""
        if params.inversion == "null-text":
            nulls = inversion["null_embeddings"].to(ctx.device)
        else:
            prompt = source if params.inversion == "negative-prompt" else ""
            nulls = ctx.encode_text([prompt]).expand(params.steps, -1, -1)
        return nulls[:, None].expand(-1, 2, -1, -1)

    def _editor(
        self, tok: Any, source: str, target: str, params: P2PParams, device: torch.device
    ) -> PromptToPromptEditor:
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

    def _local_blend(
        self, tok: Any, source: str, target: str, params: P2PParams, device: torch.device
    ) -> LocalBlend:
        subtract = None
        if params.blend_subtract:
            subtract = _blend_rows(tok, source, target, params.blend_subtract).to(device)
        words = _blend_rows(tok, source, target, params.blend_words).to(device)
        return LocalBlend(words, params.blend_threshold, int(params.blend_start * params.steps), subtract)


def _blend_rows(tokenizer: Any, source: str, target: str, words: tuple[str, ...]) -> torch.Tensor:
    """Token masks [2, 77] of `words` in the source (row 0) and target (row 1); each word must be in one."""
    rows = torch.zeros(2, tokenizer.model_max_length)
    for word in words:
        found = False
        for row, prompt in enumerate((source, target)):
            try:
                rows[row] = torch.maximum(rows[row], word_mask(tokenizer, prompt, [word]))
                found = True
            except PromptError:
                continue
        if not found:
            raise PromptError(f"Blend word {word!r} is in neither prompt (\"{source}\", \"{target}\").")
    return rows
