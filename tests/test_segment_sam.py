"""pipeline.segment.load_segmenter with the real Segment Anything (a small one, tests/tiny_sam.py):
what it loads is what was saved, in either format; a bad checkpoint gives one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.segment import SegmentUnavailable, load_segmenter
from tests.tiny_sam import TINY, reference_mask, reference_predictor, write_tiny_sam


def photo(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_small_sam_loads_with_its_config_and_answers_as_the_saved_model(tmp_path, suffix):
    path, model = write_tiny_sam(tmp_path, suffix=suffix)
    segmenter = load_segmenter(path, "cpu")
    loaded = segmenter.predictor.model.state_dict()
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    image = photo()
    segmenter.set_image(image)
    reference = reference_predictor(model, image)
    for points, labels, box in (([(30.0, 20.0)], [1], None), ([(30.0, 20.0), (60.0, 40.0)], [1, 0], None),
                                ([], [], (10.0, 5.0, 50.0, 45.0))):
        mask = segmenter.predict(points, labels, box)
        assert mask.shape == (60, 80) and mask.dtype == bool
        assert np.array_equal(mask, reference_mask(reference, points, labels, box)), (points, box)
    one, two = (segmenter.predict([(30.0, 20.0), (60.0, 40.0)], [1, label]) for label in (1, 0))
    assert not np.array_equal(one, two)  # the label reaches the model


def test_another_seed_is_another_model(tmp_path):
    """The masks above are the saved weights' answers, not any SAM's: other weights answer otherwise."""
    path, _ = write_tiny_sam(tmp_path)
    _, other = write_tiny_sam(tmp_path / "other", seed=1)
    segmenter = load_segmenter(path, "cpu")
    image = photo()
    segmenter.set_image(image)
    points, labels = [(30.0, 20.0), (60.0, 40.0)], [1, 0]
    other_mask = reference_mask(reference_predictor(other, image), points, labels)
    assert not np.array_equal(segmenter.predict(points, labels), other_mask)


def test_a_corrupt_checkpoint_gives_one_clear_message(tmp_path):
    for suffix in (".safetensors", ".pth"):
        for junk in (b"not a checkpoint", b"junk"):
            path = tmp_path / f"sam_vit_b_broken{suffix}"
            path.write_bytes(junk)
            with pytest.raises(SegmentUnavailable, match=rf"sam_vit_b_broken\{suffix} (cannot be read|is damaged)"):
                load_segmenter(path, "cpu")
    wrapped = tmp_path / "sam_vit_b_wrapped.pth"
    torch.save({"model": {"image_encoder.pos_embed": torch.zeros(1)}, "epoch": 3}, wrapped)
    with pytest.raises(SegmentUnavailable, match="sam_vit_b_wrapped.pth does not hold a state dict of tensors"):
        load_segmenter(wrapped, "cpu")
    path, _ = write_tiny_sam(tmp_path, name="cut")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(SegmentUnavailable, match="cut.safetensors cannot be read"):
        load_segmenter(path, "cpu")


class Touch:
    """Unpickled without weights_only, this creates the file it names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1), "payload": Touch(marker)}, path)
    with pytest.raises(SegmentUnavailable, match="sam_vit_b_01ec64.pth is damaged or holds more than tensors"):
        load_segmenter(path, "cpu")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what a plain torch.load would have done
    assert marker.exists()


def test_a_checkpoint_of_another_shape_gives_one_clear_message(tmp_path):
    wider, _ = write_tiny_sam(tmp_path / "wider", config={**TINY, "encoder_embed_dim": 48, "encoder_num_heads": 3})
    with pytest.raises(SegmentUnavailable, match=r"sam_tiny.safetensors does not fit the configured model \(\d+ of "
                                                 r"another shape, e.g. image_encoder\.\S+: \[.*32\] in the file, "
                                                 r"\[.*48\] in the model\)"):
        load_segmenter(wider, "cpu")
    deeper, _ = write_tiny_sam(tmp_path / "deeper", config={**TINY, "encoder_depth": 3})
    with pytest.raises(SegmentUnavailable, match=r"does not fit the configured model \(\d+ weights missing, e.g. "
                                                  r"image_encoder\.blocks\.2\.\S+\)"):
        load_segmenter(deeper, "cpu")
    named, _ = write_tiny_sam(tmp_path / "named", name="sam_vit_b_small", suffix=".pth")
    named.with_suffix(".json").unlink()  # the name alone says vit_b, which this is not
    with pytest.raises(SegmentUnavailable, match=r"sam_vit_b_small.pth does not fit the vit_b model "
                                                r"\(\d+ weights missing.*; \d+ of another shape"):
        load_segmenter(named, "cpu")


def test_a_config_must_hold_exactly_the_encoder_settings(tmp_path):
    path, _ = write_tiny_sam(tmp_path, config={**TINY, "checkpoint": "elsewhere.pth"})
    with pytest.raises(SegmentUnavailable, match="must hold exactly encoder_embed_dim"):
        load_segmenter(path, "cpu")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(SegmentUnavailable, match="sam_tiny.json cannot be read"):
        load_segmenter(path, "cpu")
    path.with_suffix(".json").write_text(json.dumps({**TINY, "encoder_depth": "2"}))
    with pytest.raises(SegmentUnavailable, match="does not describe a model"):
        load_segmenter(path, "cpu")
    unnamed = tmp_path / "weights.safetensors"
    unnamed.write_bytes(path.read_bytes())
    with pytest.raises(SegmentUnavailable, match="weights.json beside it"):
        load_segmenter(unnamed, "cpu")
