"""GPU benchmark of the p2p method on a Stable-Diffusion-1.5-sized model with random weights.

Timing does not depend on weight values, so the networks are built from the SD 1.x configs that
ship in resources/configs/sd-v1 and initialised at random: no download is needed. It runs the real
pipeline code (RunContext, the p2p method, the attention processors) at 512x512, 50 steps:
DDIM inversion, null-text inversion with a fixed 10 inner steps per timestep (early stop off),
negative-prompt inversion, and a p2p edit with local blend, each with its peak GPU memory, and writes
JSON named after the GPU under bench/results/.

    python bench/bench_p2p.py            # on a machine with an NVIDIA GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.events import CancelToken  # noqa: E402
from pipeline.methods.p2p import P2PParams, PromptToPrompt  # noqa: E402
from pipeline.models import ModelBundle  # noqa: E402
from pipeline.run import RunContext  # noqa: E402
from pipeline.tokenizer import load_clip_tokenizer  # noqa: E402

CONFIGS = ROOT / "resources" / "configs" / "sd-v1"
SOURCE = "a cat sitting on a wooden bench in a garden"
TARGET = "a tiger sitting on a wooden bench in a garden"
# What the brief measured with the authors' own code structure on an H200 (fp32).
REFERENCE = {"null_text_inversion_50x10_s": 54.0, "p2p_edit_batch4_s": 3.6}


def random_sd15(device: torch.device, sample_dtype: torch.dtype) -> ModelBundle:
    """SD-1.5-shaped networks with random weights, held in fp32 like every loaded model."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(CONFIGS / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(CONFIGS / "text_encoder" / "config.json"))
    scheduler_config = json.loads((CONFIGS / "scheduler" / "scheduler_config.json").read_text())
    scheduler = DDIMScheduler.from_config(scheduler_config, clip_sample=False, set_alpha_to_one=False)
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return ModelBundle(unet, vae, text_encoder, load_clip_tokenizer(), scheduler, "random-sd15",
                       "random", device, sample_dtype)


def measure(label: str, work: Callable[[], object], results: dict) -> None:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    work()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30
    results[label] = {"seconds": round(seconds, 3), "peak_gib": round(peak, 2)}
    print(f"{label:>40}: {seconds:8.2f} s  peak {peak:6.2f} GiB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_p2p needs an NVIDIA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0)
    method = PromptToPrompt()
    results: dict[str, dict] = {}
    bundle = random_sd15(device, torch.float16)
    ctx = RunContext(bundle, CancelToken(), lambda event: None)
    latent = torch.randn(1, 4, args.size // 8, args.size // 8, device=device)

    def params(**kw: object) -> P2PParams:
        return P2PParams(steps=args.steps, **kw)

    # warm-up: kernels, cuDNN autotuning, allocator
    warm = P2PParams(steps=3, inversion="null-text", inner_steps=2, early_stop=False, blend_words=("cat", "tiger"))
    method.edit(ctx, method.invert(ctx, latent, SOURCE, warm), SOURCE, TARGET, warm, None)

    measure("DDIM inversion", lambda: method.invert(ctx, latent, SOURCE, params(inversion="ddim")), results)
    measure("negative-prompt inversion",
            lambda: method.invert(ctx, latent, SOURCE, params(inversion="negative-prompt")), results)
    null_params = params(inversion="null-text", inner_steps=10, early_stop=False)
    inversion: dict = {}
    measure("null-text inversion (fp32, 10 inner steps fixed)",
            lambda: inversion.update(method.invert(ctx, latent, SOURCE, null_params)), results)
    for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        bundle.sample_dtype = dtype
        blend = params(inversion="null-text", inner_steps=10, early_stop=False, blend_words=("cat", "tiger"))
        measure(f"p2p edit with local blend ({name})",
                lambda: method.edit(ctx, inversion, SOURCE, TARGET, blend, None), results)
        measure(f"p2p edit without blend ({name})",
                lambda: method.edit(ctx, inversion, SOURCE, TARGET, null_params, None), results)

    report = {
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "size": args.size,
        "steps": args.steps,
        "note": "null-text inversion includes the DDIM inversion before it; weights are held in fp32, "
                "inversions sample in fp16 under autocast, null-text optimises in fp32",
        "results": results,
        "reference_authors_code_h200": REFERENCE,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    path = args.out / f"p2p-{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
