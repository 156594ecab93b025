"""`specref`: a Prompt-to-Prompt edit that takes the look of its new object from a reference picture
(SpecRef, paper 003; the authors' code: jingjiqinggong/specp2p, script aspecp2p.py).

Stages:
- invert: the photo, as p2p offers (pipeline.inversion.source). Default `direct`: the authors invert
  the photo with its prompt at guidance 1 and overwrite the source latent with the inversion latent
  before every editing step ("follow the inversion latents", their opt 2). Direct inversion's
  correction after each step gives the same latents, and makes one more correction after the last
  step, for which the overwrite has no step: the source reconstruction lands exactly on the inverted
  z*_0 where the authors' stays one uncorrected step away. The target reads the source only through
  attention before that last correction, so the target does not change.
- tune (cached apart from the inversion, keyed by the reference picture, its prompt and the layers):
  DDIM inversion of the reference at guidance 1 with its prompt (often ""), recording the keys and
  values of the controlled self-attention layers at every step, stored in fp16
  (pipeline.control.specref). A new reference re-inverts only the reference; a new target prompt, a
  new mask or new edit parameters re-invert nothing.
- edit: a P2P edit of the photo (replace or refine, reweighting, local blend; p2p_edit) plus
  SR-attention: from step 4 of 50 to the end, in transformer layers 10-15 (MasaCtrl's "decoder-fine"
  place), the target's conditional queries also attend to the reference's stored keys and values of
  the same timestep, keys outside mask_s hidden, blended in by mask_t (the target words' thresholded
  cross-attention, or a painted mask).

Defaults from the authors' script: a replace edit with cross-attention replaced for 0.8 of the
steps and self-attention for 0.6, local blend of the changed words at threshold 0.3 from step 0.2,
SR-attention for steps 4..50 and layers 10..16, mask_t threshold 0.5, guidance 7.5.

Choices and departures:
- Words: the authors name the target word (for mask_t) and the blend words by hand ("dog"; "cat" and
  "dog"). Here `reference_words` defaults to the target's words the source lacks, and the blend words
  to the words either prompt lacks plus the reference words; both can be named.
- mask_s is an edit-stage input: the stored keys and values do not depend on it, so a repainted mask
  re-edits without re-inverting the reference. An empty mask_s (or one that a layer's grid leaves
  empty) means no reference attention there; the edit is then the plain P2P edit.
- In the controlled layers the authors' SR layer bypasses P2P's self-attention replacement for the
  target (it replaces the whole attention call); here the reference attention is blended over the
  P2P-controlled output, so outside mask_t the edit is exactly P2P's.
- mask_t averages the maps of all steps so far, as the authors' code does (see
  pipeline.control.specref for why we keep it).
- The step range is a fraction of the steps (0.08 = step 4 of 50); the reference is resized to the
  photo's working size (theirs: both squashed to 512x512).
- The DDIM schedule is the house's (set_alpha_to_one False: the last step lands on
  alphas_cumprod[0]); the authors' script sets it True (the last step lands on alpha 1). That is the
  one setting that separates the two on identical weights, and it is not small: run beside the
  authors' code on an SD-1.5-shaped model with the same photo and prompts, it moves x_T by 3.6e-2
  (relative) and the edit to 26.5 dB against theirs; with it matched, the two agree to 76-78 dB.
- Memory: 50 steps of keys and values of layers 10-15 at 512x512 are about 1.1 GiB in fp16; they live
  on the CPU (and in the project) and only the current step's (about 23 MiB) is on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from pipeline.control.contract import Controller
from pipeline.control.masactrl import LAYER_CHOICES
from pipeline.control.p2p import step_span
from pipeline.control.specref import (
    FixedRegion, KeyValueRecorder, ReferenceAttention, TargetWordRegion, stored_reference,
)
from pipeline.errors import PromptError
from pipeline.events import Stage
from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.source import INVERSION_HELP, INVERSIONS
from pipeline.methods.base import EDIT_MASK, EditOutput, Inputs, InputSpec, Prompts, Tensors
from pipeline.methods.p2p import P2PParams, PromptToPrompt, p2p_controllers, p2p_edit
from pipeline.params import param
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule
from pipeline.text import prompt_words, word_mask

REFERENCE = InputSpec(
    "reference", "image", "Reference picture",
    "A picture of the object the edit should bring in (its prompt may describe it, or stay empty).",
    stage="tuning", required=True,
)
REFERENCE_MASK = InputSpec(
    "reference_mask", "mask", "Object in the reference",
    "mask_s: white on the object in the reference picture (painted or from segmentation).",
    required=True, picture="reference",
)
REFERENCE_REGION = InputSpec(
    "reference_region", "mask", "Where the reference goes",
    "mask_t: white where the result takes the reference (default: where the reference words attend).",
)


@dataclass(frozen=True)
class SpecRefParams(P2PParams):
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (REFERENCE, REFERENCE_MASK, REFERENCE_REGION, EDIT_MASK)

    inversion: str = param("direct", kind="choice", stage="inversion", choices=INVERSIONS, help=INVERSION_HELP)
    self_replace: tuple[float, float] = param(
        (0.0, 0.6), kind="step_range", minimum=0.0, maximum=1.0,
        help="Steps in which the target takes the source's self-attention maps (the authors use 0.6 here).",
    )
    blend_words: tuple[str, ...] = param(
        (), kind="words",
        help="Local blend: words whose region may change (default: the words either prompt lacks, and the "
        "reference words).",
    )
    local_blend: bool = param(True, kind="bool", help="Keep the photo outside the blend words' region.")
    reference_steps: tuple[float, float] = param(
        (0.08, 1.0), kind="step_range", minimum=0.0, maximum=1.0,
        help="Steps in which the target attends to the reference (0.08 = from step 4 of 50, the authors').",
    )
    reference_layers: str = param(
        "decoder-fine", kind="choice", stage="tuning", choices=LAYER_CHOICES,
        help="Self-attention layers that attend to the reference: decoder-fine (transformer layers 10-15 of "
        "SD 1.x, the authors'), decoder, or all. Their keys and values are what the reference inversion keeps.",
    )
    reference_words: tuple[str, ...] = param(
        (), kind="words",
        help="Target words whose attention marks where the reference goes (mask_t; default: the target's words "
        "the source lacks). A painted reference_region replaces it.",
    )
    region_threshold: float = param(
        0.5, kind="float", minimum=0.0, maximum=1.0,
        help="Threshold of mask_t on the reference words' normalised attention (the authors: 0.5 for a "
        "replace edit, 0.3 for refine).",
    )


class SpecRef(PromptToPrompt):
    """Specific-reference editing on top of Prompt-to-Prompt (paper 003); the photo's inversion is p2p's."""

    id: ClassVar[str] = "specref"
    title: ClassVar[str] = "SpecRef"
    summary: ClassVar[str] = (
        "Replace an object with the one in a reference picture: a word swap whose new object takes its "
        "look from the reference's keys and values inside the masks."
    )
    Params = SpecRefParams
    tune_on_target: ClassVar[bool] = False

    def check(self, tokenizer: Any, prompts: Prompts, params: SpecRefParams) -> None:
        """Word errors before any inversion. Named reference words must be in the target prompt; whether
        there are any is asked only in `edit`, where a painted mask_t makes them unnecessary."""
        p2p_controllers(tokenizer, prompts, params, torch.device("cpu"), blend_words(tokenizer, prompts, params))
        word_mask(tokenizer, prompts.target, params.reference_words)

    def tune(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: SpecRefParams,
             inputs: Inputs) -> Tensors:
        """Invert the reference (DDIM, guidance 1, its own prompt), keeping its keys and values per step."""
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        recorder = KeyValueRecorder(params.reference_layers, schedule.timesteps)
        cond = ctx.encode_text([inputs.prompts.get(REFERENCE.name, "")])
        trajectory = ddim_invert(ctx, schedule, inputs.images[REFERENCE.name], cond, Stage.REFERENCE_INVERSION,
                                 controllers=[recorder])
        return {"reference_latents": trajectory, **recorder.tensors()}

    def edit(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: SpecRefParams,
             inputs: Inputs) -> EditOutput:
        tok = ctx.bundle.tokenizer
        object_mask = inputs.masks[REFERENCE_MASK.name]
        painted = inputs.masks.get(REFERENCE_REGION.name)
        extra: list[Controller] = []
        if bool(object_mask.any()):  # an empty mask_s leaves nothing to attend to: the plain P2P edit
            if painted is not None:
                region: FixedRegion | TargetWordRegion = FixedRegion(painted)
            else:
                words = word_mask(tok, prompts.target, reference_words(tok, prompts, params))
                region = TargetWordRegion(words.to(ctx.device), params.region_threshold)
                extra.append(region)  # after the editor: it reads the maps the target actually uses
            reference, timesteps = stored_reference(inversion)
            span = step_span(params.reference_steps, params.steps)
            extra.append(ReferenceAttention(reference, timesteps, span, object_mask, region))
        return p2p_edit(ctx, inversion, prompts, params, inputs, blend_words=blend_words(tok, prompts, params),
                        extra=extra)


def reference_words(tok: Any, prompts: Prompts, params: SpecRefParams) -> tuple[str, ...]:
    """The target words whose attention is mask_t: the named ones, else the target's words the source lacks."""
    words = params.reference_words or _missing_words(tok, prompts.target, prompts.source)
    if not words:
        raise PromptError("Say where the reference goes: name its word in the target prompt "
                          "(--param reference_words=WORD) or paint a reference_region mask.")
    return words


def blend_words(tok: Any, prompts: Prompts, params: SpecRefParams) -> tuple[str, ...]:
    """The local blend's words: the named ones, else the words either prompt lacks and the reference words."""
    if not params.local_blend:
        return ()
    if params.blend_words:
        return params.blend_words
    changed = _missing_words(tok, prompts.source, prompts.target) + _missing_words(tok, prompts.target, prompts.source)
    return tuple(dict.fromkeys(changed + params.reference_words))


def _missing_words(tok: Any, prompt: str, other: str) -> tuple[str, ...]:
    """The words of `prompt` that `other` does not have, in order, once each."""
    others = {w.text for w in prompt_words(tok, other)}
    return tuple(dict.fromkeys(w.text for w in prompt_words(tok, prompt) if w.text not in others))
