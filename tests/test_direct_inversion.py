"""Direct inversion (PnP Inversion): the source branch lands on the inversion trajectory at every
step, so it reproduces the photo at full guidance with no optimisation; and the guidance-7.5
reconstruction of every inversion, side by side (run with -s to see the table)."""

import pytest
import torch

from pipeline.inversion.source import source_branch
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.sampling import DDIMSchedule, Sampling, denoise

SOURCE = "a house in a meadow under a blue sky"
TARGET = "a castle in a meadow under a blue sky"
STEPS = 10


def relative_error(a, b):
    return ((a - b).abs().mean() / b.abs().mean()).item()


@pytest.fixture(scope="module")
def inversions(demo_bundle, demo_latent):
    from pipeline.events import CancelToken
    from pipeline.run import RunContext

    ctx = RunContext(demo_bundle, CancelToken(), lambda e: None)
    method = PromptToPrompt()
    return {kind: method.invert(ctx, demo_latent, Prompts(SOURCE, SOURCE), P2PParams(steps=STEPS, inversion=kind),
                                Inputs())
            for kind in ("ddim", "negative-prompt", "null-text", "direct")}


def test_the_source_branch_lands_on_the_inversion_trajectory_at_every_step(ctx, inversions):
    inversion = inversions["direct"]
    trajectory = inversion["latents"]
    branch = source_branch(ctx, "direct", inversion, SOURCE, STEPS)
    landed: list[torch.Tensor] = []
    run = Sampling(ctx.encode_text([SOURCE, TARGET]), branch.uncond[:, None].expand(-1, 2, -1, -1), 7.5,
                   correct=branch.correct, blend=lambda i, z: landed.append(z[:1].clone()) or z)
    schedule = DDIMSchedule(ctx.bundle.scheduler, STEPS)
    denoise(ctx, schedule, trajectory[-1:].expand(2, -1, -1, -1), run, "editing")
    assert len(landed) == STEPS
    for i, z in enumerate(landed):
        torch.testing.assert_close(z, trajectory[STEPS - i - 1 : STEPS - i], rtol=0, atol=1e-5,
                                   msg=lambda m, i=i: f"step {i}: {m}")


def test_a_target_equal_to_its_source_reproduces_the_photo_in_the_source_branch(ctx, inversions, demo_latent):
    params = P2PParams(steps=STEPS, inversion="direct")
    out = PromptToPrompt().edit(ctx, inversions["direct"], Prompts(SOURCE, SOURCE), params, Inputs())
    torch.testing.assert_close(out.reconstruction, demo_latent, rtol=0, atol=1e-5)


def test_reconstruction_at_full_guidance_side_by_side(ctx, inversions, demo_latent):
    method = PromptToPrompt()
    errors = {}
    for kind, inversion in inversions.items():
        out = method.edit(ctx, inversion, Prompts(SOURCE, SOURCE), P2PParams(steps=STEPS, inversion=kind), Inputs())
        errors[kind] = (relative_error(out.reconstruction, demo_latent), relative_error(out.target, demo_latent))
    print(f"\nguidance 7.5, {STEPS} steps, relative latent error (source branch / target = source):")
    for kind, (source, target) in errors.items():
        print(f"  {kind:16s} {source:.4f} / {target:.4f}")
    assert errors["direct"][0] < 1e-5
    assert errors["null-text"][0] < 0.3 * errors["ddim"][0]
    assert errors["negative-prompt"][0] < 0.3 * errors["ddim"][0]
