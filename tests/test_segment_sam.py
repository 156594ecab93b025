"""pipeline.segment.load_segmenter with the real Segment Anything (a small one, tests/tiny_sam.py):
what it loads is what was saved, in either format; a bad checkpoint gives one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

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


@pytest.mark.parametrize("change, words", [
    ({"encoder_embed_dim": 48, "encoder_num_heads": 3}, "says encoder_embed_dim is 48, but sam_tiny.safetensors "
                                                        "holds a 32-wide image encoder"),
    ({"encoder_depth": 3}, "says encoder_depth is 3, but sam_tiny.safetensors holds 2 encoder blocks"),
    ({"encoder_depth": 2000, "encoder_embed_dim": 2048, "encoder_num_heads": 16}, "encoder_embed_dim is 2048"),
    ({"encoder_num_heads": 4}, "says encoder_num_heads is 4, but sam_tiny.safetensors holds heads 16 wide, 2 of them"),
    ({"encoder_global_attn_indexes": [0]}, "holds blocks [1] with global attention"),
    ({"encoder_depth": "2"}, "says encoder_depth is 2, but it must be a positive whole number"),
])
def test_a_size_its_checkpoint_contradicts_is_refused_before_sam_is_built(tmp_path, monkeypatch, change, words):
    import importlib

    builder = importlib.import_module("segment_anything.build_sam")  # the package's build_sam is a function
    path, _ = write_tiny_sam(tmp_path, config={**TINY, **change})
    monkeypatch.setattr(builder, "_build_sam", lambda **kw: pytest.fail("SAM was built"))
    with pytest.raises(SegmentUnavailable) as error:
        load_segmenter(path, "cpu")
    assert str(error.value).startswith("The Segment Anything config sam_tiny.json says ") and words in str(error.value)


def test_a_checkpoint_named_for_a_size_it_is_not_is_refused_before_sam_is_built(tmp_path, monkeypatch):
    import segment_anything

    named, _ = write_tiny_sam(tmp_path / "named", name="sam_vit_h_small", suffix=".pth")
    named.with_suffix(".json").unlink()  # the name alone says vit_h (2.5 GB), which this is not
    monkeypatch.setattr(segment_anything, "sam_model_registry", {})  # building it would fail the test
    with pytest.raises(SegmentUnavailable, match=r"size vit_h \(from the name of sam_vit_h_small.pth\) says "
                                                 r"encoder_embed_dim is 1280, but sam_vit_h_small.pth holds a 32-wide"):
        load_segmenter(named, "cpu")


def test_a_checkpoint_that_fits_its_size_but_lacks_weights_gives_one_clear_message(tmp_path):
    path, model = write_tiny_sam(tmp_path)
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("mask_decoder.")}
    save_file({key: value.contiguous() for key, value in state.items()}, path)
    with pytest.raises(SegmentUnavailable, match=r"does not fit the configured model \(\d+ weights missing, e.g. "
                                                  r"mask_decoder\.\S+\)"):
        load_segmenter(path, "cpu")


def test_a_config_must_hold_exactly_the_encoder_settings(tmp_path):
    path, _ = write_tiny_sam(tmp_path, config={**TINY, "checkpoint": "elsewhere.pth"})
    with pytest.raises(SegmentUnavailable, match="must hold exactly encoder_embed_dim"):
        load_segmenter(path, "cpu")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(SegmentUnavailable, match="sam_tiny.json cannot be read"):
        load_segmenter(path, "cpu")
    path.with_suffix(".json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(SegmentUnavailable, match="sam_tiny.json cannot be read \\(it is nested too deeply\\)"):
        load_segmenter(path, "cpu")
    unnamed = tmp_path / "weights.safetensors"
    unnamed.write_bytes(path.read_bytes())
    with pytest.raises(SegmentUnavailable, match="weights.json beside it"):
        load_segmenter(unnamed, "cpu")
