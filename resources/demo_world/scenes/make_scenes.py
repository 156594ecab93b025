"""Render the demo scenes' pictures from the benchmark cases their JSON files name.

Every picture of a scene is drawn by the world's own generator from a seeded case of the semantic
benchmark (resources/demo_world/cases.py: case k of a task is a pure function of (seed, task, k)),
never by hand: NAME.png is the case's source picture, and NAME.INPUT.png each named input the scene
lists, as the benchmark gives it to a method (bench.semantic.available_inputs: the edit region, the
subject's mask, the reference picture and its subject's mask). tests/test_demo_scenes.py renders
them again and compares.

    PYTHONPATH=. .venv/bin/python resources/demo_world/scenes/make_scenes.py [NAME ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from cases import Case, make_cases  # noqa: E402


def case_by_id(case_id: str) -> Case:
    """The benchmark case `case_id` ("pose-003"), rendered."""
    task, _, index = case_id.rpartition("-")
    return make_cases(int(index) + 1, (task,))[-1]


def scene_pictures(scene: dict) -> dict[str, np.ndarray]:
    """File name suffix ("" for the photo, ".INPUT" for an input) -> the picture (uint8, [H, W] or [H, W, 3])."""
    from bench.semantic import available_inputs

    case = case_by_id(scene["case"])
    available = available_inputs(case)
    pictures = {"": case.source.image}
    for name in scene.get("inputs", []):
        value = available[name]
        if value is None:
            raise SystemExit(f"case {scene['case']} has no {name}")
        pictures[f".{name}"] = value.astype(np.uint8) * 255 if value.dtype == bool else value
    return pictures


def main(names: list[str]) -> int:
    for path in sorted(HERE.glob("*.json")):
        if names and path.stem not in names:
            continue
        for suffix, picture in scene_pictures(json.loads(path.read_text())).items():
            out = HERE / f"{path.stem}{suffix}.png"
            Image.fromarray(picture).save(out, optimize=True)
            print(f"wrote {out.relative_to(HERE.parents[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
