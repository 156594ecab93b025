"""Photos, recipes and manifests for the batch tests: small distinct pictures made from the demo photo."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageOps

from tests.helpers import DEMO_PHOTO, SOURCE, TARGET

RECIPE = {"model": "demo-tiny", "method": "p2p", "source": SOURCE, "target": TARGET,
          "params": {"inversion": "direct", "steps": 5}, "max_side": 64}
"""The recipe issue 22 names, word for word but for the prompts."""


def make_photos(folder: Path, count: int, *, broken: bool = False, size: int = 64) -> list[Path]:
    """`count` different photos (the demo photo shifted, mirrored, recoloured) and, with `broken`, a file
    named like a photo that is not one."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.open(DEMO_PHOTO).convert("RGB").resize((size, size))
    photos = []
    for i in range(count):
        picture = ImageOps.mirror(base) if i % 2 else base
        picture = Image.eval(picture.rotate(7 * i), lambda v, i=i: (v + 19 * i) % 256)
        path = folder / f"photo{i:02d}.png"
        picture.save(path)
        photos.append(path)
    if broken:
        (folder / "broken.png").write_bytes(b"this is not a PNG")
    return photos


def write_recipe(path: Path, **changes) -> Path:
    path.write_text(json.dumps({**RECIPE, **changes}))
    return path
