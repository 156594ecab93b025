"""The engine as every front end uses it: reuse, re-inversion, round trips and clean failures."""

import json
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine import Engine
from pipeline.events import CancelledEvent, CancelToken, Done, Failed, Notice, Preview, Progress, Stage
from pipeline.images import read_png_metadata
from pipeline.project import Project
from pipeline.request import EditRequest
from tests.helpers import TARGET, demo_request, tree_digest

QUICK = {"steps": 5, "inner_steps": 2}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(cache_dir=tmp_path_factory.mktemp("engine-cache"))


def request(tmp_path, **kw):
    return demo_request(tmp_path, QUICK, **kw)


def test_edit_then_reedit_reuses_the_inversion_and_reproduces_bytes(engine, tmp_path):
    events = []
    first = engine.run(request(tmp_path, output=str(tmp_path / "out.png")), events.append)
    assert isinstance(first, Done) and not first.reused_inversion
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert "null-text inversion" in stages and "editing" in stages
    assert first.image.size == (640, 480)  # the photo's own size, from a 64x64 working image
    meta = read_png_metadata(tmp_path / "out.png")
    assert json.dumps(meta, sort_keys=True).count(TARGET) >= 1 and "inner_steps" in json.dumps(meta)

    events.clear()
    again = engine.run(EditRequest(target_prompt=TARGET, project=str(tmp_path / "p.retake"), max_side=64,
                                   device="cpu"), events.append)
    assert isinstance(again, Done) and again.reused_inversion
    assert "null-text inversion" not in [e.stage for e in events if isinstance(e, Progress)]
    assert again.result_path.read_bytes() != b"" and again.image.tobytes() == first.image.tobytes()
    assert len(Project.open(tmp_path / "p.retake").edits) == 2


def test_edit_parameters_reuse_and_inversion_parameters_reinvert(engine, tmp_path):
    assert isinstance(engine.run(request(tmp_path), lambda e: None), Done)
    edit_change = engine.run(request(tmp_path, params={**QUICK, "self_replace": "0,0.6"}), lambda e: None)
    assert edit_change.reused_inversion
    for change in ({"params": {**QUICK, "inner_steps": 3}}, {"source_prompt": "a house in a field"},
                   {"params": {**QUICK, "inversion": "negative-prompt"}}):
        outcome = engine.run(request(tmp_path, **change), lambda e: None)
        assert isinstance(outcome, Done) and not outcome.reused_inversion, change
    assert len(Project.open(tmp_path / "p.retake").inversions) >= 2


def test_another_photo_in_the_same_project_is_refused(engine, tmp_path):
    engine.run(request(tmp_path), lambda e: None)
    other = tmp_path / "other.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(other)
    before = tree_digest(tmp_path / "p.retake")
    outcome = engine.run(request(tmp_path, image=str(other)), lambda e: None)
    assert isinstance(outcome, Failed) and "another photo" in outcome.message
    assert tree_digest(tmp_path / "p.retake") == before


def test_cancel_during_inversion_writes_no_project(engine, tmp_path):
    from pipeline.events import CancelToken

    token = CancelToken()

    def emit(event):
        if isinstance(event, Progress) and event.stage == "null-text inversion" and event.step == 1:
            token.cancel()

    outcome = engine.run(request(tmp_path), emit, token)
    assert isinstance(outcome, CancelledEvent) and outcome.stage == "null-text inversion"
    assert not (tmp_path / "p.retake").exists()


def test_out_of_memory_is_one_message_and_keeps_the_project(engine, tmp_path, monkeypatch):
    engine.run(request(tmp_path), lambda e: None)
    before = tree_digest(tmp_path / "p.retake")
    from pipeline.methods.p2p import PromptToPrompt

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(PromptToPrompt, "edit", oom)
    outcome = engine.run(request(tmp_path, target_prompt="a barn in a meadow under a blue sky"), lambda e: None)
    assert isinstance(outcome, Failed) and "out of memory" in outcome.message and "--max-side" in outcome.message
    assert tree_digest(tmp_path / "p.retake") == before


def test_out_of_memory_on_the_fast_path_runs_the_stage_again_eagerly_and_keeps_to_it(tmp_path, monkeypatch):
    from pipeline.fast import FastOptions
    from pipeline.methods.p2p import PromptToPrompt

    calls = []

    def oom_when_fast(stage):
        real = getattr(PromptToPrompt, stage)

        def call(self, ctx, *args, **kwargs):
            calls.append((stage, ctx.fast is not None))
            if ctx.fast is not None:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(self, ctx, *args, **kwargs)

        monkeypatch.setattr(PromptToPrompt, stage, call)

    oom_when_fast("invert")
    oom_when_fast("edit")
    for folder in ("fast", "eager", "other"):
        (tmp_path / folder).mkdir()
    engine = Engine(cache_dir=tmp_path / "cache", fast=FastOptions(emulate=True))  # the fast path on the CPU
    events = []
    outcome = engine.run(request(tmp_path / "fast"), events.append)
    assert isinstance(outcome, Done), outcome
    assert calls == [("invert", True), ("invert", False), ("edit", True), ("edit", False)]
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert len(notices) == 2 and all("fast path off" in notice and "64x64" in notice for notice in notices)
    eager = Engine(cache_dir=tmp_path / "cache").run(request(tmp_path / "eager", fast=False), lambda e: None)
    assert outcome.image.tobytes() == eager.image.tobytes()  # the run again is the eager run

    calls.clear()
    again = engine.run(request(tmp_path / "fast", target_prompt="a barn in a meadow under a blue sky"), events.append)
    assert isinstance(again, Done) and calls == [("edit", False)]  # eagerly at once, and said once only
    assert len([event for event in events if isinstance(event, Notice)]) == 2
    calls.clear()
    other = engine.run(request(tmp_path / "other", max_side=128), lambda e: None)
    assert isinstance(other, Done) and calls[0] == ("invert", True)  # another place tries the fast path again


def test_out_of_memory_on_the_fast_path_gives_the_models_fp16_copy_back_for_good(tmp_path, monkeypatch):
    """Sampling in bf16 on the CPU, the fast path holds a copy of the UNet (pipeline.held_weights), as it does
    in fp16 on a GPU: running out of memory releases it at once, though the run's own frames still name it,
    and the engine makes no other copy of that model."""
    from pipeline import engine as engine_module
    from pipeline.fast import FastOptions
    from pipeline.held_weights import released, with_sampling_unet
    from pipeline.methods.p2p import PromptToPrompt

    copies = []
    monkeypatch.setattr(engine_module, "with_sampling_unet", lambda bundle: copies.append(
        with_sampling_unet(bundle)) or copies[-1])
    real, seen = PromptToPrompt.invert, []

    def invert(self, ctx, *args, **kwargs):
        seen.append(ctx.bundle.sampling_unet)
        if ctx.fast is not None:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, ctx, *args, **kwargs)

    monkeypatch.setattr(PromptToPrompt, "invert", invert)
    engine = Engine(cache_dir=tmp_path / "cache", fast=FastOptions(emulate=True))
    assert isinstance(engine.run(request(tmp_path, dtype="bf16"), lambda e: None), Done)
    assert len(copies) == 1 and copies[0].sampling_unet is not None and released(copies[0].sampling_unet)
    assert seen == [copies[0].sampling_unet, None]  # the run again had no copy to call
    again = engine.run(request(tmp_path, dtype="bf16", target_prompt="a barn in a meadow under a blue sky"),
                       lambda e: None)
    assert isinstance(again, Done) and len(copies) == 1


def test_no_room_for_the_fast_paths_model_copy_is_said_and_the_run_goes_on(tmp_path, monkeypatch):
    from pipeline import engine as engine_module
    from pipeline.fast import FastOptions

    tries = []

    def oom(bundle):
        tries.append(bundle)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(engine_module, "with_sampling_unet", oom)
    events = []
    engine = Engine(cache_dir=tmp_path / "cache", fast=FastOptions(emulate=True))
    outcome = engine.run(request(tmp_path), events.append)
    assert isinstance(outcome, Done), outcome
    assert [event.message for event in events if isinstance(event, Notice) and "fp16 copy" in event.message]
    again = engine.run(request(tmp_path, target_prompt="a barn in a meadow under a blue sky"), events.append)
    assert isinstance(again, Done) and len(tries) == 1  # the model is not copied again, nor is it said again
    assert len([event for event in events if isinstance(event, Notice) and "fp16 copy" in event.message]) == 1


@pytest.mark.parametrize("change, words", [
    ({"target_prompt": "  "}, "target prompt is empty"),
    ({"source_prompt": None}, "source prompt"),
    ({"params": {**QUICK, "blend_words": "zebra"}}, "zebra"),
    ({"params": {**QUICK, "guidance": 99}}, "between"),
    ({"params": {**QUICK, "nonsense": 1}}, "Unknown parameter"),
    ({"method": "nope"}, "Unknown method"),
    ({"image": "/nonexistent/photo.png"}, "photo.png"),
    ({"model": "/nonexistent/model"}, "/nonexistent/model"),
    ({"target_prompt": "a \udcff castle"}, "target prompt is not valid text"),
    ({"source_prompt": "a house\ud800"}, "source prompt is not valid text"),
    ({"params": {**QUICK, "blend_words": "castle\udcff"}}, "blend_words parameter is not valid text"),
    ({"seed": 2 ** 64}, "seed (--seed) must be a whole number from 0 to 18446744073709551615"),
    ({"seed": -1}, "seed"),
    ({"seed": True}, "seed"),
])
def test_bad_requests_fail_with_one_clear_message_and_write_nothing(engine, tmp_path, change, words):
    outcome = engine.run(request(tmp_path, **change), lambda e: None)
    assert isinstance(outcome, Failed)
    assert words in outcome.message and "\n" not in outcome.message
    assert not (tmp_path / "p.retake").exists()


def test_a_photo_the_project_cannot_hold_is_refused_before_any_work(engine, tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("L", (1, 1_100_000)).save(strip)  # 1.1 megapixels: the decoder's bound lets it through
    events = []
    outcome = engine.run(request(tmp_path, image=str(strip)), events.append)
    assert isinstance(outcome, Failed) and "1x1100000" in outcome.message and "1,048,576" in outcome.message
    assert not any(isinstance(e, Progress) and e.stage != Stage.RESOLVING for e in events)
    assert not (tmp_path / "p.retake").exists()


@pytest.mark.parametrize("size, words", [((4, 4), "smaller than one latent cell"), ((10, 200), "up to 8:1")])
def test_a_photo_the_model_cannot_edit_is_refused_before_its_inversion(engine, tmp_path, size, words):
    photo = tmp_path / "photo.png"
    Image.new("RGB", size, "red").save(photo)
    events = []
    outcome = engine.run(request(tmp_path, image=str(photo)), events.append)
    assert isinstance(outcome, Failed) and words in outcome.message and "\n" not in outcome.message
    assert not any(isinstance(e, Progress) and "inversion" in e.stage for e in events)
    assert not (tmp_path / "p.retake").exists()


def test_two_first_edits_of_one_photo_the_second_waits_then_reuses_the_inversion(tmp_path):
    """Two engines (as two windows or processes would) start the first edit of one photo at once: the
    second waits on the project's claim before its inversion, then finds the first one's."""
    inverting, second_waits = threading.Event(), threading.Event()
    events: dict[str, list] = {"first": [], "second": []}
    outcomes: dict[str, object] = {}

    def first_emit(event):
        events["first"].append(event)
        if isinstance(event, Progress) and "inversion" in event.stage and event.step == 1:
            inverting.set()
            second_waits.wait(60)  # hold the inversion until the second edit has started waiting

    def second_emit(event):
        events["second"].append(event)
        if isinstance(event, Notice) and "waiting for it" in event.message:
            second_waits.set()

    def run(name, emit, target):
        outcomes[name] = Engine().run(request(tmp_path, target_prompt=target), emit)

    first = threading.Thread(target=run, args=("first", first_emit, TARGET))
    second = threading.Thread(target=run, args=("second", second_emit, "a barn in a meadow under a blue sky"))
    first.start()
    assert inverting.wait(120)
    second.start()
    first.join(300)
    second.join(300)
    assert second_waits.is_set(), events["second"]
    assert isinstance(outcomes["first"], Done) and not outcomes["first"].reused_inversion
    assert isinstance(outcomes["second"], Done) and outcomes["second"].reused_inversion, outcomes["second"]
    assert not any(isinstance(e, Progress) and "inversion" in e.stage for e in events["second"])
    project = Project.open(tmp_path / "p.retake")
    assert len(project.inversions) == 1 and len(project.edits) == 2
    assert sorted(p.name for p in (tmp_path / "p.retake").iterdir() if p.name.startswith(".")) == []


def test_a_first_edit_waiting_for_another_can_be_cancelled_and_writes_nothing(tmp_path):
    from pipeline.project.folder import CREATING_FILE

    folder = tmp_path / "p.retake"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live process claims the project, as another Retake making its first edit does
        (folder / CREATING_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                        "token": "x", "since": "now"}) + "\n")
        token, notices = CancelToken(), []

        def emit(event):
            if isinstance(event, Notice):
                notices.append(event.message)
                token.cancel()

        outcome = Engine().run(request(tmp_path), emit, token)
        assert isinstance(outcome, CancelledEvent) and len(notices) == 1
        assert notices[0].startswith(f"Another Retake process (pid {holder.pid}) is making the first edit")
        assert sorted(p.name for p in folder.iterdir()) == [CREATING_FILE]  # the other's claim, untouched
    finally:
        holder.kill()
        holder.wait()
    outcome = Engine().run(request(tmp_path), lambda event: None)  # a dead holder's claim is taken over
    assert isinstance(outcome, Done) and not (folder / CREATING_FILE).exists()


def test_request_round_trips_through_json(tmp_path):
    original = request(tmp_path, params={"steps": 7, "blend_words": ["cat"]}, mask="m.png", seed=3)
    assert EditRequest.from_json(original.to_json()) == original


def test_previews_show_the_predicted_image_at_each_editing_step(engine, tmp_path):
    events = []
    params = {**QUICK, "inversion": "negative-prompt"}
    assert isinstance(engine.run(request(tmp_path, preview_every=1, params=params), events.append), Done)
    previews = [e for e in events if isinstance(e, Preview) and e.stage == "editing"]
    assert [p.step for p in previews] == [1, 2, 3, 4, 5]
    assert all(p.image.size == (64, 64) for p in previews)


def test_preview_cadence_and_size_are_run_options(engine, tmp_path):
    events = []
    params = {**QUICK, "inversion": "negative-prompt"}
    req = request(tmp_path, preview_every=2, preview_side=32, params=params)
    assert isinstance(engine.run(req, events.append), Done)
    previews = [e for e in events if isinstance(e, Preview) and e.stage == "editing"]
    assert [p.step for p in previews] == [2, 4, 5]  # every second step, and the last
    assert all(max(p.image.size) == 32 for p in previews)


def test_previews_are_cheap_pictures_with_their_latent_for_a_full_decode(engine, tmp_path, monkeypatch):
    events = []
    req = request(tmp_path, preview_every=1, params={**QUICK, "inversion": "negative-prompt"})
    bundle = engine.load_model(engine.resolve(req), events.append)
    engine.run(request(tmp_path / "warm", preview_every=1), lambda e: None)  # the map is fitted once per model
    decodes = []
    original = bundle.vae.decode
    monkeypatch.setattr(bundle.vae, "decode", lambda *a, **k: decodes.append(1) or original(*a, **k))
    assert isinstance(engine.run(req, events.append), Done)
    previews = [e for e in events if isinstance(e, Preview) and e.stage == "editing"]
    assert len(previews) == 5 and len(decodes) == 1  # the result's decode only, none per preview
    last = previews[-1]
    assert last.latent.shape == (1, 4, 8, 8) and last.latent.dtype == torch.float16
    full = engine.decode(bundle, last.latent)
    assert full.size == last.image.size == (64, 64)
    # the linear map shows the VAE's picture coarsely, one colour per latent cell: measured 21 levels
    # off on average, where a flat grey picture would be 51 off
    cheap, exact = (torch.from_numpy(np.asarray(im, dtype=np.float32)) for im in (last.image, full))
    assert (cheap - exact).abs().mean() < 30 < (exact - 128).abs().mean()


def test_stages_run_one_by_one_edit_many_times_and_commit(engine, tmp_path):
    events = []
    job = engine.resolve(request(tmp_path, params={**QUICK, "inversion": "negative-prompt"}))
    assert not (tmp_path / "p.retake").exists()  # resolving writes nothing
    bundle = engine.load_model(job, events.append)
    inversion = engine.invert(job, bundle, events.append, CancelToken())
    assert not inversion.reused and (tmp_path / "p.retake").is_dir()
    first = engine.edit(job, bundle, inversion, events.append, CancelToken())
    second = engine.edit(job, bundle, inversion, events.append, CancelToken())
    assert torch.equal(first.output.target, second.output.target)  # an edit is a pure function of its inputs
    done = engine.commit(job, bundle, inversion, first)
    assert done.result_path.is_file() and done.edit_id
    stages = {e.stage for e in events if isinstance(e, Progress)}
    assert {"DDIM inversion", "editing", str(Stage.ENCODING), str(Stage.DECODING)} <= stages


def test_a_reedit_without_max_side_reuses_the_projects_working_size(engine, tmp_path):
    params = {**QUICK, "inversion": "negative-prompt"}
    assert isinstance(engine.run(request(tmp_path, params=params, max_side=128), lambda e: None), Done)
    again = engine.run(EditRequest(target_prompt="a house in a meadow under a red sky",
                                   project=str(tmp_path / "p.retake"), device="cpu"), lambda e: None)
    assert isinstance(again, Done) and again.reused_inversion
    assert Project.open(tmp_path / "p.retake").settings.max_side == 128


def test_two_runs_on_two_threads_queue_one_behind_the_other(engine, tmp_path):
    import threading

    spans: dict[str, list[float]] = {"a": [], "b": []}
    results = {}

    def work(name):
        import time

        def emit(event):
            spans[name].append(time.monotonic())

        req = request(tmp_path / name, params={**QUICK, "inversion": "negative-prompt"})
        results[name] = engine.run(req, emit)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    threads = [threading.Thread(target=work, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, Done) for r in results.values())
    (first, second) = sorted(spans.values(), key=lambda times: times[0])
    assert first[-1] <= second[0], "the second run started before the first had finished"
    a, b = (Image.open(results[n].result_path) for n in "ab")
    assert a.tobytes() == b.tobytes()  # same request, same result: neither run disturbed the other


def test_reedit_carries_settings_but_not_the_previous_prompts_words(engine, tmp_path):
    first = request(tmp_path, params={**QUICK, "inversion": "negative-prompt", "blend_words": "castle",
                                      "self_replace": "0,0.6"})
    assert isinstance(engine.run(first, lambda e: None), Done)
    again = engine.run(EditRequest(target_prompt="a house in a meadow under a red sky",
                                   project=str(tmp_path / "p.retake"), max_side=64, device="cpu"), lambda e: None)
    assert isinstance(again, Done) and again.reused_inversion
    params = Project.open(tmp_path / "p.retake").edits[-1].params
    assert params["blend_words"] == [] and params["self_replace"] == [0.0, 0.6]


def test_a_runs_commit_writes_project_json_once(engine, tmp_path, monkeypatch):
    """The settings, the inputs the run was given or told to drop, and the result are one commit: a
    process killed at any instant of it leaves the project before the run's commit or with all of it."""
    from pipeline.project import folder

    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(mask)
    assert isinstance(engine.run(request(tmp_path, mask=str(mask)), lambda e: None), Done)
    writes: list[list[str]] = []
    real_commit, real_write = Engine.commit, folder.Folder.write

    def commit(self, *args):
        writes.append([])
        return real_commit(self, *args)

    def write(self, rel, data):
        if writes:
            writes[-1].append(rel)
        return real_write(self, rel, data)

    monkeypatch.setattr(Engine, "commit", commit)
    monkeypatch.setattr(folder.Folder, "write", write)
    Image.fromarray(np.full((48, 64), 128, np.uint8)).save(mask)
    outcome = engine.run(request(tmp_path, mask=str(mask), params={**QUICK, "self_replace": "0,0.5"},
                                 target_prompt="a barn in a meadow under a blue sky"), lambda e: None)
    assert isinstance(outcome, Done)
    (files,) = writes
    assert files.count("project.json") == 1 and files[-1] == "project.json", files  # new files first, then it
    assert any(rel.startswith("inputs/edit_mask.") for rel in files) and f"results/{outcome.edit_id}.png" in files
    project = Project.open(tmp_path / "p.retake")
    assert project.settings.params["self_replace"] == [0.0, 0.5] and project.edits[-1].id == outcome.edit_id
    assert np.asarray(project.input_image("edit_mask")).max() == 128
