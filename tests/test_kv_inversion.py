"""KV Inversion: CP-attention is eq. 1-2 and nothing else, the stored per-step keys and values retrace
the trajectory the tuning reached, step by step; tuning beats plain DDIM at guidance 7.5 (printed
beside null-text: run with -s); a target equal to its source reproduces the reconstruction; a mask
keeps the reconstruction outside it; a saved project re-edits without tuning, identically; a
cancelled tuning leaves the project as it was."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.control.contract import AttentionCall, RowLayout, attend
from pipeline.control.cp_attention import (
    LAYER_CHOICES, CPAttention, FixedKV, LearnedKV, StoredKV, upgrades_layer,
)
from pipeline.control.places import LayerPlace, layer_places
from pipeline.engine import Engine
from pipeline.errors import Cancelled
from pipeline.events import CancelledEvent, CancelToken, Done, Progress, Stage
from pipeline.images import from_tensor, paste_result
from pipeline.inversion.ddim import ddim_invert
from pipeline.inversion.kv_tuning import kv_tune
from pipeline.inversion.null_text import null_text_optimise
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.kv_inversion import LEARNING_RATES, KVInversion, KVInversionParams
from pipeline.params import params_from_dict
from pipeline.project import Project
from pipeline.request import EditRequest
from pipeline.run import RunContext, Step
from pipeline.sampling import DDIMSchedule, Sampling, control_state, denoise
from tests.helpers import SD15UNet, assert_retraces, demo_request, tree_digest

SOURCE = "a house in a meadow under a blue sky"
TARGET = "a castle in a meadow under a blue sky"
STEPS = 8
INNER = 4
GUIDANCE = 7.5
PLACE = LayerPlace("up", "up", "self", 0, 16, 8)


# -- CP-attention on hand-made tensors -----------------------------------------------------------

def _by_hand(q, k, v):
    return (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1) @ v


def _learned(weights, heads=2, tokens=6, dim=4, rank=None):
    g = torch.Generator().manual_seed(0)

    def parts():
        if rank is None:
            return (torch.randn(2, heads, tokens, dim, generator=g),)
        return torch.randn(2, tokens, rank, generator=g), torch.randn(2, rank, heads * dim, generator=g)

    return LearnedKV(torch.tensor(weights), parts(), parts())


def _rewritten(psi, start_step=0, step=5):
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 4, 2, 6, 4, generator=g)  # rows: [uncond src, uncond tgt, cond src, cond tgt]
    call = AttentionCall(PLACE, step, 100, RowLayout.guided(2), q, k, v, None, 0.5, (2, 3))
    CPAttention(FixedKV(step, {PLACE.index: psi}), start_step).rewrite(call)
    return q, k, v, call


def test_cp_attention_with_lambda_one_and_gamma_zero_is_plain_self_attention():
    for rank in (None, 2):
        psi = _learned([1.0, 1.0, 0.0, 0.0], rank=rank)
        q, k, v, call = _rewritten(psi, start_step=99)  # target rows not yet reading the source
        assert torch.equal(call.k, k) and torch.equal(call.v, v)
        assert torch.equal(attend(call.q, call.k, call.v), attend(q, k, v))


def test_cp_attention_is_equations_one_and_two_in_both_halves_and_the_target_reads_the_source():
    lam_k, lam_v, gam_k, gam_v = 0.3, -0.2, 0.8, 1.1
    for rank in (None, 2):
        psi = _learned([lam_k, lam_v, gam_k, gam_v], rank=rank)
        q, k, v, call = _rewritten(psi)
        out = attend(call.q, call.k, call.v)
        for half, (source, target) in enumerate(((0, 1), (2, 3))):
            if rank is None:
                k_hat, v_hat = psi.k[0][half], psi.v[0][half]
            else:  # the low-rank form: the source's own keys plus L R, split into heads
                k_hat = k[source] + (psi.k[0][half] @ psi.k[1][half]).view(6, 2, 4).transpose(0, 1)
                v_hat = v[source] + (psi.v[0][half] @ psi.v[1][half]).view(6, 2, 4).transpose(0, 1)
            k_bar, v_bar = lam_k * k[source] + gam_k * k_hat, lam_v * v[source] + gam_v * v_hat
            torch.testing.assert_close(out[source], _by_hand(q[source], k_bar, v_bar))
            torch.testing.assert_close(out[target], _by_hand(q[target], k_bar, v_bar))


def test_before_the_start_step_the_target_rows_are_untouched_and_from_it_they_read_the_source():
    psi = _learned([0.3, -0.2, 0.8, 1.1])
    q, k, v, call = _rewritten(psi, start_step=6, step=5)
    assert torch.equal(call.k[[1, 3]], k[[1, 3]]) and torch.equal(call.v[[1, 3]], v[[1, 3]])
    assert not torch.allclose(call.k[[0, 2]], k[[0, 2]])
    q, k, v, call = _rewritten(psi, start_step=5, step=5)
    assert torch.equal(call.k[[1, 3]], call.k[[0, 2]]) and torch.equal(call.v[[1, 3]], call.v[[0, 2]])


def test_layer_choices_select_self_attention_by_place_on_sd1():
    places = layer_places(SD15UNet)
    chosen = {c: [p for p in places if upgrades_layer(p, c)] for c in LAYER_CHOICES}
    assert all(p.kind == "self" for ps in chosen.values() for p in ps)
    assert [len(chosen[c]) for c in LAYER_CHOICES] == [9, 6, 1, 16]
    assert {p.block for p in chosen["decoder"]} == {"up"} and {p.block for p in chosen["middle"]} == {"mid"}


def test_cp_attention_changing_nothing_in_every_layer_is_the_plain_unet_bit_for_bit(ctx):
    layers = [p for p in layer_places(ctx.bundle.unet) if upgrades_layer(p, "all")]
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 4, 8, 8, generator=g)
    emb = ctx.encode_text(["", SOURCE, "", TARGET])[[0, 2, 1, 3]]
    unet = ctx.bundle.unet
    identity = {}
    for p in layers:  # random K-hat, but lambda 1 and gamma 0
        attn = unet.get_submodule(p.name.removesuffix(".processor"))
        heads, tokens, dim = attn.heads, 64 // 4**p.level, attn.to_k.out_features // attn.heads
        identity[p.index] = LearnedKV(torch.tensor([1.0, 1.0, 0.0, 0.0]),
                                      (torch.randn(2, heads, tokens, dim, generator=g),),
                                      (torch.randn(2, heads, tokens, dim, generator=g),))
    step = Step(3, 500, STEPS, "x", False, lambda *a: None)
    state = control_state([CPAttention(FixedKV(3, identity), start_step=99)], RowLayout.guided(2), step, z)
    with torch.no_grad():
        controlled = unet(torch.cat([z, z]), 500, encoder_hidden_states=emb, cross_attention_kwargs={"control": state},
                          return_dict=False)[0]
        plain = unet(torch.cat([z, z]), 500, encoder_hidden_states=emb, return_dict=False)[0]
    assert torch.equal(controlled, plain)


# -- tuning on the demo model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(demo_bundle, demo_latent):
    """The supervision trajectory (DDIM at 7.5), and the tuning of both forms, plus null-text's."""
    ctx = RunContext(demo_bundle, CancelToken(), lambda e: None)
    schedule = DDIMSchedule(demo_bundle.scheduler, STEPS)
    cond, uncond = ctx.encode_text([SOURCE]), ctx.encode_text([""])
    trajectory = ddim_invert(ctx, schedule, demo_latent, cond, uncond=uncond, scale=GUIDANCE)
    forms = {form: kv_tune(ctx, schedule, trajectory, cond, uncond, layers="decoder", form=form, rank=4,
                           guidance=GUIDANCE, inner_steps=INNER, learning_rate=LEARNING_RATES[form])
             for form in ("full", "low-rank")}
    return schedule, cond, uncond, trajectory, forms


@pytest.mark.parametrize("form", ["full", "low-rank"])
def test_stored_keys_and_values_retrace_the_tuned_latents_step_by_step(ctx, tuned, form):
    schedule, cond, uncond, _, forms = tuned
    result = forms[form]
    assert result.latents.shape[0] == STEPS + 1
    stored = StoredKV(result.tensors)
    assert stored.steps == STEPS and len(stored.layers) == 6  # the demo UNet's decoder self-attention
    run = Sampling(cond, uncond.expand(STEPS, -1, -1)[:, None], GUIDANCE, [CPAttention(stored)])
    assert_retraces(ctx, schedule, result.latents, run, "tuned")


@pytest.mark.parametrize("form", ["full", "low-rank"])
def test_the_steps_keep_their_own_keys_values_and_weights(tuned, form):
    # A step whose first iterate was its best keeps the initial weights (and, low-rank, the initial
    # factors), so neighbours may be equal; steps that all hold one tensor are a defect.
    for name, tensor in tuned[4][form].tensors.items():
        assert any(not torch.equal(tensor[i], tensor[0]) for i in range(1, STEPS)), f"{name}: every step is step 0"


def test_tuning_reconstructs_better_than_plain_ddim_at_guidance_7_5(ctx, tuned, demo_latent):
    schedule, cond, uncond, trajectory, forms = tuned
    steps_uncond = uncond.expand(STEPS, -1, -1)[:, None]
    with torch.no_grad():
        ddim = denoise(ctx, schedule, trajectory[-1:], Sampling(cond, steps_uncond, GUIDANCE), "plain")
    pivot = ddim_invert(ctx, schedule, demo_latent, cond)  # null-text's own pivot, at guidance 1
    null_text = null_text_optimise(ctx, schedule, pivot, cond, uncond, GUIDANCE, INNER).latents[-1:]
    errors = {"ddim (inverted at 7.5)": ddim, "null-text": null_text,
              **{f"kv-inversion {form}": r.latents[-1:] for form, r in forms.items()}}
    errors = {name: torch.mean((z - demo_latent) ** 2).item() for name, z in errors.items()}
    print(f"\nguidance {GUIDANCE}, {STEPS} steps, {INNER} inner steps, latent MSE of z_0 to the photo's latent:")
    for name, error in errors.items():
        print(f"  {name:24s} {error:.5f}")
    for form in forms:
        assert errors[f"kv-inversion {form}"] < 0.2 * errors["ddim (inverted at 7.5)"]


# -- the method ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inversion(tuned):
    """What KVInversion.invert returns for the default (low-rank) form with these settings."""
    return {"latents": tuned[3], **tuned[4]["low-rank"].tensors}


def _params(**kw):
    return KVInversionParams(steps=STEPS, inner_steps=INNER, **kw)


def test_the_method_inverts_at_its_guidance_and_tunes_with_its_parameters(ctx, demo_latent):
    params = KVInversionParams(steps=5, inner_steps=1, guidance=5.0, layers="middle", rank=2)
    tensors = KVInversion().invert(ctx, demo_latent, Prompts(SOURCE, TARGET), params, Inputs())
    schedule = DDIMSchedule(ctx.bundle.scheduler, 5)
    cond, uncond = ctx.encode_text([SOURCE]), ctx.encode_text([""])
    trajectory = ddim_invert(ctx, schedule, demo_latent, cond, uncond=uncond, scale=5.0)
    tuned = kv_tune(ctx, schedule, trajectory, cond, uncond, layers="middle", form="low-rank", rank=2, guidance=5.0,
                    inner_steps=1, learning_rate=LEARNING_RATES["low-rank"])
    expected = {"latents": trajectory, **tuned.tensors}
    assert tensors.keys() == expected.keys() and tensors["kv.6.k_tokens"].shape == (5, 2, 1, 2)
    for name, tensor in expected.items():
        torch.testing.assert_close(tensors[name], tensor, rtol=0, atol=0, msg=name)


def test_a_target_equal_to_its_source_reproduces_the_tuned_reconstruction(ctx, tuned, inversion, demo_latent):
    out = KVInversion().edit(ctx, inversion, Prompts(SOURCE, SOURCE), _params(cp_start=0.0), Inputs())
    torch.testing.assert_close(out.target, out.reconstruction, rtol=0, atol=1e-6)
    # (the pair is a batch of four, the tuning one of two: the same sums, blocked differently)
    torch.testing.assert_close(out.reconstruction, tuned[4]["low-rank"].latents[-1:], rtol=0, atol=1e-4)
    assert torch.mean((out.target - demo_latent) ** 2) < 0.05  # plain DDIM at 7.5: 0.42 (printed above)


def test_with_cp_starting_after_the_last_step_the_target_is_plain_sampling(ctx, inversion):
    out = KVInversion().edit(ctx, inversion, Prompts(SOURCE, TARGET), _params(cp_start=1.0), Inputs())
    schedule = DDIMSchedule(ctx.bundle.scheduler, STEPS)
    uncond = ctx.encode_text([""]).expand(STEPS, -1, -1)[:, None]
    with torch.no_grad():
        plain = denoise(ctx, schedule, inversion["latents"][-1:], Sampling(ctx.encode_text([TARGET]), uncond, GUIDANCE),
                        "plain")
    torch.testing.assert_close(out.target, plain, rtol=0, atol=1e-4)  # a batch of four against one
    controlled = KVInversion().edit(ctx, inversion, Prompts(SOURCE, TARGET), _params(cp_start=0.0), Inputs())
    assert not torch.allclose(controlled.target, plain, atol=1e-3)


def test_a_subject_mask_keeps_the_reconstruction_outside_it_grown(ctx, inversion):
    subject = torch.zeros(1, 1, 8, 8)
    subject[..., 3:5, 2:4] = 1
    params = _params(cp_start=0.25, mask_grow=0.125)  # grown by one latent cell (8 px)
    out = KVInversion().edit(ctx, inversion, Prompts(SOURCE, TARGET), params, Inputs(masks={"subject_mask": subject}))
    grown = torch.zeros_like(subject)
    grown[..., 2:6, 1:5] = 1
    assert torch.equal(out.region, grown)
    outside = grown == 0
    assert torch.equal(out.target.expand(-1, 4, -1, -1)[outside.expand(-1, 4, -1, -1)],
                       out.reconstruction[outside.expand(-1, 4, -1, -1)])
    assert not torch.allclose(out.target * grown, out.reconstruction * grown, atol=1e-2)
    # In pixels, the VAE decoder (whose middle block attends globally) carries the edit a little beyond
    # the region: stated tolerances, in [-1, 1] units, of the decoded target against the reconstruction.
    difference = (ctx.decode(out.target) - ctx.decode(out.reconstruction)).abs().amax(1)[0]

    def beyond(cells):  # pixels more than `cells` latent cells away from the region
        return F.interpolate(F.max_pool2d(grown, 2 * cells + 1, stride=1, padding=cells), scale_factor=8)[0, 0] == 0

    inside = F.interpolate(grown, scale_factor=8)[0, 0] > 0
    assert difference[beyond(1)].mean() < 0.02 and difference[beyond(2)].max() < 0.1
    assert difference[inside].mean() > 5 * difference[beyond(1)].mean()


# -- through the engine: projects ------------------------------------------------------------

QUICK = {"steps": 6, "inner_steps": 2}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(cache_dir=tmp_path_factory.mktemp("engine-cache"))


def test_a_saved_project_re_edits_without_tuning_identically_to_a_fresh_edit(engine, tmp_path, demo_bundle):
    first = engine.run(demo_request(tmp_path, QUICK, method="kv-inversion"), lambda e: None)
    assert isinstance(first, Done) and not first.reused_inversion
    events = []
    again = engine.run(EditRequest(target_prompt="a barn in a meadow under a blue sky",
                                   project=str(tmp_path / "p.retake"), max_side=64, device="cpu"), events.append)
    assert isinstance(again, Done) and again.reused_inversion
    assert Stage.KV_TUNING not in {e.stage for e in events if isinstance(e, Progress)}

    project = Project.open(tmp_path / "p.retake")
    edit = project.edits[-1]
    stored = project.load_inversion(edit.inversion_key)
    params = params_from_dict(KVInversionParams, edit.params)
    ctx = RunContext(demo_bundle, CancelToken(), lambda e: None)
    fresh = KVInversion().edit(ctx, stored, Prompts(SOURCE, edit.target_prompt), params, Inputs())
    image = paste_result(project.image(), from_tensor(ctx.decode(fresh.target)), None, None)
    assert image.tobytes() == again.image.tobytes()


def test_tuning_stops_at_a_cancel_instead_of_returning_what_it_has(demo_bundle, demo_latent):
    token = CancelToken()

    def emit(event):
        if isinstance(event, Progress) and event.stage == Stage.KV_TUNING and event.step == 1:
            token.cancel()

    ctx = RunContext(demo_bundle, token, emit)
    with pytest.raises(Cancelled):
        KVInversion().invert(ctx, demo_latent, Prompts(SOURCE, TARGET), KVInversionParams(steps=6, inner_steps=1), Inputs())


def test_a_cancelled_tuning_leaves_the_project_as_it_was(engine, tmp_path):
    assert isinstance(engine.run(demo_request(tmp_path, QUICK, method="kv-inversion"), lambda e: None), Done)
    before = tree_digest(tmp_path / "p.retake")
    token = CancelToken()

    def emit(event):
        if isinstance(event, Progress) and event.stage == Stage.KV_TUNING and event.step == 2:
            token.cancel()

    retune = demo_request(tmp_path, {**QUICK, "inner_steps": 3}, method="kv-inversion")
    outcome = engine.run(retune, emit, token)
    assert isinstance(outcome, CancelledEvent) and outcome.stage == Stage.KV_TUNING
    assert tree_digest(tmp_path / "p.retake") == before
