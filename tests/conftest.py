"""Shared fixtures: everything runs on the CPU with the project's own tiny models."""

from __future__ import annotations

import pytest

from pipeline.tokenizer import load_clip_tokenizer


@pytest.fixture(scope="session")
def clip_tokenizer():
    """Stable Diffusion's real CLIP tokenizer, rebuilt from the shipped BPE file."""
    return load_clip_tokenizer()
