"""A tiny, randomly initialised Stable Diffusion 1.x, built on the spot so everything runs offline.

Why it exists: the engine (inversion, attention control, every method, the GUI) must be exercised
end to end by the test suite, on a laptop CPU, with no network and no 4 GB download. The demo model
has exactly SD 1.x's *architecture* -- the same diffusers classes, the same block layout with self-
and cross-attention in the down, middle and up paths, a factor-8 VAE with 4 latent channels, a CLIP
text encoder with SD's real 49408-token vocabulary and 77 positions, SD's real tokenizer and SD's
noise schedule -- only narrow. Its pictures are noise; its shapes, attention layers, token indices
and code paths are those of the real thing.

The weights are diffusers' and transformers' default initialisations from a fixed seed, with two
exact rescalings (`_calibrate`) so that the random model behaves like a trained one where the engine
depends on it: its scaled latents have SD's unit variance, and its noise prediction is gentle
enough for DDIM inversion to reconstruct.

It is written as an ordinary diffusers folder and loaded by the same code as any other model, so
whatever works on it goes through the path real models take. Building is deterministic (fixed seed,
stable serialisation): the same versions write the same bytes, hence the same model identity.
Weights are stored in float16 to keep the folder small (about 11 MB, most of it the 49408-token
embedding and the tokenizer); the loader upcasts to float32 as it does for any fp16 checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from pipeline.tokenizer import load_clip_tokenizer

# Bump the suffix whenever the architecture, seed or storage changes: a cache holding an older
# build is then simply ignored instead of being mistaken for the new one.
DEMO_MODEL_DIRNAME = "demo-model-v1"

_SEED = 20240601
# Departures from default initialisation, both exact rescalings (see _calibrate):
_LATENT_GAIN = 20.0  # latent-space units: makes 0.18215-scaled latents unit-variance, as in SD
_UNET_OUTPUT_GAIN = 0.1  # a gentle noise prediction, smooth along DDIM trajectories as a trained one is
_TEXT_HIDDEN = 32


def _text_encoder() -> CLIPTextModel:
    """CLIP ViT-L/14's text tower cut down to 2 layers of width 32, keeping the full vocabulary."""
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=4 * _TEXT_HIDDEN,
        projection_dim=_TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config)


def _unet() -> UNet2DConditionModel:
    """SD 1.x's UNet layout (three attention resolutions down and up, attention in the middle), narrow.

    With layers_per_block=1 there is one transformer per attention resolution going down and two
    going up, each with a self-attention (attn1) and a cross-attention (attn2) layer. diffusers'
    `attention_head_dim` is, for SD 1.x configs, the number of heads: 8, as in SD 1.x.
    """
    return UNet2DConditionModel(
        sample_size=8,  # 64 x 64 pixel images by default
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=_TEXT_HIDDEN,
        norm_num_groups=8,
    )


def _vae() -> AutoencoderKL:
    """SD 1.x's KL autoencoder layout (4 levels: factor 8, 4 latent channels, 0.18215), narrow."""
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
        scaling_factor=0.18215,
    )


def _scheduler() -> DDIMScheduler:
    """SD 1.x's training noise schedule, as its published scheduler config states it."""
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


@torch.no_grad()
def _calibrate(unet: UNet2DConditionModel, vae: AutoencoderKL) -> None:
    """Make two properties of a trained SD that the engine relies on hold for the random model.

    Latent units: SD's scaling factor 0.18215 is 1 / (std of its VAE latents), so scaled latents
    have unit variance and the noise schedule mixes signal and noise in the intended proportions.
    A default-initialised encoder's latents are about 20 times smaller (std ~0.28 for any image),
    which would drown every latent in noise. The latent space is therefore rescaled by
    _LATENT_GAIN: the encoder's posterior mean and standard deviation are multiplied by it, the
    decoder's input divided by it, so encode and decode are otherwise the default networks.

    A gentle denoiser: DDIM inversion reconstructs because a trained UNet's noise prediction changes
    slowly along the sampling trajectory; a default-initialised one changes by tens of percent when
    its input does. Scaling the UNet's output convolution by _UNET_OUTPUT_GAIN scales every change
    of the prediction alike (prompt and attention effects keep their proportions) and brings the
    error of a 10-step DDIM inversion and reconstruction of a photo at guidance 1 to about 3%.
    """
    channels = vae.config.latent_channels
    quant = vae.quant_conv  # rows: [posterior mean; posterior log-variance]
    quant.weight[:channels] *= _LATENT_GAIN
    quant.bias[:channels] *= _LATENT_GAIN
    quant.bias[channels:] += 2 * math.log(_LATENT_GAIN)
    vae.post_quant_conv.weight /= _LATENT_GAIN
    unet.conv_out.weight *= _UNET_OUTPUT_GAIN
    unet.conv_out.bias *= _UNET_OUTPUT_GAIN


def _demo_pipeline() -> StableDiffusionPipeline:
    """The demo model's parts, initialised from a fixed seed and cast to float16 for storage."""
    # fork_rng leaves the caller's random state exactly as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        unet, vae, text_encoder = _unet(), _vae(), _text_encoder()
    _calibrate(unet, vae)
    # half() rather than to(dtype): the same cast, without diffusers' warning about fp32-only modules.
    unet, vae, text_encoder = unet.half(), vae.half(), text_encoder.half()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_demo_model(directory: Path) -> None:
    """Write the demo model as a diffusers folder at `directory`, which must not exist yet.

    The folder is assembled in a temporary sibling and renamed into place in one step, so a build
    that is killed half way never leaves a `directory` that looks complete. If another process
    finishes the same build first, its folder (byte-identical) is kept and this one discarded.
    """
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} already exists")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
    try:
        _demo_pipeline().save_pretrained(staging, safe_serialization=True)
        try:
            os.rename(staging, directory)
        except OSError:
            if not directory.is_dir():
                raise
            # Lost a race with a concurrent build of the same bytes: theirs is as good as ours.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_demo_model(cache_dir: Path) -> Path:
    """Return the demo model folder inside `cache_dir`, building it first if it is not there."""
    directory = Path(cache_dir) / DEMO_MODEL_DIRNAME
    if not directory.is_dir():
        try:
            build_demo_model(directory)
        except FileExistsError:
            pass  # built by someone else between the check and the build
    return directory
