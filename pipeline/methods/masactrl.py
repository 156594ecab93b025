"""`masactrl`: mutual self-attention control (Cao et al., ICCV 2023), the baseline every seed compares with.

The target is sampled beside the source; in the decoder's finer self-attention layers its queries
read the source's keys and values (pipeline.control.masactrl), so content and texture come from the
photo while layout and pose follow the target prompt.

What the authors execute (TencentARC/MasaCtrl: playground_real.ipynb and the gradio app's
real-image editing, as run, not as commented): DDIM inversion with an empty prompt at guidance 7.5
(the empty prompt on both branches makes guidance irrelevant), then [source, target] sampled from
the inverted z_T with the prompts ["", target] at guidance 7.5, control from step 4 of 50 in
transformer layers 10-15. The source branch is NOT tied to the inversion: the call that passes
the inversion's intermediate latents (`ref_intermediate_latents`) is commented out in both. That
executed flow is `inversion=ddim` here (with `inversion_prompt=empty`, the default); run beside
the authors' code on identical weights it agrees to 82.7 dB (target) and 83.9 dB (reconstruction)
in fp32.

Retake's default is `inversion=direct`, the commented-out variant: the source branch follows the
inversion latents, which the authors' pipeline does by overwriting the source latent with z*_t
before each step and direct inversion (pipeline.inversion.source.FollowTrajectory) does by
correcting it after the previous step (the same latents). One more correction is made after the
last step, which the overwrite has no step for: the source reconstruction then lands exactly on the
inverted z*_0, where the commented-out variant stays one uncorrected step (about 5e-3) away. The
target is affected by it only through the source keys and values it reads, which come before that
last correction, so the two agree on the target. Direct is kept as the product default because it
keeps the photo better; choose `inversion=ddim` for the authors' executed behaviour.

Null-text and negative-prompt inversion, and inverting with the source prompt, are options.
Departures: the control start is a fraction of the steps (0.08 = step 4 of 50) so other step counts
keep its place; a painted edit mask keeps the source outside it (the authors have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from pipeline.control.blend import MaskBlend
from pipeline.control.contract import Controller
from pipeline.control.masactrl import LAYER_CHOICES, MutualSelfAttention, WordMaps
from pipeline.errors import PromptError
from pipeline.events import Stage
from pipeline.inversion.source import INVERSIONS, SourceInversionParams, invert_source, source_branch
from pipeline.methods.base import EDIT_MASK, EditOutput, Inputs, InputSpec, Prompts, Tensors
from pipeline.params import param
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, Sampling, denoise
from pipeline.text import pair_word_masks

SUBJECT_MASK = InputSpec(
    "subject_mask", "mask", "Subject in the photo",
    "Mask-guided MasaCtrl: white on the subject in the photo; its foreground and background are attended separately.",
)
TARGET_MASK = InputSpec(
    "target_mask", "mask", "Subject in the result",
    "Mask-guided MasaCtrl: where the subject should be in the result (default: the subject mask).",
)


@dataclass(frozen=True)
class MasaCtrlParams(SourceInversionParams):
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (EDIT_MASK, SUBJECT_MASK, TARGET_MASK)

    inversion: str = param(
        "direct", kind="choice", stage="inversion", choices=INVERSIONS,
        help="How the photo is inverted. direct (default): the source branch follows the inversion latents, the "
        "variant the authors left commented out, plus a correction after the last step (the photo is "
        "reproduced exactly); ddim: what the authors' code executes (no correction, the source drifts a "
        "little); null-text, negative-prompt: as for p2p.",
    )
    inversion_prompt: str = param(
        "empty", kind="choice", stage="inversion", choices=("empty", "source"),
        help="Prompt of the inversion and of the source branch: empty (the authors' real-image mode) or the "
        "source prompt (needed for mask words found in the source prompt).",
    )
    control_start: float = param(
        0.08, kind="step_fraction", minimum=0.0, maximum=1.0,
        help="When mutual self-attention starts (0.08 = step 4 of 50): earlier keeps more of the photo's layout.",
    )
    layers: str = param(
        "decoder-fine", kind="choice", choices=LAYER_CHOICES,
        help="Controlled self-attention layers: decoder-fine (the decoder's two finest levels; transformer layers "
        "10-15 of SD 1.x, the authors' default), decoder, or all.",
    )
    mask_words: tuple[str, ...] = param(
        (), kind="words",
        help="Mask-guided MasaCtrl from attention: the subject's word in each prompt (e.g. cat); "
        "overrides the subject masks.",
    )
    mask_threshold: float = param(0.1, kind="float", minimum=0.0, maximum=1.0,
                                  help="Threshold of the word masks (normalised attention).")


class MasaCtrl:
    """Mutual self-attention control (the baseline of papers 000-003)."""

    id: ClassVar[str] = "masactrl"
    title: ClassVar[str] = "MasaCtrl"
    summary: ClassVar[str] = (
        "Change pose, action or view: the target reads the photo's keys and values in the decoder's "
        "self-attention, so its content and texture stay while the layout follows the new prompt."
    )
    Params = MasaCtrlParams
    parts: ClassVar[tuple[str, ...]] = ()

    def check(self, tokenizer: Any, prompts: Prompts, params: MasaCtrlParams) -> None:
        if params.mask_words:
            self._word_maps(tokenizer, prompts, params, torch.device("cpu"))

    def invert(self, ctx: RunContext, latent: torch.Tensor, prompts: Prompts, params: MasaCtrlParams,
               inputs: Inputs) -> Tensors:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        return invert_source(ctx, schedule, latent, _source_prompt(prompts, params), params.inversion,
                             guidance=params.guidance, inner_steps=params.inner_steps, early_stop=params.early_stop)

    def edit(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: MasaCtrlParams,
             inputs: Inputs) -> EditOutput:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        source_prompt = _source_prompt(prompts, params)
        cond = ctx.encode_text([source_prompt, prompts.target])
        source = source_branch(ctx, params.inversion, inversion, source_prompt, params.steps)
        controllers: list[Controller] = []
        word_maps = None
        if params.mask_words:
            word_maps = self._word_maps(ctx.bundle.tokenizer, prompts, params, ctx.device)
            controllers.append(word_maps)
        subject = inputs.masks.get(SUBJECT_MASK.name)
        masks = None if subject is None else (subject, inputs.masks.get(TARGET_MASK.name, subject))
        controllers.append(MutualSelfAttention(int(params.control_start * params.steps), params.layers,
                                               masks, word_maps))
        edit_mask = inputs.masks.get(EDIT_MASK.name)
        run = Sampling(cond, source.uncond[:, None].expand(-1, 2, -1, -1), params.guidance, controllers,
                       source.correct, None if edit_mask is None else MaskBlend(edit_mask))
        z_T = inversion["latents"][-1:].to(ctx.device).expand(2, -1, -1, -1)
        z = denoise(ctx, schedule, z_T, run, stage=Stage.EDITING)
        return EditOutput(z[1:2], z[0:1], edit_mask, None if edit_mask is None else EDIT_MASK.name)

    def _word_maps(self, tok: Any, prompts: Prompts, params: MasaCtrlParams, device: torch.device) -> WordMaps:
        source_prompt = _source_prompt(prompts, params)
        rows = pair_word_masks(tok, source_prompt, prompts.target, params.mask_words)
        if not rows[0].any() or not rows[1].any():
            where = "the target prompt" if rows[0].any() else (
                "the inversion prompt (empty: set inversion_prompt=source)" if not source_prompt else "the source prompt")
            raise PromptError(f"Mask words must name the subject in both prompts; none is in {where}.")
        return WordMaps(rows.to(device), params.mask_threshold)


def _source_prompt(prompts: Prompts, params: MasaCtrlParams) -> str:
    return "" if params.inversion_prompt == "empty" else prompts.source
