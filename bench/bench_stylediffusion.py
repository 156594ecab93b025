"""GPU benchmark of StyleDiffusion on SD-1.5-sized networks with random weights (and a ViT-B/16-sized
random CLIP image encoder): time and peak GPU memory of each stage, and what a project stores.

It runs the method's own code (`StyleDiffusion.invert` and `.edit`) at 512x512 and the authors' 30
steps. The inversion's stages (DDIM inversion with the 16x16 maps recorded, the image features,
the mapping networks' training) are timed from inside the one real `invert` call: the run's progress
events mark where each stage starts and ends, and the timer synchronises the GPU at each mark.
Training runs the full schedule, ceil(inner * exp(-0.1 i)) iterations at step i (inner 100: 1015
in all), with early stop off (random weights never reach the tolerance anyway); with a smaller
--inner the measured time per iteration is also extrapolated to the full schedule, and the report
says so. Edits (P2Plus: tau_u 0.5, local blend) are timed in fp16 and fp32 sampling.

    python bench/bench_stylediffusion.py                         # on a machine with an NVIDIA GPU
    python bench/bench_stylediffusion.py --size 64 --steps 3 --inner 2   # a quick check on the CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import bench_device, measure, random_sd15, tensors_mib, write_report  # noqa: E402

from pipeline.events import CancelToken, Event, Progress, Stage  # noqa: E402
from pipeline.inversion.value_mapping import inner_iterations  # noqa: E402
from pipeline.methods.base import Inputs, Prompts  # noqa: E402
from pipeline.methods.stylediffusion import StyleDiffusion, StyleDiffusionParams  # noqa: E402
from pipeline.models import ModelBundle  # noqa: E402
from pipeline.parts import IMAGE_ENCODER, ImageEncoder  # noqa: E402
from pipeline.run import RunContext  # noqa: E402

PROMPTS = Prompts("a cat sitting on a wooden bench in a garden", "a tiger sitting on a wooden bench in a garden")
FULL_INNER = 100


def vit_b16(device: torch.device) -> CLIPVisionModel:
    """A CLIP ViT-B/16 image encoder (224 px, 16 px patches: 197 tokens of width 768) with random weights."""
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              image_size=224, patch_size=16, projection_dim=512, hidden_act="quick_gelu")
    return CLIPVisionModel(config).to(device).eval().requires_grad_(False)


class StageClock:
    """Times the stages a run reports, from its first progress event to its last, with the GPU synchronised
    at each, and the peak GPU memory in between."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.results: dict[str, dict[str, float]] = {}

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Progress):
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        if event.step == 0:
            self.started[event.stage] = now
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        elif event.step == event.total:
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
            self.results[str(event.stage)] = {"seconds": round(now - self.started[event.stage], 3),
                                              "peak_gib": round(peak, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--inner", type=int, default=FULL_INNER, help="first step's iterations (100: the full schedule)")
    args = parser.parse_args()
    device = bench_device()
    fp16 = random_sd15(device, torch.float16 if device.type == "cuda" else torch.float32)
    fp16 = dataclasses.replace(fp16, parts={IMAGE_ENCODER: ImageEncoder(vit_b16(device), "", "random ViT-B/16")})
    bundles: dict[str, ModelBundle] = {"fp16": fp16, "fp32": dataclasses.replace(fp16, sample_dtype=torch.float32)}
    if device.type != "cuda":
        bundles = {"fp32": bundles["fp32"]}
    side = args.size // 8
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    method, none = StyleDiffusion(), Inputs()
    params = StyleDiffusionParams(steps=args.steps, inner_steps=args.inner, early_stop=False,
                                  uncond_self_replace=(0.0, 0.5), blend_words=("cat", "tiger"))
    first = next(iter(bundles.values()))

    warm = dataclasses.replace(params, steps=3, inner_steps=1)  # kernels, cuDNN autotuning, allocator
    warm_ctx = RunContext(first, CancelToken(), lambda event: None)
    method.edit(warm_ctx, method.invert(warm_ctx, latent, PROMPTS, warm, none), PROMPTS, warm, none)

    results: dict[str, dict[str, float]] = {}
    clock = StageClock()
    ctx = RunContext(first, CancelToken(), clock)
    inversion = measure("stylediffusion inversion (whole)", lambda: method.invert(ctx, latent, PROMPTS, params, none),
                        results)
    for stage, figures in clock.results.items():
        results[f"inversion stage: {stage}"] = figures
    whole = results["stylediffusion inversion (whole)"]  # the clock reset the peak at each stage it saw
    whole["peak_gib"] = max(whole["peak_gib"], *(f["peak_gib"] for f in clock.results.values()))
    iterations = sum(inner_iterations(args.inner, args.steps))
    training = clock.results[str(Stage.VALUE_MAPPING)]["seconds"]
    per_iteration = training / iterations
    for name, bundle in bundles.items():
        run = RunContext(bundle, CancelToken(), lambda event: None)
        measure(f"P2Plus edit, local blend, tau_u 0.5 ({name})", lambda: method.edit(run, inversion, PROMPTS, params, none),
                results)

    full = sum(inner_iterations(FULL_INNER, args.steps))
    write_report(f"stylediffusion-{args.size}", {
        "size": args.size,
        "steps": args.steps,
        "inner": args.inner,
        "training_iterations": iterations,
        "training_s_per_iteration": round(per_iteration, 4),
        "training_full_schedule": {"iterations": full, "seconds": round(per_iteration * full, 1),
                                   "measured": args.inner == FULL_INNER},
        "stored_mib": tensors_mib(inversion),
        "stored_tensors": {name: list(t.shape) for name, t in inversion.items()},
        "note": "random SD-1.5-sized weights and a random ViT-B/16 encoder; weights in fp32; DDIM inversion samples "
                "in the bundle's dtype under autocast, training runs in fp32; edits sample the [source, target] pair; "
                "the inversion's stage figures come from its progress events (GPU synchronised at each)",
        "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
