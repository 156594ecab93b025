"""Click-to-segment: positive and negative clicks and a box make a mask.

The GUI talks to a `Segmenter` (set the image once, then ask for masks), so its behaviour can be
tested with a stub and the heavy part, Segment Anything, is imported only when an artist first uses
the tool. SAM's image embedding is computed once per image (`set_image`) and reused by every click,
which is what makes a click answer in well under a second after the first.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from pipeline.errors import RetakeError

CHECKPOINT_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}
Point = tuple[float, float]
Box = tuple[float, float, float, float]


class SegmentUnavailable(RetakeError):
    """Segment Anything cannot run here; the message says what to install or download."""


class Segmenter(Protocol):
    """Masks from clicks on one image at a time."""

    def set_image(self, image: Image.Image) -> None:
        """Prepare `image` (RGB); repeated calls with the same pixels are free."""
        ...

    def predict(self, points: Sequence[Point], labels: Sequence[int], box: Box | None = None) -> np.ndarray:
        """A bool mask [H, W] at image size from clicks in image pixels (label 1: include, 0: exclude)
        and an optional box (x0, y0, x1, y1)."""
        ...


def checkpoint_help() -> str:
    """Where to get a checkpoint, for the tool's message."""
    urls = "; ".join(f"{kind}: {url}" for kind, url in CHECKPOINT_URLS.items())
    return f"Download a Segment Anything checkpoint ({urls}) and choose it in Settings."


def model_type_of(checkpoint: Path) -> str:
    """vit_b / vit_l / vit_h from the checkpoint's file name (as Meta names them)."""
    for kind in CHECKPOINT_URLS:
        if kind in checkpoint.name:
            return kind
    raise SegmentUnavailable(f"Cannot tell the model size of {checkpoint.name}: its name should contain "
                             "vit_b, vit_l or vit_h, as the official checkpoints' names do.")


class SamSegmenter:
    """Segment Anything's SamPredictor behind the Segmenter protocol, with the embedding cached per image."""

    def __init__(self, predictor: object) -> None:
        self._predictor = predictor
        self._image_key: str | None = None

    def set_image(self, image: Image.Image) -> None:
        rgb = image.convert("RGB")
        key = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
        if key != self._image_key:
            self._predictor.set_image(np.asarray(rgb))  # type: ignore[attr-defined]
            self._image_key = key

    def predict(self, points: Sequence[Point], labels: Sequence[int], box: Box | None = None) -> np.ndarray:
        if self._image_key is None:
            raise SegmentUnavailable("Open an image before segmenting.")
        coords = np.asarray(points, np.float32).reshape(-1, 2) if points else None
        masks, scores, _ = self._predictor.predict(  # type: ignore[attr-defined]
            point_coords=coords, point_labels=np.asarray(labels, np.int64) if points else None,
            box=None if box is None else np.asarray(box, np.float32), multimask_output=not box and len(points) == 1)
        return np.asarray(masks[int(np.argmax(scores))], bool)


def load_segmenter(checkpoint: str | Path | None, device: str = "cpu") -> SamSegmenter:
    """A SAM segmenter from a checkpoint file; SegmentUnavailable says what is missing."""
    if not checkpoint:
        raise SegmentUnavailable(f"No Segment Anything checkpoint is set. {checkpoint_help()}")
    path = Path(checkpoint)
    if not path.is_file():
        raise SegmentUnavailable(f"The Segment Anything checkpoint {path} does not exist. {checkpoint_help()}")
    try:
        from segment_anything import SamPredictor, sam_model_registry
    except ImportError as exc:
        missing = exc.name or "segment-anything"
        raise SegmentUnavailable(f"Segment Anything cannot be loaded: the package {missing} is missing "
                                 "(pip install segment-anything torchvision, with the torchvision "
                                 "that matches your torch).") from exc
    try:
        model = sam_model_registry[model_type_of(path)](checkpoint=str(path))
    except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise SegmentUnavailable(f"The Segment Anything checkpoint {path.name} cannot be read ({exc}).") from exc
    model.to(device).eval()
    return SamSegmenter(SamPredictor(model))
