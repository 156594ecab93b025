"""The engine's tuning stage and image inputs: what is learned once is kept under its own key, and a
re-edit re-tunes exactly when what the tuning depends on changed (never re-inverting for it)."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine import Engine
from pipeline.events import CancelledEvent, CancelToken, Done, Failed, Progress
from pipeline.methods import registry
from pipeline.methods.base import EDIT_MASK, InputSpec
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.params import param
from pipeline.project import Project
from tests.helpers import demo_request, tree_digest

REFERENCE = InputSpec("reference", "image", "Reference", "A second picture.", stage="tuning")
REFERENCE_MASK = InputSpec("reference_mask", "mask", "Reference object", "Its object.", stage="tuning")


@dataclass(frozen=True)
class TunedParams(P2PParams):
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (EDIT_MASK, REFERENCE, REFERENCE_MASK)
    strength: float = param(1.0, kind="float", stage="tuning", help="A tuning parameter.")


class Tuned(PromptToPrompt):
    """p2p with a tuning stage that depends on the target prompt and a reference: records what it sees."""

    id: ClassVar[str] = "tuned-test"
    Params = TunedParams
    tune_on_target: ClassVar[bool] = True
    calls: ClassVar[list[dict]] = []
    seen: ClassVar[list[dict]] = []

    def tune(self, ctx, inversion, prompts, params, inputs):
        ctx.cancel.check()
        reference = inputs.images.get("reference")
        Tuned.calls.append({"target": prompts.target, "inputs": sorted({**inputs.masks, **inputs.images}),
                            "prompt": inputs.prompts.get("reference")})
        value = torch.zeros(()) if reference is None else reference.mean().cpu()
        return {"tuned": (value * params.strength).reshape(1) + inversion["latents"][0].mean()}

    def edit(self, ctx, inversion, prompts, params, inputs):
        Tuned.seen.append({"tuned": inversion["tuned"].clone(), "inputs": sorted({**inputs.masks, **inputs.images})})
        return super().edit(ctx, inversion, prompts, params, inputs)


QUICK = {"steps": 5, "inversion": "ddim"}


@pytest.fixture(autouse=True)
def tuned_method(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", (*registry._METHODS, Tuned))
    Tuned.calls.clear()
    Tuned.seen.clear()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(cache_dir=tmp_path_factory.mktemp("engine-cache"))


@pytest.fixture
def pictures(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    for name in ("ref_a", "ref_b"):
        files[name] = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(files[name])
    mask = np.zeros((48, 80), np.uint8)
    mask[10:30, 20:60] = 255
    files["mask"] = tmp_path / "mask.png"
    Image.fromarray(mask).save(files["mask"])
    return files


def run(engine, tmp_path, events=None, cancel=None, **kw):
    outcome = engine.run(demo_request(tmp_path, QUICK, method="tuned-test", **kw),
                         (events if events is not None else []).append, cancel)
    assert isinstance(outcome, (Done, CancelledEvent)), outcome
    return outcome


def test_tuning_is_kept_and_reused_and_redone_only_when_its_inputs_change(engine, tmp_path, pictures):
    first = run(engine, tmp_path, inputs={"reference": str(pictures["ref_a"]),
                                          "reference_mask": str(pictures["mask"])},
                input_prompts={"reference": "a red cat"})
    assert not first.reused_inversion and len(Tuned.calls) == 1
    assert Tuned.calls[0] == {"target": demo_request(tmp_path, {}).target_prompt,
                              "inputs": ["reference", "reference_mask"], "prompt": "a red cat"}
    assert Tuned.seen[0]["inputs"] == ["reference", "reference_mask"]  # the edit sees every input

    # an edit parameter: nothing re-learned, the same tuned tensors reach the edit
    again = run(engine, tmp_path, params={**QUICK, "self_replace": "0,0.5"})
    assert again.reused_inversion and len(Tuned.calls) == 1
    assert torch.equal(Tuned.seen[1]["tuned"], Tuned.seen[0]["tuned"])
    assert Tuned.seen[1]["inputs"] == ["reference", "reference_mask"]  # taken from the project

    # the tuning depends on: a tuning parameter, the target prompt, the reference, its prompt
    for change in ({"params": {**QUICK, "strength": 2.0}},
                   {"target_prompt": "a tower in a meadow under a blue sky"},
                   {"inputs": {"reference": str(pictures["ref_b"])}},
                   {"input_prompts": {"reference": "a blue cat"}}):
        before = len(Tuned.calls)
        outcome = run(engine, tmp_path, **change)
        assert outcome.reused_inversion and len(Tuned.calls) == before + 1, change
    assert Tuned.calls[-1]["prompt"] == "a blue cat"


def test_a_reedit_takes_the_inversion_and_tuning_from_memory_not_from_disk(engine, tmp_path, monkeypatch):
    run(engine, tmp_path)
    reads = []
    original = Project.load_inversion
    monkeypatch.setattr(Project, "load_inversion", lambda self, key: reads.append(key) or original(self, key))
    run(engine, tmp_path, params={**QUICK, "self_replace": "0,0.5"})
    assert reads == [] and len(Tuned.calls) == 1  # both kept in memory; the tuning was not redone either
    assert torch.equal(Tuned.seen[1]["tuned"], Tuned.seen[0]["tuned"])


def test_dropping_an_input_forgets_it(engine, tmp_path, pictures):
    run(engine, tmp_path, inputs={"reference": str(pictures["ref_a"])})
    assert "reference" in Project.open(tmp_path / "p.retake").input_names()
    run(engine, tmp_path, inputs={"reference": ""})
    assert Tuned.seen[-1]["inputs"] == [] and Tuned.calls[-1]["inputs"] == []
    assert "reference" not in Project.open(tmp_path / "p.retake").input_names()


def test_a_cancelled_tuning_writes_nothing_but_the_finished_inversion(engine, tmp_path, pictures):
    run(engine, tmp_path)  # the project with its inversion and first tuning
    before = tree_digest(tmp_path / "p.retake")
    cancel = CancelToken()
    events = []
    original = Tuned.tune

    def cancelling(self, ctx, *args):  # the cancel arrives as the tuning's last step ends
        tuned = original(self, ctx, *args)
        cancel.cancel()
        return tuned

    Tuned.tune = cancelling
    try:
        outcome = run(engine, tmp_path, events, cancel, target_prompt="a tower in a meadow under a blue sky")
    finally:
        Tuned.tune = original
    assert isinstance(outcome, CancelledEvent)
    assert tree_digest(tmp_path / "p.retake") == before


def test_a_tuning_that_would_shadow_the_inversion_fails_clearly(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(Tuned, "tune", lambda self, ctx, inversion, *a: {"latents": inversion["latents"]})
    outcome = engine.run(demo_request(tmp_path, QUICK, method="tuned-test"), lambda e: None)
    assert isinstance(outcome, Failed) and "shadow" in outcome.message


def test_image_inputs_reach_the_method_as_latents_at_working_size(engine, tmp_path, pictures, monkeypatch):
    shapes = []
    original = Tuned.tune

    def spy(self, ctx, inversion, prompts, params, inputs):
        shapes.append((tuple(inputs.images["reference"].shape), (1, *inversion["latents"].shape[1:])))
        return original(self, ctx, inversion, prompts, params, inputs)

    monkeypatch.setattr(Tuned, "tune", spy)
    run(engine, tmp_path, inputs={"reference": str(pictures["ref_a"])})
    assert shapes[0][0] == shapes[0][1] == (1, 4, 8, 8)  # an 80x48 picture at the photo's 64x64


def test_progress_names_no_inversion_on_a_retune(engine, tmp_path):
    run(engine, tmp_path)
    events = []
    run(engine, tmp_path, events, target_prompt="a tower in a meadow under a blue sky")
    assert "DDIM inversion" not in [e.stage for e in events if isinstance(e, Progress)]
