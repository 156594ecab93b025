"""Train Retake's tiny demo model: a real, if crude, Stable Diffusion 1.x-shaped latent diffusion model.

Why: the test suite and the offline demo run the inversion methods (DDIM inversion, null-text
inversion, Prompt-to-Prompt) on a tiny model with SD 1.x's exact architecture on a CPU. With random
weights that model is no denoiser -- DDIM inversion followed by sampling does not reconstruct, the
prompt barely changes the output and the VAE does not reconstruct images -- so no test can tell a
right method from a wrong one. This script trains the same tiny architecture briefly on
procedurally drawn, captioned scenes (see scenes.py) so that:

* the VAE reconstructs simple pictures (a factor-8, 4-channel KL autoencoder, like SD's);
* the UNet predicts the noise of its scaled latents, conditioned on CLIP text embeddings, with a
  meaningful unconditional branch (10% of captions dropped to "") for classifier-free guidance.

It is not a useful image generator: it knows a handful of toy scenes at 64x64 pixels.

Steps: render ~4800 captioned pictures (64x64, plus 128x128, 128x96 and 64x128 ones and the app's
demo photo); train the VAE on random crops of them; measure the std of the 64x64 pictures' latent
means and set scaling_factor = 1 / std (SD's 0.18215 was chosen the same way); encode every picture
to its scaled latent mean, as the app does; train the UNet and the text encoder jointly with the
epsilon-prediction loss; save everything in float16.

The architecture is copied from pipeline/demo_model.py (SD 1.x layout, narrow), from the same
seeded initialisation. The text encoder starts at its seeded random initialisation and is trained
jointly with the UNet (--frozen-text keeps it random): random CLIP gives distinct embeddings per
word, but training it about doubles how much the UNet's noise prediction depends on the caption.
Words the captions never use keep their random embeddings. The tokenizer is SD's own CLIP
tokenizer, built offline from the shipped BPE file.

Run (about 10 minutes on 2 idle CPU cores; resources/demo_model/check.py measures the result):
    PYTHONPATH=. .venv/bin/python resources/demo_model/train.py --out resources/demo_model/weights

Deterministic given --seed on the same torch/numpy versions and thread count (fixed to 2 here).
--device cuda also works, but gives other weights. The weights are written in float16 as a
StableDiffusionPipeline folder (safetensors) and load as any SD 1.x folder does.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from pathlib import Path

# Before torch starts OpenMP: on a shared 2-core machine, threads that spin while waiting for a
# descheduled partner made training 20-30x slower; sleeping instead changes no result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from pipeline.demo_model import save_demo_model  # noqa: E402
from pipeline.tokenizer import load_clip_tokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenes import render_scene  # noqa: E402  (sibling module, found through the line above)

REPO = Path(__file__).resolve().parents[2]
DEMO_PHOTO = REPO / "resources" / "demo" / "house.png"
DEMO_CAPTION = "a house in a meadow under a blue sky"
TEXT_HIDDEN = 32
CAPTION_DROPOUT = 0.1
# Image sizes (width, height) the UNet trains on besides 64x64, and how many scenes of each.
EXTRA_SIZES: tuple[tuple[tuple[int, int], int], ...] = (((128, 128), 320), ((128, 96), 320), ((64, 128), 160))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------------
# Architecture (identical to pipeline/demo_model.py)


def make_text_encoder() -> CLIPTextModel:
    """CLIP ViT-L/14's text tower cut down to 2 layers of width 32, keeping the full vocabulary."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TEXT_HIDDEN,
            intermediate_size=4 * TEXT_HIDDEN,
            projection_dim=TEXT_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def make_unet() -> UNet2DConditionModel:
    """SD 1.x's UNet layout (attention at three resolutions down and up, and in the middle), narrow."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=TEXT_HIDDEN,
        norm_num_groups=8,
    )


def make_vae(scaling_factor: float = 0.18215) -> AutoencoderKL:
    """SD 1.x's KL autoencoder layout (factor 8, 4 latent channels), narrow."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


def make_scheduler() -> DDIMScheduler:
    """SD 1.x's noise schedule and DDIM settings, as its published scheduler config states them."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


# --------------------------------------------------------------------------------------------------
# Data


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """[H, W, 3] in [0, 1] -> [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1) * 2 - 1


def demo_photo_variants() -> list[tuple[torch.Tensor, str]]:
    """The app's demo photo, if present, at 64x64 (as the tests encode it) and 128x96, plus mirrors."""
    if not DEMO_PHOTO.is_file():
        return []
    photo = Image.open(DEMO_PHOTO).convert("RGB")
    out = []
    for size in ((64, 64), (128, 96)):
        small = np.asarray(photo.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), np.float32) / 255
        out += [(to_tensor(small), DEMO_CAPTION), (to_tensor(small[:, ::-1]), DEMO_CAPTION)]
    return out


def crops(images: list[torch.Tensor], gen: torch.Generator, batch: int, crop: int) -> torch.Tensor:
    """A batch of random `crop` x `crop` crops, randomly mirrored, of randomly chosen `images`.

    Crops of the larger pictures show objects at other scales than the 64x64 ones."""
    out = []
    for i in torch.randint(len(images), (batch,), generator=gen).tolist():
        image = images[i]
        y = int(torch.randint(image.shape[1] - crop + 1, (1,), generator=gen))
        x = int(torch.randint(image.shape[2] - crop + 1, (1,), generator=gen))
        piece = image[:, y : y + crop, x : x + crop]
        out.append(piece.flip(2) if torch.rand(1, generator=gen).item() < 0.5 else piece)
    return torch.stack(out)


def scene_set(rng: np.random.Generator, n64: int) -> list[tuple[torch.Tensor, str]]:
    """The training set: n64 scenes at 64x64, the extra sizes, and the demo photo."""
    items = [(to_tensor(s.pixels), s.caption) for s in (render_scene(rng, 64, 64) for _ in range(n64))]
    for (w, h), count in EXTRA_SIZES:
        items += [(to_tensor(s.pixels), s.caption) for s in (render_scene(rng, w, h) for _ in range(count))]
    return items + demo_photo_variants()


# --------------------------------------------------------------------------------------------------
# Training


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), over the whole batch."""
    mse = F.mse_loss(a.clamp(-1, 1), b.clamp(-1, 1)).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def train_vae(vae: AutoencoderKL, images: list[torch.Tensor], gen: torch.Generator, steps: int, batch: int,
              lr: float, kl_weight: float, crop: int, device: torch.device) -> None:
    """Reconstruction (L1 + L2 of the decoded sampled latent) plus a small KL term; Adam, warm-up/cosine.

    The VAE is convolutional, so most steps use `crop` x `crop` crops (a 48x48 crop costs about half
    a 64x64 picture: twice the steps for the time); the last 15% use 64x64 crops, the size it is
    used at most.
    """
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    vae.train()
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, max(1, steps // 20))
        x = crops(images, gen, batch, crop if step < 0.85 * steps else 64).to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        recon = vae.decode(z).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vae {step:5d}/{steps}  rec {rec.item():.4f}  kl {kl.item():.2f}  "
                f"psnr(sampled) {psnr(recon.detach(), x):.2f} dB  {time.time() - start:.0f}s")
    vae.eval()


@torch.no_grad()
def encode_means(vae: AutoencoderKL, images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Unscaled latent means, batched by image size."""
    out: list[torch.Tensor | None] = [None] * len(images)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(tuple(img.shape), []).append(i)
    for indices in by_size.values():
        for k in range(0, len(indices), 64):
            chunk = indices[k : k + 64]
            means = vae.encode(torch.stack([images[i] for i in chunk]).to(device)).latent_dist.mean
            for i, m in zip(chunk, means.cpu()):
                out[i] = m
    return out  # type: ignore[return-value]


def token_ids(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """[N, 77] token ids, padded with end-of-text as the app pads them."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def train_unet(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, latents: list[torch.Tensor],
               ids: torch.Tensor, empty_ids: torch.Tensor, alphas_cumprod: torch.Tensor, gen: torch.Generator,
               steps: int, batch: int, lr: float, big_every: int, train_text: bool, device: torch.device) -> float:
    """Epsilon-prediction DDPM loss, t uniform in [0, 999], 10% captions dropped to "".

    The UNet sees the text encoder's last_hidden_state, as the app feeds it; with `train_text` the
    text encoder is trained jointly (same loss, same optimiser), otherwise it stays frozen.
    Batches hold latents of one size: mostly 8x8 (64x64 pictures); every `big_every`-th step is a
    smaller batch of one of the other sizes, so the UNet also sees 16x16, 16x12 and 8x16 latents.
    Returns the mean loss over the last 10% of the 8x8 steps.
    """
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, z in enumerate(latents):
        by_size.setdefault(tuple(z.shape), []).append(i)
    main = max(by_size, key=lambda s: len(by_size[s]))
    others = sorted(s for s in by_size if s != main)
    pools = {s: torch.tensor(v) for s, v in by_size.items()}
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if train_text else [])
    opt = torch.optim.Adam(params, lr=lr)
    unet.train()
    text_encoder.train(train_text)
    text_encoder.requires_grad_(train_text)
    start, tail = time.time(), []
    sqrt_a, sqrt_1ma = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, max(1, steps // 20))
        if others and step % big_every == big_every - 1:
            size, n = others[(step // big_every) % len(others)], max(2, batch // 4)
        else:
            size, n = main, batch
        pool = pools[size]
        idx = pool[torch.randint(len(pool), (n,), generator=gen)]
        z0 = torch.stack([latents[i] for i in idx.tolist()])
        drop = torch.rand(n, generator=gen) < CAPTION_DROPOUT
        batch_ids = torch.where(drop[:, None], empty_ids[None], ids[idx]).to(device)
        with torch.set_grad_enabled(train_text):
            cond = text_encoder(batch_ids)[0]
        t = torch.randint(0, len(alphas_cumprod), (n,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        zt = sqrt_a[t].view(-1, 1, 1, 1) * z0 + sqrt_1ma[t].view(-1, 1, 1, 1) * noise
        zt, t, noise = zt.to(device), t.to(device), noise.to(device)
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step >= steps - max(1, steps // 10) and size == main:
            tail.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"unet {step:5d}/{steps}  loss {loss.item():.4f}  latents {tuple(size[1:])}  {time.time() - start:.0f}s")
    unet.eval()
    text_encoder.eval().requires_grad_(False)
    return float(np.mean(tail))


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (replaced if it exists)")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--scenes", type=int, default=4000, help="64x64 scenes in the training set")
    parser.add_argument("--vae-steps", type=int, default=3000)
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--vae-crop", type=int, default=48, help="crop size for the first 85%% of VAE steps")
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the KL per latent element")
    parser.add_argument("--unet-steps", type=int, default=1000)
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--unet-lr", type=float, default=2e-3)
    parser.add_argument("--big-every", type=int, default=6, help="every n-th UNet batch uses a larger latent size")
    parser.add_argument("--frozen-text", action="store_true", help="keep the text encoder at its random init")
    parser.add_argument("--device", default="cpu", help="cpu (the reference) or e.g. cuda (gives other weights)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "model_index.json").is_file():
        parser.error(f"{args.out} exists and is not a diffusers pipeline folder; not replacing it")

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    device = torch.device(args.device)
    t0 = time.time()

    tokenizer = load_clip_tokenizer()
    text_encoder, vae, unet, scheduler = make_text_encoder(), make_vae(), make_unet(), make_scheduler()
    text_encoder.eval().requires_grad_(False)
    if DEMO_PHOTO.is_file():
        log(f"demo photo {DEMO_PHOTO.name}, sha256 {hashlib.sha256(DEMO_PHOTO.read_bytes()).hexdigest()[:16]}")
    else:
        log(f"demo photo {DEMO_PHOTO} not found; training without it")

    items = scene_set(rng, args.scenes)
    images, captions = [x for x, _ in items], [c for _, c in items]
    held_out = torch.stack([to_tensor(render_scene(rng, 64, 64).pixels) for _ in range(64)])
    log(f"rendered {len(items)} training pictures ({len(set(captions))} distinct captions) and 64 held-out ones")

    vae.to(device)
    train_vae(vae, images, gen, args.vae_steps, args.vae_batch, args.vae_lr, args.kl_weight, args.vae_crop, device)
    vae.requires_grad_(False)
    with torch.no_grad():
        vae_psnr = psnr(vae.decode(vae.encode(held_out.to(device)).latent_dist.mean).sample, held_out.to(device))
    means = encode_means(vae, images, device)
    square = torch.stack([m for m in means if m.shape[1:] == (8, 8)])
    scaling = 1.0 / square.std().item()
    vae.register_to_config(scaling_factor=scaling)
    log(f"VAE held-out PSNR {vae_psnr:.2f} dB; 64x64 latent means: mean {square.mean().item():.3f}, "
        f"std {square.std().item():.3f} -> scaling_factor {scaling:.5f}")

    latents = [m * scaling for m in means]
    ids, empty_ids = token_ids(tokenizer, captions), token_ids(tokenizer, [""])[0]
    unet.to(device)
    text_encoder.to(device)
    final = train_unet(unet, text_encoder, latents, ids, empty_ids, scheduler.alphas_cumprod.float(), gen,
                       args.unet_steps, args.unet_batch, args.unet_lr, args.big_every, not args.frozen_text, device)
    log(f"UNet final loss (mean of the last 10% of 8x8 batches) {final:.4f}")

    save_demo_model(args.out, vae=vae.cpu(), text_encoder=text_encoder.cpu(), unet=unet.cpu(), scheduler=scheduler)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    log(f"wrote {args.out} ({size / 2**20:.1f} MiB) in {time.time() - t0:.0f}s total")


if __name__ == "__main__":
    main()
