"""Benchmark of TOLI's three stages on a Stable-Diffusion-1.5-sized model with random weights.

It runs the real method code (pipeline.methods.toli) at 512x512, 50 steps by default: the text
optimisation (fp32, 200 Adam steps: the paper's count), each latent inversion TOLI offers (null-text
with 10 inner steps fixed and early stop off, negative-prompt, direct, DDIM), and edits sampled in
fp16 and fp32 (the target alone, as by default; with an edit mask and with direct inversion, where the
reconstruction branch is sampled beside it), each with its time and peak GPU memory, plus the bytes
each stage stores in the project. Writes JSON named after the GPU under bench/results/.

    python bench/bench_toli.py                                    # on a machine with an NVIDIA GPU
    python bench/bench_toli.py --size 64 --steps 3 --opt-steps 3 --out /tmp  # check the script on the CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import RESULTS, bench_device, measure, random_sd15, tensors_mib, write_report  # noqa: E402

from pipeline.events import CancelToken  # noqa: E402
from pipeline.inversion.source import INVERSIONS  # noqa: E402
from pipeline.methods.base import Inputs, Prompts  # noqa: E402
from pipeline.methods.toli import Toli, ToliParams  # noqa: E402
from pipeline.run import RunContext, RunOptions  # noqa: E402

PROMPTS = Prompts("a dog standing on the grass", "a dog jumping on the grass")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--opt-steps", type=int, default=200, help="text optimisation steps")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON report")
    args = parser.parse_args()
    device = bench_device()
    toli = Toli()
    results: dict[str, dict] = {}
    fp16 = random_sd15(device, torch.float16 if device.type == "cuda" else torch.float32)
    ctx = RunContext(fp16, CancelToken(), lambda event: None, RunOptions(seed=0))
    side = args.size // 8
    latent = torch.randn(1, 4, side, side, device=device)
    mask = torch.zeros(1, 1, side, side, device=device)
    mask[..., :, : side // 2] = 1
    none, masked = Inputs(), Inputs(masks={"edit_mask": mask})
    params = ToliParams(steps=args.steps, text_steps=args.opt_steps, inner_steps=10, early_stop=False)

    # warm-up: kernels, cuDNN autotuning, allocator
    warm = dataclasses.replace(params, steps=3, text_steps=2, inner_steps=2)
    warm_inversion = toli.invert(ctx, latent, PROMPTS, warm, none)
    toli.edit(ctx, {**warm_inversion, **toli.tune(ctx, warm_inversion, PROMPTS, warm, none)}, PROMPTS, warm, masked)

    stored: dict[str, float] = {}
    inversions = {}
    for kind in INVERSIONS:
        kind_params = dataclasses.replace(params, inversion=kind)
        label = f"{kind} inversion" + (" (fp32, 10 inner steps fixed)" if kind == "null-text" else "")
        inversions[kind] = measure(label, lambda: toli.invert(ctx, latent, PROMPTS, kind_params, none), results)
        stored[f"{kind} inversion"] = tensors_mib(inversions[kind])
    tuned = measure(f"text optimisation (fp32, {args.opt_steps} steps)",
                    lambda: toli.tune(ctx, inversions["null-text"], PROMPTS, params, none), results)
    stored["text optimisation"] = tensors_mib(tuned)
    per_step = results[f"text optimisation (fp32, {args.opt_steps} steps)"]["seconds"] / args.opt_steps
    for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        if dtype == torch.float16 and device.type != "cuda":
            continue
        run = RunContext(dataclasses.replace(fp16, sample_dtype=dtype), CancelToken(), lambda event: None)
        for kind in ("null-text", "direct"):
            edit_params = dataclasses.replace(params, inversion=kind)
            tensors = {**inversions[kind], **tuned}
            rows = "target and reconstruction" if kind == "direct" else "target alone"
            measure(f"edit, {kind}, {rows} ({name})",
                    lambda: toli.edit(run, tensors, PROMPTS, edit_params, none), results)
        measure(f"edit, null-text, edit mask: target and reconstruction ({name})",
                lambda: toli.edit(run, {**inversions["null-text"], **tuned}, PROMPTS, params, masked), results)

    write_report("toli", {
        "size": args.size,
        "steps": args.steps,
        "text_optimisation_steps": args.opt_steps,
        "text_optimisation_seconds_per_step": round(per_step, 4),
        "note": "random SD-1.5-sized weights held in fp32; the text optimisation and null-text inversion run the "
                "UNet in fp32, the other inversions and the fp16 edits under fp16 autocast; each inversion "
                "includes its DDIM inversion",
        "results": results,
        "stored_mib": stored,
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
