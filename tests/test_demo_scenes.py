"""The demo scenes (issue 21): every scene loads and validates, its pictures are the world generator's render
of the benchmark case it names, its figures are the benchmark's, a scene file that is wrong is refused
with a message, a scene becomes a project the window can open, and one runs end to end (on demo-tiny)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.semantic_report import aggregate
from pipeline.demo_scenes import SCENES_DIR, list_scenes, load_scene, make_scene_project, scene_names
from pipeline.engine import Engine
from pipeline.errors import ParamError
from pipeline.events import Done
from pipeline.project import Project
from pipeline.request import EditRequest

ROOT = Path(__file__).resolve().parent.parent
METHODS_SHOWN = {"p2p", "masactrl", "kv-inversion", "toli", "specref", "stylediffusion"}


def test_every_scene_loads_and_every_method_has_one():
    scenes = list_scenes()
    assert {scene.method for scene in scenes} == METHODS_SHOWN
    assert {scene.task for scene in scenes if scene.method == "p2p"} == {"color", "replace", "add"}
    assert {scene.method for scene in scenes if scene.task == "pose"} == {"masactrl", "kv-inversion", "toli"}
    for scene in scenes:
        assert scene.note.strip(), f"{scene.name} says nothing about its result"
        assert Image.open(scene.photo).size == (128, 128)
        assert scene.summary.startswith(scene.title)


def test_the_pictures_are_the_world_generators_render_of_their_case():
    sys.path.insert(0, str(SCENES_DIR))
    try:
        from make_scenes import case_by_id, scene_pictures
    finally:
        sys.path.remove(str(SCENES_DIR))
    for name in scene_names():
        scene, data = load_scene(name), json.loads((SCENES_DIR / f"{name}.json").read_text())
        case = case_by_id(scene.case)
        assert scene.source == case.source.caption and scene.task == case.task
        if "reference" in scene.input_prompts:
            assert scene.input_prompts["reference"] == case.reference.caption
        for suffix, picture in scene_pictures(data).items():
            shipped = np.asarray(Image.open(SCENES_DIR / f"{name}{suffix}.png"))
            assert np.array_equal(shipped, picture), f"{name}{suffix}.png is not the render of {scene.case}"


def test_the_figures_on_each_scene_are_the_semantic_benchmarks():
    for scene in list_scenes():
        figures = scene.benchmark
        assert figures is not None and figures.task == scene.task
        report = json.loads((ROOT / figures.source).with_suffix(".json").read_text())
        cell = aggregate(r for r in report["runs"] if r["row"] == scene.method and r["task"] == scene.task)
        for key in ("success", "kept", "success_and_kept"):
            assert round(cell[key]) == getattr(figures, key), (scene.name, key, cell[key])
        assert f"{figures.success:.0f}%" in scene.note or figures.success >= 90, scene.name


def _broken(tmp_path: Path, change) -> Path:
    folder = tmp_path / "scenes"
    shutil.copytree(SCENES_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = folder / "house-colour.json"
    data = json.loads(path.read_text())
    change(data, folder)
    path.write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("change, message", [
    (lambda d, f: d.update(method="inpaint"), "Unknown method"),
    (lambda d, f: d["params"].update(steps=0), "steps must lie between"),
    (lambda d, f: d.update(inputs=["subject_mask"]), "takes no input"),
    (lambda d, f: (f / "house-colour.edit_mask.png").unlink(), "is missing"),
    (lambda d, f: Image.new("L", (64, 64)).save(f / "house-colour.edit_mask.png"), "not the photo's 128x128"),
    (lambda d, f: d.update(colour="blue"), "unknown field"),
    (lambda d, f: d.update(benchmark={"task": "color"}), "benchmark must give"),
])
def test_a_wrong_scene_file_is_refused_with_a_message(tmp_path, change, message):
    folder = _broken(tmp_path, change)
    with pytest.raises(ParamError, match=message):
        load_scene("house-colour", folder)
    (folder / "house-colour.json").write_text("{not json")
    with pytest.raises(ParamError, match="cannot be read"):
        load_scene("house-colour", folder)
    with pytest.raises(ParamError, match="no demo scene 'nowhere'"):
        load_scene("nowhere", folder)


def test_a_scene_becomes_a_project_with_its_prompt_method_parameters_and_inputs(tmp_path):
    scene = load_scene("cat-from-reference")
    project = Project.open(make_scene_project(scene, tmp_path / "scene.retake"))
    assert project.settings.source_prompt == scene.source and project.settings.method == "specref"
    assert project.settings.params == scene.params
    assert set(project.input_names()) == {"reference", "reference_mask", "edit_mask"}
    assert project.input_prompt("reference") == scene.input_prompts["reference"]
    assert project.input_image("reference_mask").mode == "L"


def test_a_scene_runs_end_to_end(tmp_path):
    """The colour scene with its painted region, on the tests' tiny model at 64 px and 5 steps."""
    scene = load_scene("house-colour")
    fields = {**scene.request_fields(), "model": "demo-tiny"}
    fields["params"] = {**fields["params"], "steps": 5}
    final = Engine().run(EditRequest(**fields, project=str(tmp_path / "p.retake"), max_side=64, device="cpu"),
                         lambda event: None)
    assert isinstance(final, Done), final
    assert final.image.size == (128, 128)
    assert Project.open(tmp_path / "p.retake").edits[-1].method == "p2p"


def test_the_cli_lists_the_scenes(capsys):
    from cli.commands import main

    assert main(["demo"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in scene_names())
    assert main(["demo", "nowhere"]) == 1 and "no demo scene" in capsys.readouterr().err
