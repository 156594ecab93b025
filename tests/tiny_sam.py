"""A small Segment Anything for tests, written the way pipeline.segment loads one of another size.

The model is segment_anything's own (`build_sam._build_sam`, through which Meta's vit_b/l/h are
built too) with a 2-block, 32-wide image encoder and seeded random weights: random weights are enough
to test the wiring (what reaches the predictor, what comes back, how often the image is embedded).
It is saved as `<name>.safetensors` (or `.pth`) with `<name>.json` beside it holding its encoder
settings.

segment_anything imports torchvision for the PIL resize in `SamPredictor.set_image`
(`ResizeLongestSide.apply_image`) and for box NMS in its automatic mask generator, which Retake does
not use. Where torchvision is installed it is used. Where it is not (this project's CPU venv: the
only torchvision 0.28.0 wheel its package mirror serves is the CUDA build, which cannot be imported
beside the CPU torch), `segment_anything_importable` imports segment_anything once against a
stand-in (the resize is PIL's bilinear one, which is what torchvision does for a PIL image; the NMS
functions refuse to run), takes the stand-in out of sys.modules at once, and forgets
segment_anything after the tests that used it. Everything else is segment_anything's own code.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

TINY = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1]}


def _not_in_the_stand_in(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("the tests' torchvision stand-in has no box NMS (tests/tiny_sam.py)")


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms", "torchvision.ops",
                                                         "torchvision.transforms.functional", "torchvision.ops.boxes")}
    functional, boxes = modules["torchvision.transforms.functional"], modules["torchvision.ops.boxes"]
    functional.to_pil_image = Image.fromarray  # type: ignore[attr-defined]
    functional.resize = lambda image, size: image.resize(  # type: ignore[attr-defined]
        (size[1], size[0]), Image.Resampling.BILINEAR)
    boxes.batched_nms = boxes.box_area = _not_in_the_stand_in  # type: ignore[attr-defined]
    return modules


@contextmanager
def segment_anything_importable() -> Iterator[None]:
    """segment_anything importable inside the block (see the module's docstring)."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        for name, module in _torchvision_stand_in().items():
            patch.setitem(sys.modules, name, module)
        import segment_anything  # noqa: F401
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] == "segment_anything":
                del sys.modules[name]


def build_tiny_sam(seed: int = 0, **changes: Any) -> Any:
    """A small SAM in eval mode with seeded random weights (`changes` alter TINY)."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    return _build_sam(**{**TINY, **changes}).eval()


def write_tiny_sam(folder: Path, name: str = "sam_tiny", suffix: str = ".safetensors", seed: int = 0,
                   config: dict[str, Any] | None = None) -> tuple[Path, Any]:
    """Save a tiny SAM as `folder/name+suffix` with its JSON config beside it; returns the path and
    the in-memory model. `config` writes another JSON than the model's own (to test mismatches)."""
    model = build_tiny_sam(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{suffix}"
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    path.with_suffix(".json").write_text(json.dumps(TINY if config is None else config))
    return path, model


def reference_predictor(model: Any, image: Image.Image) -> Any:
    """segment_anything's own SamPredictor over `model`, with `image` embedded."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    predictor.set_image(np.asarray(image.convert("RGB")))
    return predictor


def reference_mask(predictor: Any, points: list, labels: list, box: Any = None) -> np.ndarray:
    """What SamPredictor itself answers for these prompts, with the choice the GUI makes: one mask,
    the best-scored of three for a single click."""
    single = box is None and len(points) == 1
    masks, scores, _ = predictor.predict(
        point_coords=np.asarray(points, np.float32) if points else None,
        point_labels=np.asarray(labels) if points else None,
        box=None if box is None else np.asarray(box, np.float32), multimask_output=single)
    return masks[int(np.argmax(scores))]
