"""Build the demo model's image encoder: a tiny CLIP vision transformer, seeded, untrained.

StyleDiffusion feeds a CLIP image encoder's token features (ViT-B/16 in the paper: 197 tokens of
width 768) to its per-step mapping networks, and multiplies the networks' output with the text
embedding, so the encoder's width must equal the text encoder's (768 for SD 1.x, 32 for the demo
model, 128 for the demo-world model). This script writes a `CLIPVisionModel` with a demo model's
text width, 64-pixel input and 8-pixel patches (64 patches + the class token = 65 tokens), 2
layers, 2 heads, into its `image_encoder/` (config.json + model.safetensors, float32).

It is not trained. The mapping networks are fitted to one photo at a time and only need features
that are a fixed, deterministic function of the photo; what the features mean does not enter the
method's invariants the tests check (retracing, reconstruction, P2Plus identities). A seeded random
encoder gives that, at no training cost. A real model uses the paper's encoder
(openai/clip-vit-base-patch16, see docs/models.md).

    PYTHONPATH=. .venv/bin/python resources/demo_model/image_encoder.py
    PYTHONPATH=. .venv/bin/python resources/demo_model/image_encoder.py --weights resources/demo_world/weights
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

WEIGHTS = Path(__file__).resolve().parent / "weights"


def build(text_width: int, seed: int = 0) -> CLIPVisionModel:
    """The demo image encoder, initialised from `seed` with transformers' own CLIP initialisation."""
    config = CLIPVisionConfig(
        hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=2, num_attention_heads=2,
        image_size=64, patch_size=8, projection_dim=text_width, hidden_act="quick_gelu",
    )
    torch.manual_seed(seed)
    return CLIPVisionModel(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="the demo model's diffusers folder")
    args = parser.parse_args()
    width = json.loads((args.weights / "text_encoder" / "config.json").read_text())["hidden_size"]
    encoder = build(width)
    encoder.save_pretrained(args.weights / "image_encoder", safe_serialization=True)
    print(f"wrote {args.weights / 'image_encoder'}: width {width}, "
          f"{sum(p.numel() for p in encoder.parameters())} parameters")


if __name__ == "__main__":
    main()
