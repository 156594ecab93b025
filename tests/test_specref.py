"""SpecRef: the reference's keys and values are recorded per timestep and used at the matching step,
masked by mask_s and blended by mask_t; with either mask empty the edit is the plain P2P edit; the
local blend keeps the reconstruction outside its region."""

import dataclasses

import pytest
import torch
from PIL import Image

from cli.commands import UsageError, build_parser, request_from_args
from pipeline.control.contract import AttentionCall, ControlState, RowLayout, attend
from pipeline.control.places import LayerPlace, layer_places
from pipeline.control.specref import (
    KV_PREFIX, TIMESTEPS, FixedRegion, KeyValueRecorder, ReferenceAttention, TargetWordRegion,
)
from pipeline.engine import Engine
from pipeline.errors import PromptError
from pipeline.events import CancelToken, Done, Progress
from pipeline.images import load_image, to_tensor
from pipeline.inversion.ddim import ddim_invert
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.methods.specref import SpecRef, SpecRefParams, blend_words
from pipeline.paths import RESOURCES
from pipeline.project import Project
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule
from tests.helpers import demo_request

SOURCE = "a house in a meadow under a blue sky"
TARGET = "a castle in a meadow under a blue sky"
PROMPTS = Prompts(SOURCE, TARGET)
REFERENCE_PICTURE = RESOURCES / "demo_world" / "house.png"
STEPS = 8
SELF = LayerPlace("up_blocks.3.attentions.0.transformer_blocks.0.attn1.processor", "up", "self", 0, 26, 13)
CROSS16 = LayerPlace("up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor", "up", "cross", 2, 15, 7)


def _call(place, step, timestep, q, k, v, spatial, layout=None):
    return AttentionCall(place, step, timestep, layout or RowLayout.guided(2), q, k, v, None, q.shape[-1] ** -0.5,
                         spatial)


def _by_hand(q, k, v, keep):
    scores = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~keep, float("-inf"))
    return scores.softmax(-1) @ v


# -- controllers on hand-made tensors -------------------------------------------------------------


def test_the_recorder_files_each_call_under_its_timestep_and_changes_nothing():
    timesteps = [900, 600, 300]
    recorder = KeyValueRecorder("decoder-fine", timesteps)
    assert recorder.active(SELF, 0)
    g = torch.Generator().manual_seed(0)
    seen = {}
    for step, t in enumerate(reversed(timesteps)):  # an inversion runs the timesteps upwards
        q, k, v = torch.randn(3, 1, 2, 6, 4, generator=g)
        call = _call(SELF, step, t, q, k, v, (2, 3), RowLayout.single("cond", 1))
        recorder.rewrite(call)
        assert call.k is k and call.v is v  # only observed
        seen[t] = (k[0], v[0])
    stored = recorder.tensors()
    kv = stored[f"{KV_PREFIX}{SELF.transformer}"]
    assert kv.dtype == torch.float16 and kv.shape == (3, 2, 2, 6, 4)
    assert stored[TIMESTEPS].tolist() == timesteps
    for i, t in enumerate(timesteps):
        torch.testing.assert_close(kv[i, 0], seen[t][0].half(), rtol=0, atol=0)
        torch.testing.assert_close(kv[i, 1], seen[t][1].half(), rtol=0, atol=0)


def test_an_incomplete_recording_is_refused():
    recorder = KeyValueRecorder("decoder-fine", [900, 600])
    q = torch.zeros(1, 2, 6, 4)
    recorder.rewrite(_call(SELF, 0, 600, q, q, q, (2, 3), RowLayout.single("cond", 1)))
    with pytest.raises(RuntimeError, match="incomplete"):
        recorder.tensors()


def _reference(steps=4, heads=2, tokens=6, dim=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {SELF.transformer: torch.randn(steps, 2, heads, tokens, dim, generator=g).half()}


def test_the_target_attends_to_the_stored_step_of_its_timestep_under_mask_s_blended_by_mask_t():
    timesteps = [900, 600, 300, 100]
    reference = _reference()
    mask_s = torch.tensor([[1.0, 1, 0], [0, 1, 0]]).view(1, 1, 2, 3)  # keys 0, 1, 4 of the reference
    mask_t = torch.tensor([[0.0, 0, 0], [1, 1, 0]]).view(1, 1, 2, 3)  # queries 3, 4 take the reference
    controller = ReferenceAttention(reference, timesteps, (1, 4), mask_s, FixedRegion(mask_t))
    assert controller.active(SELF, 1) and not controller.active(SELF, 0)
    assert not controller.active(CROSS16, 2) and not controller.active(dataclasses.replace(SELF, transformer=12), 2)
    g = torch.Generator().manual_seed(2)
    keep, take = mask_s.flatten().bool(), mask_t.flatten().bool()[:, None]
    for step in (1, 2, 3):
        q, k, v = torch.randn(3, 4, 2, 6, 4, generator=g)
        call = _call(SELF, step, timesteps[step], q, k, v, (2, 3))
        own = attend(q, k, v)
        out = controller.rewrite_output(call, own.clone())
        ref = _by_hand(q[3], reference[SELF.transformer][step, 0].float(), reference[SELF.transformer][step, 1].float(),
                       keep)
        torch.testing.assert_close(out[3], torch.where(take, ref, own[3]))
        torch.testing.assert_close(out[:3], own[:3], rtol=0, atol=0)  # source rows and the unconditional target
        other = (step + 1) % 4  # the neighbouring step's keys would give another output
        shifted = _by_hand(q[3], reference[SELF.transformer][other, 0].float(),
                           reference[SELF.transformer][other, 1].float(), keep)
        assert not torch.allclose(out[3, :, 3:5], shifted[:, 3:5], atol=1e-3)
        assert set(controller._loaded) == {SELF.transformer} and controller._step == step  # one step on the device


def test_empty_masks_at_a_grid_leave_the_output_as_it_was():
    reference = _reference(tokens=2)
    q, k, v = torch.randn(3, 4, 2, 2, 4, generator=torch.Generator().manual_seed(3))
    own = attend(q, k, v)
    small_s = torch.zeros(1, 1, 4, 4)
    small_s[..., 0, 1] = 1  # one latent cell: nearest-neighbour resizing to 1x2 drops it
    for mask_s, mask_t in ((torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)), (small_s, torch.ones(1, 1, 4, 4))):
        controller = ReferenceAttention(reference, [900, 600, 300, 100], (0, 4), mask_s, FixedRegion(mask_t))
        out = controller.rewrite_output(_call(SELF, 1, 600, q, k, v, (1, 2)), own)
        assert out is own and not controller._loaded  # nothing computed, nothing moved to the device


def test_the_word_region_averages_the_targets_maps_over_every_step_so_far():
    words = torch.zeros(5)
    words[2] = 1.0
    region = TargetWordRegion(words, threshold=0.5)
    assert region.active(CROSS16, 0) and not region.active(SELF, 0)
    assert not region.active(dataclasses.replace(CROSS16, block="mid"), 0)
    assert region(0, (2, 2)) is None  # no map yet
    layout = RowLayout.guided(2)
    rows = list(region.prob_rows(_call(CROSS16, 0, 900, *torch.zeros(3, 4, 1, 4, 1), (2, 2), layout)))
    assert rows == [3]
    word_maps = [torch.tensor([1.0, 0.0, 0.0, 0.3]), torch.tensor([0.0, 0.8, 0.0, 0.3])]
    for step, word_map in enumerate(word_maps):
        probs = torch.zeros(1, 2, 4, 5)
        probs[..., 2] = word_map
        probs[..., 0] = 1 - word_map
        call = _call(CROSS16, step, 900 - step, *torch.zeros(3, 4, 2, 4, 1), (2, 2), layout)
        assert torch.equal(region.edit_probs(call, rows, probs), probs)  # only read
    # the sum over both steps [1, 0.8, 0, 0.6], min-max normalised, >= 0.5: cells 0, 1 and 3 (step 1 alone: cell 1)
    assert region(1, (2, 2)).tolist() == [True, True, False, True]
    assert region(1, (4, 4)).view(4, 4)[:2, :2].all()  # nearest-neighbour at a finer grid


# -- the method on the demo model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def method():
    return SpecRef()


def _context(bundle):
    return RunContext(bundle, CancelToken(), lambda event: None)


def _prepare(method, bundle, size, params, prompt=""):
    """(inversion merged with the tuning, the reference's latent) at a working size."""
    ctx = _context(bundle)
    photo = ctx.encode_image(to_tensor(load_image(RESOURCES / "demo" / "house.png"), size))
    reference = ctx.encode_image(to_tensor(load_image(REFERENCE_PICTURE), size))
    inversion = method.invert(ctx, photo, PROMPTS, params, Inputs())
    tuned = method.tune(ctx, inversion, PROMPTS, params,
                        Inputs(images={"reference": reference}, prompts={"reference": prompt}))
    assert not set(tuned) & set(inversion)
    return {**inversion, **tuned}, reference


@pytest.fixture(scope="module")
def prepared(method, demo_bundle):
    params = SpecRefParams(steps=STEPS)
    tensors, reference = _prepare(method, demo_bundle, (64, 64), params, prompt="a red house")
    return params, tensors, reference


def test_the_stored_keys_and_values_are_the_references_at_each_timestep_of_its_inversion(prepared, demo_bundle):
    params, tensors, reference = prepared
    ctx = _context(demo_bundle)
    schedule = DDIMSchedule(demo_bundle.scheduler, STEPS)
    cond = ctx.encode_text(["a red house"])
    trajectory = tensors["reference_latents"]
    torch.testing.assert_close(trajectory, ddim_invert(ctx, schedule, reference, cond), rtol=0, atol=0)
    layers = sorted(int(name[len(KV_PREFIX):]) for name in tensors if name.startswith(KV_PREFIX))
    places = layer_places(demo_bundle.unet)
    assert layers == [p.transformer for p in places if p.kind == "self" and p.block == "up" and p.level <= 1]
    assert tensors[TIMESTEPS].tolist() == schedule.timesteps
    for i, t in enumerate(schedule.timesteps):  # the step at timestep t started from z*_{T-1-i}
        again = KeyValueRecorder(params.reference_layers, [t])
        state = ControlState((again,), RowLayout.single("cond", 1), 0, t, (8, 8))
        with torch.no_grad():
            demo_bundle.unet(trajectory[STEPS - 1 - i : STEPS - i], t, encoder_hidden_states=cond,
                             cross_attention_kwargs={"control": state})
        for name, kv in again.tensors().items():
            if name.startswith(KV_PREFIX):
                assert kv.dtype == torch.float16
                torch.testing.assert_close(tensors[name][i], kv[0], rtol=0, atol=0, msg=lambda m, i=i: f"step {i}: {m}")


def _p2p_twin(params: SpecRefParams, words) -> P2PParams:
    """The P2P parameters a SpecRef edit builds on, with its blend words spelt out."""
    shared = {f.name: getattr(params, f.name) for f in dataclasses.fields(P2PParams)}
    return P2PParams(**{**shared, "blend_words": tuple(words)})


def test_with_an_empty_mask_s_or_mask_t_the_edit_is_the_plain_p2p_edit(method, prepared, demo_bundle):
    params, tensors, _ = prepared
    ctx = _context(demo_bundle)
    words = blend_words(demo_bundle.tokenizer, PROMPTS, params)
    assert words == ("house", "castle")
    p2p = PromptToPrompt().edit(ctx, tensors, PROMPTS, _p2p_twin(params, words), Inputs())
    full, empty = torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    for masks in ({"reference_mask": empty}, {"reference_mask": full, "reference_region": empty}):
        out = method.edit(ctx, tensors, PROMPTS, params, Inputs(masks=masks))
        assert torch.equal(out.target, p2p.target) and torch.equal(out.reconstruction, p2p.reconstruction), masks
    acting = method.edit(ctx, tensors, PROMPTS, params, Inputs(masks={"reference_mask": full}))
    assert not torch.allclose(acting.target, p2p.target, atol=1e-2)  # and with both masks, the reference acts
    torch.testing.assert_close(acting.reconstruction, p2p.reconstruction, rtol=0, atol=0)
    late = dataclasses.replace(params, reference_steps=(1.0, 1.0))  # a step range that holds no step
    off = method.edit(ctx, tensors, PROMPTS, late, Inputs(masks={"reference_mask": full}))
    assert torch.equal(off.target, p2p.target)


def test_a_painted_mask_t_stands_in_for_the_words_which_are_needed_otherwise(method, prepared, demo_bundle):
    params, tensors, _ = prepared
    ctx = _context(demo_bundle)
    same = Prompts(SOURCE, SOURCE)
    with pytest.raises(PromptError, match="reference_words"):
        method.edit(ctx, tensors, same, params, Inputs(masks={"reference_mask": torch.ones(1, 1, 8, 8)}))
    with pytest.raises(PromptError, match="zebra"):
        method.check(demo_bundle.tokenizer, PROMPTS, dataclasses.replace(params, reference_words=("zebra",)))
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4, :] = 1
    masks = {"reference_mask": torch.ones(1, 1, 8, 8), "reference_region": half}
    named = dataclasses.replace(params, reference_words=("house",))  # ignored: the painted region wins
    painted = method.edit(ctx, tensors, same, named, Inputs(masks=masks))
    plain = method.edit(ctx, tensors, same, named, Inputs(masks={**masks, "reference_region": torch.zeros(1, 1, 8, 8)}))
    assert not torch.allclose(painted.target, plain.target, atol=1e-3)


def test_outside_the_local_blend_region_the_target_is_the_reconstruction(method, demo_bundle):
    # At 128 px the demo model's blend maps are 4x4 cells; a high threshold leaves part of them out.
    params = SpecRefParams(steps=6, blend_threshold=0.9)
    tensors, _ = _prepare(method, demo_bundle, (128, 128), params)
    out = method.edit(_context(demo_bundle), tensors, PROMPTS, params,
                      Inputs(masks={"reference_mask": torch.ones(1, 1, 16, 16)}))
    outside = (out.region == 0).expand_as(out.target)
    assert outside.any() and not outside.all()
    assert torch.equal(out.target[outside], out.reconstruction[outside])
    assert not torch.allclose(out.target[~outside], out.reconstruction[~outside], atol=1e-3)


# -- through the engine and the command line --------------------------------------------------------

QUICK = {"steps": 6, "reference_words": ("castle",)}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(cache_dir=tmp_path_factory.mktemp("specref-engine"))


def _stages(engine, request):
    events = []
    done = engine.run(request, events.append)
    assert isinstance(done, Done), done
    return done, {e.stage for e in events if isinstance(e, Progress)}


def test_the_project_keeps_the_reference_features_exactly_and_a_re_edit_reproduces_the_edit(engine, tmp_path):
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    first, stages = _stages(engine, demo_request(
        tmp_path, QUICK, method="specref", inputs={"reference": str(REFERENCE_PICTURE), "reference_mask": str(mask)},
        input_prompts={"reference": "a red house"}))
    assert {"DDIM inversion", "reference inversion"} <= stages

    # what the project stores is, bit for bit, what the reference inversion gives
    job = engine.resolve(demo_request(tmp_path, QUICK, method="specref"))
    bundle = engine.load_model(job, lambda event: None)
    inversion = engine.invert(job, bundle, lambda event: None, CancelToken())
    assert inversion.reused
    ctx = _context(bundle)
    inputs = Inputs(images={"reference": ctx.encode_image(job.images["reference"])},
                    prompts={"reference": job.input_prompts["reference"]})
    fresh = SpecRef().tune(ctx, inversion.tensors, job.prompts, job.params, inputs)
    project = Project.open(tmp_path / "p.retake")
    stored = [project.load_inversion(r.key) for r in project.inversions if r.key != inversion.key]
    assert len(stored) == 1 and set(stored[0]) == set(fresh)
    for name, tensor in fresh.items():
        assert stored[0][name].dtype == tensor.dtype and torch.equal(stored[0][name], tensor), name

    # a re-edit (both inversions from the project) is byte-identical to the fresh edit
    again, stages = _stages(engine, demo_request(tmp_path, QUICK, method="specref"))
    assert again.reused_inversion and not stages & {"DDIM inversion", "reference inversion"}
    assert again.image.tobytes() == first.image.tobytes()

    # a new target re-inverts nothing; a new reference re-inverts only the reference
    _, stages = _stages(engine, demo_request(tmp_path, QUICK, method="specref",
                                             target_prompt="a castle in a meadow under a red sky"))
    assert not stages & {"DDIM inversion", "reference inversion"}
    _, stages = _stages(engine, demo_request(tmp_path, QUICK, method="specref",
                                             inputs={"reference": str(RESOURCES / "demo" / "house.png")}))
    assert "reference inversion" in stages and "DDIM inversion" not in stages


def test_the_command_line_shorthands_name_the_reference_inputs():
    def request(*extra):
        return request_from_args(build_parser().parse_args(["edit", "photo.png", "--target", "a castle", *extra]))

    given = request("--reference", "ref.png", "--reference-mask", "m.png", "--reference-prompt", "a red house",
                    "--input", "reference_region=r.png")
    assert given.inputs == {"reference": "ref.png", "reference_mask": "m.png", "reference_region": "r.png"}
    assert given.input_prompts == {"reference": "a red house"}
    assert request().input_prompts == {} and request().inputs == {}
    assert request("--input", "reference=ref.png", "--reference", "ref.png").inputs == {"reference": "ref.png"}
    with pytest.raises(UsageError, match="reference"):
        request("--input", "reference=a.png", "--reference", "b.png")


def test_the_object_mask_is_declared_on_the_reference_picture():
    from dataclasses import dataclass
    from typing import ClassVar

    from pipeline.methods.base import InputSpec, input_specs

    pictures = {spec.name: spec.picture for spec in input_specs(SpecRefParams)}
    assert pictures == {"reference": None, "reference_mask": "reference", "reference_region": None,
                        "edit_mask": None}
    assert input_specs(SpecRefParams)[1].to_json()["picture"] == "reference"
    with pytest.raises(ValueError, match="only a mask"):
        InputSpec("reference", "image", "Reference", "A picture.", picture="photo")

    @dataclass(frozen=True)
    class Orphan:
        INPUTS: ClassVar[tuple[InputSpec, ...]] = (
            InputSpec("cutout", "mask", "Cutout", "Its part.", picture="style"),)

    with pytest.raises(TypeError, match="cutout.*style.*not one of its image inputs"):
        input_specs(Orphan)
