"""Edit every demo scene (or those named) with the demo model and draw what it did: docs/demo-scenes/NAME.png
is the photo, the reference picture when the scene has one, and the result, side by side at twice
their size, so the user guide shows each scene's result as it comes out of the engine.

    PYTHONPATH=. .venv/bin/python scripts/demo_scene_pictures.py [--projects DIR] [NAME ...]

The projects go to DIR (default: a temporary folder); given again, the stored inversions and tunings
are reused, so only the edits run (KV Inversion's tuning and StyleDiffusion's training take tens of
minutes on a CPU the first time). Each scene's seconds are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.demo_scenes import list_scenes  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.events import Done  # noqa: E402
from pipeline.images import load_image  # noqa: E402
from pipeline.request import EditRequest  # noqa: E402

OUT = ROOT / "docs" / "demo-scenes"
SCALE, GAP = 2, 6


def strip(pictures: list[Image.Image]) -> Image.Image:
    """The pictures side by side, enlarged SCALE times (nearest: the demo world's own pixels), on white."""
    width, height = pictures[0].width * SCALE, pictures[0].height * SCALE
    sheet = Image.new("RGB", (len(pictures) * (width + GAP) - GAP, height), (255, 255, 255))
    for i, picture in enumerate(pictures):
        sheet.paste(picture.resize((width, height), Image.Resampling.NEAREST), (i * (width + GAP), 0))
    return sheet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenes to edit (default: all)")
    parser.add_argument("--projects", type=Path, help="where the scenes' projects are kept (and reused)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = Engine()
    with tempfile.TemporaryDirectory(prefix="retake-scenes-") as scratch:
        projects = args.projects or Path(scratch)
        for scene in list_scenes():
            if args.names and scene.name not in args.names:
                continue
            started = time.monotonic()
            request = EditRequest(**scene.request_fields(), project=str(projects / f"{scene.name}.retake"),
                                  device=args.device)
            final = engine.run(request, lambda event: None)
            if not isinstance(final, Done):
                print(f"{scene.name}: {final}")
                return 1
            pictures = [load_image(scene.photo)]
            if "reference" in scene.inputs:
                pictures.append(load_image(scene.inputs["reference"]))
            strip([*pictures, final.image]).save(args.out / f"{scene.name}.png", optimize=True)
            print(f"{scene.name}: {time.monotonic() - started:.0f} s "
                  f"({'reused the inversion' if final.reused_inversion else 'inverted'}) -> {args.out / scene.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
