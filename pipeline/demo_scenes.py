"""The demo scenes: one demo-world picture per method, with the prompts, parameters and inputs that show it.

Why: a new user has the demo model and no photo of their own; each method has its own kind of edit (a
pose, a colour, an object from a reference picture, a texture), and an edit tried on the wrong
picture looks like a broken method. Each scene is a seeded case of the semantic benchmark
(resources/demo_world/cases.py), rendered by the world's own generator
(resources/demo_world/scenes/make_scenes.py), with the settings an edit was run and looked at with,
and a note that says what the result shows, with the method's figures from the semantic benchmark
where the demo model does it poorly.

The registry is the folder resources/demo_world/scenes/: one `NAME.json` per scene beside its
128-px PNGs (`NAME.png`, the photo; `NAME.INPUT.png` for each named input: a mask, a reference
picture). Everything in a scene file is checked here as a command line is (the method exists, its
parameters parse, its inputs are ones the method declares and every file is a readable picture of
the scene's size) before a scene is offered. The CLI (`main.py demo [NAME]`) runs one; the window's
File > Open demo scene and its welcome view list them with `list_scenes()` and open one with
`make_scene_project()` (a project with the photo, prompts, method, parameters and inputs in it; the
target prompt is the scene's `target`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.errors import ParamError, RetakeError, shorten
from pipeline.images import load_image, read_mask_image
from pipeline.methods.base import input_specs
from pipeline.methods.registry import get_method
from pipeline.params import params_from_dict, params_to_dict
from pipeline.paths import RESOURCES

SCENES_DIR = RESOURCES / "demo_world" / "scenes"
MODEL = "demo"
"""The model every scene is made for: the demo-world model, at its own 128 px."""
NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
_FIELDS = {"title", "method", "task", "case", "source", "target", "params", "inputs", "input_prompts", "note",
           "benchmark"}


@dataclass(frozen=True)
class BenchmarkFigures:
    """The method's row on the scene's task in the semantic benchmark (bench/results/semantic-*.md), in %:
    edit success, preservation (the judge reads everything else unchanged), and both together."""

    task: str
    success: float
    kept: float
    success_and_kept: float
    source: str


@dataclass(frozen=True)
class DemoScene:
    """One scene: its photo and inputs (paths), prompts, method and parameters (JSON values, validated)."""

    name: str
    title: str
    method: str
    task: str
    case: str
    """The benchmark case it renders ("pose-003": resources/demo_world/cases.py)."""
    photo: Path
    source: str
    target: str
    params: dict[str, Any]
    inputs: dict[str, Path] = field(default_factory=dict)
    input_prompts: dict[str, str] = field(default_factory=dict)
    note: str = ""
    benchmark: BenchmarkFigures | None = None

    @property
    def summary(self) -> str:
        """One line for a menu or a welcome card."""
        return f"{self.title}: {self.method}, \u201c{self.source}\u201d \u2192 \u201c{self.target}\u201d"

    def request_fields(self) -> dict[str, Any]:
        """The EditRequest fields the scene decides (the caller adds project, output, device...)."""
        return {
            "image": str(self.photo), "source_prompt": self.source, "target_prompt": self.target, "model": MODEL,
            "method": self.method, "params": dict(self.params),
            "inputs": {name: str(path) for name, path in self.inputs.items()},
            "input_prompts": dict(self.input_prompts),
        }


def scene_names(folder: Path | None = None) -> list[str]:
    """The names of the scenes in `folder` (default: the registry, SCENES_DIR; one per NAME.json), sorted."""
    folder = folder or SCENES_DIR
    return sorted(path.stem for path in folder.glob("*.json") if NAME.fullmatch(path.stem))


def list_scenes(folder: Path | None = None) -> list[DemoScene]:
    """Every scene of the registry, in name order; a damaged scene file raises its RetakeError."""
    return [load_scene(name, folder) for name in scene_names(folder)]


def load_scene(name: str, folder: Path | None = None) -> DemoScene:
    """Read and check the scene `name`; ParamError names the scene and what is wrong with it."""
    folder = folder or SCENES_DIR
    known = scene_names(folder)
    if name not in known:
        raise ParamError(f"There is no demo scene {shorten(name)!r}; the scenes are: {', '.join(known) or 'none'}.")
    path = folder / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        return _scene(name, data, folder)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ParamError(f"The demo scene {path.name} cannot be read ({shorten(error)}).") from None
    except RetakeError as error:
        raise ParamError(f"The demo scene {path.name} is not valid: {error}") from None


def make_scene_project(scene: DemoScene, project: Path) -> Path:
    """A new project at `project` holding the scene's photo, source prompt, method, parameters and
    inputs (with the reference's prompt), as if the artist had set them; nothing is inverted. The
    target prompt is `scene.target` (a project keeps none until an edit)."""
    from pipeline.project import Project

    created = Project.create(project, load_image(scene.photo))
    created.update_settings(model_spec=None, model_identity=None, source_prompt=scene.source, method=scene.method,
                            params=scene.params, max_side=None)
    kinds = {spec.name: spec.kind for spec in input_specs(get_method(scene.method).Params)}
    for name, path in scene.inputs.items():
        image = read_mask_image(path) if kinds[name] == "mask" else load_image(path)
        created.set_input(name, image, kind=kinds[name], prompt=scene.input_prompts.get(name) or None)
    return project


# --------------------------------------------------------------------------------------------------
# Checking a scene file


def _no_constant(text: str) -> None:
    raise ValueError(f"{text} is not a JSON number")


def _text(data: dict[str, Any], key: str, *, empty: bool = False) -> str:
    value = data.get(key)
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ParamError(f"{key} must be a{'' if empty else ' non-empty'} string, not {shorten(repr(value))}.")
    return value


def _scene(name: str, data: Any, folder: Path) -> DemoScene:
    if not isinstance(data, dict):
        raise ParamError("it is not a JSON object.")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ParamError(f"unknown field(s) {', '.join(unknown)}.")
    method_id = _text(data, "method")
    method = get_method(method_id)
    raw_params = data.get("params", {})
    if not isinstance(raw_params, dict):
        raise ParamError("params must be an object.")
    params = params_to_dict(params_from_dict(method.Params, raw_params))
    photo = folder / f"{name}.png"
    size = _picture_size(photo, load_image)
    declared = {spec.name: spec for spec in input_specs(method.Params)}
    names = data.get("inputs", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ParamError("inputs must be a list of input names.")
    inputs: dict[str, Path] = {}
    for input_name in names:
        spec = declared.get(input_name)
        if spec is None:
            raise ParamError(f"the method {method_id} takes no input {shorten(input_name)!r}.")
        path = folder / f"{name}.{input_name}.png"
        _picture_size(path, read_mask_image if spec.kind == "mask" else load_image,
                      None if spec.picture is not None or spec.kind == "image" else size)
        inputs[input_name] = path
    missing = [spec.name for spec in declared.values() if spec.required and spec.name not in inputs]
    if missing:
        raise ParamError(f"the method {method_id} needs {', '.join(missing)}.")
    prompts = data.get("input_prompts", {})
    if not isinstance(prompts, dict) or any(k not in inputs or declared[k].kind != "image" or not isinstance(v, str)
                                            for k, v in prompts.items()):
        raise ParamError("input_prompts must map the scene's image inputs to their prompts.")
    return DemoScene(name=name, title=_text(data, "title"), method=method_id, task=_text(data, "task"),
                     case=_text(data, "case"), photo=photo, source=_text(data, "source"),
                     target=_text(data, "target"), params=params, inputs=inputs, input_prompts=dict(prompts),
                     note=_text(data, "note", empty=True), benchmark=_figures(data.get("benchmark")))


def _picture_size(path: Path, reader: Any, expected: tuple[int, int] | None = None) -> tuple[int, int]:
    if not path.is_file():
        raise ParamError(f"its picture {path.name} is missing.")
    picture: Image.Image = reader(path)
    if expected is not None and picture.size != expected:
        raise ParamError(f"{path.name} is {picture.width}x{picture.height}, not the photo's "
                         f"{expected[0]}x{expected[1]}.")
    return picture.size


def _figures(value: Any) -> BenchmarkFigures | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"task", "success", "kept", "success_and_kept", "source"}:
        raise ParamError("benchmark must give task, success, kept, success_and_kept and source.")
    numbers = [value[k] for k in ("success", "kept", "success_and_kept")]
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n <= 100 for n in numbers):
        raise ParamError("benchmark figures are percentages.")
    return BenchmarkFigures(_text(value, "task"), *map(float, numbers), source=_text(value, "source"))
