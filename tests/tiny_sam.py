"""A small Segment Anything for tests, written the way pipeline.segment loads one of another size.

The model is segment_anything's own (`build_sam._build_sam`, through which Meta's vit_b/l/h are
built too) with a 2-block, 32-wide image encoder and seeded random weights: random weights are enough
to test the wiring (what reaches the predictor, what comes back, how often the image is embedded).
It is saved as `<name>.safetensors` (or `.pth`) with `<name>.json` beside it holding its encoder
settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

TINY = {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2, "encoder_global_attn_indexes": [1]}


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
