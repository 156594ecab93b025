"""Bad requests are refused before any model work, with one true sentence, and nothing is written;
results come back at the photo's own size with its pixels kept outside the edit region."""

import numpy as np
import pytest
from PIL import Image

from pipeline.engine import Engine
from pipeline.events import Done, Failed, Notice, Progress, Stage
from pipeline.request import EditRequest
from tests.helpers import DEMO_PHOTO, SOURCE, TARGET, demo_request, tree_digest

QUICK = {"steps": 5, "inversion": "negative-prompt"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(cache_dir=tmp_path_factory.mktemp("engine-cache"))


def request(tmp_path, **kw):
    return demo_request(tmp_path, QUICK, **kw)


def refused_before_work(engine, req, match):
    events = []
    final = engine.run(req, events.append)
    assert isinstance(final, Failed), final
    assert match in final.message
    work = [e for e in events if isinstance(e, Progress) and e.step > 0 and e.stage != Stage.LOADING_MODEL]
    assert not work, "work started before the refusal"
    return final


@pytest.mark.parametrize(("field", "value", "match"), [
    ("output", "/missing/dir/x.png", "does not exist"),
    ("params", {**QUICK, "guidance": float("nan")}, "guidance"),
    ("params", {**QUICK, "blend_threshold": "nan"}, "blend_threshold"),
    ("params", {**QUICK, "cross_replace": "nan,nan"}, "cross_replace"),
    ("max_side", 100, "multiple of 64"),
    ("max_side", 0, "multiple of 64"),
])
def test_bad_requests_are_refused_before_any_model_work(engine, tmp_path, field, value, match):
    refused_before_work(engine, request(tmp_path, **{field: value}), match)
    assert not (tmp_path / "p.retake").exists()


def test_a_folder_that_is_not_a_project_is_refused_before_inverting(engine, tmp_path):
    folder = tmp_path / "p.retake"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    before = tree_digest(tmp_path)
    refused_before_work(engine, request(tmp_path), "project")
    assert tree_digest(tmp_path) == before


def test_a_change_beyond_the_encoders_window_is_refused_and_a_long_prompt_is_noticed(engine, tmp_path):
    filler = " ".join(["and a tree"] * 30)
    refused_before_work(engine, request(tmp_path, source_prompt=f"{SOURCE} {filler} dog",
                                        target_prompt=f"{SOURCE} {filler} cat"), "window")
    events = []
    done = engine.run(request(tmp_path, source_prompt=f"{SOURCE} {filler}", target_prompt=f"{TARGET} {filler}"),
                      events.append)
    assert isinstance(done, Done)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert len(notices) == 2 and all("window" in n for n in notices)


def test_the_result_has_the_photos_size_and_its_pixels_outside_the_painted_region(engine, tmp_path):
    photo = Image.open(DEMO_PHOTO).convert("RGB")
    mask = np.zeros((photo.height, photo.width), np.uint8)
    mask[:, : photo.width // 2] = 255  # the left half may change
    Image.fromarray(mask).save(tmp_path / "mask.png")
    done = engine.run(request(tmp_path, mask=str(tmp_path / "mask.png"), output=str(tmp_path / "out.png"),
                              max_side=128), lambda e: None)
    assert isinstance(done, Done)
    result = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert result.shape[:2] == (photo.height, photo.width)
    # well outside the region: past its growth and feathered border (3 * 6 working pixels = 90 photo pixels)
    right = slice(photo.width // 2 + 128, None)
    assert np.array_equal(result[:, right], np.asarray(photo)[:, right])
    assert not np.array_equal(result[:, :100], np.asarray(photo)[:, :100])


def test_an_output_that_fails_at_the_end_is_reported_truly(engine, tmp_path, monkeypatch):
    import pipeline.engine

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline.engine, "write_atomically", full_disk)
    final = engine.run(request(tmp_path, output=str(tmp_path / "out.png")), lambda e: None)
    assert isinstance(final, Failed)
    assert "saved in the project" in final.message and "No space left" in final.message
    assert not (tmp_path / "out.png").exists()


def test_a_project_with_a_damaged_result_still_edits_and_says_what_was_lost(engine, tmp_path):
    first = engine.run(request(tmp_path), lambda e: None)
    assert isinstance(first, Done)
    first.result_path.write_bytes(b"not a png any more")
    events = []
    again = engine.run(EditRequest(target_prompt="a house in a meadow under a red sky",
                                   project=str(tmp_path / "p.retake"), device="cpu"), events.append)
    assert isinstance(again, Done) and again.reused_inversion
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "quarantine" in notices[0]


def test_named_inputs_reach_the_method_and_a_missing_one_is_refused_before_work(engine, tmp_path):
    mask = np.zeros((480, 640), np.uint8)
    mask[120:360, 160:480] = 255
    Image.fromarray(mask).save(tmp_path / "subject.png")
    subject = {"subject_mask": str(tmp_path / "subject.png")}
    req = request(tmp_path, method="masactrl", params={"steps": 5}, inputs=subject)
    assert isinstance(engine.run(req, lambda e: None), Done)
    missing = request(tmp_path / "other", method="masactrl", params={"steps": 5},
                      inputs={"subject_mask": str(tmp_path / "nope.png")})
    refused_before_work(engine, missing, "nope.png")
    refused_before_work(engine, request(tmp_path, method="p2p", inputs=subject), "takes no input")
