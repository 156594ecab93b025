"""Where the demo models live: small SD-1.x-architecture models trained by the project.

Retake must run, be tested and be demonstrated without downloading any weights. A model with random
weights is no denoiser (DDIM inversion does not retrace, text barely matters, the VAE does not
reconstruct), so no test could tell a right method from a wrong one. The demo model is a real,
crude latent diffusion model with Stable Diffusion 1.x's architecture at a fraction of its width,
trained briefly on pictures drawn from code (resources/demo_model/README.md says how, and
resources/demo_model/train.py reproduces it). It ships as a diffusers folder of a few MB and loads
through the same code as any other diffusers folder.

A demo folder carries no tokenizer/: its tokenizer is SD 1.x's own CLIP tokenizer, rebuilt from the
BPE file in resources/clip like a single-file checkpoint's (3.5 MB less per model).

`demo-tiny` is the first one (resources/demo_model: 64x64 blobs, a few MB): the test suite checks the
methods' invariants on it because it is the fastest real denoiser we have.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError
from pipeline.paths import RESOURCES

DEMO_MODELS: dict[str, Path] = {
    "demo": RESOURCES / "demo_model" / "weights",
    "demo-tiny": RESOURCES / "demo_model" / "weights",
}
"""The names a model spec may use for a shipped demo model, and their diffusers folders."""


def demo_model_dir(name: str = "demo") -> Path:
    """The diffusers folder of the shipped demo model `name` (a key of DEMO_MODELS)."""
    folder = DEMO_MODELS[name]
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"The demo model {name!r} is missing from {folder}; reinstall Retake.")
    return folder


def save_demo_model(out: Path, *, vae: Any, text_encoder: Any, unet: Any, scheduler: Any) -> None:
    """Write a trained demo model as a diffusers folder in float16 safetensors, replacing `out`;
    the tokenizer is left out (see the module docstring)."""
    from diffusers import StableDiffusionPipeline  # the training scripts' need, not the app's

    from pipeline.tokenizer import load_clip_tokenizer

    pipe = StableDiffusionPipeline(vae=vae.half(), text_encoder=text_encoder.half(), tokenizer=load_clip_tokenizer(),
                                   unet=unet.half(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    shutil.rmtree(out / "tokenizer")
