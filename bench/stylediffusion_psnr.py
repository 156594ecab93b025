"""Reconstruction PSNR of StyleDiffusion beside null-text inversion and plain DDIM, on a demo model.

The paper compares reconstructions (its Tab. 3: PSNR/SSIM against null-text inversion); this runs the
same comparison on the project's own demo model on the CPU: the demo photo at a working size, each
method's inversion at its defaults (null-text: 10 inner steps with early stop; StyleDiffusion: the
authors' schedule of ceil(100 exp(-0.1 i)) inner steps, attention weight 1), and the reconstruction
sampled at guidance 7.5, decoded and compared with the photo's pixels. For StyleDiffusion both the
source branch (which retraces the trained trajectory) and the target of an edit whose target prompt
equals the source (which leaves the learned values after tau_v = 0.5) are reported, each against the
photo and against the VAE's own round trip of it (which bounds what any inversion can reach, so the
second figure is the inversion's error alone).

    PYTHONPATH=. .venv/bin/python bench/stylediffusion_psnr.py --model demo-tiny --size 64 --steps 10 30
    PYTHONPATH=. .venv/bin/python bench/stylediffusion_psnr.py --model resources/demo_world/weights --size 128 --steps 10
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import write_report  # noqa: E402

from pipeline.events import CancelToken  # noqa: E402
from pipeline.images import load_image, to_tensor  # noqa: E402
from pipeline.methods.base import Inputs, Prompts  # noqa: E402
from pipeline.methods.p2p import P2PParams, PromptToPrompt  # noqa: E402
from pipeline.methods.stylediffusion import StyleDiffusion, StyleDiffusionParams  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.parts import IMAGE_ENCODER, with_parts  # noqa: E402
from pipeline.paths import RESOURCES  # noqa: E402
from pipeline.run import RunContext  # noqa: E402

PHOTO = RESOURCES / "demo" / "house.png"
SOURCE = "a house in a meadow under a blue sky"


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], on the [0, 1] scale."""
    mse = float((((image + 1) / 2 - (reference + 1) / 2) ** 2).mean())
    return 10 * math.log10(1.0 / mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo-tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 30])
    args = parser.parse_args()
    bundle = with_parts(load_model(args.model, device="cpu"), (IMAGE_ENCODER,))
    ctx = RunContext(bundle, CancelToken(), lambda event: None)
    photo = to_tensor(load_image(PHOTO), (args.size, args.size))
    latent = ctx.encode_image(photo)
    prompts, none = Prompts(SOURCE, SOURCE), Inputs()
    vae = ctx.decode(latent)
    results: dict[str, dict[str, float]] = {"vae round trip": {"psnr_db": round(psnr(vae, photo), 2)}}
    p2p, style = PromptToPrompt(), StyleDiffusion()
    for steps in args.steps:
        runs = {
            f"ddim, {steps} steps": (p2p, P2PParams(steps=steps, inversion="ddim")),
            f"null-text, {steps} steps": (p2p, P2PParams(steps=steps)),
            f"stylediffusion, {steps} steps": (style, StyleDiffusionParams(steps=steps)),
        }
        for label, (method, params) in runs.items():
            start = time.perf_counter()
            inversion = method.invert(ctx, latent, prompts, params, none)
            seconds = time.perf_counter() - start
            out = method.edit(ctx, inversion, prompts, params, none)
            rows = {"": out.reconstruction, "target_equal_to_source_": out.target if method is style else None}
            entry = {"inversion_s_cpu": round(seconds, 1)}
            for prefix, z in rows.items():
                if z is not None:
                    image = ctx.decode(z)
                    entry[f"{prefix}psnr_db"] = round(psnr(image, photo), 2)
                    entry[f"{prefix}psnr_vs_vae_db"] = round(psnr(image, vae), 2)
            results[label] = entry
            print(f"{label:>32}: {entry}", flush=True)
    model = re.sub("[^a-z0-9]+", "-", args.model.lower()).strip("-")
    write_report(f"stylediffusion-psnr-{model}-{args.size}", {
        "model": args.model, "size": args.size, "photo": str(PHOTO.relative_to(RESOURCES.parent)),
        "prompt": SOURCE, "guidance": 7.5, "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
