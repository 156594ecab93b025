"""The UNet copy with its matrix weights held in the sampling dtype (pipeline.held_weights) computes, under
autocast, the very bits of the fp32 UNet under the same autocast; and the fast path samples with it.

On the CPU, autocast's lower precision is bfloat16, so the bundle here samples in bfloat16: what holds for
autocast's casts there holds for fp16 on CUDA (the same rule: a matrix weight is cast at each call)."""

from __future__ import annotations

import dataclasses
import weakref

import pytest
import torch

from pipeline.events import CancelToken
from pipeline.fast import FastOptions
from pipeline.held_weights import release, released, sampling_copy, with_sampling_unet
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.run import RunContext, RunOptions

PROMPTS = Prompts("a house in a meadow under a blue sky", "a castle in a meadow under a blue sky")


@pytest.fixture(scope="module")
def bf16_bundle(demo_bundle):
    return with_sampling_unet(dataclasses.replace(demo_bundle, sample_dtype=torch.bfloat16))


def _noise(unet: torch.nn.Module, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return unet(z, 500, encoder_hidden_states=emb, return_dict=False)[0]


def test_the_copy_holds_matrix_weights_in_the_sampling_dtype_and_shares_the_rest(bf16_bundle, demo_bundle):
    copy = bf16_bundle.sampling_unet
    assert copy is not None and copy is not demo_bundle.unet
    assert copy.conv_in.weight.dtype == torch.bfloat16 and copy.time_embedding.linear_1.bias.dtype == torch.bfloat16
    assert copy.conv_norm_out.weight.dtype == torch.float32
    assert copy.conv_norm_out.weight.data_ptr() == demo_bundle.unet.conv_norm_out.weight.data_ptr()
    assert demo_bundle.unet.conv_in.weight.dtype == torch.float32  # the bundle's own UNet is untouched
    assert not any(p.requires_grad for p in copy.parameters())


def test_the_copy_under_autocast_gives_the_fp32_unets_bits(bf16_bundle, demo_latent):
    emb = torch.randn(2, 77, bf16_bundle.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(0))
    z = torch.cat([demo_latent, demo_latent.flip(-1)])
    expected = _noise(bf16_bundle.unet, z, emb)
    assert torch.equal(_noise(bf16_bundle.sampling_unet, z, emb), expected)
    everything = sampling_copy(bf16_bundle.unet, torch.bfloat16).to(torch.bfloat16)  # the norms held too
    assert not torch.equal(_noise(everything, z, emb), expected)


def test_fp32_sampling_needs_no_copy(demo_bundle):
    assert with_sampling_unet(demo_bundle) is demo_bundle


def test_the_fast_path_samples_with_the_copy_and_gives_the_eager_bits(bf16_bundle, demo_latent):
    method = PromptToPrompt()
    params = P2PParams(steps=6, inversion="ddim", blend_words=("house", "castle"))
    calls = []
    hook = bf16_bundle.sampling_unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        runs = {}
        for label, fast in (("eager", None), ("fast", FastOptions(emulate=True))):
            ctx = RunContext(bf16_bundle, CancelToken(), lambda event: None, RunOptions(seed=0, fast=fast))
            inversion = method.invert(ctx, demo_latent, PROMPTS, params, Inputs())
            runs[label] = (inversion["latents"], method.edit(ctx, inversion, PROMPTS, params, Inputs()).target)
            if label == "eager":
                assert not calls, "the eager path samples with the bundle's own UNet"
    finally:
        hook.remove()
    assert calls, "the fast path did not sample with the held copy"
    assert torch.equal(runs["fast"][0], runs["eager"][0])
    assert torch.equal(runs["fast"][1], runs["eager"][1])


def test_off_the_fast_path_the_copy_is_never_used(bf16_bundle, demo_latent):
    off = FastOptions(emulate=True, held_weights=False)
    ctx = RunContext(bf16_bundle, CancelToken(), lambda event: None, RunOptions(seed=0, fast=off))
    calls = []
    hook = bf16_bundle.sampling_unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            ctx.unet_noise(demo_latent, 500, ctx.encode_text([PROMPTS.source]))
    finally:
        hook.remove()
    assert not calls


def test_a_released_copy_gives_its_weights_back_and_leaves_the_fp32_unet_whole(demo_bundle, demo_latent):
    unet = demo_bundle.unet
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(0))
    before = _noise(unet, demo_latent, emb)
    copy = sampling_copy(unet, torch.bfloat16)
    held = weakref.ref(copy.conv_in.weight)
    assert not released(copy) and held() is not None
    release(copy)
    assert released(copy) and held() is None  # nothing holds the held weight any more: its memory is free
    assert copy.conv_norm_out.weight.data_ptr() == unet.conv_norm_out.weight.data_ptr()  # shared: kept
    assert torch.equal(_noise(unet, demo_latent, emb), before)
    with pytest.raises((NotImplementedError, RuntimeError)):  # an error, not a read of freed memory
        _noise(copy, demo_latent, emb)
