"""What every GPU benchmark shares: SD-1.5-sized networks with random weights, a timer that records
peak GPU memory, and the report file named after the GPU.

Timing does not depend on weight values, so the networks are built from the SD 1.x configs that ship
in resources/configs/sd-v1 and initialised at random: no download is needed. On a machine without a
GPU the same code runs on the CPU (at a small --size, to check a benchmark script before a GPU run).
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.control.processor import install  # noqa: E402
from pipeline.models import ModelBundle  # noqa: E402
from pipeline.paths import RESOURCES  # noqa: E402
from pipeline.tokenizer import load_clip_tokenizer  # noqa: E402

CONFIGS = RESOURCES / "configs" / "sd-v1"
RESULTS = ROOT / "bench" / "results"


def bench_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    install(unet)
    return ModelBundle(unet, vae, text_encoder, load_clip_tokenizer(), scheduler, "random-sd15",
                       "random", device, sample_dtype)


def save_folder(bundle: ModelBundle, folder: Path) -> None:
    """`bundle`'s networks as a diffusers folder (fp32 safetensors, as SD 1.5's own)."""
    folder.mkdir(parents=True, exist_ok=True)
    bundle.unet.save_pretrained(folder / "unet", safe_serialization=True)
    bundle.vae.save_pretrained(folder / "vae", safe_serialization=True)
    bundle.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text((CONFIGS / "scheduler" / "scheduler_config.json")
                                                                .read_text())
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}))


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(label: str, work: Callable[[], Any], results: dict[str, dict[str, float]]) -> Any:
    """Run `work`, record its wall time and peak GPU memory under `label`, and return what it returned."""
    _sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = work()
    _sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    results[label] = {"seconds": round(seconds, 3), "peak_gib": round(peak, 2)}
    print(f"{label:>58}: {seconds:8.2f} s  peak {peak:6.2f} GiB", flush=True)
    return out


def tensors_mib(tensors: dict[str, torch.Tensor]) -> float:
    """What a method's stored tensors take in a project (their raw bytes), in MiB."""
    return round(sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20, 2)


def write_report(prefix: str, report: dict[str, Any], out: Path = RESULTS) -> Path:
    """Write `report` (with the machine's description added) as PREFIX-<gpu>.json under `out`."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu-{platform.machine()}"
    report = {"gpu": gpu, "torch": torch.__version__, "python": platform.python_version(), **report}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{prefix}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path
