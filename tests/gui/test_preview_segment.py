"""pipeline.preview (the cheap latent -> RGB map) and pipeline.segment (the Segmenter adapter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.images import load_image, to_tensor
from pipeline.preview import fit_latent_rgb
from pipeline.segment import SamSegmenter, SegmentUnavailable, load_segmenter, model_type_of
from tests.gui.conftest import DEMO_PHOTO


def test_latent_rgb_reproduces_the_vae_decode_coarsely(demo_bundle, tmp_path):
    fitted = fit_latent_rgb(demo_bundle, cache_dir=tmp_path)
    vae = demo_bundle.vae
    photo = to_tensor(load_image(DEMO_PHOTO), (128, 96))
    with torch.no_grad():
        latent = vae.encode(photo).latent_dist.mean * vae.config.scaling_factor
        decoded = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0].clamp(-1, 1)
    cells = F.adaptive_avg_pool2d(decoded, latent.shape[-2:])[0].permute(1, 2, 0).numpy()
    error = np.abs(fitted.rgb(latent) - cells).mean()
    assert error < 0.25, error  # on [-1, 1]: a preview, not a decode
    flat = np.abs(cells - cells.mean(axis=(0, 1))).mean()
    assert error < flat  # better than the photo's mean colour
    picture = fitted(latent, scale=8)
    assert picture.size == (128, 96) and picture.mode == "RGB"


def test_latent_rgb_is_cached_per_model_identity(demo_bundle, tmp_path, monkeypatch):
    first = fit_latent_rgb(demo_bundle, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("latent-rgb-*.json"))) == 1
    monkeypatch.setattr(demo_bundle.vae, "encode", lambda *a, **k: pytest.fail("refitted"), raising=False)
    again = fit_latent_rgb(demo_bundle, cache_dir=tmp_path)
    assert np.allclose(first.weight, again.weight)


class FakePredictor:
    def __init__(self) -> None:
        self.images = 0
        self.calls = []

    def set_image(self, array):
        self.images += 1
        self.shape = array.shape[:2]

    def predict(self, point_coords, point_labels, box, multimask_output):
        self.calls.append((point_coords, point_labels, box, multimask_output))
        masks = np.zeros((3, *self.shape), bool)
        masks[1, :5, :5] = True
        return masks, np.array([0.1, 0.9, 0.3]), None


def test_sam_segmenter_embeds_once_per_image_and_picks_the_best_mask():
    predictor = FakePredictor()
    segmenter = SamSegmenter(predictor)
    image = Image.new("RGB", (32, 24), "white")
    segmenter.set_image(image)
    segmenter.set_image(image.copy())
    assert predictor.images == 1
    mask = segmenter.predict([(3.0, 4.0)], [1])
    assert mask.shape == (24, 32) and mask[:5, :5].all() and mask.sum() == 25
    coords, labels, box, multi = predictor.calls[-1]
    assert coords.tolist() == [[3.0, 4.0]] and labels.tolist() == [1] and box is None and multi
    segmenter.predict([], [], (1, 2, 10, 12))
    assert predictor.calls[-1][0] is None and predictor.calls[-1][2].tolist() == [1, 2, 10, 12]
    segmenter.set_image(Image.new("RGB", (32, 24), "black"))
    assert predictor.images == 2


def test_without_a_checkpoint_or_package_the_segmenter_says_what_to_do(tmp_path):
    with pytest.raises(SegmentUnavailable, match="sam_vit_b_01ec64.pth"):
        load_segmenter("")
    with pytest.raises(SegmentUnavailable, match="does not exist"):
        load_segmenter(tmp_path / "sam_vit_b_01ec64.pth")
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    checkpoint.write_bytes(b"not a checkpoint")
    try:
        import segment_anything  # noqa: F401
    except ImportError:
        with pytest.raises(SegmentUnavailable, match="pip install segment-anything"):
            load_segmenter(checkpoint)
    else:
        with pytest.raises(SegmentUnavailable, match="is damaged or holds more than tensors"):
            load_segmenter(checkpoint)
    assert model_type_of(checkpoint) == "vit_b"
    with pytest.raises(SegmentUnavailable, match="vit_b, vit_l or vit_h"):
        model_type_of(tmp_path / "sam.pth")


def test_inversion_stages_send_a_preview_per_step_that_their_trajectory_implies(tmp_path):
    """The timeline shows the inversion too: a preview per DDIM-inversion and null-text step, each
    the clean latent predicted there. For DDIM inversion that latent follows from the stored
    trajectory alone: z*_{k-1} and z*_k lie on one line through it along the step's noise."""
    from pipeline.engine import Engine
    from pipeline.events import CancelToken, Preview
    from pipeline.sampling import DDIMSchedule
    from tests.helpers import demo_request

    steps = 5
    engine = Engine(cache_dir=tmp_path / "cache")
    job = engine.resolve(demo_request(tmp_path, {"steps": steps, "inner_steps": 1}, preview_every=1))
    events: list = []
    bundle = engine.load_model(job, events.append)
    latents = engine.invert(job, bundle, events.append, CancelToken()).tensors["latents"].double()
    previews = [e for e in events if isinstance(e, Preview)]
    by_stage = {stage: [p for p in previews if p.stage == stage] for stage in ("DDIM inversion", "null-text inversion")}
    for stage, shown in by_stage.items():
        assert [p.step for p in shown] == list(range(1, steps + 1)), stage
        assert all(p.latent.shape == (1, 4, 8, 8) and p.image.size == (64, 64) for p in shown)
    schedule = DDIMSchedule(bundle.scheduler, steps)
    assert [p.timestep for p in by_stage["DDIM inversion"]] == schedule.timesteps[::-1]  # clean to noisy
    assert [p.timestep for p in by_stage["null-text inversion"]] == schedule.timesteps  # noisy to clean
    for k, (t, preview) in enumerate(zip(schedule.timesteps[::-1], by_stage["DDIM inversion"]), start=1):
        a_from, a_to = schedule.alpha(t - schedule.stride), schedule.alpha(t)
        s_from, s_to = (1 - a_from) ** 0.5, (1 - a_to) ** 0.5
        x0 = (s_from * latents[k] - s_to * latents[k - 1]) / (a_to**0.5 * s_from - a_from**0.5 * s_to)
        error = (preview.latent[0].double() - x0).abs().max().item()
        assert error < 2e-3 * x0.abs().max().item(), (k, error)  # fp16 rounding of the preview latent
