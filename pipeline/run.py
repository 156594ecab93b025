"""One run's working context: the model, the cancel token, and the channel events go out on.

Methods receive a RunContext instead of reaching for globals: it runs the UNet at the right
precision (sampling in the bundle's sample dtype under autocast, anything optimised in fp32),
encodes prompts and images, and turns stage progress into Progress events with an ETA.
"""

from __future__ import annotations

import contextlib
import time

import torch

from pipeline.events import CancelToken, Emit, Preview, Progress
from pipeline.images import from_tensor
from pipeline.models import ModelBundle


class RunContext:
    """Model access, precision policy, progress and previews for one engine run."""

    def __init__(self, bundle: ModelBundle, cancel: CancelToken, emit: Emit, *, previews: bool = False) -> None:
        self.bundle = bundle
        self.cancel = cancel
        self._emit = emit
        self.wants_preview = previews
        self._stage = ""
        self._total = 0
        self._started = 0.0
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    # -- precision -----------------------------------------------------------------------------
    def _autocast(self, precise: bool) -> contextlib.AbstractContextManager:
        dtype = self.bundle.sample_dtype
        if precise or dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def unet_noise(self, z: torch.Tensor, t: int, emb: torch.Tensor, *, precise: bool = False) -> torch.Tensor:
        """The UNet's noise prediction in fp32; `precise` runs it in fp32 (for optimisation)."""
        with self._autocast(precise):
            eps = self.bundle.unet(z, t, encoder_hidden_states=emb, return_dict=False)[0]
        return eps.float()

    # -- text and images ------------------------------------------------------------------------
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """CLIP embeddings [B, 77, D] in fp32, cached per prompt for the run."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tok = self.bundle.tokenizer
            ids = tok(missing, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(self.device)
            with torch.no_grad():
                out = self.bundle.text_encoder(ids)[0].float()
            self._text_cache.update(zip(missing, out))
        return torch.stack([self._text_cache[p] for p in prompts])

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """[1,3,H,W] in [-1,1] -> the scaled VAE latent mean (the reference uses the mean, no sampling)."""
        vae = self.bundle.vae
        with torch.no_grad():
            dist = vae.encode(image.to(self.device, torch.float32)).latent_dist
        return dist.mean * vae.config.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images [B,3,H,W] in [-1,1], fp32 on the CPU."""
        vae = self.bundle.vae
        with torch.no_grad(), self._autocast(False):
            image = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
        return image.float().clamp(-1, 1).cpu()

    # -- progress -------------------------------------------------------------------------------
    def start_stage(self, stage: str, total: int) -> None:
        self._stage, self._total, self._started = stage, total, time.monotonic()
        self._emit(Progress(stage, 0, total, None))

    def advance(self, step: int) -> None:
        elapsed = time.monotonic() - self._started
        eta = elapsed / step * (self._total - step) if step else None
        self._emit(Progress(self._stage, step, self._total, eta))

    def preview(self, stage: str, step: int, total: int, x0: torch.Tensor) -> None:
        self._emit(Preview(stage, step, total, from_tensor(self.decode(x0))))
