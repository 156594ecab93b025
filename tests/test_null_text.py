"""Null-text inversion's own invariant: the stored per-step embeddings retrace the trajectory the
optimisation reached with them, step by step, to fp32 rounding.

"Reconstructs better than plain DDIM" holds even when every stored step holds the same tensor (the
defect this file exists for); retracing does not.
"""

import pytest
import torch

from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.null_text import null_text_optimise
from pipeline.sampling import DDIMSchedule, Sampling
from tests.helpers import assert_retraces

SOURCE = "a house in a meadow under a blue sky"
STEPS = 8
GUIDANCE = 7.5


@pytest.fixture(scope="module")
def optimised(demo_bundle, demo_latent):
    from pipeline.events import CancelToken
    from pipeline.run import RunContext

    ctx = RunContext(demo_bundle, CancelToken(), lambda event: None)
    schedule = DDIMSchedule(demo_bundle.scheduler, STEPS)
    cond = ctx.encode_text([SOURCE])
    trajectory = ddim_invert(ctx, schedule, demo_latent, cond)
    result = null_text_optimise(ctx, schedule, trajectory, cond, ctx.encode_text([""]), GUIDANCE, inner_steps=4)
    return schedule, cond, result


def test_stored_embeddings_retrace_the_optimised_latents_step_by_step(ctx, optimised):
    schedule, cond, result = optimised
    assert result.embeddings.shape[0] == STEPS and result.latents.shape[0] == STEPS + 1
    assert_retraces(ctx, schedule, result.latents, Sampling(cond, result.embeddings[:, None], GUIDANCE), "optimised")


def test_every_step_keeps_its_own_embedding(optimised):
    _, _, result = optimised
    embeddings = result.embeddings
    for i in range(1, STEPS):
        assert not torch.equal(embeddings[i], embeddings[i - 1]), f"steps {i - 1} and {i} hold the same embedding"
