"""Adam on a loss (pipeline.optimise): the captured iteration of the fast path, emulated on the CPU,
follows PyTorch's Adam eagerly, early stop included, and null-text inversion through it lands where
the eager one does."""

import pytest
import torch

from pipeline.events import CancelToken
from pipeline.fast import EmulatedCapture, FastOptions
from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.null_text import null_text_optimise
from pipeline.control.value_input import CrossMaps
from pipeline.inversion.value_mapping import train_mappings
from pipeline.parts import IMAGE_ENCODER, image_features, with_parts
from pipeline.optimise import LoopInputs, Minimiser
from pipeline.run import RunContext, RunOptions
from pipeline.sampling import DDIMSchedule


def _descend(capture, tolerance):
    """Two runs of Adam on a quadratic whose target moves between them (inputs given as data)."""
    x = torch.zeros(5, requires_grad=True)
    inputs = LoopInputs(torch.device("cpu"), static=capture is not None)
    minimiser = Minimiser([x], lambda: ((x - inputs.target) ** 2).mean(), CancelToken(), capture)
    runs = []
    for target, rate in ((torch.linspace(-1, 1, 5), 0.3), (torch.full((5,), 0.5), 0.3)):
        inputs.set(target=target)
        minimiser.restart(rate)
        descent = minimiser.run(12, tolerance)
        runs.append((descent.losses, int(descent.last), x.detach().clone()))
    return runs


def test_a_captured_iteration_is_adam_with_the_same_early_stop():
    for tolerance in (None, 0.05):
        eager, captured = _descend(None, tolerance), _descend(EmulatedCapture(), tolerance)
        for (eager_losses, eager_last, eager_x), (losses, last, x) in zip(eager, captured, strict=True):
            assert last == eager_last == len(eager_losses) - 1  # the last iteration that updated
            torch.testing.assert_close(x, eager_x, rtol=1e-4, atol=1e-4)  # Adam divides near-zero moments
            taken = len(eager_losses)
            torch.testing.assert_close(losses[:taken], eager_losses, rtol=1e-4, atol=1e-6)
            if tolerance is None:
                assert taken == len(losses) == 12
            else:  # eagerly it stopped; captured, the later iterations ran and changed nothing
                assert taken < 12 and eager_losses[-1] < tolerance <= eager_losses[-2]
                assert torch.equal(losses[taken:], losses[taken:taken + 1].expand(12 - taken))


CAPTURED_FP32 = FastOptions(emulate=True, captured_optimise="tf32")  # TF32 is fp32 on the CPU: the capture alone


def test_null_text_through_the_captured_iteration_lands_where_eager_does(demo_bundle, demo_latent):
    schedule = DDIMSchedule(demo_bundle.scheduler, 4)
    results = []
    for options in (RunOptions(), RunOptions(fast=CAPTURED_FP32)):
        ctx = RunContext(demo_bundle, CancelToken(), lambda event: None, options)
        cond, null = ctx.encode_text(["a house"]), ctx.encode_text([""])
        trajectory = ddim_invert(ctx, schedule, demo_latent, cond)
        results.append(null_text_optimise(ctx, schedule, trajectory, cond, null, 7.5, inner_steps=3, early_stop=False))
    (eager, fast) = results
    torch.testing.assert_close(fast.embeddings, eager.embeddings, rtol=1e-3, atol=1e-4)  # Adam's rounding
    torch.testing.assert_close(fast.latents, eager.latents, rtol=1e-3, atol=1e-4)


def test_stylediffusion_training_on_the_fast_path_lands_where_eager_does(demo_bundle, demo_latent, caplog):
    """Its loops stay uncaptured (pipeline.inversion.value_mapping says why); its calls without gradients
    are replayed."""
    bundle = with_parts(demo_bundle, (IMAGE_ENCODER,))
    schedule = DDIMSchedule(bundle.scheduler, 3)
    results = []
    for options in (RunOptions(), RunOptions(fast=CAPTURED_FP32)):
        ctx = RunContext(bundle, CancelToken(), lambda event: None, options)
        cond, uncond = ctx.encode_text(["a house in a meadow"]), ctx.encode_text([""])
        maps = CrossMaps()
        trajectory = ddim_invert(ctx, schedule, demo_latent, cond, controllers=[maps])
        features = image_features(bundle.parts[IMAGE_ENCODER], ctx.decode(demo_latent))
        with caplog.at_level("WARNING"):
            results.append(train_mappings(ctx, schedule, trajectory, cond, uncond, features, maps.maps, scale=7.5,
                                          inner=4))
    assert "could not be captured" not in caplog.text
    eager, fast = results  # PyTorch's Adam on both paths, the same bits
    assert torch.equal(fast.latents, eager.latents) and torch.equal(fast.losses, eager.losses)
    for mine, theirs in zip(fast.networks, eager.networks, strict=True):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("capture", [True, False], ids=["captured", "not captured"])
def test_an_optimised_call_runs_in_its_loops_precision(capture, demo_bundle, demo_latent):
    """bf16 inside a captured iteration (FastOptions.captured_optimise), `optimise`'s precision outside one."""
    options = FastOptions(emulate=True, optimise="fp32", captured_optimise="bf16")
    ctx = RunContext(demo_bundle, CancelToken(), lambda event: None, RunOptions(fast=options))
    emb = ctx.encode_text(["a house"]).clone().requires_grad_(True)
    seen: list[torch.dtype] = []
    hook = demo_bundle.unet.conv_in.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        minimiser = ctx.minimiser([emb], lambda: ctx.unet_noise(demo_latent, 500, emb, precise=True).square().mean(),
                                  capture=capture)
        minimiser.restart(1e-3)
        minimiser.run(3)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16 if capture else torch.float32}
