"""The attention contract: every layer knows its place; a controller that changes nothing changes
nothing, bit for bit; probabilities, keys and values are edited only where asked; gradients flow;
attention masks are honoured."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from pipeline.control.contract import AttentionCall, Controller, ControlState, RowLayout
from pipeline.control.places import LayerPlace, layer_places
from pipeline.control.processor import ControlledProcessor
from tests.helpers import SD15UNet


class Everywhere(Controller):
    """Active at every layer; changes nothing."""

    def active(self, place, step):
        return True


class Recorder(Everywhere):
    """Asks for the probabilities of chosen rows and records their shapes."""

    def __init__(self, rows):
        self.rows = rows
        self.seen: list[tuple[LayerPlace, tuple[int, ...]]] = []

    def prob_rows(self, call):
        return self.rows

    def edit_probs(self, call, rows, probs):
        self.seen.append((call.place, tuple(probs.shape)))
        return probs


def test_places_cover_down_mid_up_at_three_or_more_levels(demo_bundle):
    places = layer_places(demo_bundle.unet)
    assert len(places) == len(demo_bundle.unet.attn_processors)
    assert [p.index for p in places] == list(range(len(places)))
    blocks = [p.block for p in places]
    assert blocks == sorted(blocks, key=["down", "mid", "up"].index)  # execution order
    for block in ("down", "mid", "up"):
        assert {p.kind for p in places if p.block == block} == {"self", "cross"}
    assert len({p.level for p in places if p.block != "mid"}) >= 3
    # self and cross of one transformer block share its transformer index; indices count up
    transformers = [p.transformer for p in places]
    assert transformers == sorted(transformers) and transformers[-1] + 1 == len(places) // 2


def test_sd15_layer_names_map_to_the_reference_places():
    places = layer_places(SD15UNet)
    assert len(places) == 32
    assert places[0].name.startswith("down_blocks.0") and places[0].level == 0
    mid = [p for p in places if p.block == "mid"]
    assert [p.index for p in mid] == [12, 13] and mid[0].level == 3
    up16 = [p for p in places if p.block == "up" and p.level == 2]
    assert len(up16) == 6 and up16[0].transformer == 7
    assert places[-1].transformer == 15  # MasaCtrl's "16 layers"


def _eps(bundle, z, emb, controllers=(), layout=None, step=0, grad=False):
    state = None
    if controllers:
        state = ControlState(tuple(controllers), layout or RowLayout.guided(z.shape[0] // 2), step, 500,
                             tuple(z.shape[-2:]))
    kwargs = None if state is None else {"control": state}
    with torch.set_grad_enabled(grad):
        return bundle.unet(z, 500, encoder_hidden_states=emb, cross_attention_kwargs=kwargs, return_dict=False)[0]


@pytest.fixture(scope="module")
def batch(demo_bundle):
    from pipeline.events import CancelToken
    from pipeline.run import RunContext

    ctx = RunContext(demo_bundle, CancelToken(), lambda e: None)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    emb = torch.cat([ctx.encode_text(["", ""]), ctx.encode_text(["a house", "a castle"])])
    return z, emb


def test_every_layer_carries_a_controlled_processor(demo_bundle):
    processors = demo_bundle.unet.attn_processors.values()
    assert all(isinstance(p, ControlledProcessor) for p in processors)


def test_a_controller_that_changes_nothing_is_bit_identical_to_sdpa(demo_bundle, batch):
    z, emb = batch
    plain = _eps(demo_bundle, z, emb)
    watched = _eps(demo_bundle, z, emb, [Everywhere()])
    assert torch.equal(watched, plain)


def test_explicit_probabilities_equal_sdpa_and_are_formed_only_for_the_rows_asked(demo_bundle, batch):
    z, emb = batch
    plain = _eps(demo_bundle, z, emb)
    layout = RowLayout.guided(2)
    recorder = Recorder(layout.select("cond"))
    watched = _eps(demo_bundle, z, emb, [recorder])
    torch.testing.assert_close(watched, plain, rtol=1e-4, atol=1e-5)
    assert len(recorder.seen) == len(demo_bundle.unet.attn_processors)
    assert all(shape[0] == 2 for _, shape in recorder.seen)  # [rows, heads, queries, keys]
    assert all(shape[-1] == 77 for place, shape in recorder.seen if place.kind == "cross")


def test_an_edit_of_the_conditional_rows_changes_only_them(demo_bundle, batch):
    class Uniform(Recorder):
        def edit_probs(self, call, rows, probs):
            return torch.full_like(probs, 1.0 / probs.shape[-1]) if call.place.kind == "cross" else probs

    z, emb = batch
    plain = _eps(demo_bundle, z, emb)
    edited = _eps(demo_bundle, z, emb, [Uniform([3])])  # the target's conditional row
    torch.testing.assert_close(edited[:3], plain[:3], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(edited[3], plain[3], atol=1e-4)


def test_unconditional_rows_can_be_edited_too(demo_bundle, batch):
    class Uniform(Recorder):
        def edit_probs(self, call, rows, probs):
            return torch.full_like(probs, 1.0 / probs.shape[-1])

    z, emb = batch
    plain = _eps(demo_bundle, z, emb)
    edited = _eps(demo_bundle, z, emb, [Uniform([1])])  # the target's unconditional row
    torch.testing.assert_close(edited[[0, 2, 3]], plain[[0, 2, 3]], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(edited[1], plain[1], atol=1e-4)


def test_gradients_reach_a_learned_key_tensor_through_a_controlled_layer(demo_bundle, batch):
    z, emb = batch
    places = [p for p in layer_places(demo_bundle.unet) if p.kind == "self" and p.block == "up"]
    target_place = places[-1]

    class LearnedKeys(Controller):
        def __init__(self):
            self.keys = None

        def active(self, place, step):
            return place == target_place

        def rewrite(self, call):
            if self.keys is None:
                self.keys = call.k.detach().clone().requires_grad_(True)
            call.k = self.keys

    learned = LearnedKeys()
    eps = _eps(demo_bundle, z, emb, [learned], grad=True)
    eps.square().mean().backward()
    assert learned.keys.grad is not None and learned.keys.grad.abs().sum() > 0


@pytest.mark.parametrize("rows", [(), (2, 3)])
def test_an_attention_mask_is_honoured_on_both_paths(demo_bundle, rows):
    place = next(p for p in layer_places(demo_bundle.unet) if p.kind == "cross")
    attn = demo_bundle.unet.get_submodule(place.name.removesuffix(".processor"))
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 16, attn.to_q.in_features, generator=g)
    context = torch.randn(4, 77, attn.to_k.in_features, generator=g)
    mask = torch.zeros(4, 1, 77)
    mask[..., 5:] = float("-inf")  # only the first five tokens may be attended to
    expected = AttnProcessor2_0()(attn, hidden, context, mask)
    state = ControlState((Recorder(list(rows)),), RowLayout.guided(2), 0, 500, (4, 4))
    with torch.no_grad():
        got = ControlledProcessor(place)(attn, hidden, context, mask, control=state)
        unmasked = AttnProcessor2_0()(attn, hidden, context)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(unmasked, expected, atol=1e-3)
