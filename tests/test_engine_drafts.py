"""Engine.draft, the live drafts' engine side: a run without its commit that only reuses. Its result is
the one a run of the same request commits, pixel for pixel; it writes nothing, anywhere; it never
inverts or tunes (NeedsRun instead)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from PIL import Image

from pipeline.engine import Engine
from pipeline.events import CancelledEvent, CancelToken, Done, Drafted, Failed, Notice, Progress, Stage
from pipeline.project import Project
from tests.helpers import TARGET, demo_request, tree_digest

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
    done = Engine(cache_dir=engine.cache_dir).run(changed, lambda e: None)  # edits: it holds no draft
    assert isinstance(done, Done) and done.reused_inversion and not done.from_draft
    assert done.result_path.parent.parent == project
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


def test_run_after_a_draft_commits_the_drafts_result_without_editing_again(engine, tmp_path, monkeypatch):
    """A draft is made with the request a run makes (only its previews differ): Run commits its result
    (the whole commit: the edit in the history, its result file, the output file) instead of editing again."""
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    changed = demo_request(tmp_path, {**QUICK, "self_replace": "0,0.6"})
    draft = engine.draft(changed, lambda e: None)
    assert isinstance(draft, Drafted), draft
    edits: list = []
    original = Engine.edit
    monkeypatch.setattr(Engine, "edit", lambda self, *a, **kw: edits.append(a) or original(self, *a, **kw))
    events: list = []
    out = tmp_path / "out.png"
    done = engine.run(dataclasses.replace(changed, preview_every=1, output=str(out)), events.append)
    assert isinstance(done, Done) and done.from_draft and done.reused_inversion, done
    assert edits == [] and not stages(events) & {Stage.EDITING, Stage.DDIM_INVERSION, Stage.NULL_TEXT}
    assert done.image.tobytes() == draft.image.tobytes()
    project = Project.open(tmp_path / "p.retake")
    edit = project.find_edit(done.edit_id)
    assert edit is not None and edit.target_prompt == changed.target_prompt and len(project.edits) == 2
    assert edit.params["self_replace"] == [0.0, 0.6] and edit.inversion_key == draft.inversion_key
    assert out.read_bytes() == done.result_path.read_bytes()
    # a draft is committed once: the next run of the same request edits again
    again = engine.run(changed, lambda e: None)
    assert isinstance(again, Done) and not again.from_draft and len(edits) == 1
    assert again.image.tobytes() == draft.image.tobytes()


@pytest.mark.parametrize("change", [
    {"target_prompt": "a red house in the snow"},
    {"params": {**QUICK, "self_replace": "0,0.5"}},
    {"seed": 7},
    {"feather": 9},
])
def test_run_after_a_stale_draft_edits_again(engine, tmp_path, monkeypatch, change):
    """Anything a run's result depends on changed since the draft: the draft is not the result."""
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    assert isinstance(engine.draft(demo_request(tmp_path, QUICK), lambda e: None), Drafted)
    edits: list = []
    original = Engine.edit
    monkeypatch.setattr(Engine, "edit", lambda self, *a, **kw: edits.append(a) or original(self, *a, **kw))
    done = engine.run(demo_request(tmp_path, QUICK, **change), lambda e: None)
    assert isinstance(done, Done) and not done.from_draft and len(edits) == 1


def test_run_after_a_draft_whose_mask_changed_edits_again(engine, tmp_path, monkeypatch):
    """The same request naming the same mask file, whose pixels changed since the draft (the window
    writes every mask into the same scratch file)."""
    mask = tmp_path / "mask.png"
    picture = Image.new("L", (640, 480), 0)
    picture.paste(255, (100, 100, 400, 300))
    picture.save(mask)
    request = demo_request(tmp_path, QUICK, mask=str(mask))
    assert isinstance(engine.run(request, lambda e: None), Done)
    assert isinstance(engine.draft(request, lambda e: None), Drafted)
    picture.paste(0, (200, 150, 260, 210))  # a hole inside: the same crop, another mask
    picture.save(mask)
    done = engine.run(request, lambda e: None)
    assert isinstance(done, Done) and not done.from_draft


def test_run_after_a_draft_whose_inversion_was_dropped_inverts_again(engine, tmp_path):
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    assert isinstance(engine.run(demo_request(tmp_path, {**QUICK, "inner_steps": 3}), lambda e: None), Done)
    draft = engine.draft(demo_request(tmp_path, QUICK), lambda e: None)
    assert isinstance(draft, Drafted)
    pruned = Project.open(tmp_path / "p.retake").prune(inversions=True)  # the newest edit needs the other one
    assert draft.inversion_key in pruned.inversions, pruned
    done = engine.run(demo_request(tmp_path, QUICK), lambda e: None)
    assert isinstance(done, Done) and not done.from_draft and not done.reused_inversion


def test_a_second_draft_reads_nothing_from_the_project(engine, tmp_path, monkeypatch):
    """The inversion a draft edits from is kept in memory (one, by project, key and file digest)."""
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    reads: list = []
    original = Project.load_inversion
    monkeypatch.setattr(Project, "load_inversion", lambda self, key: reads.append(key) or original(self, key))
    first = engine.draft(demo_request(tmp_path, {**QUICK, "self_replace": "0,0.6"}), lambda e: None)
    assert isinstance(first, Drafted), first
    assert len(reads) <= 1
    reads.clear()
    second = engine.draft(demo_request(tmp_path, {**QUICK, "self_replace": "0,0.3"}), lambda e: None)
    assert isinstance(second, Drafted), second
    assert reads == []
    # the kept tensors are not changed by an edit: the same draft again is the same picture
    third = engine.draft(demo_request(tmp_path, {**QUICK, "self_replace": "0,0.6"}), lambda e: None)
    assert third.image.tobytes() == first.image.tobytes()


def test_a_kept_inversion_is_read_again_once_the_project_holds_another_under_its_key(engine, tmp_path, monkeypatch):
    """Another project in the same folder (deleted and made again): its inversion file differs, so the
    one kept is not used."""
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    assert isinstance(engine.draft(demo_request(tmp_path, QUICK), lambda e: None), Drafted)
    shutil.rmtree(tmp_path / "p.retake")
    assert isinstance(Engine(cache_dir=engine.cache_dir).run(demo_request(tmp_path, {**QUICK, "guidance": 7.0}),
                                                              lambda e: None), Done)
    reads: list = []
    original = Project.load_inversion
    monkeypatch.setattr(Project, "load_inversion", lambda self, key: reads.append(key) or original(self, key))
    assert isinstance(engine.draft(demo_request(tmp_path, {**QUICK, "guidance": 7.0}), lambda e: None), Drafted)
    assert len(reads) == 1


def test_forget_drops_what_the_engine_keeps_of_a_project(engine, tmp_path, monkeypatch):
    assert isinstance(engine.run(demo_request(tmp_path, QUICK), lambda e: None), Done)
    assert isinstance(engine.draft(demo_request(tmp_path, QUICK), lambda e: None), Drafted)
    engine.forget()
    reads: list = []
    original = Project.load_inversion
    monkeypatch.setattr(Project, "load_inversion", lambda self, key: reads.append(key) or original(self, key))
    done = engine.run(demo_request(tmp_path, QUICK), lambda e: None)
    assert isinstance(done, Done) and not done.from_draft and len(reads) == 1


def test_a_draft_says_the_notices_a_run_says(engine, tmp_path):
    """The job's notices (here: a region edit with no region to crop to) and the prompt's (words past
    the text window) come with a draft as with a run, for the window to show."""
    long_target = TARGET + "," + " and a garden" * 30
    request = demo_request(tmp_path, QUICK, area="region", target_prompt=long_target)
    run_events: list = []
    assert isinstance(engine.run(request, run_events.append), Done)
    events: list = []
    assert isinstance(engine.draft(request, events.append), Drafted)
    said = [event.message for event in events if isinstance(event, Notice)]
    assert said == [event.message for event in run_events if isinstance(event, Notice)]
    assert any("whole photo was edited" in text for text in said) and any("longer than" in text for text in said)
