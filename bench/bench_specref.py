"""Benchmark of SpecRef's stages on a Stable-Diffusion-1.5-sized model with random weights.

It runs the real method code (pipeline.methods.specref) at 512x512, 50 steps by default: the photo's
inversion (direct, the default), the reference's DDIM inversion with its keys and values recorded
(and, to show what recording costs, the same inversion without it), edits in fp16 and fp32 sampling
beside the plain P2P edit they build on, saving both records into a project, and loading them back,
each with its time and peak GPU memory; plus the stored sizes (the reference's K/V in fp16, the
project folder), the K/V one step moves to the GPU, and the process's peak host memory. Writes JSON
named after the GPU under bench/results/.

    python bench/bench_specref.py                                   # on a machine with an NVIDIA GPU
    python bench/bench_specref.py --size 64 --steps 3 --out /tmp    # check the script on the CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import RESULTS, bench_device, measure, random_sd15, tensors_mib, write_report  # noqa: E402

from pipeline.control.specref import KV_PREFIX  # noqa: E402
from pipeline.events import CancelToken  # noqa: E402
from pipeline.inversion.ddim import ddim_invert  # noqa: E402
from pipeline.methods.base import Inputs, Prompts  # noqa: E402
from pipeline.methods.p2p import P2PParams, PromptToPrompt  # noqa: E402
from pipeline.methods.specref import SpecRef, SpecRefParams, blend_words  # noqa: E402
from pipeline.project import Project  # noqa: E402
from pipeline.run import RunContext  # noqa: E402
from pipeline.sampling import DDIMSchedule  # noqa: E402

PROMPTS = Prompts("a cat sitting next to a mirror", "a tiger sitting next to a mirror")  # the authors' example


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON report")
    args = parser.parse_args()
    device = bench_device()
    specref, p2p = SpecRef(), PromptToPrompt()
    results: dict[str, dict] = {}
    bundle = random_sd15(device, torch.float16 if device.type == "cuda" else torch.float32)
    ctx = RunContext(bundle, CancelToken(), lambda event: None)
    side = args.size // 8
    photo, picture = torch.randn(2, 1, 4, side, side, device=device)
    object_mask = torch.zeros(1, 1, side, side, device=device)
    object_mask[..., side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 1
    reference = Inputs(images={"reference": picture}, prompts={"reference": ""})
    masks = Inputs(masks={"reference_mask": object_mask})
    params = SpecRefParams(steps=args.steps)
    twin = P2PParams(**{**{f.name: getattr(params, f.name) for f in dataclasses.fields(P2PParams)},
                        "blend_words": blend_words(bundle.tokenizer, PROMPTS, params)})

    # warm-up: kernels, cuDNN autotuning, allocator
    warm = dataclasses.replace(params, steps=3)
    warm_inversion = specref.invert(ctx, photo, PROMPTS, warm, Inputs())
    specref.edit(ctx, {**warm_inversion, **specref.tune(ctx, warm_inversion, PROMPTS, warm, reference)}, PROMPTS,
                 warm, masks)

    inversion = measure("source inversion (direct, the default)",
                        lambda: specref.invert(ctx, photo, PROMPTS, params, Inputs()), results)
    schedule = DDIMSchedule(bundle.scheduler, args.steps)
    cond = ctx.encode_text([""])
    measure("reference DDIM inversion without recording", lambda: ddim_invert(ctx, schedule, picture, cond), results)
    tuned = measure("reference inversion with K/V recording (fp16 on the host)",
                    lambda: specref.tune(ctx, inversion, PROMPTS, params, reference), results)
    tensors = {**inversion, **tuned}
    for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        if dtype == torch.float16 and device.type != "cuda":
            continue
        run = RunContext(dataclasses.replace(bundle, sample_dtype=dtype), CancelToken(), lambda event: None)
        measure(f"specref edit, mask_t from words, local blend ({name})",
                lambda: specref.edit(run, tensors, PROMPTS, params, masks), results)
        measure(f"plain p2p edit it builds on ({name})", lambda: p2p.edit(run, inversion, PROMPTS, twin, Inputs()),
                results)

    with tempfile.TemporaryDirectory() as folder:
        project = Project.create(Path(folder) / "p.retake", Image.new("RGB", (args.size, args.size)))
        save = {"size": (args.size, args.size), "steps": args.steps, "model_identity": bundle.identity,
                "method": SpecRef.id, "source_prompt": PROMPTS.source}
        measure("saving the photo's inversion into a project",
                lambda: project.save_inversion("a" * 32, inversion, params={}, **save), results)
        measure("saving the reference's K/V into a project",
                lambda: project.save_inversion("b" * 32, tuned, params={}, **save), results)
        measure("loading the reference's K/V from the project", lambda: project.load_inversion("b" * 32), results)
        project_mib = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20

    kv = {name: t for name, t in tuned.items() if name.startswith(KV_PREFIX)}
    write_report("specref", {
        "size": args.size,
        "steps": args.steps,
        "controlled_layers": sorted(int(name[len(KV_PREFIX):]) for name in kv),
        "note": "random SD-1.5-sized weights held in fp32; inversions and fp16 edits sample under fp16 autocast; "
                "the reference's keys and values live in host memory in fp16 and one step of them is moved to "
                "the GPU at a time; edits sample the [source, target] pair",
        "results": results,
        "stored_mib": {
            "photo inversion": tensors_mib(inversion),
            "reference K/V (fp16, all steps)": tensors_mib(kv),
            "reference tuning record (K/V, latents, timesteps)": tensors_mib(tuned),
            "project folder (photo, both records, manifest)": round(project_mib, 2),
        },
        "reference_kv_per_step_on_gpu_mib": round(tensors_mib(kv) / args.steps, 2),
        "host_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
