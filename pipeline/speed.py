"""How long one UNet evaluation takes on this machine: the unit the window's estimate of a run counts in.

A run's time is almost all UNet evaluations (gui.estimate counts them per stage of each method), so
one evaluation of one latent at the model's own size, timed once after the model loads, makes an
estimate honest to this machine, its device, precision and load. On a GPU the first call also
compiles kernels, so it is made once untimed.
"""

from __future__ import annotations

import contextlib
import time

import torch

from pipeline.models import ModelBundle

PROBE_TIMESTEP = 500


def unet_seconds(bundle: ModelBundle) -> float:
    """Seconds of one UNet noise prediction for one latent at the model's own size, as a run makes it
    (no gradient, the bundle's sampling precision)."""
    cells = int(bundle.unet.config.sample_size)
    latent = torch.zeros(1, bundle.latent_channels, cells, cells, device=bundle.device)
    text = torch.zeros(1, bundle.tokenizer.model_max_length, bundle.text_encoder.config.hidden_size,
                       device=bundle.device)
    cuda = bundle.device.type == "cuda"
    precision = (torch.autocast(bundle.device.type, dtype=bundle.sample_dtype)
                 if bundle.sample_dtype != torch.float32 else contextlib.nullcontext())
    seconds = 0.0
    with torch.no_grad(), precision:
        for _ in range(2 if cuda else 1):
            started = time.perf_counter()
            bundle.unet(latent, PROBE_TIMESTEP, encoder_hidden_states=text, return_dict=False)
            if cuda:
                torch.cuda.synchronize(bundle.device)
            seconds = time.perf_counter() - started
    return seconds
