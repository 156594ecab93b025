"""Project.save_state: a session's settings, its named inputs and a new edit in one commit, the one way
anything writes a project's settings and inputs (the app's Save, the engine's commit of a run)."""

import numpy as np
import pytest
from PIL import Image

from pipeline.project import KEEP, InputValue, ModelRecord, NewEdit, Project, SettingsUpdate, folder
from tests.helpers import tree_digest
from tests.test_project import MODEL, make_project, manifest, project_files, referenced

OTHER = ModelRecord("/models/other", "sha256:" + "1" * 64)


def settings(**changes):
    fields = dict(source_prompt="a red house", method="p2p", params={"steps": 7, "cross_replace": (0.0, 0.5)})
    fields.update(changes)
    return SettingsUpdate(**fields)


def mask(value):
    return InputValue("mask", Image.new("L", (8, 6), value))


def edit(target="a blue house"):
    return NewEdit(target_prompt=target, source_prompt="a red house", model=MODEL, method="p2p",
                   params={"steps": 7}, seed=None, inversion_key="k1", result=Image.new("RGB", (16, 12), "blue"))


def counting_writes(monkeypatch):
    written = []
    real = folder.Folder.write
    monkeypatch.setattr(folder.Folder, "write", lambda self, rel, data: written.append(rel) or real(self, rel, data))
    return written


def test_settings_inputs_and_an_edit_are_one_commit(tmp_path, monkeypatch):
    root = tmp_path / "p"
    project = make_project(root)
    project.save_state(inputs={"edit_mask": mask(255), "subject_mask": mask(100)})
    written = counting_writes(monkeypatch)
    record = project.save_state(settings(), {"edit_mask": mask(128), "subject_mask": None,
                                             "reference": InputValue("image", Image.new("RGB", (4, 4)), "a car")},
                                edit())
    assert written.count("project.json") == 1 and written[-1] == "project.json"  # the new files first
    reopened = Project.open(root)
    assert reopened.settings.source_prompt == "a red house"
    assert reopened.settings.params == {"steps": 7, "cross_replace": [0.0, 0.5]}
    assert reopened.input_names() == ("edit_mask", "reference")  # subject_mask forgotten
    assert reopened.input_image("edit_mask").getpixel((0, 0)) == 128 and reopened.input_prompt("reference") == "a car"
    assert reopened.edits[-1] == record and record.target_prompt == "a blue house"
    assert project_files(root) == referenced(root)  # the replaced and forgotten masks' files are gone


def test_inputs_not_named_stay_and_nothing_changed_writes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "p"
    project = make_project(root)
    project.save_state(settings(), {"edit_mask": mask(255)})
    before = tree_digest(root)
    written = counting_writes(monkeypatch)
    assert project.save_state(settings(), {"edit_mask": mask(255), "never_set": None}) is None
    assert written == [] and tree_digest(root) == before
    project.save_state(settings(source_prompt="a barn"))
    assert Project.open(root).input_names() == ("edit_mask",)


def test_kept_fields_are_read_when_the_save_commits(tmp_path):
    """A Save that never knew the model keeps the one a run recorded meanwhile (another Project object,
    as another thread or process is), instead of writing back what it read when it opened."""
    root = tmp_path / "p"
    saving = make_project(root)
    saving.save_state(settings(model=MODEL, max_side=512, image_encoder="/models/clip"))
    running = Project.open(root)
    running.save_state(settings(model=OTHER, max_side=384))  # image_encoder: KEEP
    saving.save_state(settings(source_prompt="the artist's prompt"))
    stored = Project.open(root).settings
    assert (stored.model, stored.max_side, stored.image_encoder) == (OTHER, 384, "/models/clip")
    assert stored.source_prompt == "the artist's prompt"
    saving.save_state(settings(model=None, max_side=None, image_encoder=None))
    stored = Project.open(root).settings
    assert (stored.model, stored.max_side, stored.image_encoder) == (None, None, None)
    assert SettingsUpdate.named_encoder(None) is KEEP and SettingsUpdate.named_encoder("") is None


@pytest.mark.parametrize("bad, error", [
    ({"settings": settings(params={"guidance": float("nan")})}, ValueError),
    ({"settings": settings(max_side=0)}, ValueError),
    ({"settings": settings(model="demo")}, TypeError),
    ({"inputs": {"../x": mask(1)}}, ValueError),
    ({"inputs": {"edit_mask": InputValue("mask", Image.new("L", (4, 4)), "a prompt")}}, ValueError),
    ({"edit": NewEdit(**{**edit().__dict__, "params": {"x": {1, 2}}})}, TypeError),
])
def test_a_bad_part_writes_nothing_at_all(tmp_path, bad, error):
    root = tmp_path / "p"
    project = make_project(root)
    before = tree_digest(root)
    parts = {"settings": settings(source_prompt="changed"), "inputs": {"edit_mask": mask(9)}, "edit": edit(), **bad}
    with pytest.raises(error):
        project.save_state(**parts)
    assert tree_digest(root) == before


def test_an_edit_alone_is_add_edit(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    before = manifest(root)
    record = project.save_state(edit=edit("a tower"))
    assert record.id == "e0002" and [e.target_prompt for e in Project.open(root).edits] == ["a castle", "a tower"]
    after = manifest(root)
    assert (after["settings"], after["inputs"]) == (before["settings"], before["inputs"])  # no settings given
    assert np.asarray(Image.open(root / record.result.file)).shape == (12, 16, 3)
