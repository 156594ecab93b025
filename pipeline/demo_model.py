"""Where the demo models live: small SD-1.x-architecture models trained by the project.

Retake must run, be tested and be demonstrated without downloading any weights. A model with random
weights is no denoiser (DDIM inversion does not retrace, text barely matters, the VAE does not
reconstruct), so no test could tell a right method from a wrong one. The demo models are real, crude
latent diffusion models with Stable Diffusion 1.x's architecture at a fraction of its width, trained
briefly on pictures drawn from code (each folder's README.md says how; its train.py reproduces it).
Each ships as a diffusers folder and loads through the same code as any other diffusers folder.

A demo folder carries no tokenizer/: its tokenizer is SD 1.x's own CLIP tokenizer, rebuilt from the
BPE file in resources/clip like a single-file checkpoint's (3.5 MB less per model). The demo-world
model's text encoder keeps only the token-embedding rows its training captions used
(`pipeline.token_table`: 12.6 MB of untrained noise less).

Two ship, and their names say what each is for:

* `demo` is the demo-world model (resources/demo_world/weights, 28.5 MB): trained on 128x128
  procedural scenes of people, cats, dogs, houses, trees, cars, boats and suns in known colours,
  textures and poses (resources/demo_world/README.md). It draws what its captions say well enough
  that an edit can be seen ("a red house" becomes "a blue house" of the same shape), so it is what
  the app, the README's commands and the self-test use when no model is named.
* `demo-tiny` is the first, crude one (resources/demo_model/weights, a few MB): 64x64 blobs in
  which no edit is visible, but a real denoiser, smaller to load and somewhat cheaper to run, on
  which the test suite's invariants and tolerances were calibrated; the tests keep running on it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError
from pipeline.paths import RESOURCES

DEMO_MODELS: dict[str, Path] = {
    "demo": RESOURCES / "demo_world" / "weights",
    "demo-tiny": RESOURCES / "demo_model" / "weights",
}
"""The names a model spec may use for a shipped demo model, and their diffusers folders."""


@dataclass(frozen=True)
class DemoEdit:
    """A demo-world scene, its caption and a target whose edit the `demo` model visibly makes."""

    image: Path
    source: str
    target: str


DEMO_EDIT = DemoEdit(RESOURCES / "demo_world" / "house.png", "a red house in a meadow under a blue sky",
                     "a blue house in a meadow under a blue sky")
"""What the self-test and the screenshot edit (scripts/demo.sh and scripts/app.sh spell it out too)."""


def demo_model_dir(name: str = "demo") -> Path:
    """The diffusers folder of the shipped demo model `name` (a key of DEMO_MODELS)."""
    folder = DEMO_MODELS[name]
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"The demo model {name!r} is missing from {folder}; reinstall Retake.")
    return folder


def save_demo_model(out: Path, *, vae: Any, text_encoder: Any, unet: Any, scheduler: Any,
                    trained_token_ids: Iterable[int] | None = None) -> None:
    """Write a trained demo model as a diffusers folder in float16 safetensors, replacing `out`;
    the tokenizer is left out (see the module docstring). With `trained_token_ids` (every token id
    of the training captions), the text encoder's token table keeps only those rows
    (`pipeline.token_table`)."""
    from diffusers import StableDiffusionPipeline  # the training scripts' need, not the app's

    from pipeline.token_table import pack_token_table
    from pipeline.tokenizer import load_clip_tokenizer

    pipe = StableDiffusionPipeline(vae=vae.half(), text_encoder=text_encoder.half(), tokenizer=load_clip_tokenizer(),
                                   unet=unet.half(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "tokenizer")
    if trained_token_ids is not None:
        pack_token_table(out / "text_encoder", trained_token_ids)
