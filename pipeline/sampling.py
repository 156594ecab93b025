"""The DDIM step, its inverse, and the one denoising loop every method samples with.

The step formulas are written once, on top of the model's own `alphas_cumprod` table (diffusers
builds it), exactly as the reference null-text code does: the last step lands on
`final_alpha_cumprod` (alphas_cumprod[0] with set_alpha_to_one False), and the inverse step of
timestep t moves from t - stride to t. Methods differ only in the embeddings they feed and the
hooks they install (attention control, per-step latent blend); previews, progress and cancellation
are the loop's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from pipeline.attention import AttentionHub
from pipeline.run import RunContext

Blend = Callable[[int, torch.Tensor], torch.Tensor]


class DDIMSchedule:
    """The timesteps of an N-step DDIM run and the deterministic step between noise levels."""

    def __init__(self, scheduler: DDIMScheduler, steps: int) -> None:
        table = DDIMScheduler.from_config(scheduler.config)  # never mutate the bundle's scheduler
        table.set_timesteps(steps)
        self.steps = steps
        self.timesteps: list[int] = [int(t) for t in table.timesteps]  # descending, e.g. 981 ... 1
        self.stride = table.config.num_train_timesteps // steps
        self._alphas = table.alphas_cumprod.to(torch.float64)
        self._final = float(table.final_alpha_cumprod)

    def alpha(self, t: int) -> float:
        """alphas_cumprod at timestep t; below 0, the final value the last step lands on."""
        return float(self._alphas[t]) if t >= 0 else self._final

    def step(self, eps: torch.Tensor, t: int, z: torch.Tensor) -> torch.Tensor:
        """z_t -> z_{t-stride}: the deterministic (eta = 0) DDIM update."""
        return _move(z, eps, self.alpha(t), self.alpha(t - self.stride))

    def inverse_step(self, eps: torch.Tensor, t: int, z: torch.Tensor) -> torch.Tensor:
        """z_{t-stride} -> z_t with the noise predicted at timestep t (DDIM inversion)."""
        return _move(z, eps, self.alpha(t - self.stride), self.alpha(t))

    def predict_x0(self, eps: torch.Tensor, t: int, z: torch.Tensor) -> torch.Tensor:
        """The clean latent the model currently predicts (for previews)."""
        return _move(z, eps, self.alpha(t), 1.0)


def _move(z: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """Re-noise z from level a_from to a_to along the predicted noise: the DDIM step both ways."""
    x0 = (z - (1.0 - a_from) ** 0.5 * eps) / a_from**0.5
    return a_to**0.5 * x0 + (1.0 - a_to) ** 0.5 * eps


def guided_noise(
    ctx: RunContext,
    z: torch.Tensor,
    t: int,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    scale: float,
    *,
    precise: bool = False,
) -> torch.Tensor:
    """Classifier-free-guided noise for a batch; `uncond` None means the conditional branch only.

    The batch sent to the UNet is [uncond_0..uncond_{B-1}, cond_0..cond_{B-1}], the layout the
    attention controllers rely on (the conditional half is the second half).
    """
    if uncond is None:
        return ctx.unet_noise(z, t, cond, precise=precise)
    eps = ctx.unet_noise(torch.cat([z, z]), t, torch.cat([uncond, cond]), precise=precise)
    eps_uncond, eps_cond = eps.chunk(2)
    return eps_uncond + scale * (eps_cond - eps_uncond)


@dataclass
class Sampling:
    """What one denoising run feeds the model: per-step unconditional embeddings or none."""

    cond: torch.Tensor  # [B, 77, D]
    uncond: torch.Tensor | None  # [steps, B, 77, D]; None: conditional only (guidance 1)
    scale: float = 7.5
    hub: AttentionHub | None = None
    blend: Blend | None = None
    preview_index: int = -1  # which batch element the preview shows


def denoise(ctx: RunContext, schedule: DDIMSchedule, z: torch.Tensor, run: Sampling, stage: str) -> torch.Tensor:
    """Sample from z_T to z_0 with DDIM, calling the hooks at every step; returns z_0."""
    total = len(schedule.timesteps)
    ctx.start_stage(stage, total)
    for i, t in enumerate(schedule.timesteps):
        ctx.cancel.check()
        if run.hub is not None:
            run.hub.step = i
        uncond = None if run.uncond is None else run.uncond[i]
        with torch.no_grad():
            eps = guided_noise(ctx, z, t, run.cond, uncond, run.scale)
            if ctx.wants_preview:
                x0 = schedule.predict_x0(eps, t, z)
                ctx.preview(stage, i + 1, total, x0[run.preview_index : run.preview_index + 1 or None])
            z = schedule.step(eps, t, z)
            if run.blend is not None:
                z = run.blend(i, z)
        ctx.advance(i + 1)
    return z


def ddim_invert(
    ctx: RunContext, schedule: DDIMSchedule, z0: torch.Tensor, cond: torch.Tensor, stage: str = "DDIM inversion"
) -> torch.Tensor:
    """DDIM inversion at guidance 1 (conditional branch only): returns the trajectory z*_0 .. z*_T."""
    trajectory = [z0]
    z = z0
    ctx.start_stage(stage, schedule.steps)
    with torch.no_grad():
        for i, t in enumerate(reversed(schedule.timesteps)):
            ctx.cancel.check()
            z = schedule.inverse_step(ctx.unet_noise(z, t, cond), t, z)
            trajectory.append(z)
            ctx.advance(i + 1)
    return torch.cat(trajectory)
