"""Projects from untrusted places: confinement to the folder, recovery from damaged files, short messages."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.errors import ProjectError
from pipeline.project import Project, check_project, repair_project
from pipeline.project.folder import Folder
from tests.helpers import tree_digest
from tests.test_project import _rewrite, add_edit, make_project, manifest, project_files, referenced, save_inversion


def _assert_refused(root: Path, words: list[str], **open_kw) -> str:
    with pytest.raises(ProjectError) as error:
        Project.open(root, **open_kw)
    message = str(error.value)
    assert "\n" not in message and len(message) < 300 and "nothing was written" in message, message
    for word in words:
        assert word in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# Confinement


def test_a_results_folder_replaced_by_a_link_elsewhere_is_refused_and_nothing_outside_changes(tmp_path):
    root, elsewhere = tmp_path / "p", tmp_path / "elsewhere"
    window = make_project(root)  # a window that opened the project before the folder was swapped
    add_edit(window, "a barn")
    shutil.move(root / "results", elsewhere)  # the checksums still match through the link
    (elsewhere / "e0099.png").write_bytes(b"someone else's file")
    (elsewhere / "notes.txt").write_text("theirs")
    (root / "results").symlink_to(elsewhere, target_is_directory=True)
    outside, inside = tree_digest(elsewhere), tree_digest(root)
    _assert_refused(root, ["results", "symbolic link"])
    _assert_refused(root, ["results", "symbolic link"], recover=True)
    with pytest.raises(ProjectError, match="symbolic link"):  # a re-edit from the open window
        add_edit(window, "a tower")
    with pytest.raises(ProjectError, match="symbolic link"):
        window.set_input("reference", Image.new("RGB", (4, 4)), kind="image")
    assert not check_project(root).ok and not check_project(root).repairable
    assert repair_project(root).problems
    assert tree_digest(elsewhere) == outside and sorted(p.name for p in elsewhere.iterdir()) == [
        "e0001.png", "e0002.png", "e0099.png", "notes.txt"]
    assert tree_digest(root) == inside and not (root / ".lock").exists()


@pytest.mark.parametrize("kind", ["symlinked file", "hard-linked file", "fifo", "link in a user folder"])
def test_links_and_special_files_anywhere_are_refused(tmp_path, kind):
    root, outside = tmp_path / "p", tmp_path / "outside.png"
    make_project(root)
    result = root / "results" / "e0001.png"
    shutil.copy(result, outside)
    if kind == "symlinked file":
        result.unlink()
        result.symlink_to(outside)
        words = ["results/e0001.png", "symbolic link"]
    elif kind == "hard-linked file":
        result.unlink()
        os.link(outside, result)
        words = ["results/e0001.png", "hard link"]
    elif kind == "fifo":
        os.mkfifo(root / "results" / "e0042.png")
        words = ["results/e0042.png", "special file"]
    else:
        (root / "exports").mkdir()
        (root / "exports" / "latest.png").symlink_to(outside)
        words = ["exports/latest.png", "symbolic link"]
    before, outside_bytes = tree_digest(root) if kind != "fifo" else None, outside.read_bytes()
    _assert_refused(root, words)
    _assert_refused(root, words, recover=True)
    health = check_project(root)
    assert not health.ok and not health.repairable and words[0] in health.summary()
    if before is not None:
        assert tree_digest(root) == before
    assert outside.read_bytes() == outside_bytes


@pytest.mark.parametrize("field, value", [
    ("result", "results/../../outside.png"), ("result", "/etc/passwd"), ("result", "results\\..\\x.png"),
    ("result", "results/./e0001.png"), ("input", "inputs/../project.json"), ("name", "../evil"),
])
def test_names_that_escape_the_folder_are_refused(tmp_path, field, value):
    root = tmp_path / "p"
    project = make_project(root)
    project.set_input("reference", Image.new("RGB", (4, 4)), kind="image")

    def escape(data):
        if field == "result":
            data["edits"][0]["result"]["file"] = value
        elif field == "input":
            data["inputs"][0]["file"]["file"] = value
        else:
            data["inputs"][0]["name"] = value

    _rewrite(root, escape)
    before = tree_digest(root)
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(root, recover=True)
    assert tree_digest(root) == before


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a\\b", "", "a//b", ".", "results/.."])
def test_the_folder_refuses_escaping_names_itself(tmp_path, name):
    with pytest.raises(ProjectError, match="leads outside the project folder"):
        Folder(tmp_path).path(name)


# ---------------------------------------------------------------------------------------------------
# Recovery


def _damage(path: Path) -> None:
    """Damage that changes a file's size, which opening sees (damage of the same size is found when the file
    is read, or by `project check`: tests/test_project.py)."""
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw[:-1]))


def test_a_damaged_result_is_quarantined_and_the_rest_opens(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    add_edit(project, "a barn")
    add_edit(project, "a tower")
    _damage(root / "results" / "e0002.png")
    damaged = (root / "results" / "e0002.png").read_bytes()
    before = tree_digest(root)
    with pytest.raises(ProjectError) as error:
        Project.open(root)
    message = str(error.value)
    assert "results/e0002.png" in message and "retake project check" in message and "--repair" in message
    assert tree_digest(root) == before  # open without recover wrote nothing

    recovered = Project.open(root, recover=True)
    assert [e.id for e in recovered.edits] == ["e0001", "e0003"]
    (sentence,) = recovered.recovered
    assert sentence.startswith("Result e0002 was damaged and moved to quarantine/")
    assert sentence.endswith("; the other results are intact.")
    (place,) = (root / "quarantine").iterdir()
    assert (place / "results" / "e0002.png").read_bytes() == damaged
    note = (place / "NOTE.txt").read_text()
    assert "results/e0002.png" in note and "damaged" in note
    again = Project.open(root)  # sound now, and nothing more to recover
    assert again.recovered == () and Project.open(root, recover=True).recovered == ()
    assert Image.open(again.result_path("e0003")).size == (64, 48)
    add_edit(again, "after the repair")
    assert project_files(root) - referenced(root) == {"quarantine/" + place.name + "/results/e0002.png",
                                                      "quarantine/" + place.name + "/NOTE.txt"}


def test_a_missing_inversion_is_dropped_and_will_be_recomputed(tmp_path):
    root = tmp_path / "p"
    make_project(root)
    (root / manifest(root)["inversions"][0]["file"]).unlink()
    health = check_project(root)
    assert not health.ok and health.repairable and "inversion" in health.problems[0]
    repaired = repair_project(root)
    assert repaired.ok and repaired.repaired == (
        "The stored inversion k1 was missing; it will be recomputed on the next edit.",)
    project = Project.open(root)
    assert project.find_inversion("k1") is None and [e.inversion_key for e in project.edits] == ["k1"]
    save_inversion(project)  # the engine stores it again under the same key
    assert Project.open(root).find_inversion("k1") is not None


def test_a_damaged_inversion_mask_and_input_are_set_aside_together(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    add_edit(project, "a barn", mask=torch.ones(1, 1, 8, 8))
    add_edit(project, "a tower", mask=torch.ones(1, 1, 8, 8))
    project.set_input("reference", Image.new("RGB", (4, 4)), kind="image", prompt="a cat")
    project.set_input("edit_mask", torch.ones(4, 4), kind="mask")
    data = manifest(root)
    _damage(root / data["inversions"][0]["file"])
    _damage(root / data["edits"][1]["mask"]["file"])
    (root / data["inputs"][0]["file"]["file"]).unlink()
    project = Project.open(root, recover=True)
    assert len(project.recovered) == 3 and project.input_names() == ("edit_mask",)
    assert "The image input reference was missing; set it again to use it." in project.recovered
    assert any(s.startswith("The stored inversion k1 was damaged and moved to quarantine/")
               and s.endswith("it will be recomputed on the next edit.") for s in project.recovered)
    assert any(s.startswith("The mask of edit e0002, e0003 was damaged") for s in project.recovered)
    assert [e.mask for e in project.edits] == [None, None, None] and project.inversions == ()
    assert Project.open(root).edits == project.edits


@pytest.mark.parametrize("damage, words", [
    (lambda r: _damage(r / "source.png"), ["source.png", "cannot repair"]),
    (lambda r: (r / "project.json").write_text("{broken"), ["project.json", "cannot repair"]),
])
def test_damage_to_the_photo_or_the_manifest_cannot_be_repaired(tmp_path, damage, words):
    root = tmp_path / "p"
    make_project(root)
    _damage(root / "results" / "e0001.png")
    damage(root)
    before = tree_digest(root)
    for attempt in (lambda: Project.open(root), lambda: Project.open(root, recover=True)):
        with pytest.raises(ProjectError) as error:
            attempt()
        for word in words:
            assert word in str(error.value)
    health = repair_project(root)
    assert not health.ok and not health.repairable
    assert tree_digest(root) == before


def test_check_reads_only_and_summarises(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    project.update_settings(model_spec="demo", model_identity="sha256:" + "0" * 64, source_prompt="a house",
                            method="p2p", params={}, max_side=512)
    project.set_input("edit_mask", torch.ones(8, 8), kind="mask")
    health = check_project(root)
    assert health.ok and health.problems == () and not health.repairable
    summary = health.summary()
    for words in ["sound", "photo: source.png, 80x60", "method p2p", "max side 512", "inversions: 1",
                  "results: 1 edit", "inputs: edit_mask (mask)"]:
        assert words in summary, summary
    _damage(root / "results" / "e0001.png")
    before = tree_digest(root)
    health = check_project(root)
    assert not health.ok and health.repairable and "results/e0001.png" in health.summary()
    assert tree_digest(root) == before
    assert "not a folder" in check_project(tmp_path / "nowhere").problems[0]


# ---------------------------------------------------------------------------------------------------
# Messages echo shortened values


@pytest.mark.parametrize("change", [
    lambda d: d["image"].update(width=-10 ** 4000),
    lambda d: d["image"].update(width=10 ** 4000),
    lambda d: d.update(schema_version=10 ** 4000),
    lambda d: d.update(created="9" * 5000),
    lambda d: d["settings"].update(max_side="x" * 5000),
    lambda d: d["edits"][0].update(id="e" + "0" * 5000),
    lambda d: d["inversions"][0].update(key="k" * 5000),
    lambda d: d["edits"][0].update(seed=[[[[1.5] * 900] * 3]]),
])
def test_huge_values_in_a_manifest_give_short_messages(tmp_path, change):
    root = tmp_path / "p"
    make_project(root)
    data = manifest(root)
    change(data)
    (root / "project.json").write_text(json.dumps(data))
    with pytest.raises(ProjectError) as error:
        Project.open(root)
    assert len(str(error.value)) < 300, str(error.value)
    assert "\n" not in str(error.value)
