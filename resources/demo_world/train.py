"""Train the demo-world model: Stable Diffusion 1.x's architecture, narrow, on world.py's 128x128 scenes.

Why: the first demo model (resources/demo_model) is trained on 64x64 toy scenes and draws blobs, so
no one can see whether an edit worked. This one is trained on the demo world (world.py), whose
pictures have a known ground truth (poses, colours, textures, masks), at 128x128 (16x16 latents),
on one GPU within a fixed wall-clock budget.

The architecture is SD 1.x's, so every method runs on it unchanged: AutoencoderKL (factor 8,
4 latent channels), UNet2DConditionModel with self- and cross-attention at three resolutions in the
down and up blocks and in the middle, a CLIPTextModel over the real CLIP BPE vocabulary
(pipeline.tokenizer), and DDIM with SD's schedule (scaled_linear 0.00085..0.012, 1000 steps,
steps_offset 1, no clipping, set_alpha_to_one False, epsilon prediction).

Stages, within --minutes of wall clock (default 18), in one process:
1. render --scenes pictures with their tokenised captions in --workers processes (seeded per chunk,
   so the data do not depend on the number of workers) into one uint8 tensor on the device;
2. VAE (--vae-share of the training time): L1 + L2 + an edge term (L1 of image gradients) on the
   decoded sampled latent, plus a small KL; then scaling_factor = 1 / std of the latent means, as
   SD's 0.18215 was chosen, and every picture encoded once to its scaled latent mean;
3. UNet and text encoder jointly: epsilon-prediction MSE, t uniform in [0, 999], 10% of captions
   dropped to "" for classifier-free guidance, an EMA of the weights (saved);
4. save a StableDiffusionPipeline folder in float16 safetensors, its token table packed to the
   tokens of the training captions (pipeline.token_table; loads with
   pipeline.models.load_model(str(DIR))), loss.json, loss.png, samples.png (DDIM from noise at
   guidance 7.5) and train_log.txt.
bf16 autocast on CUDA with fp32 master weights. Seeded; the number of optimiser steps follows the
time budget and the machine's speed (both logged), so two runs give the same weights only if they
take the same number of steps.

    python3 resources/demo_world/train.py --device cuda --minutes 18 --out OUT/weights
    .venv/bin/python resources/demo_world/train.py --smoke --out /tmp/demo_world_smoke   # CPU, < 2 min
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see resources/demo_model/train.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

import world  # noqa: E402  (sibling module)
from pipeline.demo_model import save_demo_model  # noqa: E402
from pipeline.tokenizer import load_clip_tokenizer  # noqa: E402

CAPTION_DROPOUT = 0.1
HELD_OUT_CHUNK = 10**6  # chunk index of the held-out scenes (training chunks count from 0)
SAMPLE_CAPTIONS = (
    "a red cat standing in a meadow under a blue sky",
    "a red cat sitting in a meadow under a blue sky",
    "a red cat jumping in a meadow under a blue sky",
    "a blue person standing in the snow under a blue sky",
    "a blue person running in the snow under a blue sky",
    "a blue person waving in the snow under a blue sky",
    "a yellow dog running on the beach at sunset",
    "a big red house in a meadow under a blue sky",
    "a big blue house in a meadow under a blue sky",
    "a green striped car on the left and a yellow tree on the right in the desert under a blue sky",
    "a white boat on the sea at sunset",
    "a purple dotted person jumping in the desert at night",
)


class Log:
    """Timestamped lines to stdout and to train_log.txt."""

    def __init__(self, file: Path) -> None:
        self.file, self.start = file, time.time()
        file.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{time.time() - self.start:6.0f}s] {message}"
        print(line, flush=True)
        with self.file.open("a") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------------------------------
# Architecture


def make_text_encoder(width: int, layers: int) -> CLIPTextModel:
    """CLIP's text tower, narrow, over the full 49408-token vocabulary (SD's tokenizer ids)."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=4 * width, projection_dim=width,
        num_hidden_layers=layers, num_attention_heads=max(1, width // 32), max_position_embeddings=77,
        hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def make_unet(channels: tuple[int, ...], layers: int, text_width: int, latent: int) -> UNet2DConditionModel:
    """SD 1.x's UNet layout: cross-attention at three resolutions down and up, and in the middle."""
    return UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=channels, layers_per_block=layers, attention_head_dim=8,
        cross_attention_dim=text_width, norm_num_groups=min(32, channels[0] // 2),
    )


def make_vae(channels: tuple[int, ...], size: int) -> AutoencoderKL:
    """SD 1.x's KL autoencoder layout (factor 8, 4 latent channels), narrow."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=channels, layers_per_block=1,
        latent_channels=4, norm_num_groups=min(32, channels[0] // 2), sample_size=size,
    )


def make_scheduler() -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# Data


_TOKENIZER = None


def _worker_init() -> None:
    global _TOKENIZER
    _TOKENIZER = load_clip_tokenizer()


def render_chunk(job: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Scenes of chunk `chunk` (a pure function of seed and chunk): uint8 images, token ids, captions."""
    seed, chunk, n, size = job
    rng = np.random.default_rng([seed, chunk])
    scenes = [world.render_scene(rng, size) for _ in range(n)]
    captions = [s.caption for s in scenes]
    tok = _TOKENIZER or load_clip_tokenizer()
    ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids
    return np.stack([s.image for s in scenes]), ids.astype(np.int32), captions


def chunk_jobs(seed: int, n: int, size: int) -> list[tuple[int, int, int, int]]:
    """The (seed, chunk, scenes, size) jobs of n training scenes: chunks of 500 (fewer for a tiny n)."""
    chunk = 500 if n >= 2000 else max(1, n // 4)
    return [(seed, k, min(chunk, n - k * chunk), size) for k in range(math.ceil(n / chunk))]


class Renderer:
    """Renders n scenes in chunks of 500 in worker processes, in the background, while training runs.

    The workers are forked when this is created, before anything touches CUDA. Chunk k is a pure
    function of (seed, k), and chunks are stored in order, so the data set does not depend on the
    number of workers. `ready` counts the scenes stored so far; `images`/`ids` are host tensors.
    """

    def __init__(self, seed: int, n: int, size: int, workers: int, log: Log) -> None:
        self.jobs = chunk_jobs(seed, n, size)
        self.images = torch.empty((n, size, size, 3), dtype=torch.uint8)
        self.ids = torch.empty((n, 77), dtype=torch.int32)
        self.captions: list[str] = []
        self.ready, self.stop, self.log = 0, False, log
        self.pool = mp.get_context("fork").Pool(workers, initializer=_worker_init)
        self.workers = workers
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.start = time.time()
        self.thread.start()

    def _run(self) -> None:
        try:
            for im, tk, caps in self.pool.imap(render_chunk, self.jobs):
                if self.stop:
                    break
                k = self.ready
                self.images[k : k + len(caps)] = torch.from_numpy(im)
                self.ids[k : k + len(caps)] = torch.from_numpy(tk)
                self.captions += caps
                self.ready = k + len(caps)
        except Exception as exc:  # noqa: BLE001  (training goes on with the scenes rendered so far)
            if not self.stop:
                self.log(f"rendering failed after {self.ready} scenes: {type(exc).__name__}: {exc}")

    def wait(self, min_ready: int) -> None:
        while self.ready < min_ready and self.thread.is_alive():
            time.sleep(0.05)

    def finish(self, deadline: float) -> int:
        """Wait for the rest until `deadline`, then stop; returns the number of scenes rendered."""
        while self.thread.is_alive() and time.time() < deadline:
            time.sleep(0.1)
        if self.thread.is_alive():
            self.stop = True
            self.log(f"rendering stopped at its time limit after {self.ready} scenes")
        self.pool.terminate()
        self.thread.join(timeout=5)
        n = self.ready
        self.log(f"rendered {n} scenes in {time.time() - self.start:.0f}s with {self.workers} workers "
                 f"({len(set(self.captions[:n]))} distinct captions)")
        return n


# --------------------------------------------------------------------------------------------------
# Training


def cosine(progress: float, peak: float, warm: float) -> float:
    """Linear warm-up over the first `warm` fraction, then cosine decay to 5% of the peak."""
    if progress < warm:
        return peak * max(progress / warm, 0.01)
    p = min(1.0, (progress - warm) / max(1e-9, 1 - warm))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float().clamp(-1, 1), b.float().clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def train_vae(vae, data: Renderer, gen, device, batch, lr, kl_weight, seconds, history, log, every) -> torch.Tensor:
    """Trains on the scenes rendered so far (the set grows while it runs); returns the step count."""
    store = device if device.type == "cuda" else torch.device("cpu")
    images = torch.empty(data.images.shape, dtype=torch.uint8, device=store)  # filled as chunks arrive
    copied = 0
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    vae.train()
    start, step, losses, acc, n_acc = time.time(), 0, [], 0.0, 0
    while (elapsed := time.time() - start) < seconds:
        if step % 20 == 0 and data.ready > copied:
            ready = data.ready
            images[copied:ready] = data.images[copied:ready].to(store)
            copied = ready
        for g in opt.param_groups:
            g["lr"] = cosine(elapsed / seconds, lr, 0.05)
        idx = torch.randint(copied, (batch,), generator=gen).to(images.device)
        x = to_float(images[idx].to(device))
        flip = (torch.rand(batch, generator=gen) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        with autocast:
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
            recon = vae.decode(z).sample.float()
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        edge = (F.l1_loss(recon.diff(dim=2), x.diff(dim=2)) + F.l1_loss(recon.diff(dim=3), x.diff(dim=3)))
        kl = 0.5 * (post.mean.float() ** 2 + post.var.float() - 1 - post.logvar.float()).mean()
        loss = rec + 0.5 * edge + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        acc, n_acc = acc + loss.detach(), n_acc + 1
        if step % every == 0:  # the mean loss since the last record (one GPU sync per record)
            losses.append(acc.item() / n_acc)
            acc, n_acc = 0.0, 0
            history["step"].append(step)
            history["seconds"].append(round(time.time() - start, 2))
            history["loss"].append(losses[-1])
            history["psnr"].append(round(psnr(recon.detach(), x), 2))
        if step % (10 * every) == 0:
            log(f"vae {step:6d}  scenes {copied}  loss {loss.item():.4f}  rec {rec.item():.4f}  edge {edge.item():.4f}  "
                f"kl {kl.item():.2f}  psnr(sampled) {psnr(recon.detach(), x):.2f} dB  lr {opt.param_groups[0]['lr']:.2e}")
        step += 1
    vae.eval().requires_grad_(False)
    log(f"vae done: {step} steps of batch {batch} in {time.time() - start:.0f}s, on up to {copied} scenes")
    history["steps_total"] = step
    return images


@torch.no_grad()
def encode_means(vae, images, device, chunk: int = 256) -> torch.Tensor:
    out = []
    for k in range(0, len(images), chunk):
        out.append(vae.encode(to_float(images[k : k + chunk].to(device))).latent_dist.mean.float())
    return torch.cat(out)


def train_unet(unet, text, ema, latents, ids, empty, alphas, gen, device, batch, lr, seconds, history, log, every) -> int:
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    unet.train()
    text.train()
    sqrt_a, sqrt_1ma = alphas.sqrt().to(device), (1 - alphas).sqrt().to(device)
    ema_params = [p for m in ema for p in m.parameters()]
    start, step, losses, acc, n_acc = time.time(), 0, [], 0.0, 0
    while (elapsed := time.time() - start) < seconds:
        for g in opt.param_groups:
            g["lr"] = cosine(elapsed / seconds, lr, 0.04)
        idx = torch.randint(len(latents), (batch,), generator=gen).to(latents.device)
        z0 = latents[idx].to(device)
        drop = (torch.rand(batch, generator=gen) < CAPTION_DROPOUT).to(device)
        tokens = torch.where(drop[:, None], empty[None], ids[idx].to(device).long())
        t = torch.randint(0, len(alphas), (batch,), generator=gen).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        zt = sqrt_a[t].view(-1, 1, 1, 1) * z0 + sqrt_1ma[t].view(-1, 1, 1, 1) * noise
        with autocast:
            cond = text(tokens)[0]
            pred = unet(zt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - min(0.999, (1 + step) / (10 + step)))
        acc, n_acc = acc + loss.detach(), n_acc + 1
        if step % every == 0:
            losses.append(acc.item() / n_acc)
            acc, n_acc = 0.0, 0
            history["step"].append(step)
            history["seconds"].append(round(time.time() - start, 2))
            history["loss"].append(losses[-1])
        if step % (10 * every) == 0:
            log(f"unet {step:6d}  loss {np.mean(losses[-10:]):.4f}  lr {opt.param_groups[0]['lr']:.2e}")
        step += 1
    log(f"unet done: {step} steps of batch {batch} in {time.time() - start:.0f}s; "
        f"mean loss over the last 10% of records: {np.mean(losses[-max(1, len(losses) // 10):]):.4f}")
    return step


# --------------------------------------------------------------------------------------------------
# Outputs


@torch.no_grad()
def sample(unet, text, vae, scheduler, ids, empty, latent: int, steps: int, guidance: float, seed: int, device) -> torch.Tensor:
    """DDIM from seeded noise (the same noise for every caption), classifier-free guidance against ""."""
    g = torch.Generator().manual_seed(seed)
    n = len(ids)
    z = torch.randn((1, 4, latent, latent), generator=g).expand(n, -1, -1, -1).to(device)
    cond, uncond = text(ids.to(device))[0], text(empty[None].expand(n, -1).to(device))[0]
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        e = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        e_u, e_c = e.chunk(2)
        z = scheduler.step(e_u + guidance * (e_c - e_u), t, z).prev_sample
    return vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)


def save_samples(images: list[torch.Tensor], captions: tuple[str, ...], path: Path) -> None:
    """Rows = seeds, columns = captions; each picture shown at 2x with its caption wrapped below."""
    cell, text_h, cols = 2 * images[0].shape[-1], 40, len(captions)
    sheet = Image.new("RGB", (cols * cell, len(images) * (cell + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    per_line = max(10, cell // 6)
    for r, batch in enumerate(images):
        arr = ((batch.float().cpu() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        for c, pic in enumerate(arr):
            x, y = c * cell, r * (cell + text_h)
            sheet.paste(Image.fromarray(pic).resize((cell, cell), Image.Resampling.NEAREST), (x, y))
            words, lines, line = captions[c].split(), [], ""
            for w in words:
                if len(line) + len(w) + 1 > per_line:
                    lines.append(line)
                    line = w
                else:
                    line = f"{line} {w}".strip()
            lines.append(line)
            draw.text((x + 3, y + cell + 2), "\n".join(lines[:3]), fill="black")
    sheet.save(path)


def plot_losses(history: dict, path: Path) -> None:
    """Two panels (VAE, UNet): the logged loss against steps, log-scaled y, drawn with PIL."""
    panel_w, panel_h, pad = 480, 300, 46
    img = Image.new("RGB", (2 * panel_w, panel_h), "white")
    draw = ImageDraw.Draw(img)
    for k, name in enumerate(("vae", "unet")):
        xs, ys = history[name]["step"], history[name]["loss"]
        x0 = k * panel_w
        draw.text((x0 + pad, 6), f"{name} loss (log scale) vs step", fill="black")
        draw.rectangle([x0 + pad, pad - 20, x0 + panel_w - 10, panel_h - pad], outline="black")
        pts = [(x, math.log10(y)) for x, y in zip(xs, ys) if y and y > 0 and math.isfinite(y)]
        if len(pts) < 2:
            continue
        lx, hx = min(p[0] for p in pts), max(p[0] for p in pts) or 1
        ly, hy = min(p[1] for p in pts), max(p[1] for p in pts)
        hy = hy if hy > ly else ly + 1
        w, h = panel_w - 10 - pad, panel_h - pad - (pad - 20)
        coords = [(x0 + pad + (x - lx) / max(1, hx - lx) * (w - 4), pad - 20 + (hy - y) / (hy - ly) * h) for x, y in pts]
        draw.line(coords, fill=(200, 40, 40), width=2)
        draw.text((x0 + 2, pad - 20), f"{10 ** hy:.3g}", fill="black")
        draw.text((x0 + 2, panel_h - pad - 10), f"{10 ** ly:.3g}", fill="black")
        draw.text((x0 + pad, panel_h - pad + 4), f"{lx}", fill="black")
        draw.text((x0 + panel_w - 60, panel_h - pad + 4), f"{hx}", fill="black")
    img.save(path)


# --------------------------------------------------------------------------------------------------


def channels(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (replaced if it holds an earlier run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=18.0, help="hard wall-clock budget for everything")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--scenes", type=int, default=150_000)
    parser.add_argument("--size", type=int, default=world.SIZE)
    parser.add_argument("--workers", type=int, default=max(1, min(16, (os.cpu_count() or 1) - 2)),
                        help="rendering processes (they run while the VAE trains)")
    parser.add_argument("--vae-share", type=float, default=0.25, help="share of the training time for the VAE")
    parser.add_argument("--vae-channels", type=channels, default=(32, 64, 128, 128))
    parser.add_argument("--vae-batch", type=int, default=64)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the KL per latent element")
    parser.add_argument("--unet-channels", type=channels, default=(64, 128, 128, 128))
    parser.add_argument("--unet-layers", type=int, default=1)
    parser.add_argument("--text-width", type=int, default=128)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--unet-batch", type=int, default=256)
    parser.add_argument("--unet-lr", type=float, default=6e-4)
    parser.add_argument("--sample-steps", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for a CPU check of the whole script (< 2 min)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.minutes, args.scenes, args.size, args.workers = min(args.minutes, 1.0), 400, 64, min(args.workers, 2)
        args.vae_channels, args.unet_channels, args.text_width, args.text_layers = (16, 16, 32, 32), (32, 32, 64, 64), 32, 2
        args.vae_batch, args.unet_batch, args.sample_steps = 8, 16, 10
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not (out / "model_index.json").is_file() and not (out / "train_log.txt").is_file():
            parser.error(f"{out} exists and is not an earlier output of this script; not replacing it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    total = args.minutes * 60
    reserve = max(15.0, 0.06 * total)  # for saving, samples and plots
    log = Log(out / "train_log.txt")
    device = torch.device(args.device)
    log(f"demo world training: device {device}, budget {total:.0f}s, seed {args.seed}, torch {torch.__version__}, "
        f"args {vars(args)}")
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(min(2, os.cpu_count() or 1))

    # 1. data: rendered in forked workers (before anything touches CUDA) while the VAE trains
    data = Renderer(args.seed, args.scenes, args.size, args.workers, log)
    held_rng = np.random.default_rng([args.seed, HELD_OUT_CHUNK])
    held = [world.render_scene(held_rng, args.size) for _ in range(64 if args.smoke else 256)]
    held_x = to_float(torch.from_numpy(np.stack([s.image for s in held])))
    every = 5 if args.smoke else 50

    tokenizer = load_clip_tokenizer()
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0].to(device)
    latent = args.size // 8
    vae = make_vae(args.vae_channels, args.size).to(device)
    unet = make_unet(args.unet_channels, args.unet_layers, args.text_width, latent).to(device)
    text = make_text_encoder(args.text_width, args.text_layers).to(device)
    scheduler = make_scheduler()
    n_vae, n_unet, n_text = count(vae), count(unet), count(text)
    log(f"parameters: VAE {n_vae / 1e6:.2f}M, UNet {n_unet / 1e6:.2f}M, text encoder {n_text / 1e6:.2f}M "
        f"(token embedding {49408 * args.text_width / 1e6:.2f}M); total {(n_vae + n_unet + n_text) / 1e6:.2f}M "
        f"= {2 * (n_vae + n_unet + n_text) / 2**20:.1f} MiB in float16")

    train_seconds = max(1.0, total - (time.time() - t0) - reserve)
    history = {"vae": {"step": [], "seconds": [], "loss": [], "psnr": []}, "unet": {"step": [], "seconds": [], "loss": []}}

    # 2. VAE (on the scenes rendered so far), then the rest of the data
    data.wait(min(args.scenes, 4 * args.vae_batch))
    images = train_vae(vae, data, gen, device, args.vae_batch, args.vae_lr, args.kl_weight,
                       args.vae_share * train_seconds, history["vae"], log, every)
    vae_steps = history["vae"].pop("steps_total")
    n = data.finish(deadline=t0 + 0.5 * total)
    store = images.device
    images[: n] = data.images[:n].to(store)
    images, ids, captions = images[:n], data.ids[:n].to(store), data.captions[:n]
    with torch.no_grad():
        recon = torch.cat([vae.decode(vae.encode(held_x[k : k + 64].to(device)).latent_dist.mean).sample.cpu()
                           for k in range(0, len(held_x), 64)])
    vae_psnr = psnr(recon, held_x)
    means = encode_means(vae, images, device)
    scaling = 1.0 / means.std().item()
    vae.register_to_config(scaling_factor=scaling)
    latents = (means * scaling).to(store)
    del means
    log(f"VAE held-out PSNR {vae_psnr:.2f} dB on {len(held)} scenes (latent means, {args.size}x{args.size}); "
        f"latent std {1 / scaling:.4f} -> scaling_factor {scaling:.5f}")

    # 3. UNet + text encoder, with an EMA copy
    ema_unet = make_unet(args.unet_channels, args.unet_layers, args.text_width, latent).to(device)
    ema_text = make_text_encoder(args.text_width, args.text_layers).to(device)
    ema_unet.load_state_dict(unet.state_dict())
    ema_text.load_state_dict(text.state_dict())
    ema_unet.requires_grad_(False)
    ema_text.requires_grad_(False)
    unet_seconds = max(1.0, t0 + total - reserve - time.time())
    unet_steps = train_unet(unet, text, (ema_unet, ema_text), latents, ids, empty, scheduler.alphas_cumprod.float(),
                            gen, device, args.unet_batch, args.unet_lr, unet_seconds, history["unet"], log, every)
    ema_unet.eval()
    ema_text.eval()

    # 4. outputs
    sample_ids = tokenizer(list(SAMPLE_CAPTIONS), padding="max_length", max_length=77, truncation=True,
                           return_tensors="pt").input_ids
    start = time.time()
    grids = [sample(ema_unet, ema_text, vae, scheduler, sample_ids, empty, latent, args.sample_steps, 7.5, seed, device)
             for seed in (0, 1)]
    save_samples(grids, SAMPLE_CAPTIONS, out / "samples.png")
    log(f"samples.png: {len(SAMPLE_CAPTIONS)} captions x 2 seeds, DDIM {args.sample_steps} steps, guidance 7.5, "
        f"{time.time() - start:.1f}s")
    trained_tokens = torch.cat([ids.flatten().cpu(), empty.cpu()]).unique().tolist()  # the captions and ""
    save_demo_model(out, vae=vae.cpu(), text_encoder=ema_text.cpu(), unet=ema_unet.cpu(), scheduler=make_scheduler(),
                    trained_token_ids=trained_tokens)
    summary = {
        "seed": args.seed, "device": str(device), "size": args.size, "scenes": len(captions),
        "distinct_captions": len(set(captions)), "vae_steps": vae_steps, "unet_steps": unet_steps,
        "vae_batch": args.vae_batch, "unet_batch": args.unet_batch, "vae_psnr_held_out": round(vae_psnr, 3),
        "scaling_factor": scaling, "parameters": {"vae": n_vae, "unet": n_unet, "text_encoder": n_text},
        "history": history,
    }
    (out / "loss.json").write_text(json.dumps(summary, indent=1))
    plot_losses(history, out / "loss.png")
    size = sum(f.stat().st_size for f in out.rglob("*.safetensors"))
    log(f"wrote {out}: weights {size / 2**20:.1f} MiB of float16 safetensors; total time {time.time() - t0:.0f}s "
        f"of the {total:.0f}s budget")
    try:  # the folder must load through the app's own loader
        from pipeline.models import load_model

        bundle = load_model(str(out), device="cpu")
        log(f"pipeline.models.load_model: loaded ({type(bundle.unet).__name__}, scaling_factor "
            f"{bundle.vae.config.scaling_factor:.5f})")
    except Exception as exc:  # noqa: BLE001  (reported, the weights are already saved)
        log(f"pipeline.models.load_model could not load the folder here: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
