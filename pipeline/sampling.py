"""The DDIM step, its inverse, and the one denoising loop every method samples with.

The step formulas are written once, on top of the model's own `alphas_cumprod` table (diffusers
builds it), exactly as the reference null-text code does: the last step lands on
`final_alpha_cumprod` (alphas_cumprod[0] with set_alpha_to_one False), and the inverse step of
timestep t moves from t - stride to t. Every loop over the schedule (sampling, DDIM inversion,
null-text optimisation, and the training methods to come) iterates `RunContext.steps`, which owns
cancellation, progress, previews and the step state. Methods differ only in the embeddings they
feed, the controllers they pass with each UNet call, and two per-step hooks: a source-branch
correction (direct inversion, MasaCtrl's "follow the inversion latents") and a latent blend (local
blend, a painted mask), applied in that order after each step as in the PnP-Inversion code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from pipeline.control.blend import Blend
from pipeline.control.contract import Controller, ControlState, RowLayout
from pipeline.run import RunContext, Step

Correction = Callable[[Step, torch.Tensor], torch.Tensor]


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

    def step_coefficients(self, t: int) -> tuple[float, float, float, float]:
        """The four numbers of `step` at timestep t, for `move` (a captured step takes them as data)."""
        return _coefficients(self.alpha(t), self.alpha(t - self.stride))

    def inverse_step(self, eps: torch.Tensor, t: int, z: torch.Tensor) -> torch.Tensor:
        """z_{t-stride} -> z_t with the noise predicted at timestep t (DDIM inversion)."""
        return _move(z, eps, self.alpha(t - self.stride), self.alpha(t))

    def predict_x0(self, eps: torch.Tensor, t: int, z: torch.Tensor) -> torch.Tensor:
        """The clean latent the model currently predicts (for previews)."""
        return _move(z, eps, self.alpha(t), 1.0)


def _move(z: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """Re-noise z from level a_from to a_to along the predicted noise: the DDIM step both ways."""
    return move(z, eps, _coefficients(a_from, a_to))


def _coefficients(a_from: float, a_to: float) -> tuple[float, float, float, float]:
    return (1.0 - a_from) ** 0.5, a_from**0.5, a_to**0.5, (1.0 - a_to) ** 0.5


def move(z: torch.Tensor, eps: torch.Tensor, c: tuple[float, float, float, float] | torch.Tensor) -> torch.Tensor:
    """The DDIM move with its coefficients c (`DDIMSchedule.step_coefficients`), as floats or one tensor."""
    x0 = (z - c[0] * eps) / c[1]
    return c[2] * x0 + c[3] * eps


def control_state(
    controllers: Sequence[Controller], layout: RowLayout, step: Step, z: torch.Tensor
) -> ControlState | None:
    """The per-call state the attention processors read; None when no controller takes part. Each
    controller first prepares the step (`Controller.begin_step`: what it reads of this step, on the device)."""
    if not controllers:
        return None
    for controller in controllers:
        controller.begin_step(step.index, step.timestep, z.device)
    return ControlState(tuple(controllers), layout, step.index, step.timestep, (z.shape[-2], z.shape[-1]))


def guided_noise(
    ctx: RunContext,
    z: torch.Tensor,
    step: Step,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    scale: float,
    controllers: Sequence[Controller] = (),
    *,
    precise: bool = False,
) -> torch.Tensor:
    """Classifier-free-guided noise for a batch of prompts; `uncond` None means the conditional branch only.

    The batch sent to the UNet is [uncond_0..uncond_{B-1}, cond_0..cond_{B-1}] (RowLayout.guided).
    """
    prompts = z.shape[0]
    if uncond is None:
        state = control_state(controllers, RowLayout.single("cond", prompts), step, z)
        return ctx.unet_noise(z, step.timestep, cond, precise=precise, control=state)
    state = control_state(controllers, RowLayout.guided(prompts), step, z)
    eps = ctx.unet_noise(torch.cat([z, z]), step.timestep, torch.cat([uncond, cond]), precise=precise, control=state)
    eps_uncond, eps_cond = eps.chunk(2)
    return eps_uncond + scale * (eps_cond - eps_uncond)


@dataclass
class Sampling:
    """What one denoising run feeds the model, and the hooks it runs after each step."""

    cond: torch.Tensor  # [B, 77, D]; or [steps, B, 77, D], one per step (TOLI's source-then-target text)
    uncond: torch.Tensor | None  # [steps, B, 77, D]; None: conditional only (guidance 1)
    scale: float = 7.5
    controllers: Sequence[Controller] = ()
    correct: Correction | None = None
    blend: Blend | None = None
    preview_row: int = -1  # which batch row the preview shows
    grad: bool = False  # run with gradients (methods that learn through sampling)


def denoise(ctx: RunContext, schedule: DDIMSchedule, z: torch.Tensor, run: Sampling, stage: str) -> torch.Tensor:
    """Sample from z_T to z_0 with DDIM, calling the controllers and hooks at every step; returns z_0."""
    with torch.set_grad_enabled(run.grad):
        for step in ctx.steps(schedule.timesteps, stage):
            cond = run.cond[step.index] if run.cond.dim() == 4 else run.cond
            uncond = None if run.uncond is None else run.uncond[step.index]
            eps = guided_noise(ctx, z, step, cond, uncond, run.scale, run.controllers)
            if step.wants_preview:
                row = run.preview_row % z.shape[0]
                step.preview(schedule.predict_x0(eps[row : row + 1], step.timestep, z[row : row + 1]))
            z = schedule.step(eps, step.timestep, z)
            if run.correct is not None:
                z = run.correct(step, z)
            if run.blend is not None:
                z = run.blend(step.index, z)
    return z
