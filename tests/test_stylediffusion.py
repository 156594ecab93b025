"""StyleDiffusion on the tiny demo model: the mapping networks' training, retracing and storage, P2Plus.

The demo model's cross-attention is nearly uniform (its largest probability is about 0.07 against
1/77 = 0.013), so the attention loss there is about 1e-6 against a latent loss of about 1e-2: at the
authors' weight 1 it cannot move the maps. The attention test therefore also trains with weight 1e4,
which puts the two terms on one scale.
"""

import pytest
import torch
import torch.nn.functional as F

from pipeline.control.contract import AttentionCall, ControlState, RowLayout
from pipeline.control.p2plus import UnconditionalSelfReplace
from pipeline.control.places import LayerPlace
from pipeline.control.value_input import CrossMaps, ValueInput, value_projections
from pipeline.engine import Engine
from pipeline.errors import Cancelled, ModelError
from pipeline.events import CancelToken, Progress, Stage
from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.value_mapping import MappingNetwork, from_tensors, to_tensors, train_mappings
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.p2p import P2PParams, p2p_edit
from pipeline.methods.stylediffusion import FEATURES, StyleDiffusion, StyleDiffusionParams, learned_values
from pipeline.parts import IMAGE_ENCODER, image_features, with_parts
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, Sampling
from tests.helpers import SOURCE, TARGET, assert_retraces, demo_request

STEPS = 6
INNER = 20
GUIDANCE = 7.5


@pytest.fixture(scope="module")
def bundle(demo_bundle):
    return with_parts(demo_bundle, (IMAGE_ENCODER,))


@pytest.fixture
def sd_ctx(bundle):
    return RunContext(bundle, CancelToken(), lambda event: None)


@pytest.fixture(scope="module")
def inverted(bundle, demo_latent):
    """DDIM inversion with its recorded maps, and the photo's features."""
    ctx = RunContext(bundle, CancelToken(), lambda event: None)
    schedule = DDIMSchedule(bundle.scheduler, STEPS)
    cond = ctx.encode_text([SOURCE])
    maps = CrossMaps()
    trajectory = ddim_invert(ctx, schedule, demo_latent, cond, controllers=[maps])
    features = image_features(bundle.parts[IMAGE_ENCODER], ctx.decode(demo_latent))
    return schedule, cond, ctx.encode_text([""]), trajectory, maps.maps, features


def _train(bundle, inverted, weight):
    schedule, cond, uncond, trajectory, maps, features = inverted
    ctx = RunContext(bundle, CancelToken(), lambda event: None)
    return train_mappings(ctx, schedule, trajectory, cond, uncond, features, maps, scale=GUIDANCE, inner=INNER,
                          attention_weight=weight)


@pytest.fixture(scope="module")
def trained(bundle, inverted):
    """Training at the authors' attention weight (1)."""
    return _train(bundle, inverted, 1.0)


@pytest.fixture(scope="module")
def stored(inverted, trained):
    """What `invert` would store for the trained networks."""
    _, _, _, trajectory, _, features = inverted
    return {"latents": trajectory, FEATURES: features[0], **to_tensors(trained.networks)}


def params(**kw):
    return StyleDiffusionParams(**{"steps": STEPS, "inner_steps": INNER, **kw})


def test_training_lowers_the_latent_loss_and_the_attention_loss(bundle, inverted, trained):
    first, last = trained.losses[:, 0], trained.losses[:, 1]
    assert (last[:, 0] < first[:, 0]).all(), f"latent loss, first vs last iteration per step: {trained.losses}"
    weighted = _train(bundle, inverted, 1e4).losses
    print(f"attention loss summed over steps: first {weighted[:, 0, 1].sum():.3g}, last {weighted[:, 1, 1].sum():.3g} "
          f"(weight 1e4); last {last[:, 1].sum():.3g} (weight 1)")
    # measured at 6 steps, 20 inner: weight 1e4 11.4e-6 -> 10.2e-6; weight 1 ends at 18.6e-6
    assert weighted[:, 1, 1].sum() < weighted[:, 0, 1].sum()
    assert weighted[:, 1, 1].sum() < 0.75 * last[:, 1].sum()
    assert (weighted[:, 1, 0] < weighted[:, 0, 0]).all()


def test_stored_networks_retrace_the_trained_trajectory_step_by_step(bundle, sd_ctx, inverted, trained, stored):
    schedule, cond, uncond, *_ = inverted
    networks = from_tensors(stored, sd_ctx.device)
    features = stored[FEATURES][None]
    values = {(i, 0): network.value_input(features, cond)[0] for i, network in enumerate(networks)}
    run = Sampling(cond, uncond.expand(STEPS, 1, -1, -1), GUIDANCE, [ValueInput(value_projections(bundle.unet), values)])
    assert_retraces(sd_ctx, schedule, trained.latents, run, "trained")


def test_every_step_keeps_its_own_network(stored):
    weights = stored["mapping.conv_end.weight"]
    assert weights.shape[0] == STEPS
    for i in range(1, STEPS):
        assert not torch.equal(weights[i], weights[i - 1]), f"steps {i - 1} and {i} hold the same network"


def test_networks_round_trip_through_tensors_exactly(stored):
    networks = from_tensors(stored, torch.device("cpu"))
    again = to_tensors(networks)
    assert set(again) == {k for k in stored if k.startswith("mapping.")}
    for name, tensor in again.items():
        assert torch.equal(tensor, stored[name]), name
    assert not any(dict(networks[0].named_buffers())), "BatchNorm keeps no running statistics"


def test_target_equal_to_its_source_reconstructs_the_photo(sd_ctx, demo_latent, trained, stored):
    method = StyleDiffusion()
    same = Prompts(SOURCE, SOURCE)
    whole = method.edit(sd_ctx, stored, same, params(value_replace=1.0), Inputs())
    # the source branch of an edit is the trained trajectory (a batch of two rows instead of one)
    torch.testing.assert_close(whole.reconstruction, trained.latents[-1:], rtol=0, atol=1e-4)
    torch.testing.assert_close(whole.target, whole.reconstruction, rtol=0, atol=1e-4)
    default = method.edit(sd_ctx, stored, same, params(), Inputs())
    assert not torch.allclose(default.target, default.reconstruction, atol=1e-2)  # its own values after tau_v
    error = lambda z: ((z - demo_latent).abs().mean() / demo_latent.abs().mean()).item()  # noqa: E731
    print(f"relative latent error: reconstruction {error(default.reconstruction):.3f}, "
          f"target = source {error(default.target):.3f}")
    # measured at 6 steps, 20 inner: 0.227 and 0.378 (the target leaves the learned values after tau_v = 0.5;
    # plain DDIM at guidance 7.5: about 0.9)
    assert error(default.reconstruction) < 0.3
    assert error(default.target) < 0.45


def test_reconstruction_beats_plain_ddim_by_far(sd_ctx, demo_latent, stored):
    """The PSNR beside null-text inversion's is measured by bench/stylediffusion_psnr.py (too slow here)."""
    from pipeline.methods.p2p import PromptToPrompt

    photo = sd_ctx.decode(demo_latent)  # the VAE's own reconstruction: what inversion can reach
    psnr = lambda z: (10 * torch.log10(4 / F.mse_loss(sd_ctx.decode(z), photo))).item()  # noqa: E731
    same = Prompts(SOURCE, SOURCE)
    ours = psnr(StyleDiffusion().edit(sd_ctx, stored, same, params(), Inputs()).reconstruction)
    p2p, ddim = PromptToPrompt(), P2PParams(steps=STEPS, inversion="ddim")
    plain = psnr(p2p.edit(sd_ctx, p2p.invert(sd_ctx, demo_latent, same, ddim, Inputs()), same, ddim,
                          Inputs()).reconstruction)
    print(f"PSNR against the VAE round trip at {STEPS} steps: stylediffusion {ours:.2f} dB, ddim {plain:.2f} dB")
    assert ours > plain + 5  # measured: 26.3 dB against 16.1 dB


def test_p2plus_with_tau_u_zero_is_p2p_with_the_learned_values(sd_ctx, stored):
    prompts = Prompts(SOURCE, TARGET)
    ours = StyleDiffusion().edit(sd_ctx, stored, prompts, params(), Inputs())
    plain = P2PParams(steps=STEPS, inversion="ddim", cross_replace=(0.0, 0.6), self_replace=(0.0, 0.6))
    value_steps = int(0.5 * STEPS)
    theirs = p2p_edit(sd_ctx, stored, prompts, plain, Inputs(), blend_words=(),
                      extra=[learned_values(sd_ctx, stored, prompts, value_steps)])
    assert torch.equal(ours.target, theirs.target) and torch.equal(ours.reconstruction, theirs.reconstruction)
    uncond = StyleDiffusion().edit(sd_ctx, stored, prompts, params(uncond_self_replace=(0.0, 0.5)), Inputs())
    # the source's unconditional row now runs through explicit probabilities instead of SDPA: same maths,
    # fp32 rounding apart
    torch.testing.assert_close(uncond.reconstruction, ours.reconstruction, rtol=0, atol=1e-3)
    assert not torch.allclose(uncond.target, ours.target, atol=1e-4)


def test_learned_values_change_only_the_conditional_branch(bundle, sd_ctx, inverted):
    _, cond, uncond, trajectory, _, _ = inverted
    projections = value_projections(bundle.unet)

    def state(values):
        return ControlState((ValueInput(projections, values),), RowLayout.guided(1), 0, 500, (8, 8))

    z = trajectory[3:4].expand(2, -1, -1, -1)
    emb = torch.cat([uncond, cond])
    with torch.no_grad():
        plain = sd_ctx.unet_noise(z, 500, emb)
        itself = sd_ctx.unet_noise(z, 500, emb, control=state({(0, 0): cond[0]}))
        other = sd_ctx.unet_noise(z, 500, emb, control=state({(0, 0): 2 * cond[0]}))
        later = sd_ctx.unet_noise(z, 500, emb, control=state({(1, 0): 2 * cond[0]}))
    torch.testing.assert_close(itself, plain, rtol=0, atol=1e-6)  # the prompt's own value input: no change
    assert torch.equal(other[0], plain[0]) and not torch.allclose(other[1], plain[1], atol=1e-4)
    assert torch.equal(later, plain)  # a value input for another step is inactive


def _call(kind, level, step, tokens):
    """A hand-made call on the guided batch of two prompts: 4 rows, 2 heads, 4 queries, head size 3."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, n, 3, generator=g) for n in (4, tokens, tokens))
    return AttentionCall(LayerPlace("x", "up", kind, level, 0, 0), step, 0, RowLayout.guided(2), q, k, v, None, 1.0,
                         (2, 2))


def test_value_input_controller_replaces_the_values_of_its_rows_only():
    projection = torch.nn.Linear(5, 6, bias=False)
    x0, x1 = torch.randn(7, 5), torch.randn(7, 5)
    controller = ValueInput({"x": projection}, {(2, 0): x0, (2, 1): x1})
    call = _call("cross", 2, 2, 7)
    k, v = call.k.clone(), call.v.clone()
    assert controller.active(call.place, 2) and not controller.active(call.place, 3)
    assert not controller.active(_call("self", 2, 2, 4).place, 2)
    controller.rewrite(call)
    assert torch.equal(call.k, k)
    assert torch.equal(call.v[:2], v[:2])  # the unconditional rows
    with torch.no_grad():
        for row, x in ((2, x0), (3, x1)):
            assert torch.equal(call.v[row], projection(x).view(7, 2, 3).transpose(0, 1))


def test_unconditional_self_replace_copies_the_source_maps_into_the_target_row():
    controller = UnconditionalSelfReplace((1, 3))
    call = _call("self", 1, 1, 4)
    assert controller.active(call.place, 1) and controller.active(call.place, 2)
    assert not controller.active(call.place, 3) and not controller.active(call.place, 0)
    assert not controller.active(_call("self", 0, 1, 4).place, 1)  # finest level: never
    assert not controller.active(_call("cross", 1, 1, 4).place, 1)
    assert set(controller.prob_rows(call)) == {0, 1}
    rows = [0, 1, 2, 3]  # another controller asked for the conditional rows too
    probs = torch.rand(len(rows), 2, 4, 4)
    out = controller.edit_probs(call, rows, probs)
    assert torch.equal(out[1], probs[0]) and torch.equal(out[0], probs[0]) and torch.equal(out[2:], probs[2:])


def test_engine_stores_the_networks_exactly_and_a_re_edit_is_identical_without_retraining(tmp_path):
    engine, events, cancel = Engine(), [], CancelToken()
    request = demo_request(tmp_path, {"steps": STEPS, "inner_steps": 2}, method="stylediffusion")
    job = engine.resolve(request)
    bundle = engine.load_model(job, events.append)
    fresh = engine.invert(job, bundle, events.append, cancel)
    assert not fresh.reused and any(isinstance(e, Progress) and e.stage == Stage.VALUE_MAPPING for e in events)
    assert {"latents", FEATURES, "mapping.conv_start.weight"} <= set(fresh.tensors)
    assert fresh.tensors["mapping.conv_start.weight"].shape[:3] == (STEPS, 154, 65)  # 65 tokens: the demo encoder
    first = engine.edit(job, bundle, fresh, events.append, cancel)
    engine.commit(job, bundle, fresh, first)

    events.clear()
    job = engine.resolve(request)
    reused = engine.invert(job, engine.load_model(job, events.append), events.append, cancel)
    assert reused.reused and not any(isinstance(e, Progress) and e.stage == Stage.VALUE_MAPPING for e in events)
    assert set(reused.tensors) == set(fresh.tensors)
    for name, tensor in fresh.tensors.items():
        assert torch.equal(reused.tensors[name], tensor), name
    again = engine.edit(job, bundle, reused, events.append, cancel)
    assert torch.equal(again.output.target, first.output.target)
    assert again.image.tobytes() == first.image.tobytes()


def test_cancel_stops_training_within_one_iteration(bundle, demo_latent):
    token = CancelToken()
    calls = {"after_cancel": 0}

    def emit(event):
        if isinstance(event, Progress) and event.stage == Stage.VALUE_MAPPING and event.step == 2:
            token.cancel()

    ctx = RunContext(bundle, token, emit)
    original = ctx.unet_noise

    def counting(*args, **kwargs):
        calls["after_cancel"] += token.cancelled
        return original(*args, **kwargs)

    ctx.unet_noise = counting
    with pytest.raises(Cancelled):
        StyleDiffusion().invert(ctx, demo_latent, Prompts(SOURCE, SOURCE), params(inner_steps=3), Inputs())
    assert calls["after_cancel"] == 0


def test_a_missing_image_encoder_is_one_clear_error(demo_bundle, tmp_path, monkeypatch):
    import dataclasses

    folder = tmp_path / "model"
    folder.mkdir()  # a model folder without image_encoder/, and an empty Hugging Face cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    bare = dataclasses.replace(demo_bundle, spec=str(folder))
    with pytest.raises(ModelError, match="image encoder.*image_encoder.*openai/clip-vit-base-patch16.*--allow-download"):
        with_parts(bare, (IMAGE_ENCODER,))


def test_the_image_encoder_is_found_in_the_hugging_face_cache(demo_bundle, tmp_path, monkeypatch):
    """The paper's encoder is published as a whole CLIPModel; its vision half must load, not random weights."""
    import dataclasses

    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                     "num_attention_heads": 2},
                       vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "image_size": 32, "patch_size": 8})
    torch.manual_seed(1)
    clip = CLIPModel(config)
    snapshot = tmp_path / "hub" / "models--openai--clip-vit-base-patch16" / "snapshots" / ("0" * 40)
    clip.save_pretrained(snapshot, safe_serialization=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = tmp_path / "model"
    folder.mkdir()
    encoder = with_parts(dataclasses.replace(demo_bundle, spec=str(folder)), (IMAGE_ENCODER,)).parts[IMAGE_ENCODER]
    assert torch.equal(encoder.model.embeddings.patch_embedding.weight,
                       clip.vision_model.embeddings.patch_embedding.weight)
    assert image_features(encoder, torch.zeros(1, 3, 48, 64)).shape == (1, 17, 32)


def test_an_image_encoder_of_another_width_is_refused(demo_bundle, tmp_path):
    import dataclasses

    from resources.demo_model.image_encoder import build

    folder = tmp_path / "model"
    build(48).save_pretrained(folder / "image_encoder", safe_serialization=True)
    with pytest.raises(ModelError, match="48 wide.*32 wide"):
        with_parts(dataclasses.replace(demo_bundle, spec=str(folder)), (IMAGE_ENCODER,))


def test_mapping_network_is_the_authors_architecture():
    network = MappingNetwork(197)
    shapes = {name: tuple(p.shape) for name, p in network.named_parameters()}
    assert shapes == {"conv_start.weight": (154, 197, 1), "conv_start.bias": (154,),
                      "conv_block.weight": (154, 154, 1), "conv_block.bias": (154,),
                      "norm.weight": (154,), "norm.bias": (154,),
                      "conv_end.weight": (154, 154, 1), "conv_end.bias": (154,)}
    a, b = network.reset(torch.Generator().manual_seed(0))(torch.randn(1, 197, 768))
    assert a.shape == b.shape == (1, 77, 768)
