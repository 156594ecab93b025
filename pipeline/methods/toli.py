"""`toli`: text optimisation with latent inversion and timestep-aware text injection (Jung et al.,
paper 001; authors' code YunjiJung0105/TOLI-non-rigid-editing), for non-rigid edits (pose, action).

Three stages, each cached by the engine on its own:
1. `invert`: the photo is inverted as the other methods do it (pipeline.inversion.source), by
   default null-text inversion at guidance 7.5 with the empty prompt (the paper finds "" keeps the
   structure better than the source prompt); DDIM, negative-prompt and direct inversion are options.
2. `tune` (`tune_on_target`): Imagic's text optimisation alone (pipeline.inversion.text_optimisation)
   turns the target prompt's embedding e_tgt into e_opt, with which the frozen model denoises the
   photo; the UNet is never fine-tuned. Only e_opt is stored, so a new eta or switch step re-samples
   from the stored tensors at once; a new target prompt re-optimises but keeps the inversion.
3. `edit`: from z*_T, the first k steps are conditioned on the inversion prompt's embedding, the
   others on eta * e_tgt + (1 - eta) * e_opt, always with the inversion's own unconditional branch
   (the per-step null embeddings of null-text inversion), at guidance 7.5.

Defaults, from the authors' code (Imagic_inversion.py, command.sh) and paper: null-text inversion with
source prompt "", 200 text optimisation steps at lr 1e-3 (the paper's and command.sh's count; the
script's argparse default is Imagic's 500), k = 10 of 50 steps (the argparse default; the paper calls
5 to 20 useful), 50 DDIM steps, guidance 7.5. eta: the script's default list is [0.0], which does not
edit at all, and its README sweeps 0.0 to 0.5; we default to 0.5, the strongest edit of that sweep.

Departures and choices:
- k is a fraction of the steps (`target_start`, 0.2 = step 10 of 50), so other step counts keep its place.
- Timesteps: the authors build their DDIM scheduler by hand in Imagic_inversion.py without
  `steps_offset` (a plain DiffusionPipeline with DDIMScheduler(beta_start=0.00085, ...)), so at 50
  steps they sample timesteps 980, 960, ..., 0; Retake uses the model's own scheduler config, whose
  `steps_offset: 1` gives SD's 981, 961, ..., 1, as every other method here. The shift is one
  training step per sampling step, but it is not negligible at few steps (at 10 steps on the
  CPU it alone moves x_T by 18%, measured beside the authors' code).
- The reconstruction branch (the inversion prompt, every step) is sampled beside the target only when
  it is needed: for a painted edit mask (outside it the target follows that branch at every step,
  MaskBlend) and for direct inversion (below). Otherwise the target is sampled alone, as the authors
  do, and `EditOutput.reconstruction` is None.
- Direct inversion, as the authors use it: the source branch's offset onto the inversion trajectory
  (z*_{t-1} minus what its own guided step produced) is added to the target as well, not to the
  source alone as in PnP Inversion; TOLI has no attention control through which a corrected source
  could reach the target. The offset is taken from the source row during editing (the authors
  precompute it in a separate pass; see pipeline.inversion.source).
- At guidance 1 (the authors' setting with DDIM inversion: `inversion=ddim guidance=1`) only the
  conditional branch runs; the authors compute the unconditional one too, which changes nothing there.
- The text optimisation's departures (generator, fp32, VAE mean) are in its module.

Measured on the demo models (bench/toli_reconstruction.py): eta = 0 with a target equal to the
source does not give the photo back at guidance 7.5 (relative latent error 0.80-0.85 against
null-text's 0.035-0.038): after the switch the text is the optimised embedding, which the frozen
model reads differently from the inversion prompt the null embeddings were fitted to, and guidance
amplifies the difference. Only full source injection (`target_start=1`) is the null-text
reconstruction, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from pipeline.control.blend import MaskBlend
from pipeline.events import Stage
from pipeline.inversion.source import SourceInversionParams, invert_source, source_branch
from pipeline.inversion.text_optimisation import optimise_text_embedding
from pipeline.methods.base import EDIT_MASK, EditOutput, Inputs, InputSpec, Prompts, Tensors
from pipeline.params import param
from pipeline.run import RunContext, Step
from pipeline.sampling import Correction, DDIMSchedule, Sampling, denoise

OPTIMISED = "optimised_embedding"


@dataclass(frozen=True)
class ToliParams(SourceInversionParams):
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (EDIT_MASK,)

    inversion_prompt: str = param(
        "empty", kind="choice", stage="inversion", choices=("empty", "source"),
        help="Prompt of the inversion and of the first steps: empty (the paper's default; keeps the structure "
        "better) or the source prompt.",
    )
    eta: float = param(
        0.5, kind="float", minimum=0.0, maximum=2.0,
        help="Edit strength: the text after the switch is eta * target + (1 - eta) * optimised; 0 keeps what the "
        "optimised text reproduces of the photo, 1 is the plain target prompt.",
    )
    target_start: float = param(
        0.2, kind="step_fraction", minimum=0.0, maximum=1.0,
        help="When the text switches from the inversion prompt to the edit (0.2 = step 10 of 50); later keeps "
        "more of the photo's structure (0.1-0.4 useful).",
    )
    text_steps: int = param(
        200, kind="int", stage="tuning", minimum=1, maximum=2000,
        help="Adam steps of the text optimisation (200 in the paper, 500 in Imagic).",
    )
    text_learning_rate: float = param(
        1e-3, kind="float", stage="tuning", minimum=1e-5, maximum=1e-1,
        help="Learning rate of the text optimisation.",
    )


class Toli:
    """Text optimisation + latent inversion + timestep-aware text injection (paper 001)."""

    id: ClassVar[str] = "toli"
    title: ClassVar[str] = "TOLI"
    summary: ClassVar[str] = (
        "Change pose or action: the target prompt's embedding is optimised to reproduce the photo, the first "
        "steps follow the photo's inversion, then eta blends in the target; no attention control, no fine-tuning."
    )
    Params = ToliParams
    parts: ClassVar[tuple[str, ...]] = ()
    tune_on_target: ClassVar[bool] = True

    def check(self, tokenizer: Any, prompts: Prompts, params: ToliParams) -> None:
        """Any prompt pair works: TOLI names no words."""

    def invert(self, ctx: RunContext, latent: torch.Tensor, prompts: Prompts, params: ToliParams,
               inputs: Inputs) -> Tensors:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        return invert_source(ctx, schedule, latent, _source_prompt(prompts, params), params.inversion,
                             guidance=params.guidance, inner_steps=params.inner_steps, early_stop=params.early_stop)

    def tune(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: ToliParams,
             inputs: Inputs) -> Tensors:
        """Optimise the target prompt's embedding on the photo's latent z*_0."""
        photo = inversion["latents"][:1].to(ctx.device)
        result = optimise_text_embedding(ctx, photo, ctx.encode_text([prompts.target]), params.text_steps,
                                         params.text_learning_rate)
        return {OPTIMISED: result.embedding}

    def edit(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: ToliParams,
             inputs: Inputs) -> EditOutput:
        schedule = DDIMSchedule(ctx.bundle.scheduler, params.steps)
        source_prompt = _source_prompt(prompts, params)
        source, target = ctx.encode_text([source_prompt, prompts.target]).split(1)
        mixed = params.eta * target + (1.0 - params.eta) * inversion[OPTIMISED].to(ctx.device)
        text = text_schedule(source, mixed, params.steps, int(params.target_start * params.steps))
        branch = source_branch(ctx, params.inversion, inversion, source_prompt, params.steps)
        mask = inputs.masks.get(EDIT_MASK.name)
        with_source = mask is not None or branch.correct is not None
        if with_source:  # rows [reconstruction, target]
            text = torch.cat([source.expand(params.steps, -1, -1)[:, None], text], dim=1)
        rows = text.shape[1]
        uncond = None if params.guidance == 1.0 else branch.uncond[:, None].expand(-1, rows, -1, -1)
        run = Sampling(text, uncond, params.guidance, (),
                       None if branch.correct is None else SharedOffset(branch.correct),
                       None if mask is None else MaskBlend(mask))
        z_T = inversion["latents"][-1:].to(ctx.device).expand(rows, -1, -1, -1)
        z = denoise(ctx, schedule, z_T, run, stage=Stage.EDITING)
        return EditOutput(z[-1:], z[:1] if with_source else None, mask, None if mask is None else EDIT_MASK.name)


def text_schedule(source: torch.Tensor, edit: torch.Tensor, steps: int, switch: int) -> torch.Tensor:
    """Timestep-aware text injection: `source` [1, 77, D] for steps 0..switch-1, `edit` after; [steps, 1, 77, D]."""
    return torch.cat([source.expand(switch, -1, -1), edit.expand(steps - switch, -1, -1)])[:, None]


@dataclass(frozen=True)
class SharedOffset:
    """A source-branch correction whose offset moves every row: the source lands on the inversion
    trajectory and the target follows it by the same amount (the TOLI authors' direct inversion)."""

    correct: Correction

    def __call__(self, step: Step, z: torch.Tensor) -> torch.Tensor:
        source = self.correct(step, z)[:1]
        return torch.cat([source, z[1:] + (source - z[:1])])


def _source_prompt(prompts: Prompts, params: ToliParams) -> str:
    return "" if params.inversion_prompt == "empty" else prompts.source
