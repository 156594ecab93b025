"""Measure whether a demo-model folder is a working (if crude) latent diffusion model.

Why: the demo model exists so that tests can tell a right inversion method from a wrong one. This
script prints the numbers resources/demo_model/README.md quotes, for any SD 1.x-style folder:

(a) DDIM inversion then DDIM sampling, both at guidance 1 with the caption, reconstructs the latent
    (mean |error| relative to the latent's mean |value|, 20 steps; also at 10 and 50 steps, since
    what remains is DDIM's first-order discretisation error; --controls adds common mistakes);
(b) the same inversion, then sampling at guidance 7.5 against "", does not (larger error);
(c) the text matters: std(eps(z, t, caption) - eps(z, t, "")) / std(eps(z, t, caption)); and, as a
    diffusion classifier, the true caption of a held-out scene explains it (lower denoising error,
    summed over 10 timesteps with shared noise) better than the same caption with its sky, its
    ground or an object's colour changed (a random-weight model scores about 50%);
(d) the VAE reconstructs held-out scenes (PSNR) and the demo photo;
(e) sampling from noise with a caption at guidance 7.5 gives caption-like pictures (a PNG grid);
(f) one UNet forward + backward on 8x8 latents, batch 2, on this CPU.

DDIM here is written out on scheduler.alphas_cumprod (deterministic, eta 0), independent of the
app's own implementation, so it can serve as a reference for it:
    x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t),   z' = sqrt(a') x0 + sqrt(1 - a') eps
with a' = alphas_cumprod[t - 1000 / steps], or alphas_cumprod[0] (the final alpha) past the end.

    PYTHONPATH=. .venv/bin/python resources/demo_model/check.py resources/demo_model/weights --controls
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenes import GROUNDS, OBJECT_COLORS, SKIES, render_scene  # noqa: E402
from train import DEMO_CAPTION, DEMO_PHOTO, psnr, to_tensor  # noqa: E402  (puts the repository on sys.path)

from pipeline.tokenizer import load_clip_tokenizer  # noqa: E402

HELD_OUT_SEED = 777  # never used by train.py's streams (those derive from its --seed)
STEPS = 20


class Model:
    """The five parts of a diffusers SD folder, in float32 on the CPU."""

    def __init__(self, folder: Path) -> None:
        f32 = torch.float32
        self.tokenizer = load_clip_tokenizer()
        self.text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=f32).eval()
        self.vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=f32).eval()
        self.unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=f32).eval()
        self.scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
        self.alphas = self.scheduler.alphas_cumprod.double()
        self.set_steps(STEPS)

    def set_steps(self, steps: int) -> None:
        self.scheduler.set_timesteps(steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]  # descending: 951 ... 1 for 20
        self.stride = self.scheduler.config.num_train_timesteps // steps

    @torch.no_grad()
    def text(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids)[0]

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    @torch.no_grad()
    def eps(self, z: torch.Tensor, t: int, cond: torch.Tensor, uncond: torch.Tensor | None = None,
            guidance: float = 1.0) -> torch.Tensor:
        if uncond is None or guidance == 1.0:
            return self.unet(z, t, encoder_hidden_states=cond).sample
        e = self.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        e_u, e_c = e.chunk(2)
        return e_u + guidance * (e_c - e_u)

    def alpha(self, t: int) -> float:
        return float(self.alphas[t]) if t >= 0 else float(self.alphas[0])

    @staticmethod
    def ddim(z: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
        x0 = (z - math.sqrt(1 - a_from) * eps) / math.sqrt(a_from)
        return math.sqrt(a_to) * x0 + math.sqrt(1 - a_to) * eps

    def invert(self, z0: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None = None,
               guidance: float = 1.0, eps_shift: int = 0) -> torch.Tensor:
        """DDIM inversion; `eps_shift` evaluates the UNet at t + eps_shift (for the controls only)."""
        z = z0
        for t in reversed(self.timesteps):  # 1, 51, ..., 951
            eps = self.eps(z, max(t + eps_shift, 0), cond, uncond, guidance)
            z = self.ddim(z, eps, self.alpha(t - self.stride), self.alpha(t))
        return z

    def sample(self, z: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None = None,
               guidance: float = 1.0) -> torch.Tensor:
        for t in self.timesteps:  # 951, ..., 1
            z = self.ddim(z, self.eps(z, t, cond, uncond, guidance), self.alpha(t), self.alpha(t - self.stride))
        return z


def swapped(caption: str, part: str, rng: np.random.Generator) -> str | None:
    """`caption` with its sky, ground or first object colour replaced by another, or None if absent."""
    if part == "sky":
        phrases = [v[0] for v in SKIES.values()]
    elif part == "ground":  # "in a meadow" -> "on the sea", or "over a meadow" -> "over the sea"
        over = " sun over " in caption
        phrases = [v[1] if over else v[0] for v in GROUNDS.values()]
    else:
        match = re.search(r"\b(an?) (\w+) (house|tree|sun|cat|car|boat)\b", caption)
        if not match or match.group(2) not in OBJECT_COLORS[match.group(3)]:
            return None
        other = str(rng.choice([c for c in OBJECT_COLORS[match.group(3)] if c != match.group(2)]))
        article = "an" if other[0] in "aeiou" else "a"
        return caption[: match.start()] + f"{article} {other} {match.group(3)}" + caption[match.end() :]
    present = [p for p in phrases if p in caption]
    if not present:
        return None
    others = [p for p in phrases if p not in present]
    return caption.replace(present[0], str(rng.choice(others)))


def denoising_error(m: "Model", z0: torch.Tensor, cond: torch.Tensor, gen_seed: int) -> float:
    """Sum over 10 timesteps of the UNet's epsilon MSE on z0 noised with fixed (seeded) noise."""
    ts = torch.linspace(100, 900, 10).round().long()
    noise = torch.randn((len(ts), *z0.shape[1:]), generator=torch.Generator().manual_seed(gen_seed))
    a = m.alphas[ts].float().view(-1, 1, 1, 1)
    z = a.sqrt() * z0 + (1 - a).sqrt() * noise
    with torch.no_grad():
        eps = m.unet(z, ts, encoder_hidden_states=cond.expand(len(ts), -1, -1)).sample
    return ((eps - noise) ** 2).mean(dim=(1, 2, 3)).sum().item()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().mean() / b.abs().mean()).item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images", type=int, default=8, help="held-out scenes for (a)-(c)")
    parser.add_argument("--png", type=Path, default=Path("/tmp/demo_model_samples.png"))
    parser.add_argument("--controls", action="store_true", help="also run (a) with common mistakes, for comparison")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    m = Model(args.folder)
    rng = np.random.default_rng(HELD_OUT_SEED)
    scenes = [render_scene(rng, 64, 64) for _ in range(args.images)]
    items = [(to_tensor(s.pixels)[None], s.caption) for s in scenes]
    if DEMO_PHOTO.is_file():
        photo = Image.open(DEMO_PHOTO).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS, reducing_gap=3.0)
        items.append((to_tensor(np.asarray(photo, np.float32) / 255)[None], DEMO_CAPTION))
    uncond = m.text([""])

    print(f"{'image':>6} {'(a) g=1':>9} {'(b) g=7.5':>10}  caption")
    errs_a, errs_b = [], []
    for i, (image, caption) in enumerate(items):
        z0, cond = m.encode(image), m.text([caption])
        zT = m.invert(z0, cond)
        ea, eb = rel_err(m.sample(zT, cond), z0), rel_err(m.sample(zT, cond, uncond, 7.5), z0)
        name = "photo" if i == len(scenes) else str(i)
        print(f"{name:>6} {ea:9.4f} {eb:10.4f}  {caption}")
        if i < len(scenes):
            errs_a.append(ea)
            errs_b.append(eb)
    print(f"(a) DDIM inversion + sampling, guidance 1: rel. error mean {np.mean(errs_a):.4f}, max {np.max(errs_a):.4f}")
    print(f"(b) same inversion, sampling at guidance 7.5: rel. error mean {np.mean(errs_b):.4f}, min {np.min(errs_b):.4f}")
    for steps in (10, 50):  # DDIM's error is first order in the step: it should scale about as 1/steps
        m.set_steps(steps)
        errs = [rel_err(m.sample(m.invert(m.encode(x), m.text([c])), m.text([c])), m.encode(x)) for x, c in items[: len(scenes)]]
        print(f"(a) with {steps} steps instead of {STEPS}: rel. error mean {np.mean(errs):.4f}")
    m.set_steps(STEPS)
    if args.controls:  # what common mistakes give, for comparison with (a)
        controls: dict[str, list[float]] = {}
        for image, caption in items[: len(scenes)]:
            z0, cond = m.encode(image), m.text([caption])
            for name, zT, sample_cond in [
                ("UNet at the previous timestep in inversion", m.invert(z0, cond, eps_shift=-m.stride), cond),
                ("UNet at the next timestep in inversion", m.invert(z0, cond, eps_shift=m.stride), cond),
                ('inverted with "", sampled with the caption', m.invert(z0, uncond), cond),
                ("no inversion: sampled from fresh noise", torch.randn(z0.shape, generator=torch.Generator().manual_seed(1)), cond),
            ]:
                controls.setdefault(name, []).append(rel_err(m.sample(zT, sample_cond), z0))
            zT = m.invert(z0, cond, uncond, 7.5)
            controls.setdefault("inverted and sampled at guidance 7.5", []).append(rel_err(m.sample(zT, cond, uncond, 7.5), z0))
        for name, errs in controls.items():
            print(f"    control, {name}: rel. error mean {np.mean(errs):.4f}")

    gen = torch.Generator().manual_seed(0)
    for t in (51, 251, 501, 751, 951):
        ratios = []
        for image, caption in items[: len(scenes)]:
            z0, cond = m.encode(image), m.text([caption])
            a = m.alpha(t)
            z = math.sqrt(a) * z0 + math.sqrt(1 - a) * torch.randn(z0.shape, generator=gen)
            e_c, e_u = m.eps(z, t, cond), m.eps(z, t, uncond)
            ratios.append(((e_c - e_u).std() / e_c.std()).item())
        print(f"(c) t={t:3d}: std(eps_cond - eps_uncond) / std(eps_cond) = {np.mean(ratios):.3f}")

    wins: dict[str, list[bool]] = {"sky": [], "ground": [], "colour": []}
    for k in range(32):
        scene = render_scene(rng, 64, 64)
        z0 = m.encode(to_tensor(scene.pixels)[None])
        right = denoising_error(m, z0, m.text([scene.caption]), k)
        for part, results in wins.items():
            other = swapped(scene.caption, part, rng)
            if other is not None:
                results.append(right < denoising_error(m, z0, m.text([other]), k))
    print("(c) diffusion classifier, true caption beats one with a changed "
          + ", ".join(f"{part}: {100 * np.mean(r):.0f}% of {len(r)}" for part, r in wins.items()))

    held = torch.stack([to_tensor(render_scene(rng, 64, 64).pixels) for _ in range(64)])
    with torch.no_grad():
        recon = m.vae.decode(m.vae.encode(held).latent_dist.mean).sample
    print(f"(d) VAE PSNR on 64 held-out 64x64 scenes: {psnr(recon, held):.2f} dB", end="")
    if DEMO_PHOTO.is_file():
        photo = items[-1][0]
        print(f"; demo photo at 64x64: {psnr(m.decode(m.encode(photo)), photo):.2f} dB")
    else:
        print()

    prompts = ["a red house in a meadow under a blue sky", "a yellow sun over the sea at sunset",
               "a white boat on the sea under a grey sky", "a green tree in the snow at night",
               "a black car in the desert under a blue sky", "an orange cat in a field under a blue sky",
               DEMO_CAPTION, ""]
    rows = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((1, 4, 8, 8), generator=g).expand(len(prompts), -1, -1, -1)
        z = m.sample(noise, m.text(prompts), uncond.expand(len(prompts), -1, -1), 7.5)
        rows.append(torch.cat(list(m.decode(z)), dim=2))
    grid = ((torch.cat(rows, dim=1) + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(args.png)
    print(f"(e) samples at guidance 7.5, 20 steps, columns: {prompts}; rows: seeds 0-2 -> {args.png}")

    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    emb = uncond.expand(2, -1, -1).clone().requires_grad_(True)
    times = []
    for k in range(60):
        start = time.perf_counter()
        m.unet(z, 500, encoder_hidden_states=emb).sample.square().mean().backward()
        if k >= 10:
            times.append(time.perf_counter() - start)
    print(f"(f) UNet forward+backward, 8x8 latents, batch 2: median {1000 * np.median(times):.1f} ms, "
          f"min {1000 * np.min(times):.1f} ms")


if __name__ == "__main__":
    main()
