"""How the source branch of an edit is reproduced, for every inversion a method may offer.

All of them start from DDIM inversion at guidance 1 with the source prompt (the trajectory
z*_0..z*_T, stored as `latents`). They differ in what guided sampling of the source branch uses:

- `null-text`: per-step optimised unconditional embeddings (Mokady et al.), stored as `null_embeddings`.
- `negative-prompt`: the source prompt's embedding as the unconditional one (no optimisation).
- `direct`: PnP Inversion (Ju et al., ICLR 2024; cure-lab/PnPInversion): the empty unconditional
  embedding, and after every editing step the source branch is corrected by the difference between
  the stored inverted latent z*_{t-1} and the latent its own guided step produced, so it lands on the
  inversion trajectory exactly while the target is edited through attention control. The authors
  compute those differences in a separate guided pass at inversion time (`offset_calculate`) and add
  them during editing; the controllers never touch the source rows, so the source branch's step
  during editing is the very computation that pass made, and the difference taken there and then is
  the same number without the extra pass (and exact when sampling runs in fp16 while the pass
  would not). Its inversion therefore costs what DDIM inversion costs. As in their default
  (`direct_inversion_p2p_guidance_forward`), only the source branch is corrected, the correction
  comes before the local blend, and the guidance is the edit's (7.5).
- `ddim`: the empty unconditional embedding and no correction (the baseline that drifts at 7.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.null_text import null_text_optimise
from pipeline.params import param
from pipeline.run import RunContext, Step
from pipeline.sampling import Correction, DDIMSchedule

INVERSIONS = ("null-text", "negative-prompt", "direct", "ddim")
INVERSION_HELP = (
    "How the photo is inverted: null-text (optimised, best fidelity, about a minute on a GPU), "
    "direct (PnP Inversion: the source branch is corrected onto the inversion every step; as fast as DDIM), "
    "negative-prompt (instant, source prompt as negative prompt), ddim (plain, drifts at high guidance)."
)
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SourceInversionParams:
    """The inversion parameters every method built on `invert_source` shares (fields first in its Params).

    A method changes a default by declaring the field again, with the same spec otherwise.
    """

    inversion: str = param("null-text", kind="choice", stage="inversion", choices=INVERSIONS, help=INVERSION_HELP)
    steps: int = param(50, kind="int", stage="inversion", minimum=5, maximum=200, help="DDIM steps.")
    guidance: float = param(
        7.5, kind="float", stage="inversion", minimum=1.0, maximum=20.0,
        help="Classifier-free guidance scale of the edit; null-text inversion is optimised for this value.",
    )
    inner_steps: int = param(10, kind="int", stage="inversion", minimum=1, maximum=100,
                             help="Null-text: most Adam steps per timestep.")
    early_stop: bool = param(
        True, kind="bool", stage="inversion",
        help="Null-text: stop a timestep's optimisation once the loss is below 1e-5 + i * 2e-5.",
    )


def invert_source(
    ctx: RunContext,
    schedule: DDIMSchedule,
    latent: torch.Tensor,
    prompt: str,
    kind: str,
    *,
    guidance: float,
    inner_steps: int,
    early_stop: bool,
) -> Tensors:
    """DDIM-invert the photo's latent [1, C, h, w] with `prompt`; add null-text embeddings if asked."""
    cond = ctx.encode_text([prompt])
    trajectory = ddim_invert(ctx, schedule, latent, cond)
    result = {"latents": trajectory}
    if kind == "null-text":
        result["null_embeddings"] = null_text_optimise(
            ctx, schedule, trajectory, cond, ctx.encode_text([""]), guidance, inner_steps, early_stop,
        ).embeddings
    return result


@dataclass(frozen=True)
class SourceBranch:
    """What sampling needs to reproduce the source: per-step unconditional embeddings and a correction."""

    uncond: torch.Tensor  # [steps, 77, D]
    correct: Correction | None


def source_branch(ctx: RunContext, kind: str, inversion: Tensors, prompt: str, steps: int) -> SourceBranch:
    """The source branch of `kind` from a stored inversion (see the module doc)."""
    if kind == "null-text":
        return SourceBranch(inversion["null_embeddings"].to(ctx.device), None)
    uncond = ctx.encode_text([prompt if kind == "negative-prompt" else ""]).expand(steps, -1, -1)
    correct = FollowTrajectory(inversion["latents"].to(ctx.device)) if kind == "direct" else None
    return SourceBranch(uncond, correct)


@dataclass(frozen=True)
class FollowTrajectory:
    """Source-branch correction: after step i, row 0 moves by z*_{t-1} minus what its step produced."""

    trajectory: torch.Tensor  # z*_0 .. z*_T

    def __call__(self, step: Step, z: torch.Tensor) -> torch.Tensor:
        landed = self.trajectory[step.total - step.index - 1].to(z)
        offset = landed - z[:1]
        return torch.cat([z[:1] + offset, z[1:]])
