"""Attention processors: every layer knows its place, and control changes nothing it should not."""

import torch

from pipeline.attention import AttentionHub, LayerPlace, controlled, layer_places


class Recorder:
    """Wants every layer; records what it saw; edits nothing."""

    def __init__(self):
        self.seen: list[tuple[LayerPlace, tuple[int, ...]]] = []

    def wants(self, place, step):
        return True

    def edit(self, place, step, probs):
        self.seen.append((place, tuple(probs.shape)))
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
    class FakeUNet:
        class config:
            down_block_types = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
            up_block_types = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3

        attn_processors = {
            f"{prefix}.attentions.{a}.transformer_blocks.0.attn{k}.processor": None
            for prefix, count in [("down_blocks.0", 2), ("down_blocks.1", 2), ("down_blocks.2", 2),
                                  ("up_blocks.1", 3), ("up_blocks.2", 3), ("up_blocks.3", 3), ("mid_block", 1)]
            for a in range(count) for k in (1, 2)
        }

    places = layer_places(FakeUNet)
    assert len(places) == 32
    assert places[0].name.startswith("down_blocks.0") and places[0].level == 0
    mid = [p for p in places if p.block == "mid"]
    assert [p.index for p in mid] == [12, 13] and mid[0].level == 3
    up16 = [p for p in places if p.block == "up" and p.level == 2]
    assert len(up16) == 6 and up16[0].transformer == 7
    assert places[-1].transformer == 15  # MasaCtrl's "16 layers"


def _unet_eps(bundle, z, emb):
    with torch.no_grad():
        return bundle.unet(z, 500, encoder_hidden_states=emb, return_dict=False)[0]


def test_explicit_attention_equals_sdpa_and_only_conditional_rows_are_seen(demo_bundle, ctx):
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.cat([ctx.encode_text(["", ""]), ctx.encode_text(["a house", "a castle"])])
    plain = _unet_eps(demo_bundle, z, emb)
    recorder = Recorder()
    hub = AttentionHub([recorder], prompts=2)
    with controlled(demo_bundle.unet, hub):
        watched = _unet_eps(demo_bundle, z, emb)
    torch.testing.assert_close(watched, plain, rtol=1e-4, atol=1e-5)
    assert len(recorder.seen) == len(demo_bundle.unet.attn_processors)
    assert all(shape[0] == 2 for _, shape in recorder.seen)  # [prompts, heads, queries, keys]
    cross = [shape for place, shape in recorder.seen if place.kind == "cross"]
    assert all(shape[-1] == 77 for shape in cross)
    # the original processors are back
    assert all(type(p).__name__ != "ControlledProcessor" for p in demo_bundle.unet.attn_processors.values())


def test_an_edit_in_the_conditional_rows_changes_only_them(demo_bundle, ctx):
    class Uniform(Recorder):
        def edit(self, place, step, probs):
            return torch.full_like(probs, 1.0 / probs.shape[-1]) if place.kind == "cross" else probs

    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.cat([ctx.encode_text([""]), ctx.encode_text(["a house"])])
    plain = _unet_eps(demo_bundle, z, emb)
    with controlled(demo_bundle.unet, AttentionHub([Uniform()], prompts=1)):
        edited = _unet_eps(demo_bundle, z, emb)
    torch.testing.assert_close(edited[0], plain[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(edited[1], plain[1], atol=1e-4)
