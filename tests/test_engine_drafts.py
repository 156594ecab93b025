"""Engine.draft, the live drafts' engine side: a run without its commit that only reuses. Its result is
the one a run of the same request commits, pixel for pixel; it writes nothing, anywhere; it never
inverts or tunes (NeedsRun instead)."""

from __future__ import annotations

import pytest

from pipeline.engine import Engine
from pipeline.events import CancelledEvent, CancelToken, Done, Drafted, Failed, Progress, Stage
from tests.helpers import demo_request, tree_digest

QUICK = {"steps": 5, "inner_steps": 2}
EDITING_ONLY = {Stage.LOADING_MODEL, Stage.EDITING, Stage.DECODING}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(cache_dir=tmp_path_factory.mktemp("engine-cache"))


def stages(events) -> set:
    return {event.stage for event in events if isinstance(event, Progress)}


def test_a_draft_is_the_runs_result_and_writes_nothing(engine, tmp_path):
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    project = tmp_path / "p.retake"
    before, listing = tree_digest(tmp_path), sorted(tmp_path.rglob("*"))
    changed = demo_request(tmp_path, {**QUICK, "self_replace": "0,0.6"}, output=str(tmp_path / "out.png"))
    events: list = []
    draft = engine.draft(changed, events.append)
    assert isinstance(draft, Drafted), draft
    assert events[-1] is draft and stages(events) <= EDITING_ONLY
    assert tree_digest(tmp_path) == before and sorted(tmp_path.rglob("*")) == listing  # no output file either
    done = engine.run(changed, lambda e: None)
    assert isinstance(done, Done) and done.reused_inversion and done.result_path.parent.parent == project
    assert draft.image.size == done.image.size and draft.image.tobytes() == done.image.tobytes()


@pytest.mark.parametrize("change", [{"params": {**QUICK, "inner_steps": 3}}, {"source_prompt": "a house in a field"}])
def test_a_draft_that_needs_a_new_inversion_stops_at_once(engine, tmp_path, change):
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    before = tree_digest(tmp_path)
    events: list = []
    final = engine.draft(demo_request(tmp_path, QUICK, **change), events.append)
    assert isinstance(final, Failed) and final.kind == "NeedsRun" and "new inversion" in final.message
    assert not stages(events) & {Stage.NULL_TEXT, Stage.DDIM_INVERSION, Stage.ENCODING, Stage.EDITING}
    assert tree_digest(tmp_path) == before


def test_a_draft_of_a_photo_without_a_project_makes_none(engine, tmp_path):
    final = engine.draft(demo_request(tmp_path, QUICK), lambda e: None)
    assert isinstance(final, Failed) and final.kind == "NeedsRun"
    assert list(tmp_path.iterdir()) == []


def test_a_draft_never_tunes_but_reuses_a_stored_tuning(engine, tmp_path):
    """TOLI tunes on the target prompt: a new target needs a run; another edit parameter is a draft."""
    params = {"steps": 5, "inner_steps": 2, "text_steps": 2}
    assert isinstance(engine.run(demo_request(tmp_path, params, method="toli"), lambda e: None), Done)
    before = tree_digest(tmp_path)
    retarget = engine.draft(demo_request(tmp_path, params, method="toli", target_prompt="a red car"), lambda e: None)
    assert isinstance(retarget, Failed) and retarget.kind == "NeedsRun" and "tune again" in retarget.message
    events: list = []
    other = engine.draft(demo_request(tmp_path, {**params, "eta": 0.5}, method="toli"), events.append)
    assert isinstance(other, Drafted), other
    assert Stage.TEXT_OPTIMISATION not in stages(events)
    assert tree_digest(tmp_path) == before


def test_a_cancelled_draft_says_so_and_writes_nothing(engine, tmp_path):
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    before = tree_digest(tmp_path)
    cancel = CancelToken()

    def cancel_at_the_second_step(event) -> None:
        if isinstance(event, Progress) and event.stage == Stage.EDITING and event.step == 2:
            cancel.cancel()

    final = engine.draft(demo_request(tmp_path, {**QUICK, "self_replace": "0,0.6"}), cancel_at_the_second_step, cancel)
    assert isinstance(final, CancelledEvent) and final.stage == Stage.EDITING
    assert tree_digest(tmp_path) == before
