"""Named inputs (masks, reference images and their prompts) and the stored working-size bound."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.images import from_tensor
from pipeline.project import Project
from tests.helpers import tree_digest
from tests.test_project import MODEL, make_project, manifest, project_files, referenced


def test_inputs_round_trip(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    mask = torch.zeros(1, 1, 6, 8)
    mask[..., :, :3] = 1
    reference = Image.new("RGBA", (10, 6), (255, 0, 0, 255))
    tensor_image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    project.set_input("edit_mask", mask, kind="mask")
    project.set_input("reference", reference, kind="image", prompt="a red car")
    project.set_input("subject_mask", Image.new("L", (8, 6), 200), kind="mask")
    project.set_input("reference_2", tensor_image, kind="image")
    reopened = Project.open(root)
    assert reopened.input_names() == ("edit_mask", "reference", "subject_mask", "reference_2")
    stored = reopened.input_image("edit_mask")
    assert stored.mode == "L" and np.array_equal(np.asarray(stored), (mask[0, 0].numpy() * 255).astype(np.uint8))
    assert reopened.input_image("subject_mask").getpixel((0, 0)) == 200
    image = reopened.input_image("reference")
    assert image.mode == "RGB" and image.size == (10, 6) and image.getpixel((3, 3)) == (255, 0, 0)
    assert reopened.input_image("reference_2").tobytes() == from_tensor(tensor_image).tobytes()
    assert reopened.input_prompt("reference") == "a red car" and reopened.input_prompt("edit_mask") is None
    assert reopened.input_image("nothing") is None and reopened.input_prompt("nothing") is None
    records = {item["name"]: item for item in manifest(root)["inputs"]}
    assert records["edit_mask"]["kind"] == "mask" and records["edit_mask"]["file"]["file"].startswith(
        "inputs/edit_mask.")
    assert Image.open(root / records["edit_mask"]["file"]["file"]).mode == "L"
    assert project_files(root) == referenced(root)


def test_replacing_and_removing_inputs_leaves_no_files_behind(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    project.set_input("reference", Image.new("RGB", (4, 4), "red"), kind="image", prompt="red")
    old = manifest(root)["inputs"][0]["file"]["file"]
    before = tree_digest(root)
    project.set_input("reference", Image.new("RGB", (4, 4), "red"), kind="image", prompt="red")
    assert tree_digest(root) == before  # the same input again writes nothing
    project.set_input("reference", Image.new("RGB", (4, 4), "blue"), kind="image", prompt="blue")
    assert not (root / old).exists() and project.input_prompt("reference") == "blue"
    project.set_input("reference", Image.new("RGB", (4, 4), "blue"), kind="image", prompt="a blue square")
    assert len(list((root / "inputs").iterdir())) == 1  # a new prompt keeps the same file
    project.remove_input("reference")
    assert project.input_names() == () and list((root / "inputs").iterdir()) == []
    assert Project.open(root).input_names() == ()
    with pytest.raises(KeyError):
        project.remove_input("reference")


@pytest.mark.parametrize("name, kind, prompt, error", [
    ("", "image", None, ValueError), ("../evil", "image", None, ValueError), ("a/b", "mask", None, ValueError),
    ("a.b", "image", None, ValueError), ("1st", "image", None, ValueError), ("x" * 41, "image", None, ValueError),
    ("with space", "image", None, ValueError), ("mask", "photo", None, ValueError),
    ("edit_mask", "mask", "a prompt", ValueError), ("reference", "image", 3, TypeError),
    (None, "image", None, ValueError),
])
def test_input_names_and_kinds_are_checked(tmp_path, name, kind, prompt, error):
    project = make_project(tmp_path / "p")
    before = tree_digest(tmp_path / "p")
    with pytest.raises(error):
        project.set_input(name, Image.new("RGB", (4, 4)), kind=kind, prompt=prompt)
    with pytest.raises(TypeError):
        project.set_input("reference", np.zeros((4, 4, 3)), kind="image")
    assert tree_digest(tmp_path / "p") == before


def test_settings_keep_max_side(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    assert project.settings.max_side is None and manifest(root)["settings"]["max_side"] is None
    fields = dict(model_spec="demo", model_identity=MODEL.identity, source_prompt="a house", method="p2p", params={})
    project.update_settings(**fields, max_side=384)
    assert Project.open(root).settings.max_side == 384 and manifest(root)["settings"]["max_side"] == 384
    for bad in (0, -64, 3.5, True, "512"):
        with pytest.raises(ValueError):
            project.update_settings(**fields, max_side=bad)
    project.update_settings(**fields)  # not given: not known
    assert Project.open(root).settings.max_side is None
