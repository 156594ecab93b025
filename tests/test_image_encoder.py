"""The image encoder a user names (--image-encoder, the app's Settings): found the same ways as a model,
normalised by its own image processor config, refused in one sentence naming the option when it is
missing or broken, and part of the stylediffusion inversion's key: another encoder re-trains the
mapping networks, a copy of the same one does not."""

import dataclasses
import json
import shutil

import pytest
import torch
from transformers import CLIPVisionModelWithProjection

from cli.commands import build_parser, request_from_args
from pipeline.demo_model import demo_model_dir
from pipeline.engine import Engine
from pipeline.errors import ModelError
from pipeline.events import CancelToken, Progress, Stage
from pipeline.parts import CLIP_MEAN, CLIP_STD, IMAGE_ENCODER, image_features, with_parts
from pipeline.project import Project
from resources.demo_model.image_encoder import build
from tests.helpers import DEMO_PHOTO, demo_request

MEAN, STD = (0.5, 0.25, 0.75), (0.2, 0.4, 0.3)


def _encoder_folder(folder, seed=0, width=32, processor=True, projection=False):
    """A CLIP vision model folder with the demo model's width (`projection`: saved as
    CLIPVisionModelWithProjection) and, if `processor`, an image processor config of its own."""
    network = build(width, seed)
    if projection:
        torch.manual_seed(seed)
        network = CLIPVisionModelWithProjection(network.config).eval()
    network.save_pretrained(folder, safe_serialization=True)
    if processor:
        (folder / "preprocessor_config.json").write_text(json.dumps(
            {"image_processor_type": "CLIPImageProcessor", "image_mean": MEAN, "image_std": STD,
             "crop_size": {"height": 64, "width": 64}, "size": {"shortest_edge": 64}}))
    return network


def _load(demo_bundle, spec, cache_dir, model_spec=None, **kw):
    bundle = demo_bundle if model_spec is None else dataclasses.replace(demo_bundle, spec=model_spec)
    return with_parts(bundle, (IMAGE_ENCODER,), image_encoder=str(spec), cache_dir=cache_dir, **kw).parts[IMAGE_ENCODER]


def _features_by_hand(network, image, mean, std):
    pixels = torch.nn.functional.interpolate(image, size=(64, 64), mode="bicubic", antialias=True, align_corners=False)
    pixels = ((pixels.clamp(-1, 1) + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = network(pixel_values=pixels).last_hidden_state
        return network.post_layernorm(hidden) if hasattr(network, "post_layernorm") else \
            network.vision_model.post_layernorm(hidden)


def test_a_named_folder_with_projection_loads_with_its_processor_normalisation(demo_bundle, tmp_path, cache_dir):
    saved = _encoder_folder(tmp_path / "enc", projection=True)
    (tmp_path / "model.safetensors").write_bytes(b"a single-file checkpoint: no image_encoder/ beside it")
    encoder = _load(demo_bundle, tmp_path / "enc", cache_dir, model_spec=str(tmp_path / "model.safetensors"))
    assert torch.equal(encoder.model.embeddings.patch_embedding.weight,
                       saved.vision_model.embeddings.patch_embedding.weight)
    assert (encoder.mean, encoder.std) == (MEAN, STD) and encoder.spec == str(tmp_path / "enc")
    image = torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = image_features(encoder, image)
    torch.testing.assert_close(ours, _features_by_hand(saved, image, MEAN, STD), rtol=0, atol=1e-5)
    assert not torch.allclose(ours, _features_by_hand(saved, image, CLIP_MEAN, CLIP_STD), atol=1e-3)


def test_identity_follows_the_content_not_the_place(demo_bundle, tmp_path, cache_dir):
    _encoder_folder(tmp_path / "enc")
    shutil.copytree(tmp_path / "enc", tmp_path / "copy")
    _encoder_folder(tmp_path / "other", seed=1)
    first, copy, other = (_load(demo_bundle, tmp_path / name, cache_dir) for name in ("enc", "copy", "other"))
    assert first.identity == copy.identity != other.identity
    config = json.loads((tmp_path / "copy" / "preprocessor_config.json").read_text())
    (tmp_path / "copy" / "preprocessor_config.json").write_text(json.dumps({**config, "image_mean": [0.5] * 3}))
    assert _load(demo_bundle, tmp_path / "copy", cache_dir).identity != first.identity  # other normalisation


def test_a_diffusers_folder_gives_its_image_encoder_and_feature_extractor(demo_bundle, tmp_path, cache_dir):
    _encoder_folder(tmp_path / "model" / "image_encoder", processor=False)
    (tmp_path / "model" / "feature_extractor").mkdir()
    (tmp_path / "model" / "feature_extractor" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": MEAN, "image_std": STD}))
    encoder = _load(demo_bundle, tmp_path / "model", cache_dir)
    assert (encoder.mean, encoder.std) == (MEAN, STD)
    assert _load(demo_bundle, tmp_path / "model" / "image_encoder", cache_dir).identity == encoder.identity


def test_a_hub_id_is_read_from_the_cache_only(demo_bundle, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="some/encoder.*local cache.*--allow-download.*--image-encoder"):
        _load(demo_bundle, "some/encoder", cache_dir)
    snapshot = tmp_path / "hub" / "models--some--encoder" / "snapshots" / ("0" * 40)
    saved = _encoder_folder(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    encoder = _load(demo_bundle, "some/encoder", cache_dir)
    assert torch.equal(encoder.model.embeddings.patch_embedding.weight, saved.embeddings.patch_embedding.weight)
    assert (encoder.mean, encoder.std) == (MEAN, STD)


@pytest.mark.parametrize("case, words", [
    ("absent", ["no such file or folder", "--image-encoder"]),
    ("file", ["is a file", "--image-encoder"]),
    ("no config", ["without config.json", "--image-encoder"]),
    ("no weights", ["has no model.safetensors", "--image-encoder"]),
    ("pickle only", ["pytorch_model.bin", "--allow-pickle"]),
    ("text model", ["clip_text_model", "not a CLIP vision model", "--image-encoder"]),
    ("foreign weights", ["lacks", "weights", "--image-encoder"]),
    ("bad processor", ["preprocessor_config.json", "image_std", "--image-encoder"]),
    ("too wide", ["48 wide", "32 wide", "--image-encoder"]),
])
def test_a_missing_or_broken_encoder_is_one_sentence_naming_the_option(demo_bundle, tmp_path, cache_dir, case, words):
    folder = tmp_path / "enc"
    if case != "absent":
        _encoder_folder(folder, width=48 if case == "too wide" else 32)
    if case == "file":
        folder = folder / "model.safetensors"
    elif case == "no config":
        (folder / "config.json").unlink()
    elif case in ("no weights", "pickle only"):
        weights = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").unlink()
        if case == "pickle only":
            (folder / "pytorch_model.bin").write_bytes(weights)
    elif case == "text model":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "clip_text_model"}))
    elif case == "foreign weights":
        from safetensors.torch import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        save_file({f"other.{name}": t for name, t in tensors.items()}, folder / "model.safetensors")
    elif case == "bad processor":
        (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": [0.1, 0, 1]}))
    with pytest.raises(ModelError) as error:
        _load(demo_bundle, folder, cache_dir)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message


def test_a_pickled_encoder_holding_more_than_tensors_is_refused_in_our_words(demo_bundle, tmp_path, cache_dir):
    folder = tmp_path / "enc"
    _encoder_folder(folder)
    from safetensors.torch import load_file

    marker = tmp_path / "ran"
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**tensors, "payload": _Touch(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as error:
        _load(demo_bundle, folder, cache_dir, allow_pickle=True)
    message = str(error.value)
    assert "pytorch_model.bin" in message and "holds Python objects besides tensors" in message, message
    assert "weights_only" not in message and "\n" not in message and not marker.exists()


class _Touch:
    """Unpickling this creates a file: a stand-in for code a pickle could run."""

    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


def test_the_option_reaches_the_request():
    args = build_parser().parse_args(["edit", DEMO_PHOTO, "--target", "x", "--image-encoder", "/models/vit-b16"])
    assert request_from_args(args).image_encoder == "/models/vit-b16"
    assert request_from_args(build_parser().parse_args(["edit", DEMO_PHOTO, "--target", "x"])).image_encoder is None


STEPS, INNER = 5, 2


def _invert(engine, request):
    """Resolve, load and invert `request`; whether the mapping networks were trained, and the record."""
    events = []
    job = engine.resolve(request)
    bundle = engine.load_model(job, events.append)
    inversion = engine.invert(job, bundle, events.append, CancelToken())
    trained = any(isinstance(e, Progress) and e.stage == Stage.VALUE_MAPPING for e in events)
    engine.commit(job, bundle, inversion, engine.edit(job, bundle, inversion, events.append, CancelToken()))
    return trained, inversion, Project.open(job.project_path).find_inversion(inversion.key)


def test_another_encoder_retrains_and_a_copy_of_the_same_does_not(tmp_path, cache_dir):
    demo_folder = tmp_path / "demo-encoder"
    shutil.copytree(demo_model_dir("demo-tiny") / IMAGE_ENCODER, demo_folder)
    _encoder_folder(tmp_path / "other", seed=1, processor=False)
    engine = Engine(cache_dir)
    quick = {"steps": STEPS, "inner_steps": INNER}
    trained, first, record = _invert(engine, demo_request(tmp_path, quick, method="stylediffusion"))
    assert trained and set(record.parts) == {IMAGE_ENCODER}
    # the demo model's own encoder, named by a copy elsewhere: the same content, no training
    trained, again, _ = _invert(engine, demo_request(tmp_path, quick, method="stylediffusion",
                                                     image_encoder=str(demo_folder)))
    assert not trained and again.reused and again.key == first.key
    # another encoder: a new inversion, trained, recorded with its identity
    trained, other, other_record = _invert(engine, demo_request(tmp_path, quick, method="stylediffusion",
                                                                image_encoder=str(tmp_path / "other")))
    assert trained and not other.reused and other.key != first.key
    assert other_record.parts[IMAGE_ENCODER] != record.parts[IMAGE_ENCODER]
    assert not torch.equal(other.tensors["image_features"], first.tensors["image_features"])
    project = Project.open(tmp_path / "p.retake")
    assert project.settings.image_encoder == str(tmp_path / "other")
    # a re-edit that names none takes the project's: no training
    trained, stored, _ = _invert(engine, demo_request(tmp_path, quick, method="stylediffusion", image=None))
    assert not trained and stored.key == other.key
    # "" goes back to the model's own encoder, and the project forgets the named one
    trained, back, _ = _invert(engine, demo_request(tmp_path, quick, method="stylediffusion", image_encoder=""))
    assert not trained and back.key == first.key
    assert Project.open(tmp_path / "p.retake").settings.image_encoder is None
