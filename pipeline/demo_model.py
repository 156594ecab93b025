"""Where the `demo` model lives: a tiny SD-1.x-architecture model trained by the project.

Retake must run, be tested and be demonstrated without downloading any weights. A model with random
weights is no denoiser (DDIM inversion does not retrace, text barely matters, the VAE does not
reconstruct), so no test could tell a right method from a wrong one. The demo model is a real,
crude latent diffusion model with Stable Diffusion 1.x's architecture at a fraction of its width,
trained briefly on pictures drawn from code (resources/demo_model/README.md says how, and
resources/demo_model/train.py reproduces it). It ships as a diffusers folder of a few MB and loads
through the same code as any other diffusers folder.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ModelError
from pipeline.paths import RESOURCES

DEMO_MODEL_DIR = RESOURCES / "demo_model" / "weights"


def demo_model_dir() -> Path:
    """The shipped demo model's diffusers folder."""
    if not (DEMO_MODEL_DIR / "model_index.json").is_file():
        raise ModelError(f"The demo model is missing from {DEMO_MODEL_DIR}; reinstall Retake.")
    return DEMO_MODEL_DIR
