"""Imagic's first stage (Kawar et al., CVPR 2023): optimise a text embedding until the frozen model,
conditioned on it, denoises one photo well.

Only the embedding learns; the UNet, VAE and text encoder stay frozen (TOLI keeps Imagic's text
optimisation and replaces its UNet fine-tuning with a latent inversion). Each iteration draws a
timestep t uniformly from the model's training range and a Gaussian noise, noises the photo's latent
by the forward process (z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) noise) and takes one Adam step on the
mean squared error between the UNet's noise prediction and that noise, as the TOLI authors' Imagic
pipeline does (batch 1, learning rate 1e-3, no schedule).

Departures from the authors' code (state them where they matter):
- Every draw comes from the run's own generator (`RunContext.generator`), timesteps first, then one
  noise per iteration, so a seeded run is reproducible and no run touches the global random state.
- The UNet runs in fp32 (`precise=True`), as everything optimised here does (on the fast path each
  iteration replays one captured CUDA graph under bf16 autocast, or uses TF32 matrix products when not
  captured: pipeline.optimise, pipeline.fast); so does the authors' training: accelerate only scales the loss there, and every UNet call runs with
  autocast off.
- The photo's latent is the VAE's mean (the latent the inversion starts from, z*_0) where the
  authors draw one sample from the VAE's posterior.
- No previews: a random timestep's prediction is not a picture of anything the user is heading for.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from pipeline.events import Stage
from pipeline.run import RunContext


class TextOptimisation(NamedTuple):
    """The optimised embedding and the loss of every iteration (before its Adam step)."""

    embedding: torch.Tensor  # [1, 77, D], fp32
    losses: torch.Tensor  # [iterations], fp32 on the CPU


def draw_timesteps(ctx: RunContext, iterations: int) -> list[int]:
    """The iterations' timesteps, uniform over the model's training range, from the run's generator."""
    train_steps = len(ctx.bundle.scheduler.alphas_cumprod)
    return torch.randint(train_steps, (iterations,), generator=ctx.generator).tolist()


def noised(ctx: RunContext, z0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
    """The forward process q(z_t | z_0): the photo's latent at noise level t."""
    alpha = float(ctx.bundle.scheduler.alphas_cumprod[t])
    return alpha**0.5 * z0 + (1.0 - alpha) ** 0.5 * noise


def optimise_text_embedding(
    ctx: RunContext,
    latent: torch.Tensor,
    embedding: torch.Tensor,
    iterations: int,
    learning_rate: float = 1e-3,
    stage: str = Stage.TEXT_OPTIMISATION,
) -> TextOptimisation:
    """Adam on `embedding` [1, 77, D] so the frozen UNet predicts the noise added to `latent` [1, C, h, w].

    Progress is reported after every iteration and cancellation checked before each (RunContext.steps).
    """
    z0 = latent.detach().float()
    learned = embedding.detach().float().clone().requires_grad_(True)
    inputs = ctx.loop_inputs()
    minimiser = ctx.minimiser([learned], lambda: F.mse_loss(ctx.unet_noise(inputs.noisy, inputs.t, learned,
                                                                             precise=True), inputs.noise))
    minimiser.restart(learning_rate)
    losses = []
    timesteps = draw_timesteps(ctx, iterations)
    # every iteration's noise drawn at once and moved to the device in one copy (no wait per iteration)
    noises = [torch.randn(z0.shape, generator=ctx.generator) for _ in timesteps]
    noises = torch.stack(noises).to(z0.device) if noises else z0.new_empty(0, *z0.shape)
    with torch.enable_grad():
        for step in ctx.steps(timesteps, stage):
            noise = noises[step.index]
            inputs.set(noisy=noised(ctx, z0, noise, step.timestep), t=step.timestep, noise=noise)
            losses.append(minimiser.run(1).losses)
    return TextOptimisation(learned.detach(), torch.cat(losses).cpu() if losses else torch.zeros(0))
