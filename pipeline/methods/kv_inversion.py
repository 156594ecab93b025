"""`kv-inversion`: KV Inversion (Huang, Liu, Qin, Chen; paper 000): learned keys and values that keep the
photo's content while the target prompt changes its action.

No public code exists; this follows the paper's Algorithm 1, with every choice it leaves open stated
where it is made (pipeline.control.cp_attention, pipeline.inversion.kv_tuning) and summarised here:

1. Inversion (stored): DDIM inversion of the photo with the source prompt at the edit's guidance
   (7.5, as Algorithm 1) gives the supervision trajectory z*_0..z*_T (`latents`).
2. Tuning (stored with it, since it depends on the photo and source prompt only): for each step,
   psi_t of every upgraded self-attention layer, learned so that one guided DDIM step with
   CP-attention lands on z*_{t-1}; null-text's learning-rate decay and early stop, with a first
   learning rate measured per form (LEARNING_RATES); first iterate = plain self-attention.
3. Edit (cheap, repeatable): a [reconstruction, target] pair from z*_T at the same guidance. The
   reconstruction row (source prompt) uses psi_t at every step and retraces the tuning; the target
   row (target prompt) attends with the reconstruction's upgraded keys and values from `cp_start`
   on, in both guidance halves (Algorithm 1 gives psi_t to the unconditional pass as well). A mask
   confines the edit: outside it the target follows the reconstruction after every step.

Controls from the paper's ablation are parameters: the upgraded part of the UNet (`layers`, decoder
by default, the paper's best), the step CP-attention starts at in the edit (`cp_start`), guidance,
steps, and a mask, painted (`edit_mask`) or of the subject (`subject_mask`, e.g. from segmentation,
grown by `mask_grow` so a new pose has room). The paper uses SAM's mask; its size margin is not given.
`cp_start` defaults to 0.5, the middle of the paper's sweep (from 0.1 the edit copies the photo's
pose, from 0.9 it loses its identity); the paper states no default, and the demo models cannot
measure one (on them CP-attention barely changes an action edit at any start). A target equal to
its source reproduces the reconstruction exactly only with `cp_start` 0: before the start the
target is plain guided sampling from z*_T, which drifts at guidance 7.5.

Storage (`form`): `full` keeps K-hat and V-hat themselves (the paper's parameters) in fp16: with
SD 1.x's nine decoder self-attention layers at 512x512 that is 27.5 MB per step and guidance half,
2.75 GB for 50 steps. `low-rank` (the default) learns K-hat = K + L R, a rank-4 delta to the
source's own keys (which an edit recomputes in its reconstruction row): 0.73 MB per step, 37 MB for
50 steps (both sizes follow from the layer shapes; bench/bench_kv_inversion.py measures them). On the demo model it reconstructs as well as the full form (bench/bench_kv_inversion.py
--demo, guidance 7.5, latent MSE of the reconstruction: 0.0023 against 0.0028 at 10 steps, 0.00094
against 0.00095 at 20 and 50; without early stop at 50 steps 0.00013 against 0.00012), so
the default is the form a project can afford to keep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from pipeline.control.blend import MaskBlend
from pipeline.control.cp_attention import FORMS, LAYER_CHOICES, CPAttention, StoredKV
from pipeline.events import Stage
from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.kv_tuning import kv_tune
from pipeline.methods.base import EDIT_MASK, EditOutput, Inputs, InputSpec, Prompts, Tensors
from pipeline.params import param
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, Sampling, denoise

# Adam's first-step learning rate of each form: the best of 0.01 (null-text's), 0.03 and 0.1 for the
# final latent error on the demo model (two photos, 10 and 20 steps); at 0.01 the error is 2-5 times
# larger for the full form and 20-50 times for the low-rank one.
LEARNING_RATES = {"full": 0.03, "low-rank": 0.1}

SUBJECT_MASK = InputSpec(
    "subject_mask", "mask", "Subject in the photo",
    "White on the subject (painted or from segmentation): the edit stays on it, grown by mask_grow; "
    "elsewhere the result follows the reconstruction.", bounds=True,
)


@dataclass(frozen=True)
class KVInversionParams:
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (EDIT_MASK, SUBJECT_MASK)

    steps: int = param(50, kind="int", stage="inversion", minimum=5, maximum=200, help="DDIM steps.")
    guidance: float = param(
        7.5, kind="float", stage="inversion", minimum=1.0, maximum=20.0,
        help="Classifier-free guidance of the inversion, the tuning and the edit (the paper uses 7.5 for all three).",
    )
    layers: str = param(
        "decoder", kind="choice", stage="inversion", choices=LAYER_CHOICES,
        help="Self-attention layers upgraded to content-preserving attention: decoder (the paper's best), "
        "encoder, middle, or all (keeps the photo's texture too strongly).",
    )
    form: str = param(
        "low-rank", kind="choice", stage="inversion", choices=FORMS,
        help="How the learned keys and values are stored: low-rank (a small delta to the photo's own keys; "
        "tens of MB per project at 512 px) or full (the paper's parameters; gigabytes at 512 px).",
    )
    rank: int = param(4, kind="int", stage="inversion", minimum=1, maximum=64,
                      help="Low-rank form: rank of the learned delta per layer and step.")
    inner_steps: int = param(10, kind="int", stage="inversion", minimum=1, maximum=100,
                             help="Most Adam steps per timestep of the tuning.")
    early_stop: bool = param(
        True, kind="bool", stage="inversion",
        help="Stop a timestep's tuning once the loss is below 1e-5 + i * 2e-5 (null-text's rule).",
    )
    learning_rate: float = param(
        0.0, kind="float", stage="inversion", minimum=0.0, maximum=1.0,
        help="Adam's learning rate at the first step (it decays as null-text's); 0: the form's own "
        "(0.03 full, 0.1 low-rank, the best measured on the demo model).",
    )
    cp_start: float = param(
        0.5, kind="step_fraction", minimum=0.0, maximum=1.0,
        help="When the target starts reading the photo's learned keys and values: earlier keeps more of the "
        "photo (0.1 copies its pose), later follows the prompt more (0.9 loses its identity).",
    )
    mask_grow: float = param(
        0.06, kind="float", minimum=0.0, maximum=0.5,
        help="How far the subject mask is grown, as a fraction of the longer side, so a new pose has room.",
    )


class KVInversion:
    """KV Inversion: per-step learned self-attention keys and values (paper 000)."""

    id: ClassVar[str] = "kv-inversion"
    title: ClassVar[str] = "KV Inversion"
    summary: ClassVar[str] = (
        "Change an action or pose: keys and values learned per step in the decoder's self-attention "
        "keep the photo's texture and identity while the new prompt sets the action (tunes once per photo)."
    )
    Params = KVInversionParams
    parts: ClassVar[tuple[str, ...]] = ()

    def check(self, tokenizer: Any, prompts: Prompts, params: KVInversionParams) -> None:
        return None

    def invert(self, ctx: RunContext, latent: torch.Tensor, prompts: Prompts, params: KVInversionParams,
               inputs: Inputs) -> Tensors:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        cond, uncond = ctx.encode_text([prompts.source]), ctx.encode_text([""])
        trajectory = ddim_invert(ctx, schedule, latent, cond, uncond=uncond, scale=params.guidance)
        tuned = kv_tune(ctx, schedule, trajectory, cond, uncond, layers=params.layers, form=params.form,
                        rank=params.rank, guidance=params.guidance, inner_steps=params.inner_steps,
                        early_stop=params.early_stop,
                        learning_rate=params.learning_rate or LEARNING_RATES[params.form])
        return {"latents": trajectory, **tuned.tensors}

    def edit(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: KVInversionParams,
             inputs: Inputs) -> EditOutput:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        cp = CPAttention(StoredKV(inversion), start_step=int(params.cp_start * params.steps))
        region = edit_region(inputs, params.mask_grow)
        uncond = ctx.encode_text([""]).expand(params.steps, 2, -1, -1)
        run = Sampling(ctx.encode_text([prompts.source, prompts.target]), uncond, params.guidance, [cp],
                       blend=None if region is None else MaskBlend(region))
        z_T = inversion["latents"][-1:].to(ctx.device).expand(2, -1, -1, -1)
        z = denoise(ctx, schedule, z_T, run, stage=Stage.EDITING)
        painted_only = region is not None and SUBJECT_MASK.name not in inputs.masks
        return EditOutput(z[1:2], z[0:1], region, EDIT_MASK.name if painted_only else None)


def edit_region(inputs: Inputs, grow: float) -> torch.Tensor | None:
    """Where the edit may change the photo: the painted mask, the subject mask grown by `grow` of the
    latent's longer side (at least one latent cell when grow > 0), or their union; None if neither."""
    painted, subject = inputs.masks.get(EDIT_MASK.name), inputs.masks.get(SUBJECT_MASK.name)
    if subject is not None and grow > 0:
        cells = math.ceil(grow * max(subject.shape[-2:]))
        subject = F.max_pool2d(subject.float(), 2 * cells + 1, stride=1, padding=cells)
    if painted is None or subject is None:
        return painted if subject is None else subject
    return torch.maximum(painted, subject)
