"""MasaCtrl: the key/value swap is exactly mutual attention, it is off where it should be off, a
target equal to its source reproduces the source branch, and a mask keeps what is outside it."""

import pytest
import torch

from pipeline.control.contract import AttentionCall, RowLayout, attend
from pipeline.control.masactrl import MutualSelfAttention, controls_layer
from pipeline.control.places import LayerPlace, layer_places
from pipeline.errors import PromptError
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.masactrl import MasaCtrl, MasaCtrlParams
from pipeline.sampling import DDIMSchedule, Sampling, denoise
from tests.helpers import SD15UNet

SOURCE = "a house in a meadow under a blue sky"
TARGET = "a castle in a meadow under a blue sky"
STEPS = 8
PLACE = LayerPlace("up", "up", "self", 0, 30, 15)


def _call(q, k, v, spatial):
    return AttentionCall(PLACE, 5, 100, RowLayout.guided(2), q, k, v, None, q.shape[-1] ** -0.5, spatial)


def _by_hand(q, k, v, keep=None):
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(-1) @ v


def test_the_swap_is_attention_of_target_queries_to_source_keys_and_values_in_each_branch():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 4, 2, 6, 8, generator=g)  # rows: [uncond src, uncond tgt, cond src, cond tgt]
    call = _call(q, k, v, (2, 3))
    controller = MutualSelfAttention(start_step=4, layers="decoder-fine")
    assert controller.active(PLACE, 5) and not controller.active(PLACE, 3)
    controller.rewrite(call)
    out = controller.rewrite_output(call, attend(call.q, call.k, call.v))
    for source, target in ((0, 1), (2, 3)):
        torch.testing.assert_close(out[source], _by_hand(q[source], k[source], v[source]))
        torch.testing.assert_close(out[target], _by_hand(q[target], k[source], v[source]))


def test_the_masked_swap_attends_to_foreground_and_background_separately():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 4, 2, 6, 8, generator=g)
    mask_s = torch.tensor([[1.0, 1, 0], [0, 0, 0]]).view(1, 1, 2, 3)  # source foreground: keys 0, 1
    mask_t = torch.tensor([[0.0, 0, 0], [0, 1, 1]]).view(1, 1, 2, 3)  # target foreground: queries 4, 5
    call = _call(q, k, v, (2, 3))
    controller = MutualSelfAttention(start_step=0, layers="all", masks=(mask_s, mask_t))
    controller.rewrite(call)
    out = controller.rewrite_output(call, attend(call.q, call.k, call.v))
    fg_keys = mask_s.flatten().bool()
    fg_queries = mask_t.flatten().bool()[:, None]
    for source, target in ((0, 1), (2, 3)):
        fg = _by_hand(q[target], k[source], v[source], fg_keys)
        bg = _by_hand(q[target], k[source], v[source], ~fg_keys)
        torch.testing.assert_close(out[target], torch.where(fg_queries, fg, bg))
        torch.testing.assert_close(out[source], _by_hand(q[source], k[source], v[source]))


def test_the_authors_layers_are_transformer_layers_10_to_15_of_sd1():
    chosen = [p.transformer for p in layer_places(SD15UNet) if controls_layer(p, "decoder-fine")]
    assert chosen == list(range(10, 16))


@pytest.fixture(scope="module")
def masactrl():
    return MasaCtrl()


@pytest.fixture(scope="module")
def direct(masactrl, demo_bundle, demo_latent):
    from pipeline.events import CancelToken
    from pipeline.run import RunContext

    ctx = RunContext(demo_bundle, CancelToken(), lambda e: None)
    params = MasaCtrlParams(steps=STEPS)
    return params, masactrl.invert(ctx, demo_latent, Prompts(SOURCE, TARGET), params, Inputs())


def test_control_starting_after_the_last_step_is_plain_sampling_of_the_target(masactrl, ctx, direct):
    params, inversion = direct
    off = MasaCtrlParams(steps=STEPS, control_start=1.0)
    out = masactrl.edit(ctx, inversion, Prompts(SOURCE, TARGET), off, Inputs())
    schedule = DDIMSchedule(ctx.bundle.scheduler, STEPS)
    uncond = ctx.encode_text([""]).expand(STEPS, -1, -1)[:, None]
    plain = denoise(ctx, schedule, inversion["latents"][-1:], Sampling(ctx.encode_text([TARGET]), uncond, 7.5), "plain")
    torch.testing.assert_close(out.target, plain, rtol=1e-5, atol=1e-5)
    controlled = masactrl.edit(ctx, inversion, Prompts(SOURCE, TARGET), params, Inputs())
    assert not torch.allclose(controlled.target, plain, atol=1e-3)  # and with control on, it acts


def test_a_target_equal_to_its_source_reproduces_the_source_branch(masactrl, ctx, demo_latent):
    params = MasaCtrlParams(steps=STEPS, inversion="negative-prompt", inversion_prompt="source")
    inversion = masactrl.invert(ctx, demo_latent, Prompts(SOURCE, SOURCE), params, Inputs())
    out = masactrl.edit(ctx, inversion, Prompts(SOURCE, SOURCE), params, Inputs())
    torch.testing.assert_close(out.target, out.reconstruction, rtol=0, atol=1e-6)


def test_the_source_branch_follows_the_inversion_latents(masactrl, ctx, direct):
    params, inversion = direct
    out = masactrl.edit(ctx, inversion, Prompts(SOURCE, TARGET), params, Inputs())
    torch.testing.assert_close(out.reconstruction, inversion["latents"][:1], rtol=0, atol=1e-5)


def test_an_edit_mask_keeps_the_latents_outside_it_on_the_source_branch(masactrl, ctx, direct):
    params, inversion = direct
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :4] = 1
    out = masactrl.edit(ctx, inversion, Prompts(SOURCE, TARGET), params, Inputs(masks={"edit_mask": mask}))
    torch.testing.assert_close(out.target[..., 4:], out.reconstruction[..., 4:], rtol=0, atol=0)
    assert not torch.allclose(out.target[..., :4], out.reconstruction[..., :4], atol=1e-3)
    assert torch.equal(out.region, mask)


def test_subject_masks_change_the_result_and_word_masks_need_the_word_in_both_prompts(masactrl, ctx, direct):
    params, inversion = direct
    subject = torch.zeros(1, 1, 8, 8)
    subject[..., 2:6, 2:6] = 1
    plain = masactrl.edit(ctx, inversion, Prompts(SOURCE, TARGET), params, Inputs())
    masked = masactrl.edit(ctx, inversion, Prompts(SOURCE, TARGET), params, Inputs(masks={"subject_mask": subject}))
    assert not torch.allclose(masked.target, plain.target, atol=1e-4)
    with pytest.raises(PromptError, match="inversion_prompt=source"):
        masactrl.check(ctx.bundle.tokenizer, Prompts(SOURCE, TARGET), MasaCtrlParams(mask_words=("castle",)))
    words = MasaCtrlParams(steps=STEPS, mask_words=("house", "castle"), inversion_prompt="source")
    masactrl.check(ctx.bundle.tokenizer, Prompts(SOURCE, TARGET), words)
