"""A cheap latent -> RGB map for step previews.

Decoding the predicted clean latent with the VAE at every step costs a VAE decode per step (on SD 1.x
at 512 px, about as much as a UNet call). A latent cell is close to a linear function of the mean
colour of the 8x8 pixels it stands for, so one affine map per model, fitted once by least squares
against real VAE decodes and cached by the model's identity, gives a preview that is free to compute
and shows composition and colour well enough to watch a run. Full decodes stay for the result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.models import ModelBundle

CACHE_VERSION = 1


@dataclass(frozen=True)
class LatentRGB:
    """An affine map from a scaled latent cell (C values) to RGB in [-1, 1]: rgb = [z, 1] @ weight."""

    weight: np.ndarray
    """[C + 1, 3] float32."""
    identity: str
    """The model identity it was fitted for."""

    def rgb(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, h, w] scaled latent -> [h, w, 3] float RGB in [-1, 1] (one value per latent cell)."""
        z = latent.detach()[0].float().cpu().numpy()
        channels, h, w = z.shape
        flat = np.concatenate([z.reshape(channels, -1).T, np.ones((h * w, 1), np.float32)], axis=1)
        return np.clip(flat @ self.weight, -1.0, 1.0).reshape(h, w, 3)

    def __call__(self, latent: torch.Tensor, scale: int = 1) -> Image.Image:
        """The preview picture of a scaled latent [1, C, h, w], upscaled `scale` times (bilinear)."""
        pixels = np.round((self.rgb(latent) + 1.0) * 127.5).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
        return image

    def to_json(self) -> dict:
        return {"version": CACHE_VERSION, "identity": self.identity, "weight": self.weight.tolist()}


def fitting_pictures(size: int = 128, count: int = 6) -> torch.Tensor:
    """Colourful test pictures [N, 3, size, size] in [-1, 1]: gradients, blocks and stripes of many
    hues, so the fit sees the whole colour range rather than one photo's palette."""
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    pictures = []
    for i in range(count):
        colours = torch.rand(3, 3, generator=generator) * 2 - 1
        base = colours[:, 0, None, None] * xs + colours[:, 1, None, None] * ys + colours[:, 2, None, None] * 0.5
        blocks = F.interpolate(torch.rand(1, 3, 4 + i, 4 + i, generator=generator) * 2 - 1, size=(size, size),
                               mode="nearest")[0]
        pictures.append(torch.clamp(0.5 * base + 0.7 * blocks, -1, 1))
    return torch.stack(pictures)


def fit_latent_rgb(bundle: ModelBundle, cache_dir: Path | None = None, pictures: torch.Tensor | None = None) -> LatentRGB:
    """Fit (or read from `cache_dir`) the model's latent -> RGB map.

    The VAE encodes `pictures`, decodes the latents again, and the decodes, averaged over each
    latent cell's pixels, are regressed on the latent cells (with a bias), so the map reproduces the
    VAE's own decode rather than the input pictures.
    """
    cache = None
    if cache_dir is not None:
        name = hashlib.sha256(bundle.identity.encode()).hexdigest()[:24]
        cache = Path(cache_dir) / f"latent-rgb-{name}.json"
        if cache.is_file():
            try:
                data = json.loads(cache.read_text())
                if data.get("version") == CACHE_VERSION and data.get("identity") == bundle.identity:
                    return LatentRGB(np.asarray(data["weight"], np.float32), bundle.identity)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged cache is refitted and overwritten
    vae = bundle.vae
    scale = vae.config.scaling_factor
    images = fitting_pictures() if pictures is None else pictures
    with torch.no_grad():
        latents = vae.encode(images.to(bundle.device, torch.float32)).latent_dist.mean * scale
        decoded = vae.decode(latents / scale, return_dict=False)[0].float().clamp(-1, 1).cpu()
    latents = latents.float().cpu()
    cell_rgb = F.adaptive_avg_pool2d(decoded, latents.shape[-2:])
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).numpy()
    y = cell_rgb.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    x = np.concatenate([x, np.ones((x.shape[0], 1), np.float32)], axis=1)
    weight, *_ = np.linalg.lstsq(x, y, rcond=None)
    fitted = LatentRGB(weight.astype(np.float32), bundle.identity)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(fitted.to_json()))
        except OSError:
            pass  # a cache that cannot be written only costs a refit next time
    return fitted
