"""The DDIM step written once: it must agree with diffusers, invert exactly, and reconstruct."""

import pytest
import torch
from diffusers import DDIMScheduler

from pipeline.errors import Cancelled
from pipeline.events import Progress
from pipeline.inversion.ddim import ddim_invert
from pipeline.sampling import DDIMSchedule, Sampling, denoise


@pytest.fixture
def schedule(demo_bundle):
    return DDIMSchedule(demo_bundle.scheduler, 10)


def test_step_matches_diffusers_ddim(demo_bundle, schedule):
    reference = DDIMScheduler.from_config(demo_bundle.scheduler.config)
    reference.set_timesteps(10)
    assert schedule.timesteps == [int(t) for t in reference.timesteps]
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(2, 1, 4, 8, 8, generator=g)
    for t in schedule.timesteps:
        expected = reference.step(eps, t, z, eta=0.0).prev_sample
        torch.testing.assert_close(schedule.step(eps, t, z), expected, rtol=1e-5, atol=1e-5)


def test_inverse_step_undoes_step_for_the_same_noise(schedule):
    g = torch.Generator().manual_seed(1)
    z, eps = torch.randn(2, 1, 4, 8, 8, generator=g, dtype=torch.float64)
    for t in schedule.timesteps:
        torch.testing.assert_close(schedule.inverse_step(eps, t, schedule.step(eps, t, z)), z)


def test_last_step_lands_on_final_alpha(demo_bundle, schedule):
    assert schedule.timesteps[-1] - schedule.stride < 0
    assert schedule.alpha(-19) == pytest.approx(float(demo_bundle.scheduler.alphas_cumprod[0]))


def test_ddim_inversion_then_sampling_at_guidance_one_reconstructs(ctx, demo_bundle, demo_latent):
    schedule = DDIMSchedule(demo_bundle.scheduler, 20)
    cond = ctx.encode_text(["a house in a meadow under a blue sky"])
    trajectory = ddim_invert(ctx, schedule, demo_latent, cond)
    assert trajectory.shape == (21, *demo_latent.shape[1:])
    rec = denoise(ctx, schedule, trajectory[-1:], Sampling(cond, None), "reconstruct")
    error = (rec - demo_latent).abs().mean() / demo_latent.abs().mean()
    print(f"DDIM inversion + sampling at guidance 1, 20 steps: relative latent error {error:.4f}")
    assert error < 0.15, f"relative reconstruction error {error:.3f}"
    # and the trajectory really went somewhere: z_T is far from z_0
    assert (trajectory[-1] - demo_latent).abs().mean() / demo_latent.abs().mean() > 0.5


def test_progress_and_cancellation(ctx, schedule, demo_latent):
    cond = ctx.encode_text(["a house"])
    ddim_invert(ctx, schedule, demo_latent, cond)
    steps = [e.step for e in ctx.events if isinstance(e, Progress)]
    assert steps == list(range(11))
    ctx.cancel.cancel()
    with pytest.raises(Cancelled):
        denoise(ctx, schedule, demo_latent, Sampling(cond, None), "x")
