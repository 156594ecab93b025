"""The demo-world model's card figures: VAE PSNR, DDIM reconstruction, and how sharp its word maps are.

Issue 8 asks the model card for these, measured. On held-out demo-world scenes (a seed stream the
model never saw), at 128 px and 50 DDIM steps:

* VAE: PSNR of the VAE round trip (latent mean) against the picture, the ceiling of every inversion;
* DDIM reconstruction: the picture inverted with its caption at guidance 1 and sampled back with it,
  at guidance 1 (DDIM's own error) and at 7.5 (what an edit sees without null-text or direct
  inversion), PSNR against the picture and against its VAE round trip;
* word maps: during the guidance-1 reconstruction, each subject's kind word ("cat", "house"), its
  cross-attention averaged over heads, steps and the layers of one resolution; the share of that
  map's mass inside the subject's true coverage (the world's ground truth, averaged to the layer's
  grid) beside the share of the picture the subject covers (what a flat map would get). Reported per
  resolution (the model's cross-attention runs at 16x16, 8x8, 4x4 and, in the middle block, 2x2
  latent cells at 128 px; p2p's local blend and MasaCtrl's masks read the 4x4 maps, the authors'
  "a quarter of the latent").

    PYTHONPATH=. .venv/bin/python bench/demo_world_card.py [--scenes 64] [--steps 50] [--maps-from-step 40]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "resources" / "demo_world"))

import world  # noqa: E402
from sd15 import write_report  # noqa: E402

from pipeline.control.contract import AttentionCall, Controller  # noqa: E402
from pipeline.control.places import LayerPlace  # noqa: E402
from pipeline.events import CancelToken  # noqa: E402
from pipeline.inversion.ddim import ddim_invert  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.run import RunContext  # noqa: E402
from pipeline.sampling import DDIMSchedule, Sampling, denoise  # noqa: E402

SEED = 20261127  # a stream of its own: neither training (20261123) nor the judge's (20261125)


@dataclass
class WordMapRecorder(Controller):
    """Sums, per resolution level, each row's cross-attention to one token (mean over heads) over every
    cross-attention layer and every step from `first_step` on; `tokens[row]` lists (subject, token
    position) pairs."""

    tokens: Sequence[Sequence[tuple[int, int]]]
    first_step: int = 0
    sums: dict[int, dict[tuple[int, int], torch.Tensor]] = field(default_factory=dict)

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "cross" and step >= self.first_step

    def prob_rows(self, call: AttentionCall) -> list[int]:
        return call.layout.select("cond")

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        level = self.sums.setdefault(call.place.level, {})
        for i, row in enumerate(call.layout.select("cond")):
            mean = probs[rows.index(row)].float().mean(0)  # [queries, 77]
            for subject, position in self.tokens[i]:
                grid = mean[:, position].view(call.spatial)
                key = (i, subject)
                level[key] = grid if key not in level else level[key] + grid
        return probs


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], on the [0, 1] scale."""
    return 10 * math.log10(1.0 / float((((a + 1) / 2 - (b + 1) / 2) ** 2).mean()))


def kind_positions(description: world.Description) -> list[tuple[int, int]]:
    """(subject index, token position of its kind word) in the caption: every caption word is one token."""
    out, offset = [], 1  # position 0 is the start-of-text token
    for k, subject in enumerate(description.subjects):
        words = subject.phrase().split()
        out.append((k, offset + words.index(subject.kind)))
        offset += len(words) + 1  # "and"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--maps-from-step", type=int, default=0,
                        help="average the word maps over the steps from this one on (default: all)")
    args = parser.parse_args()
    start = time.perf_counter()
    bundle = load_model(args.model, device="cpu")
    rng = np.random.default_rng(SEED)
    scenes = [world.render_scene(rng) for _ in range(args.scenes)]
    schedule = DDIMSchedule(bundle.scheduler, args.steps)
    figures: dict[str, list[float]] = {k: [] for k in ("vae", "w1", "w1_vs_vae", "w7.5", "w7.5_vs_vae")}
    inside: dict[int, list[float]] = {}
    chance: list[float] = []
    for first in range(0, len(scenes), args.batch):
        batch = scenes[first : first + args.batch]
        ctx = RunContext(bundle, CancelToken(), lambda event: None)
        pictures = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        z0 = ctx.encode_image(pictures)
        vae = ctx.decode(z0)
        cond = ctx.encode_text([s.caption for s in batch])
        z_t = ddim_invert(ctx, schedule, z0, cond)[-len(batch):]
        recorder = WordMapRecorder([kind_positions(s.description) for s in batch], args.maps_from_step)
        w1 = ctx.decode(denoise(ctx, schedule, z_t, Sampling(cond, None, 1.0, controllers=(recorder,)), "card"))
        uncond = ctx.encode_text([""] * len(batch))[None].expand(args.steps, -1, -1, -1)
        w75 = ctx.decode(denoise(ctx, schedule, z_t, Sampling(cond, uncond, 7.5), "card"))
        for i in range(len(batch)):
            figures["vae"].append(psnr(vae[i], pictures[i]))
            figures["w1"].append(psnr(w1[i], pictures[i]))
            figures["w1_vs_vae"].append(psnr(w1[i], vae[i]))
            figures["w7.5"].append(psnr(w75[i], pictures[i]))
            figures["w7.5_vs_vae"].append(psnr(w75[i], vae[i]))
        for i, scene in enumerate(batch):
            for subject, coverage in enumerate(scene.coverage):
                chance.append(float(coverage.mean()))
                for level, maps in recorder.sums.items():
                    word_map = maps[(i, subject)]
                    true = F.adaptive_avg_pool2d(torch.from_numpy(coverage)[None, None], word_map.shape)[0, 0]
                    inside.setdefault(level, []).append(float((word_map * true).sum() / word_map.sum()))
        print(f"{first + len(batch)} scenes, {time.perf_counter() - start:.0f}s", flush=True)

    latent = scenes[0].image.shape[0] // bundle.vae_scale_factor
    results = {
        "psnr_db": {k: round(float(np.mean(v)), 2) for k, v in figures.items()},
        "word_map_mass_inside_true_mask": {
            f"{math.ceil(latent / 2**level)}x{math.ceil(latent / 2**level)}": round(float(np.mean(v)), 3)
            for level, v in sorted(inside.items())},
        "subject_area_share": round(float(np.mean(chance)), 3),
        "subjects": len(chance),
    }
    print(results)
    late = f"-maps-from-step-{args.maps_from_step}" if args.maps_from_step else ""
    write_report(f"demo-world-card-{args.scenes}-scenes{late}", {
        "model": args.model, "scenes": args.scenes, "seed": SEED, "steps": args.steps, "size": world.SIZE,
        "maps_from_step": args.maps_from_step,
        "seconds": round(time.perf_counter() - start), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
