"""Issue 19's fidelity gates on a real GPU, with real CUDA graphs (skipped where there is no CUDA: CI has
none; the device tool runs them, and bench/bench_speed.py measures the same gates at 512 px on
SD-1.5-sized weights). The emulated tests (tests/test_fast_path.py) prove the controllers' logic replays
bit for bit; what only a GPU shows is here: a capture CUDA refuses (a host sync the CPU does not need,
a copy from pageable memory), a memory pool shared by a run's graphs overwriting what one of them keeps,
and TF32 moving an optimisation. Gates: every method's fast edit (on the UNet copy held in fp16, as the
engine runs it) within 40 dB PSNR of its eager edit with no capture falling back to eager; null-text's
reconstruction error on the fast path (its calls without gradients replayed; its optimisation in TF32,
with and without the captured Adam iteration, and in bf16) within 5% of the eager fp32 path's."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from pipeline.events import CancelToken
from pipeline.fast import FastOptions
from pipeline.held_weights import sampling_copy, with_sampling_unet
from pipeline.images import load_image, to_tensor
from pipeline.methods.base import Inputs
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.models import load_model
from pipeline.parts import IMAGE_ENCODER, with_parts
from pipeline.paths import RESOURCES
from pipeline.run import RunContext, RunOptions
from pipeline.sampling import DDIMSchedule, Sampling, denoise
from tests.test_fast_path import CASES, MAPS_SIZE, PROMPTS, _cases

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (issue 19's gates)")
EDIT_PSNR_DB = 40.0
NULL_TEXT_TOLERANCE = 0.05
NOT_CAPTURED = "could not be captured"


@pytest.fixture(scope="module")
def gpu_bundle(cache_dir):
    """demo-tiny on the GPU, sampling in fp16 as every CUDA run does, with the UNet copy the fast path samples with."""
    return with_sampling_unet(with_parts(load_model("demo-tiny", device="cuda", cache_dir=cache_dir), (IMAGE_ENCODER,)))


def _context(bundle: Any, fast: bool | FastOptions) -> RunContext:
    options = fast if isinstance(fast, FastOptions) else FastOptions() if fast else None
    return RunContext(bundle, CancelToken(), lambda event: None, RunOptions(seed=0, fast=options))


def _on_device(inputs: Inputs) -> Inputs:
    """The inputs where the engine puts them (pipeline.engine prepares them on the run's device)."""
    return Inputs({k: v.cuda() for k, v in inputs.masks.items()}, {k: v.cuda() for k, v in inputs.images.items()},
                  inputs.prompts)


def _psnr(ctx: RunContext, a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean(((ctx.decode(a) - ctx.decode(b)) / 2) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.mark.parametrize("case", CASES)
def test_a_fast_edit_on_the_gpu_is_within_40_db_of_the_eager_edit(case, gpu_bundle, caplog):
    eager = _context(gpu_bundle, fast=False)
    photo, picture = (load_image(RESOURCES / name / "house.png") for name in ("demo", "demo_world"))
    reference = eager.encode_image(to_tensor(picture, (MAPS_SIZE, MAPS_SIZE)))
    method, prompts, params, inputs, tune_inputs, size = _cases(reference)[case]
    inputs, tune_inputs = _on_device(inputs), _on_device(tune_inputs)
    latent = eager.encode_image(to_tensor(photo, (size, size)))
    tensors = method.invert(eager, latent, prompts, params, inputs)
    if hasattr(method, "tune"):
        tensors = {**tensors, **method.tune(eager, tensors, prompts, params, tune_inputs)}
    fast = _context(gpu_bundle, fast=True)
    with torch.no_grad(), caplog.at_level("WARNING"):
        expected = method.edit(eager, tensors, prompts, params, inputs)
        found = method.edit(fast, tensors, prompts, params, inputs)
    assert NOT_CAPTURED not in caplog.text
    assert fast.graphs is not None and fast.graphs.captures >= 1 and fast.graphs.replays >= 1
    assert fast.graphs.failures == 0
    psnr = _psnr(eager, found.target, expected.target)
    assert psnr >= EDIT_PSNR_DB, f"{case}: the fast edit is {psnr:.1f} dB from the eager one"


def test_the_held_fp16_weights_give_the_bits_of_fp32_weights_under_autocast(gpu_bundle):
    """In the default layout; channels-last (what the engine holds on CUDA) is gated by the edits' PSNR."""
    z = torch.randn(2, 4, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    emb = torch.randn(2, 77, gpu_bundle.unet.config.cross_attention_dim, device="cuda")
    plain = dataclasses.replace(gpu_bundle, sampling_unet=sampling_copy(gpu_bundle.unet, torch.float16))
    found = [_context(plain, FastOptions(graphs=False, held_weights=held)) for held in (True, False)]
    with torch.no_grad():
        held, autocast = (ctx.unet_noise(z, 500, emb) for ctx in found)
    assert torch.equal(held, autocast)


OPTIMISATIONS = {"TF32, eager Adam": FastOptions(optimisation_graphs=False),
                 "TF32, captured Adam": FastOptions(captured_optimise="tf32"),
                 "bf16, captured Adam (the default)": FastOptions()}


@pytest.mark.parametrize("optimisation", list(OPTIMISATIONS))
@pytest.mark.parametrize("early_stop", [False, True], ids=["every iteration", "early stop"])
def test_null_text_on_the_fast_path_reconstructs_within_5_percent_of_eager_fp32(early_stop, optimisation, gpu_bundle,
                                                                                caplog):
    method, steps = PromptToPrompt(), 10
    params = P2PParams(steps=steps, inversion="null-text", inner_steps=10, early_stop=early_stop)
    eager = _context(gpu_bundle, fast=False)
    latent = eager.encode_image(to_tensor(load_image(RESOURCES / "demo" / "house.png"), (64, 64)))
    with caplog.at_level("WARNING"):
        found = method.invert(_context(gpu_bundle, OPTIMISATIONS[optimisation]), latent, PROMPTS, params, Inputs())
    assert NOT_CAPTURED not in caplog.text
    expected = method.invert(eager, latent, PROMPTS, params, Inputs())
    fp32 = _context(dataclasses.replace(gpu_bundle, sample_dtype=torch.float32), fast=False)
    errors = [_reconstruction(fp32, steps, tensors) for tensors in (found, expected)]
    assert errors[0] <= errors[1] * (1 + NULL_TEXT_TOLERANCE), f"fast {errors[0]:.3g} against eager {errors[1]:.3g}"


def _reconstruction(ctx: RunContext, steps: int, inversion: dict[str, torch.Tensor]) -> float:
    """The source branch sampled in fp32 from z*_T with the stored null embeddings: its MSE to z*_0."""
    schedule = DDIMSchedule(ctx.bundle.scheduler, steps)
    cond = ctx.encode_text([PROMPTS.source])
    latents = inversion["latents"].to(ctx.device)
    with torch.no_grad():
        z0 = denoise(ctx, schedule, latents[-1:], Sampling(cond, inversion["null_embeddings"][:, None].to(ctx.device),
                                                          7.5), "reconstruction")
    return torch.mean((z0 - latents[:1]) ** 2).item()
