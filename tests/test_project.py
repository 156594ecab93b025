"""Projects: round trips, damage reported in one message without touching files, crash safety."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.errors import ProjectError
from pipeline.project import ModelRecord, Project

ROOT = Path(__file__).resolve().parent.parent
MODEL = ModelRecord("demo", "sha256:" + "0" * 64)


def make_project(folder: Path) -> tuple[Project, dict]:
    image = Image.new("RGB", (80, 60), (10, 120, 200))
    project = Project.create(folder, image)
    tensors = {"latents": torch.randn(6, 4, 8, 8), "null_embeddings": torch.randn(5, 77, 32)}
    project.save_inversion("k1", tensors, method="p2p", model_identity=MODEL.identity, source_prompt="a house",
                           params={"steps": 5}, size=(64, 64), steps=5)
    project.add_edit(target_prompt="a castle", source_prompt="a house", model=MODEL, method="p2p",
                     params={"steps": 5}, seed=None, inversion_key="k1", result=Image.new("RGB", (64, 48), "red"))
    return project, tensors


def test_round_trip(tmp_path):
    _, tensors = make_project(tmp_path / "p")
    reopened = Project.open(tmp_path / "p")
    assert reopened.image().size == (80, 60)
    loaded = reopened.load_inversion("k1")
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
    assert [e.target_prompt for e in reopened.edits] == ["a castle"]
    assert reopened.find_inversion("k1").steps == 5 and reopened.find_inversion("nope") is None
    reopened.add_edit(target_prompt="a barn", source_prompt="a house", model=MODEL, method="p2p", params={},
                      seed=1, inversion_key="k1", result=Image.new("RGB", (64, 48), "blue"))
    assert [e.target_prompt for e in Project.open(tmp_path / "p").edits] == ["a castle", "a barn"]


def _damage(kind: str, root: Path) -> None:
    manifest = root / "project.json"
    data = json.loads(manifest.read_text())
    if kind == "truncated manifest":
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif kind == "altered field":
        data["inversions"][0]["steps"] = "many"
        manifest.write_text(json.dumps(data))
    elif kind == "newer schema":
        data["schema_version"] = 99
        manifest.write_text(json.dumps(data))
    elif kind == "missing file":
        (root / data["inversions"][0]["file"]).unlink()
    elif kind == "flipped byte in inversion":
        path = root / data["inversions"][0]["file"]
        raw = bytearray(path.read_bytes())
        raw[-5] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif kind == "altered result":
        path = root / data["edits"][0]["result"]["file"]
        Image.new("RGB", (64, 48), "green").save(path)
    elif kind == "altered source":
        Image.new("RGB", (80, 60), "black").save(root / "source.png")


@pytest.mark.parametrize("kind", ["truncated manifest", "altered field", "newer schema", "missing file",
                                  "flipped byte in inversion", "altered result", "altered source"])
def test_damage_is_one_clear_error_and_nothing_is_touched(tmp_path, kind):
    root = tmp_path / "p"
    make_project(root)
    _damage(kind, root)
    before = tree_digest(root)
    with pytest.raises(ProjectError) as error:
        project = Project.open(root)
        project.load_inversion("k1")
        project.image()
    message = str(error.value)
    assert "\n" not in message and len(message) < 400
    if kind == "newer schema":
        assert "newer" in message
    assert tree_digest(root) == before


def test_a_folder_that_is_not_a_project(tmp_path):
    (tmp_path / "holiday").mkdir()
    (tmp_path / "holiday" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError):
        Project.open(tmp_path / "holiday")
    with pytest.raises(ProjectError):
        Project.create(tmp_path / "holiday", Image.new("RGB", (8, 8)))
    assert (tmp_path / "holiday" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "holiday").iterdir()) == ["notes.txt"]


SAVER = """
import sys, torch
from pipeline.project import Project
from tests.helpers import tree_digest
project = Project.open(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    i += 1
    project.save_inversion(f"k{i % 3 + 2}", {"latents": torch.randn(51, 4, 64, 64)}, method="p2p",
                           model_identity="sha256:" + "0" * 64, source_prompt=f"a house {i}",
                           params={"steps": 50}, size=(512, 512), steps=50)
"""


def test_killing_a_save_midway_leaves_a_valid_project(tmp_path):
    root = tmp_path / "p"
    _, tensors = make_project(root)
    rng = random.Random(0)
    for _ in range(4):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(root)], cwd=ROOT, stdout=subprocess.PIPE,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert saver.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        project = Project.open(root)  # whatever instant it died at, the project opens whole
        assert torch.equal(project.load_inversion("k1")["latents"], tensors["latents"])
        for record in project.inversions:
            project.load_inversion(record.key)
    project.add_edit(target_prompt="after the crash", source_prompt="a house", model=MODEL, method="p2p",
                     params={}, seed=None, inversion_key="k1", result=Image.new("RGB", (64, 48), "blue"))
    assert Project.open(root).edits[-1].target_prompt == "after the crash"
