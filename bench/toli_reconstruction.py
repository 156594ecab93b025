"""How closely TOLI reproduces the photo when nothing is to change (target = source, eta = 0), next to
the null-text reconstruction it builds on, on a demo model on the CPU; and what its stages cost there.

With eta = 0 every step after the switch is conditioned on the optimised embedding alone, while the
null embeddings were optimised for the inversion prompt's: the gap between the two rows is what the
text optimisation leaves of the photo. Rows: the null-text reconstruction (full source injection),
TOLI at its default switch (0.2) after 1 and after `--text-steps` optimisation steps. Errors are the
latent's relative L1 error against the photo's latent and the PSNR of the decoded result against the
decoded photo latent (the VAE's own round trip). Writes JSON named after the machine under
bench/results/.

    python bench/toli_reconstruction.py            # demo-tiny on the demo photo, 64 px, 20 steps, 200 text steps
    python bench/toli_reconstruction.py --model demo --size 128 --photo resources/demo_world/house.png \
        --prompt "a red house in a meadow under a blue sky"      # the demo-world model on one of its scenes
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import RESULTS, tensors_mib, write_report  # noqa: E402

from pipeline.events import CancelToken  # noqa: E402
from pipeline.images import load_image, to_tensor  # noqa: E402
from pipeline.methods.base import Inputs, Prompts  # noqa: E402
from pipeline.methods.toli import Toli, ToliParams  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.paths import RESOURCES  # noqa: E402
from pipeline.run import RunContext, RunOptions  # noqa: E402

SOURCE = "a house in a meadow under a blue sky"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo-tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--text-steps", type=int, default=200)
    parser.add_argument("--photo", type=Path, default=RESOURCES / "demo" / "house.png")
    parser.add_argument("--prompt", default=SOURCE, help="what the photo shows (target = source)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON report")
    args = parser.parse_args()
    bundle = load_model(args.model, device="cpu")
    ctx = RunContext(bundle, CancelToken(), lambda event: None, RunOptions(seed=0))
    photo = ctx.encode_image(to_tensor(load_image(args.photo), (args.size, args.size)))
    decoded_photo = ctx.decode(photo)
    toli, prompts, none = Toli(), Prompts(args.prompt, args.prompt), Inputs()
    params = ToliParams(steps=args.steps, text_steps=args.text_steps, eta=0.0)

    timings: dict[str, float] = {}
    started = time.perf_counter()
    inversion = toli.invert(ctx, photo, prompts, params, none)
    timings["null-text inversion_s"] = round(time.perf_counter() - started, 2)
    tuned = {}
    for text_steps in (1, args.text_steps):
        started = time.perf_counter()
        tuned[text_steps] = toli.tune(ctx, inversion, prompts, dataclasses.replace(params, text_steps=text_steps),
                                      none)
        timings[f"text optimisation, {text_steps} steps_s"] = round(time.perf_counter() - started, 2)
    timings["text optimisation per step_s"] = round(timings[f"text optimisation, {args.text_steps} steps_s"]
                                                    / args.text_steps, 4)

    def errors(latent: torch.Tensor) -> dict[str, float]:
        mse = float(((ctx.decode(latent) - decoded_photo) ** 2).mean()) / 4  # images in [-1, 1]
        return {"latent_relative_l1": round(float((latent - photo).abs().mean() / photo.abs().mean()), 4),
                "psnr_db": round(10 * torch.log10(torch.tensor(1 / mse)).item(), 2)}

    rows = {}
    started = time.perf_counter()
    full = toli.edit(ctx, {**inversion, **tuned[1]}, prompts, dataclasses.replace(params, target_start=1.0), none)
    timings["edit_s"] = round(time.perf_counter() - started, 2)
    rows["null-text reconstruction (switch 1.0)"] = errors(full.target)
    for text_steps, stored in tuned.items():
        out = toli.edit(ctx, {**inversion, **stored}, prompts, params, none)
        rows[f"toli eta 0, switch {params.target_start}, {text_steps} text steps"] = errors(out.target)
    for name, row in rows.items():
        print(f"{name:48s} {row}")
    write_report(f"toli-reconstruction-{args.model}-{args.size}", {
        "model": args.model, "size": args.size, "steps": args.steps, "photo": args.photo.name, "prompt": args.prompt,
        "inversion": "null-text, empty prompt, guidance 7.5, 10 inner steps with early stop",
        "reconstruction": rows, "timings": timings,
        "stored_mib": {"inversion": tensors_mib(inversion), "tuning": tensors_mib(tuned[args.text_steps])},
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
