"""Shared fixtures: everything runs on the CPU with the project's own tiny models, offline."""

from __future__ import annotations

import os

import pytest

from pipeline.events import CancelToken
from pipeline.models import ModelBundle, load_model
from pipeline.run import RunContext
from pipeline.tokenizer import load_clip_tokenizer


def pytest_configure(config: pytest.Config) -> None:
    # No test may reach a model hub; the loaders must work from local files alone.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # Bit-for-bit tests (a seeded run twice, a control switched off) need MKL's strict mode: by
    # default its CPU kernels' sums depend on the buffers' alignment, so two identical runs in one
    # process can differ in the last bit (seen on CI in the text optimisation's reproducibility).
    # MKL reads it at its first computation, after import.
    os.environ["MKL_CBWR"] = "AUTO,STRICT"


@pytest.fixture(scope="session")
def clip_tokenizer():
    """Stable Diffusion's real CLIP tokenizer, rebuilt from the shipped BPE file."""
    return load_clip_tokenizer()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("retake-cache")


@pytest.fixture(scope="session")
def demo_bundle(cache_dir) -> ModelBundle:
    """The tiny demo model on the CPU in fp32 (shared: tests must not modify it)."""
    return load_model("demo-tiny", device="cpu", cache_dir=cache_dir)


@pytest.fixture
def ctx(demo_bundle: ModelBundle) -> RunContext:
    """A run context that records its events in `ctx.events`."""
    events: list = []
    context = RunContext(demo_bundle, CancelToken(), events.append)
    context.events = events
    return context


DEMO_IMAGE = os.path.join(os.path.dirname(__file__), "..", "resources", "demo", "house.png")


@pytest.fixture(scope="session")
def demo_latent(demo_bundle: ModelBundle):
    """The demo photo at 64x64, encoded: [1, 4, 8, 8]."""
    from pipeline.images import load_image, to_tensor

    context = RunContext(demo_bundle, CancelToken(), lambda event: None)
    return context.encode_image(to_tensor(load_image(DEMO_IMAGE), (64, 64)))
