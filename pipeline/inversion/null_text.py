"""Null-text inversion (Mokady et al.): per-step unconditional embeddings that make guided DDIM
sampling retrace the DDIM-inversion trajectory.

DDIM inversion at guidance 1 gives the pivot trajectory z*_0..z*_T. Guided sampling at w = 7.5
drifts away from it; for each step we optimise the unconditional embedding so that one guided DDIM
step from the current latent lands on z*_{t-1}, then advance with it. Everything here runs in
fp32, whatever the sampling precision (the optimisation fails in fp16). On the fast path, with
`FastOptions.optimisation_graphs`, each step's Adam iterations replay one captured CUDA graph with the
early stop decided on the GPU (pipeline.optimise.Minimiser), under bf16 autocast
(`FastOptions.captured_optimise`: the reconstruction within 0.02% of the eager fp32 path's on an H100 at
512 px); without the capture its matrix products use TF32.

The authors' schedule is stated for 50 steps: learning rate 1e-2 * (1 - i/100) and early-stop
tolerance 1e-5 + i * 2e-5. For other step counts we keep the same start and end values, scaling i
by 50 / steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from pipeline.events import Stage
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, guided_noise, move

REFERENCE_STEPS = 50


def reference_schedule(index: int, steps: int, learning_rate: float) -> tuple[float, float]:
    """(learning rate, early-stop tolerance) at step `index` of `steps`: the authors' 50-step schedule
    1e-2 * (1 - i/100) and 1e-5 + i * 2e-5, with i scaled by 50 / steps (see the module doc)."""
    progress = index * REFERENCE_STEPS / steps
    return learning_rate * (1.0 - progress / 100.0), 1e-5 + progress * 2e-5


class NullTextResult(NamedTuple):
    """The optimised per-step embeddings and the latents z_T..z_0 the optimisation reached with them."""

    embeddings: torch.Tensor  # [steps, 77, D]
    latents: torch.Tensor  # [steps + 1, C, h, w], from z_T down


def null_text_optimise(
    ctx: RunContext,
    schedule: DDIMSchedule,
    trajectory: torch.Tensor,
    cond: torch.Tensor,
    null_init: torch.Tensor,
    scale: float,
    inner_steps: int,
    early_stop: bool = True,
    learning_rate: float = 1e-2,
    stage: str = Stage.NULL_TEXT,
) -> NullTextResult:
    """Optimise one unconditional embedding per step (fp32), each stored as its own tensor.

    trajectory: z*_0..z*_T as [steps + 1, C, h, w]; cond, null_init: [1, 77, D].
    """
    steps = schedule.steps
    z = trajectory[-1:].float()
    null = null_init.float().clone().requires_grad_(True)  # each step starts from the last one's optimum
    inputs = ctx.loop_inputs()

    def loss() -> torch.Tensor:
        eps_uncond = ctx.unet_noise(inputs.z, inputs.t, null, precise=True)
        eps = eps_uncond + scale * (inputs.eps_cond - eps_uncond)
        return F.mse_loss(move(inputs.z, eps, inputs.coefficients), inputs.target)

    minimiser = ctx.minimiser([null], loss)
    nulls = []
    reached = [z]
    for step in ctx.steps(schedule.timesteps, stage):
        i, t = step.index, step.timestep
        rate, tolerance = reference_schedule(i, steps, learning_rate)
        with torch.no_grad():
            eps_cond = ctx.unet_noise(z, t, cond, precise=True)
        inputs.set(z=z, t=t, eps_cond=eps_cond, target=trajectory[steps - i - 1 : steps - i].float(),
                   coefficients=schedule.step_coefficients(t))
        minimiser.restart(rate)
        minimiser.run(inner_steps, tolerance if early_stop else None)
        # A copy per step: Adam updates `null` in place, and a detached view would share storage with
        # the embedding stored for the previous step, so every stored step would end up as the last.
        nulls.append(null.detach().clone())
        with torch.no_grad():
            eps = guided_noise(ctx, z, step, cond, nulls[-1], scale, precise=True)
            if step.wants_preview:  # the reconstruction's predicted clean image with this step's null text
                step.preview(schedule.predict_x0(eps, t, z))
            z = schedule.step(eps, t, z)
        reached.append(z)
    return NullTextResult(torch.cat(nulls), torch.cat(reached))
