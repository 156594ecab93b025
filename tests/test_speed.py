"""pipeline.speed times one UNet evaluation of a loaded model, the unit of the window's run estimate."""

from __future__ import annotations

import math
from unittest import mock

from pipeline.models import load_model
from pipeline.speed import unet_seconds


def test_one_unet_evaluation_is_timed_at_the_models_own_size():
    bundle = load_model("demo-tiny")
    with mock.patch.object(bundle.unet, "forward", wraps=bundle.unet.forward) as forward:
        seconds = unet_seconds(bundle)
    assert math.isfinite(seconds) and seconds > 0
    (latent, timestep), kwargs = forward.call_args
    cells = bundle.unet.config.sample_size
    assert latent.shape == (1, bundle.latent_channels, cells, cells) and timestep == 500
    assert forward.call_count == 1  # a CPU has no kernels to compile first
