"""DDIM inversion: run the deterministic DDIM step backwards from the photo's latent to noise."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pipeline.control.contract import Controller
from pipeline.events import Stage
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, guided_noise


def ddim_invert(
    ctx: RunContext,
    schedule: DDIMSchedule,
    z0: torch.Tensor,
    cond: torch.Tensor,
    stage: str = Stage.DDIM_INVERSION,
    *,
    uncond: torch.Tensor | None = None,
    scale: float = 1.0,
    controllers: Sequence[Controller] = (),
) -> torch.Tensor:
    """The trajectory z*_0 .. z*_T as [steps + 1, C, h, w].

    At guidance 1 (`uncond` None) only the conditional branch runs, as the null-text reference does;
    with `uncond` and `scale` it inverts at that guidance (MasaCtrl's real-image mode uses 7.5, with
    an empty prompt for both, which makes guidance irrelevant). `controllers` see every UNet call (a
    store that records keys and values, as SpecRef's reference inversion does).
    """
    trajectory = [z0]
    z = z0
    with torch.no_grad():
        for step in ctx.steps(schedule.timesteps[::-1], stage):
            eps = guided_noise(ctx, z, step, cond, uncond, scale, controllers)
            z = schedule.inverse_step(eps, step.timestep, z)
            if step.wants_preview:  # the photo as the model sees it from this noise level
                step.preview(schedule.predict_x0(eps, step.timestep, z))
            trajectory.append(z)
    return torch.cat(trajectory)
