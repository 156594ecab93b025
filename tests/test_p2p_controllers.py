"""Prompt-to-Prompt controllers on hand-made attention tensors: each does exactly its job."""

import torch

from pipeline.control.blend import MaskBlend
from pipeline.control.contract import AttentionCall, RowLayout
from pipeline.control.p2p import (
    BLEND_LEVEL, LocalBlend, PromptToPromptEditor, refine_edit, replace_edit, reweight_edit, step_span,
)
from pipeline.control.places import LayerPlace
from pipeline.text import refine_mapper, replace_mapper, word_mask, word_weights

CROSS = LayerPlace("x", "up", "cross", 1, 5, 3)
SELF_FINE = LayerPlace("s0", "up", "self", 0, 6, 4)
SELF_COARSE = LayerPlace("s1", "down", "self", 1, 2, 1)
BLEND_PLACE = LayerPlace("b", "down", "cross", BLEND_LEVEL, 4, 2)


def random_probs(prompts=2, heads=2, queries=16, keys=77, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(prompts, heads, queries, keys, generator=g).softmax(-1)


def edit(controller, place, step, probs):
    """Run a controller's probability phase on [source, target] conditional rows of a guided batch."""
    layout = RowLayout.guided(2)
    empty = torch.zeros(4, 1, 1, 1)
    call = AttentionCall(place, step, 0, layout, empty, empty, empty, None, 1.0, (1, 1))
    rows = list(controller.prob_rows(call))
    assert rows == layout.select("cond")
    return controller.edit_probs(call, rows, probs)


def test_step_span_rounds_down_like_the_reference():
    assert step_span((0.0, 0.8), 50) == (0, 40)
    assert step_span((0.0, 0.4), 50) == (0, 20)
    assert step_span((0.1, 0.33), 10) == (1, 3)


def test_replace_moves_source_maps_to_the_swapped_word(clip_tokenizer):
    mapper = replace_mapper(clip_tokenizer, "a cat sitting", "a tiger sitting")
    probs = random_probs()
    editor = PromptToPromptEditor(replace_edit(mapper), torch.ones(10, 77), (0, 0))
    out = edit(editor, CROSS, 0, probs.clone())
    torch.testing.assert_close(out[0], probs[0])  # the source is never changed
    torch.testing.assert_close(out[1], probs[0] @ mapper)
    torch.testing.assert_close(out[1, ..., 2], probs[0, ..., 2])  # "tiger" looks where "cat" looked


def test_cross_alpha_zero_keeps_the_targets_own_maps(clip_tokenizer):
    mapper = replace_mapper(clip_tokenizer, "a cat", "a dog")
    alpha = torch.zeros(10, 77)
    alpha[:4] = 1
    editor = PromptToPromptEditor(replace_edit(mapper), alpha, (0, 0))
    probs = random_probs()
    assert editor.active(CROSS, 3) and not editor.active(CROSS, 4)
    alpha[0, 2] = 0  # per-token: token 2 keeps its own map at step 0
    out = edit(editor, CROSS, 0, probs.clone())
    torch.testing.assert_close(out[1, ..., 2], probs[1, ..., 2])
    torch.testing.assert_close(out[1, ..., 1], probs[0, ..., 1])


def test_refine_keeps_new_tokens_and_aligns_the_rest(clip_tokenizer):
    mapper, alphas = refine_mapper(clip_tokenizer, "a cat", "a fluffy cat")
    probs = random_probs()
    out = refine_edit(mapper, alphas)(probs[0], probs[1])
    torch.testing.assert_close(out[..., 2], probs[1, ..., 2])  # "fluffy" is new: its own map
    torch.testing.assert_close(out[..., 3], probs[0, ..., 2])  # "cat" moved from 2 to 3


def test_reweight_scales_only_the_chosen_word(clip_tokenizer):
    mapper = replace_mapper(clip_tokenizer, "a fluffy cat", "a fluffy cat")
    factors = word_weights(clip_tokenizer, "a fluffy cat", {"fluffy": 3.0})
    probs = random_probs()
    out = reweight_edit(replace_edit(mapper), factors)(probs[0], probs[1])
    torch.testing.assert_close(out[..., 2], 3 * probs[0, ..., 2])
    torch.testing.assert_close(out[..., 3], probs[0, ..., 3])


def test_self_attention_replaced_only_in_its_steps_and_coarse_levels():
    editor = PromptToPromptEditor(lambda b, t: t, torch.zeros(10, 77), (0, 4))
    assert editor.active(SELF_COARSE, 3) and not editor.active(SELF_COARSE, 4)
    assert not editor.active(SELF_FINE, 0)
    probs = random_probs(keys=16)
    out = edit(editor, SELF_COARSE, 0, probs.clone())
    torch.testing.assert_close(out[1], probs[0])


def _blend_with_maps(clip_tokenizer, maps, start=0, threshold=0.3, subtract=None):
    words = torch.stack([word_mask(clip_tokenizer, "a cat on grass", ["cat"]),
                         word_mask(clip_tokenizer, "a dog on grass", ["dog"])])
    blend = LocalBlend(words, threshold, start, subtract)
    assert blend.active(BLEND_PLACE, 0)
    edit(blend, BLEND_PLACE, 0, maps)
    return blend


def test_local_blend_keeps_the_source_outside_the_words_region(clip_tokenizer):
    # 16x16 latent -> 4x4 maps at the blend level; token 2 ("cat"/"dog") attends to the top-left cell
    maps = torch.full((2, 1, 16, 77), 1e-3)
    maps[:, :, 0, 2] = 1.0
    blend = _blend_with_maps(clip_tokenizer, maps)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 16, 16, generator=g)
    out = blend(5, z.clone())
    torch.testing.assert_close(out[0], z[0])
    # 3x3 max-pool spreads the top-left cell to its neighbours: 2x2 cells = 8x8 latent pixels
    torch.testing.assert_close(out[1, :, :8, :8], z[1, :, :8, :8])
    torch.testing.assert_close(out[1, :, 8:, :], z[0, :, 8:, :])
    torch.testing.assert_close(out[1, :, :, 8:], z[0, :, :, 8:])


def test_local_blend_waits_for_its_start_step(clip_tokenizer):
    maps = torch.full((2, 1, 16, 77), 1e-3)
    maps[:, :, 0, 2] = 1.0
    blend = _blend_with_maps(clip_tokenizer, maps, start=3)
    z = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(blend(2, z.clone()), z)
    assert not torch.equal(blend(3, z.clone()), z)


def test_subtract_words_remove_their_region(clip_tokenizer):
    maps = torch.full((2, 1, 16, 77), 1e-3)
    maps[:, :, :, 2] = 1.0  # the blend word covers everything
    maps[:, :, 15, 4] = 1.0  # "grass" (token 4) sits in the bottom-right cell
    sub = torch.stack([word_mask(clip_tokenizer, "a cat on grass", ["grass"])] * 2)
    blend = _blend_with_maps(clip_tokenizer, maps, subtract=sub)
    z = torch.randn(2, 4, 16, 16)
    out = blend(0, z.clone())
    torch.testing.assert_close(out[1, :, 12:, 12:], z[0, :, 12:, 12:])
    torch.testing.assert_close(out[1, :, :12, :12], z[1, :, :12, :12])


def test_user_mask_blend():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    z = torch.randn(2, 4, 8, 8)
    out = MaskBlend(mask)(0, z.clone())
    torch.testing.assert_close(out[1, ..., :4], z[1, ..., :4])
    torch.testing.assert_close(out[1, ..., 4:], z[0, ..., 4:])


def test_local_blend_reads_the_maps_after_the_edit(clip_tokenizer):
    """As the reference executes (its attention store keeps the tensor the editor then overwrites in
    place), the blend's mask comes from the EDITED target maps: for a swapped word, the source word's.

    Hand-made maps where the two orders disagree: the source's "cat" looks at the top-left cell, the
    target's own "dog" at the bottom-right one. Blending on "dog" (a target word only) must keep the
    top-left region (the edited map, "dog" looking where "cat" looked), not the bottom-right one.
    """
    from pipeline.control.processor import _attention
    from pipeline.methods.base import Prompts
    from pipeline.methods.p2p import P2PParams, p2p_controllers

    prompts = Prompts("a cat on grass", "a dog on grass")
    params = P2PParams(steps=10, blend_words=("dog",), blend_start=0.0)
    controllers, local = p2p_controllers(clip_tokenizer, prompts, params, torch.device("cpu"), params.blend_words)
    # a 16x16 latent: 4x4 queries at the blend level; near one-hot probabilities from one-hot keys
    focus = torch.zeros(4, 16, dtype=torch.long)  # per row (uncond 0, uncond 1, cond 0, cond 1), per query
    focus[2, 0], focus[3, 15] = 2, 2  # source "cat" -> query cell 0; target "dog" -> query cell 15
    q = torch.zeros(4, 1, 16, 77)
    q.scatter_(-1, focus[:, None, :, None], 40.0)
    k = torch.eye(77)[None, None].expand(4, 1, 77, 77)
    v = torch.randn(4, 1, 77, 8)
    call = AttentionCall(BLEND_PLACE, 0, 0, RowLayout.guided(2), q, k, v, None, 1.0, (4, 4))
    _attention(call, [c for c in controllers if c.active(BLEND_PLACE, 0)])

    region = local.region(torch.Size((16, 16)))[1, 0]
    assert region[:4, :4].all()  # the top-left cell (query 0), where "cat" looked
    assert not region[12:, 12:].any()  # the target's own "dog" map (query 15) is not what drives it
