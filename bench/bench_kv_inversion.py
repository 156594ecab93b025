"""KV Inversion's costs and reconstruction, for both storage forms (full and low-rank).

GPU (default): an SD-1.5-sized model with random weights (bench/sd15.py) at 512x512, 50 steps: the
DDIM inversion at guidance 7.5, the tuning of each form (fp32, 10 inner steps fixed, early stop off,
so the work is the same whatever the weights), edits in fp16 and fp32 sampling, the peak GPU memory
of each, and the stored size of each form. Reconstruction error means nothing on random weights.

--demo: a demo model on the CPU (demo-tiny at 64x64 by default): the guidance-7.5 reconstruction error of plain
DDIM inversion (at 7.5 and at 1), null-text inversion and both KV Inversion forms at the methods'
defaults, with and without early stop, each one's inversion time and stored size.

    python bench/bench_kv_inversion.py                        # on a machine with an NVIDIA GPU
    python bench/bench_kv_inversion.py --size 64 --steps 2 --inner-steps 1 --out /tmp   # a check on the CPU
    python bench/bench_kv_inversion.py --demo --steps 20      # reconstruction figures on the demo model
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import RESULTS, bench_device, measure, random_sd15, tensors_mib, write_report  # noqa: E402

from pipeline.events import CancelToken  # noqa: E402
from pipeline.images import load_image, to_tensor  # noqa: E402
from pipeline.inversion.ddim import ddim_invert  # noqa: E402
from pipeline.inversion.kv_tuning import kv_tune  # noqa: E402
from pipeline.methods.base import Inputs, Prompts  # noqa: E402
from pipeline.methods.kv_inversion import LEARNING_RATES, KVInversion, KVInversionParams  # noqa: E402
from pipeline.methods.p2p import P2PParams, PromptToPrompt  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.paths import RESOURCES  # noqa: E402
from pipeline.run import RunContext  # noqa: E402
from pipeline.sampling import DDIMSchedule, Sampling, denoise  # noqa: E402

FORMS = ("full", "low-rank")
ACTION = Prompts("a cat sitting on a wooden bench in a garden", "a cat jumping on a wooden bench in a garden")
DEMO = Prompts("a house in a meadow under a blue sky", "a house in a meadow under a blue sky")
NONE = Inputs()


def learned_mib(tensors: dict[str, torch.Tensor]) -> float:
    """The learned keys and values of an inversion (everything but its latents), in MiB."""
    return tensors_mib({k: v for k, v in tensors.items() if k.startswith("kv.")})


def gpu(args: argparse.Namespace) -> int:
    device = bench_device()
    fp16 = random_sd15(device, torch.float16)
    bundles = {"fp16": fp16, "fp32": dataclasses.replace(fp16, sample_dtype=torch.float32)}
    ctx = RunContext(fp16, CancelToken(), lambda event: None)
    side = args.size // 8
    latent = torch.randn(1, 4, side, side, device=device)
    method = KVInversion()

    warm = KVInversionParams(steps=2, inner_steps=1, early_stop=False)  # kernels, autotuning, allocator
    method.edit(ctx, method.invert(ctx, latent, ACTION, warm, NONE), ACTION, warm, NONE)

    results: dict[str, dict] = {}
    sizes: dict[str, dict] = {}
    schedule = DDIMSchedule(fp16.scheduler, args.steps)
    cond, uncond = ctx.encode_text([ACTION.source]), ctx.encode_text([""])
    trajectory = measure("DDIM inversion at guidance 7.5 (fp16)",
                         lambda: ddim_invert(ctx, schedule, latent, cond, uncond=uncond, scale=7.5), results)
    for form in args.forms.split(","):
        params = KVInversionParams(steps=args.steps, form=form, inner_steps=args.inner_steps, early_stop=False)
        tuned = measure(f"KV tuning, {form} (fp32, {args.inner_steps} inner steps fixed)", lambda: kv_tune(
            ctx, schedule, trajectory, cond, uncond, layers=params.layers, form=form, rank=params.rank,
            guidance=params.guidance, inner_steps=params.inner_steps, early_stop=False,
            learning_rate=LEARNING_RATES[form]), results)
        inversion = {"latents": trajectory.cpu(), **tuned.tensors}
        sizes[form] = {"learned_mib": learned_mib(inversion), "project_tensors_mib": tensors_mib(inversion),
                       "learned_mib_per_step": round(learned_mib(inversion) / args.steps, 3)}
        print(f"{form}: {sizes[form]}", flush=True)
        for name, bundle in bundles.items():
            run = RunContext(bundle, CancelToken(), lambda event: None)
            measure(f"KV edit, {form} ({name})", lambda: method.edit(run, inversion, ACTION, params, NONE), results)
        del tuned, inversion

    write_report("kv-inversion" if args.forms == ",".join(FORMS) else f"kv-inversion-{args.forms}", {
        "size": args.size,
        "steps": args.steps,
        "inner_steps": args.inner_steps,
        "layers": KVInversionParams.layers,
        "rank": KVInversionParams.rank,
        "note": "random SD-1.5-sized weights; tuning runs the UNet in fp32 on the [uncond, cond] pair with "
                "gradients; edits sample the [reconstruction, target] pair; sizes are the raw bytes of the "
                "stored tensors (fp16 keys and values, fp32 weights and latents)",
        "results": results,
        "stored": sizes,
    }, args.out)
    return 0


def demo(args: argparse.Namespace) -> int:
    """Reconstruction at guidance 7.5 on the demo model: target = source, the edit's reconstruction row."""
    bundle = load_model(args.model, device="cpu")
    ctx = RunContext(bundle, CancelToken(), lambda event: None)
    image = to_tensor(load_image(RESOURCES / "demo" / "house.png"), (args.size, args.size))
    latent = ctx.encode_image(image)
    vae_only = ctx.decode(latent)
    schedule = DDIMSchedule(bundle.scheduler, args.steps)
    cond, uncond = ctx.encode_text([DEMO.source]), ctx.encode_text([""])
    rows: dict[str, dict] = {}

    def record(name: str, seconds: float, z0: torch.Tensor, stored: float) -> None:
        decoded = ctx.decode(z0)
        rows[name] = {"latent_mse": round(torch.mean((z0 - latent) ** 2).item(), 6),
                      "psnr_to_vae_db": round(psnr(decoded, vae_only), 2),
                      "psnr_to_photo_db": round(psnr(decoded, image), 2),
                      "inversion_s": round(seconds, 2), "learned_mib": stored}
        print(f"{name:34s} {rows[name]}", flush=True)

    started = time.perf_counter()
    pivot = ddim_invert(ctx, schedule, latent, cond, uncond=uncond, scale=7.5)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        plain = denoise(ctx, schedule, pivot[-1:], Sampling(cond, uncond.expand(args.steps, 1, -1, -1), 7.5), "plain")
    record("ddim (inverted at 7.5)", seconds, plain, 0.0)
    p2p, method = PromptToPrompt(), KVInversion()
    runs: list[tuple[str, Any, Any]] = [("ddim (inverted at 1)", p2p, P2PParams(steps=args.steps, inversion="ddim"))]
    for stop in (True, False):  # with the early stop, every optimisation ends near its last tolerance
        label = "" if stop else ", no early stop"
        runs.append((f"null-text (inverted at 1){label}", p2p,
                     P2PParams(steps=args.steps, inversion="null-text", early_stop=stop)))
        runs += [(f"kv-inversion {form}{label}", method, KVInversionParams(steps=args.steps, form=form, early_stop=stop))
                 for form in FORMS]
    for name, editor, params in runs:
        started = time.perf_counter()
        inversion = editor.invert(ctx, latent, DEMO, params, NONE)
        seconds = time.perf_counter() - started
        stored = tensors_mib({k: v for k, v in inversion.items() if k != "latents"})
        record(name, seconds, editor.edit(ctx, inversion, DEMO, params, NONE).reconstruction, stored)

    write_report(f"kv-inversion-{args.model}-{args.steps}-steps", {
        "model": args.model, "size": args.size, "steps": args.steps, "guidance": 7.5,
        "kv_defaults": {k: v for k, v in dataclasses.asdict(KVInversionParams()).items() if k != "form"},
        "note": "reconstruction of the demo photo at guidance 7.5 (an edit with target = source; its "
                "reconstruction row); PSNR to the VAE's own round trip isolates the inversion's error",
        "results": rows,
    }, args.out)
    return 0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1]."""
    mse = torch.mean(((a - b) / 2) ** 2).item()
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="50 on the GPU, 10 with --demo")
    parser.add_argument("--size", type=int, default=None, help="512 on the GPU, 64 with --demo")
    parser.add_argument("--demo", action="store_true", help="reconstruction figures on a demo model (CPU)")
    parser.add_argument("--model", default="demo-tiny", help="--demo: which demo model (demo-tiny: 64x64 blobs)")
    parser.add_argument("--inner-steps", type=int, default=10, help="GPU: Adam steps per timestep of the tuning")
    parser.add_argument("--forms", default=",".join(FORMS), help="GPU: the storage forms to measure (full,low-rank)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON report")
    args = parser.parse_args()
    if args.demo:
        args.steps, args.size = args.steps or 10, args.size or 64
        return demo(args)
    args.steps, args.size = args.steps or 50, args.size or 512
    return gpu(args)


if __name__ == "__main__":
    sys.exit(main())
