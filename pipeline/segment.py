"""Click-to-segment: positive and negative clicks and a box make a mask.

The GUI talks to a `Segmenter` (set the image once, then ask for masks), so its behaviour can be
tested with a stub and the heavy part, Segment Anything, is imported only when an artist first uses
the tool. SAM's image embedding is computed once per image (`set_image`) and reused by every click,
which is what makes a click answer in well under a second after the first.

Checkpoints are read as tensors only: Meta's official `.pth` files with
`torch.load(weights_only=True)` (a pickle that would build anything but tensors is refused), and
`.safetensors` files. segment_anything 1.0's own `sam_model_registry[kind](checkpoint=...)` calls
`torch.load` without `weights_only`, so the model is built empty and the state dict loaded here. The
size a checkpoint's name or JSON gives is checked against its tensors before the model is built
(`_check_fits`), so a 100-byte JSON cannot make it build a huge one.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from pipeline.errors import RetakeError, shorten

CHECKPOINT_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}
# What tells SAM's sizes apart (segment_anything's build_sam varies only these): the keys of the JSON
# file that may sit beside a checkpoint of another size.
ENCODER_KEYS = ("encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes")
# The three sizes, as segment_anything 1.0's build_sam_vit_b/l/h build them.
SIZES = {
    "vit_b": {"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
              "encoder_global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"encoder_embed_dim": 1280, "encoder_depth": 32, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [7, 15, 23, 31]},
}
# The image encoder's grid (1024-pixel input, 16-pixel patches) and window, fixed by build_sam: a block's
# relative positions span 2 * 64 - 1 places with global attention, 2 * 14 - 1 in a window.
_GLOBAL_SPAN = 2 * (1024 // 16) - 1
Point = tuple[float, float]
Box = tuple[float, float, float, float]


class SegmentUnavailable(RetakeError):
    """Segment Anything cannot run here; the message says what to install or download."""


class CheckpointMissing(SegmentUnavailable):
    """No checkpoint is set, or none is where the setting says: `reason` says which (the window offers to
    download one), the message adds where to get one."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason} {checkpoint_help()}")
        self.reason = reason


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
    raise SegmentUnavailable(f"Cannot tell the model size of {shorten(checkpoint.name)}: its name should contain "
                             "vit_b, vit_l or vit_h, as the official checkpoints' names do, or a "
                             f"{shorten(checkpoint.stem)}.json beside it should give {', '.join(ENCODER_KEYS)}.")


def architecture_of(checkpoint: Path) -> str | dict[str, Any]:
    """The SAM size of `checkpoint`: the encoder settings in `<stem>.json` beside it, else the size
    its file name names (vit_b, vit_l, vit_h)."""
    config_path = checkpoint.with_suffix(".json")
    if not config_path.is_file():
        return model_type_of(checkpoint)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SegmentUnavailable(f"The Segment Anything config {shorten(config_path.name)} cannot be read "
                                 f"({shorten(exc)}).") from exc
    except RecursionError:
        raise SegmentUnavailable(f"The Segment Anything config {shorten(config_path.name)} cannot be read "
                                 "(it is nested too deeply).") from None
    if not isinstance(config, dict) or sorted(config) != sorted(ENCODER_KEYS):
        raise SegmentUnavailable(f"The Segment Anything config {shorten(config_path.name)} must hold exactly "
                                 f"{', '.join(ENCODER_KEYS)}.")
    return config


def _read_state(path: Path) -> Mapping[str, Any]:
    """The tensors of a .pth (tensors only) or .safetensors checkpoint."""
    import torch
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SegmentUnavailable(f"The Segment Anything checkpoint {shorten(path.name)} is damaged or holds more "
                                 "than tensors (only tensors are read from a .pth file: anything else could run "
                                 "code).") from exc
    except Exception as exc:  # a damaged file makes a reader raise whatever its bytes provoke (struct.error, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegmentUnavailable(f"The Segment Anything checkpoint {shorten(path.name)} cannot be read "
                                 f"({shorten(first, 160)}).") from exc


def _check_fits(architecture: str | dict[str, Any], state: Any, path: Path) -> None:
    """Refuse, before SAM is built, encoder settings its checkpoint's tensors contradict: the width of the
    patch embedding, the number of blocks, the head width of their relative positions and which blocks
    attend globally. A SAM of `encoder_depth: 2000` is then never built for a checkpoint of 2 blocks;
    what this leaves unchecked (the fixed prompt encoder and mask decoder) `_load_state` compares after."""
    import torch

    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegmentUnavailable(f"The Segment Anything checkpoint {shorten(path.name)} does not hold a state dict "
                                 "of tensors.")
    named = isinstance(architecture, str)
    settings = SIZES[architecture] if named else architecture
    source = (f"size {architecture} (from the name of {shorten(path.name)})" if named
              else f"config {shorten(path.with_suffix('.json').name)}")

    def refuse(key: str, problem: str) -> SegmentUnavailable:
        return SegmentUnavailable(f"The Segment Anything {source} says {key} is {shorten(settings[key], 80)}, "
                                  f"but {problem}.")

    for key in ENCODER_KEYS[:3]:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise refuse(key, "it must be a positive whole number")
    indexes = settings["encoder_global_attn_indexes"]
    if not isinstance(indexes, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in indexes):
        raise refuse("encoder_global_attn_indexes", "it must be a list of block numbers")
    held = f"{shorten(path.name)} holds"
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is None or patch.shape[0] != settings["encoder_embed_dim"]:
        raise refuse("encoder_embed_dim", f"{held} " + ("no image encoder" if patch is None else
                                                          f"a {patch.shape[0]}-wide image encoder"))
    blocks = {int(key.split(".")[2]) for key in state if key.startswith("image_encoder.blocks.")
              and key.split(".")[2].isdigit()}
    depth = max(blocks) + 1 if blocks else 0
    if depth != settings["encoder_depth"]:
        raise refuse("encoder_depth", f"{held} {depth} encoder blocks")
    spans = [state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(depth)]
    if any(span is None or span.dim() != 2 for span in spans):
        raise refuse("encoder_depth", f"{held} encoder blocks without relative positions")
    head = spans[0].shape[1]
    if settings["encoder_num_heads"] * head != settings["encoder_embed_dim"]:
        raise refuse("encoder_num_heads", f"{held} heads {head} wide, {settings['encoder_embed_dim'] // head} of them")
    global_blocks = sorted(i for i, span in enumerate(spans) if span.shape[0] == _GLOBAL_SPAN)
    if sorted(indexes) != global_blocks:
        raise refuse("encoder_global_attn_indexes", f"{held} blocks {global_blocks} with global attention")


def _build(architecture: str | dict[str, Any]) -> Any:
    """An untrained SAM of `architecture`: a size name through `sam_model_registry`, or encoder
    settings through `build_sam._build_sam`, the builder behind those three sizes (private in
    segment_anything, whose version is pinned)."""
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    if isinstance(architecture, str):
        return sam_model_registry[architecture]()
    try:
        return _build_sam(**architecture)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SegmentUnavailable(f"The Segment Anything config {shorten(architecture, 120)} does not describe a model "
                                 f"({shorten(exc)}).") from exc


def _load_state(model: Any, state: Any, path: Path, architecture: str | dict[str, Any]) -> None:
    """Load `state` into `model`, or say in one sentence how it does not fit."""
    name, size = shorten(path.name), architecture if isinstance(architecture, str) else "configured"
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unknown = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    problems = [f"{len(missing)} weights missing, e.g. {missing[0]}"] if missing else []
    problems += [f"{len(unknown)} unknown, e.g. {unknown[0]}"] if unknown else []
    if reshaped:
        key = reshaped[0]
        problems.append(f"{len(reshaped)} of another shape, e.g. {key}: {list(state[key].shape)} in the file, "
                        f"{list(expected[key].shape)} in the model")
    if problems:
        raise SegmentUnavailable(f"The Segment Anything checkpoint {name} does not fit the {size} model "
                                 f"({'; '.join(problems)}).")
    model.load_state_dict(state)


class SamSegmenter:
    """Segment Anything's SamPredictor behind the Segmenter protocol, with the embedding cached per image."""

    def __init__(self, predictor: object) -> None:
        self.predictor = predictor
        self._image_key: str | None = None

    def set_image(self, image: Image.Image) -> None:
        rgb = image.convert("RGB")
        key = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
        if key != self._image_key:
            self.predictor.set_image(np.asarray(rgb))  # type: ignore[attr-defined]
            self._image_key = key

    def predict(self, points: Sequence[Point], labels: Sequence[int], box: Box | None = None) -> np.ndarray:
        if self._image_key is None:
            raise SegmentUnavailable("Open an image before segmenting.")
        coords = np.asarray(points, np.float32).reshape(-1, 2) if points else None
        masks, scores, _ = self.predictor.predict(  # type: ignore[attr-defined]
            point_coords=coords, point_labels=np.asarray(labels, np.int64) if points else None,
            box=None if box is None else np.asarray(box, np.float32), multimask_output=not box and len(points) == 1)
        return np.asarray(masks[int(np.argmax(scores))], bool)


def load_segmenter(checkpoint: str | Path | None, device: str | None = None) -> SamSegmenter:
    """A SAM segmenter from a checkpoint file on `device` (None: CUDA when there is a GPU, else the
    CPU); SegmentUnavailable says what is missing or wrong.

    The file is Meta's pickled `.pth` (read with `torch.load(weights_only=True)`) or a
    `.safetensors` state dict. Its size comes from `<stem>.json` beside it when there is one (the
    four `ENCODER_KEYS` of segment_anything's builder: how a smaller or custom SAM is loaded), else
    from its name (vit_b, vit_l, vit_h). The state dict must fit that model exactly.
    """
    from pipeline.errors import ModelError
    from pipeline.models import resolve_device

    if not checkpoint:
        raise CheckpointMissing("No Segment Anything checkpoint is set.")
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointMissing(f"The Segment Anything checkpoint {path} does not exist.")
    try:
        target = resolve_device(device)
    except ModelError as exc:
        raise SegmentUnavailable(str(exc)) from exc
    architecture = architecture_of(path)
    try:
        from segment_anything import SamPredictor
    except ImportError as exc:
        missing = exc.name or "segment-anything"
        raise SegmentUnavailable(f"Segment Anything cannot be loaded: the package {missing} is missing "
                                 "(reinstall Retake: it needs segment-anything==1.0 and the torchvision built "
                                 "for its torch, torchvision==0.29.1 beside torch==2.14.1).") from exc
    state = _read_state(path)
    _check_fits(architecture, state, path)
    model = _build(architecture)
    _load_state(model, state, path, architecture)
    model.to(target).eval()
    return SamSegmenter(SamPredictor(model))
