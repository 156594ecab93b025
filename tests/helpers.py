"""Small helpers shared by tests."""

import dataclasses
import hashlib
from pathlib import Path

import torch

from pipeline.request import EditRequest
from pipeline.sampling import Sampling, denoise

DEMO_PHOTO = str(Path(__file__).resolve().parent.parent / "resources" / "demo" / "house.png")
SOURCE = "a house in a meadow under a blue sky"
TARGET = "a castle in a meadow under a blue sky"


def demo_request(tmp_path: Path, quick: dict, **kw) -> EditRequest:
    """A quick edit of the demo photo on the CPU into tmp_path/p.retake (parameters `quick` unless `params`
    is given); keyword arguments override fields."""
    fields = dict(target_prompt=TARGET, image=DEMO_PHOTO, source_prompt=SOURCE, project=str(tmp_path / "p.retake"),
                  params=dict(quick), max_side=64, device="cpu", model="demo-tiny")
    fields.update(kw)
    return EditRequest(**fields)


def assert_retraces(ctx, schedule, latents: torch.Tensor, run: Sampling, what: str) -> None:
    """Sampling `run` from latents[0] (z*_T) lands on latents[i + 1] after step i, to fp32 rounding: the
    invariant of every method that stores per-step tensors learned against a trajectory."""
    reached: list[torch.Tensor] = []
    recording = dataclasses.replace(run, blend=lambda i, z: reached.append(z) or z)
    with torch.no_grad():
        denoise(ctx, schedule, latents[:1], recording, "retrace")
    assert len(reached) == latents.shape[0] - 1
    for i, z in enumerate(reached):
        torch.testing.assert_close(z, latents[i + 1 : i + 2], rtol=0, atol=1e-5,
                                   msg=lambda m, i=i: f"step {i} left the {what} trajectory: {m}")


def tree_digest(folder: Path) -> str:
    """A hash of every path and file byte under `folder`: equal digests mean nothing was touched."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


class SD15UNet:
    """Stands in for an SD 1.5 UNet where only its attention layer names and block types matter."""

    class config:
        down_block_types = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
        up_block_types = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3

    attn_processors = {
        f"{prefix}.attentions.{a}.transformer_blocks.0.attn{k}.processor": None
        for prefix, count in [("down_blocks.0", 2), ("down_blocks.1", 2), ("down_blocks.2", 2),
                              ("up_blocks.1", 3), ("up_blocks.2", 3), ("up_blocks.3", 3), ("mid_block", 1)]
        for a in range(count) for k in (1, 2)
    }
