"""Model loading: the demo models, every kind of source, identities, and the errors a user sees.

Everything runs offline on the tiny demo model (`demo-tiny`, the fastest); one test loads `demo`, the
demo-world model. Single-file checkpoints are produced by writing the tiny demo
model back into the original CompVis key layout (`_to_original_layout`, the inverse of diffusers'
converters), so the single-file path is checked weight for weight against the diffusers path.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)
from diffusers.models.attention_processor import Attention
from transformers import CLIPTextConfig

from pipeline.demo_model import DEMO_EDIT, demo_model_dir
from pipeline.errors import ModelError
from pipeline.models import (
    SD1_CONFIG_DIR,
    SD1_SIDE,
    SD1_ORIGINAL_CONFIG,
    ModelBundle,
    cached_hub_models,
    default_cache_dir,
    describe_model_sources,
    load_model,
    native_side,
)
from pipeline.request import EditRequest, resolve

PROMPT = "a photo of a cat riding a bicycle"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may reach the network or the user's own Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def models_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("retake-cache")


TINY = "demo-tiny"


@pytest.fixture(scope="module")
def demo(models_cache) -> ModelBundle:
    """The tiny demo model: what every test here needs of *a* model, fast."""
    return load_model(TINY, cache_dir=models_cache, device="cpu")


@pytest.fixture(scope="module")
def demo_dir(demo, models_cache) -> Path:
    return demo_model_dir(TINY)


@pytest.fixture(scope="module")
def original_state(demo) -> dict[str, torch.Tensor]:
    """The demo model as an original-format (CompVis) SD 1.x state dict."""
    return _to_original_layout(demo)


@pytest.fixture(scope="module")
def single_file(original_state, models_cache) -> Path:
    path = models_cache / "tiny-sd1.safetensors"
    safetensors.torch.save_file(original_state, path)
    return path


def _copy_demo(demo_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_dir, tmp_path / "model"))


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [key for key in sa if not torch.equal(sa[key], sb[key])]
    assert not different, different[:5]


def _assert_user_message(error: ModelError, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message and message.endswith("."), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---- the demo model ------------------------------------------------------------------------------


def test_demo_loads_as_an_sd1_bundle(demo, clip_tokenizer):
    assert demo.spec == TINY
    assert demo.identity.startswith("sha256:") and len(demo.identity) == len("sha256:") + 64
    assert demo.device == torch.device("cpu") and demo.sample_dtype == torch.float32
    assert demo.vae_scale_factor == 8 and demo.latent_channels == 4
    assert 0.01 < demo.vae.config.scaling_factor < 10  # set at training so scaled latents have unit spread
    for module in (demo.unet, demo.vae, demo.text_encoder):
        assert not module.training
        assert all(p.dtype == torch.float32 and not p.requires_grad for p in module.parameters())
    config = demo.text_encoder.config
    assert (config.vocab_size, config.max_position_embeddings) == (49408, 77)
    assert demo.unet.config.cross_attention_dim == config.hidden_size
    assert demo.tokenizer(PROMPT).input_ids == clip_tokenizer(PROMPT).input_ids
    assert demo.tokenizer(PROMPT).input_ids[:3] == [49406, 320, 1125]  # SD's own token ids


def test_demo_scheduler_is_ddim_for_inversion(demo):
    scheduler = demo.scheduler
    assert isinstance(scheduler, DDIMScheduler)
    config = scheduler.config
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (config.steps_offset, config.prediction_type, config.num_train_timesteps) == (1, "epsilon", 1000)
    assert config.clip_sample is False and config.set_alpha_to_one is False
    assert scheduler.final_alpha_cumprod == scheduler.alphas_cumprod[0]


def test_scheduler_takes_the_model_schedule_and_forces_inversion_settings(demo_dir, tmp_path, models_cache):
    """A terse PNDM config gets SD 1.x's schedule, not DDIM's defaults; clipping is always off."""
    folder = _copy_demo(demo_dir, tmp_path)
    terse = {"_class_name": "PNDMScheduler", "skip_prk_steps": True, "clip_sample": True, "set_alpha_to_one": True}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(terse))
    config = load_model(str(folder), cache_dir=models_cache).scheduler.config
    schedule = (config.beta_start, config.beta_end, config.beta_schedule, config.steps_offset)
    assert schedule == (0.00085, 0.012, "scaled_linear", 1)
    assert config.clip_sample is False and config.set_alpha_to_one is False

    own = {**terse, "beta_start": 0.001, "beta_end": 0.02, "beta_schedule": "linear", "steps_offset": 0}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(own))
    config = load_model(str(folder), cache_dir=models_cache).scheduler.config
    assert (config.beta_start, config.beta_end, config.beta_schedule, config.steps_offset) == (0.001, 0.02, "linear", 0)


def test_demo_unet_attends_in_down_mid_and_up_at_three_resolutions(demo):
    """Self- (attn1) and cross-attention (attn2) in every path; record the query lengths each sees."""
    names = [name.removesuffix(".processor") for name in demo.unet.attn_processors]
    assert all(name.endswith((".attn1", ".attn2")) for name in names)
    seen: dict[tuple[str, str], set[int]] = {}
    context_lengths: set[int] = set()

    def recorder(name):
        place = name.split("_")[0]  # down / mid / up
        kind = name.rsplit(".", 1)[1]

        def hook(module, args, kwargs):
            seen.setdefault((place, kind), set()).add(args[0].shape[1])
            if kind == "attn2":
                context_lengths.add(kwargs["encoder_hidden_states"].shape[1])

        return hook

    modules = dict(demo.unet.named_modules())
    handles = [modules[name].register_forward_pre_hook(recorder(name), with_kwargs=True) for name in names]
    assert all(isinstance(modules[name], Attention) for name in names)
    try:
        with torch.no_grad():
            context = demo.text_encoder(torch.tensor([demo.tokenizer(PROMPT, padding="max_length").input_ids]))[0]
            demo.unet(torch.zeros(1, 4, 16, 16), 10, encoder_hidden_states=context)
    finally:
        for handle in handles:
            handle.remove()
    for place in ("down", "mid", "up"):
        assert seen[(place, "attn1")] == seen[(place, "attn2")]
    assert seen[("down", "attn1")] == seen[("up", "attn1")] == {256, 64, 16}  # 16x16, 8x8, 4x4 latents
    assert seen[("mid", "attn1")] == {4}
    assert context_lengths == {77}


@pytest.mark.parametrize("side", [8, 16])
def test_demo_unet_runs_at_64_and_128_pixels(demo, side):
    with torch.no_grad():
        out = demo.unet(torch.randn(2, 4, side, side), 500, encoder_hidden_states=torch.randn(2, 77, 32)).sample
        image = demo.vae.decode(torch.randn(1, 4, side, side)).sample
    assert out.shape == (2, 4, side, side)
    assert image.shape == (1, 3, 8 * side, 8 * side)


def test_demo_latents_have_sd_scale(demo):
    """As with SD, the demo photo's latents times the scaling factor have about unit spread."""
    from pipeline.images import load_image, to_tensor

    picture = to_tensor(load_image(Path(__file__).resolve().parent.parent / "resources/demo/house.png"), (64, 64))
    with torch.no_grad():
        latent = demo.vae.encode(picture).latent_dist.mean * demo.vae.config.scaling_factor
    assert 0.5 < float(latent.std()) < 2.0


@pytest.mark.parametrize("name, most_bytes", [(TINY, 16_000_000), ("demo", 45_000_000)])
def test_demo_models_are_shipped_small(name, most_bytes):
    folder = demo_model_dir(name)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors"} <= {
        p.relative_to(folder).as_posix() for p in files}
    assert sum(p.stat().st_size for p in files) < most_bytes


def test_demo_is_the_demo_world_model(demo, models_cache):
    """`demo` (the default model) is the one trained on the demo world's 128-px scenes: its folder, its
    width, a VAE that reconstructs its scene (the tiny model's gives 26 dB there), and its own image
    encoder found beside it."""
    from pipeline.images import load_image, to_tensor
    from pipeline.parts import IMAGE_ENCODER, image_features, with_parts
    from pipeline.request import DEFAULT_MODEL

    assert DEFAULT_MODEL == "demo"
    world_folder = Path(__file__).resolve().parents[1] / "resources" / "demo_world" / "weights"
    assert demo_model_dir("demo") == demo_model_dir() == world_folder
    world = load_model("demo", cache_dir=models_cache, device="cpu")
    assert world.spec == "demo" and world.identity != demo.identity
    assert world.unet.config.cross_attention_dim == world.text_encoder.config.hidden_size == 128
    picture = to_tensor(load_image(DEMO_EDIT.image), (128, 128))
    with torch.no_grad():
        decoded = world.vae.decode(world.vae.encode(picture).latent_dist.mean).sample.clamp(-1, 1)
    psnr = -10 * torch.log10(((decoded - picture) / 2).pow(2).mean())
    assert psnr > 30, psnr
    encoder = with_parts(world, (IMAGE_ENCODER,)).parts[IMAGE_ENCODER]
    assert image_features(encoder, picture).shape[-1] == 128  # the demo world's encoder, not demo-tiny's (32)


# ---- identity ------------------------------------------------------------------------------------


def test_identity_follows_content_not_location_or_timestamps(demo, demo_dir, tmp_path, models_cache):
    folder = _copy_demo(demo_dir, tmp_path)
    assert load_model(str(folder), cache_dir=models_cache).identity == demo.identity
    os.utime(folder / "unet" / "diffusion_pytorch_model.safetensors", ns=(1, 1))
    assert load_model(str(folder), cache_dir=models_cache).identity == demo.identity

    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = safetensors.torch.load_file(weights)
    state["conv_in.bias"][0] += 1
    safetensors.torch.save_file(state, weights, metadata={"format": "pt"})
    changed = load_model(str(folder), cache_dir=models_cache)
    assert changed.identity != demo.identity
    assert changed.unet.conv_in.bias[0] != demo.unet.conv_in.bias[0]


def test_identity_hashes_are_remembered(demo, demo_dir, tmp_path, monkeypatch):
    folder = _copy_demo(demo_dir, tmp_path)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for file in folder.rglob("*"):
        os.utime(file, ns=(an_hour_ago, an_hour_ago))
    cache = tmp_path / "cache"
    assert load_model(str(folder), cache_dir=cache).identity == demo.identity
    remembered = json.loads((cache / "file-hashes.json").read_text())
    weights = str((folder / "unet" / "diffusion_pytorch_model.safetensors").resolve())
    assert remembered[weights]["sha256"] == hashlib.sha256(Path(weights).read_bytes()).hexdigest()

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed a file whose hash is remembered")

    monkeypatch.setattr(hashlib, "file_digest", no_hashing)
    assert load_model(str(folder), cache_dir=cache).identity == demo.identity
    monkeypatch.undo()

    (cache / "file-hashes.json").write_text("not json")
    assert load_model(str(folder), cache_dir=cache).identity == demo.identity


# ---- diffusers folders ---------------------------------------------------------------------------


def test_folder_with_pickle_weights_needs_allow_pickle(demo, demo_dir, tmp_path, models_cache):
    folder = _copy_demo(demo_dir, tmp_path)
    unet_dir = folder / "unet"
    weights = safetensors.torch.load_file(unet_dir / "diffusion_pytorch_model.safetensors")
    torch.save(weights, unet_dir / "diffusion_pytorch_model.bin")
    (unet_dir / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError) as refused:
        load_model(str(folder), cache_dir=models_cache)
    _assert_user_message(refused.value, "unet", "--allow-pickle", str(folder))
    bundle = load_model(str(folder), cache_dir=models_cache, allow_pickle=True)
    _assert_same_weights(bundle.unet, demo.unet)
    assert bundle.identity != demo.identity


def _edit_json(file: Path, **changes) -> None:
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


def _broken_tokenizer(folder):
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "tokenizer_config.json").write_text('{"tokenizer_class": "CLIPTokenizer"}')
    (folder / "tokenizer" / "vocab.json").write_text("{ broken")


def _truncate(file: Path, size: int) -> None:
    file.write_bytes(file.read_bytes()[:size])


# How to break a copy of the demo folder, and what the refusal must say.
BROKEN_FOLDERS = {
    "v-prediction": (
        lambda f: _edit_json(f / "scheduler" / "scheduler_config.json", prediction_type="v_prediction"),
        "epsilon",
    ),
    "sd2": (lambda f: _edit_json(f / "unet" / "config.json", cross_attention_dim=1024), "Stable Diffusion 2.x"),
    "inpainting": (lambda f: _edit_json(f / "unet" / "config.json", in_channels=9), "9 input channels"),
    "sdxl": (lambda f: _edit_json(f / "model_index.json", text_encoder_2=["transformers", "CLIPTextModel"]), "XL"),
    "no-weights": (lambda f: (f / "vae" / "diffusion_pytorch_model.safetensors").unlink(), "no vae weights"),
    "no-index": (lambda f: (f / "model_index.json").unlink(), "no model_index.json"),
    "bad-json": (lambda f: (f / "unet" / "config.json").write_text("{ broken"), "not a readable JSON config"),
    "deep-json": (lambda f: (f / "unet" / "config.json").write_text("[" * 100000 + "]" * 100000),
                  "nested too deeply"),
    "bad-tokenizer": (lambda f: _broken_tokenizer(f), "Could not load"),
    "truncated": (lambda f: _truncate(f / "unet" / "diffusion_pytorch_model.safetensors", 5000),
                  "not a readable weights file"),
}


@pytest.mark.parametrize("case", BROKEN_FOLDERS)
def test_bad_folders_are_refused_clearly(demo_dir, tmp_path, models_cache, case):
    break_it, expected = BROKEN_FOLDERS[case]
    folder = _copy_demo(demo_dir, tmp_path)
    break_it(folder)
    with pytest.raises(ModelError) as refused:
        load_model(str(folder), cache_dir=models_cache)
    _assert_user_message(refused.value, expected, str(folder))


# A config value that would build a network larger (or other) than its weights, the file and key the
# refusal names, and what the weights hold.
UNFIT_CONFIGS = {
    "unet layers": ("unet", {"layers_per_block": 100000}, "layers_per_block is 100000",
                    "hold 1 (down_blocks.0.resnets)"),
    "unet layers per block": ("unet", {"layers_per_block": [1, 1, 2, 1]}, "layers_per_block is [1, 1, 2, 1]",
                              "hold 1 (down_blocks.2.resnets)"),
    "unet first width": ("unet", {"block_out_channels": [16, 32, 64, 64]}, "block_out_channels is [16, 32, 64, 64]",
                              "hold 32 (down_blocks.0.resnets.0.conv1.weight)"),
    "unet transformers": ("unet", {"transformer_layers_per_block": 5000}, "transformer_layers_per_block is 5000",
                          "down_blocks.0.attentions.0.transformer_blocks"),
    "unet blocks": ("unet", {"block_out_channels": [32, 32, 64, 64, 64]}, "gives 5 block_out_channels",
                    "hold 4 (blocks in down_blocks)"),
    "unet width": ("unet", {"block_out_channels": [32, 32, 64, 100000]}, "block_out_channels is [32, 32, 64, 100000]",
                   "down_blocks.3.resnets.0.conv1.weight"),
    "unet time width": ("unet", {"time_embedding_dim": 10 ** 9}, "time_embedding_dim is 1000000000",
                        "time_embedding.linear_1.weight"),
    "unet kernel": ("unet", {"conv_in_kernel": 99}, "conv_in_kernel is 99", "conv_in.weight"),
    "vae layers": ("vae", {"layers_per_block": 1000}, "layers_per_block is 1000", "encoder.down_blocks.0.resnets"),
    "vae blocks": ("vae", {"block_out_channels": [16, 16, 32]}, "gives 3 block_out_channels", "encoder.down_blocks"),
    "vae output": ("vae", {"out_channels": 3000}, "out_channels is 3000", "decoder.conv_out.weight"),
    "text layers": ("text_encoder", {"num_hidden_layers": 10 ** 6}, "num_hidden_layers is 1000000", "encoder.layers"),
    "text positions": ("text_encoder", {"max_position_embeddings": 10 ** 10}, "max_position_embeddings is 10000000000",
                       "embeddings.position_embedding.weight"),
    "text vocabulary": ("text_encoder", {"vocab_size": 10 ** 9}, "vocab_size is 1000000000",
                        "embeddings.token_embedding.weight"),
    "text width as text": ("text_encoder", {"intermediate_size": "huge"}, 'intermediate_size is huge',
                           "must be a positive whole number"),
}


@pytest.mark.parametrize("case", UNFIT_CONFIGS)
def test_a_config_that_does_not_fit_its_weights_is_refused_before_any_network_is_built(
        demo_dir, tmp_path, models_cache, monkeypatch, case):
    component, changes, says, holds = UNFIT_CONFIGS[case]
    folder = _copy_demo(demo_dir, tmp_path)
    _edit_json(folder / component / "config.json", **changes)
    for built in (UNet2DConditionModel, AutoencoderKL):
        monkeypatch.setattr(built, "__init__", lambda *a, **k: pytest.fail("a network was built"))
    with pytest.raises(ModelError) as refused:
        load_model(str(folder), cache_dir=models_cache)
    message = str(refused.value)
    assert message.startswith(f"'{folder / component / 'config.json'}' "), message
    assert says in message and holds in message, message
    assert "\n" not in message


def test_a_packed_token_table_bounds_the_vocabulary(tmp_path, models_cache):
    folder = tmp_path / "world"
    shutil.copytree(demo_model_dir("demo"), folder)
    _edit_json(folder / "text_encoder" / "config.json", vocab_size=10 ** 9)
    with pytest.raises(ModelError, match=r"says vocab_size is 1000000000, but its token table \(token_rows"):
        load_model(str(folder), cache_dir=models_cache)


def test_a_pickle_with_more_than_tensors_is_refused_in_our_words(demo_dir, tmp_path, models_cache):
    folder = _copy_demo(demo_dir, tmp_path)
    marker = tmp_path / "ran"
    weights = safetensors.torch.load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    torch.save({**weights, "payload": _Touch(marker)}, folder / "unet" / "diffusion_pytorch_model.bin")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError) as refused:
        load_model(str(folder), cache_dir=models_cache, allow_pickle=True)
    message = str(refused.value)
    assert "holds Python objects besides tensors" in message and "weights_only" not in message, message
    assert not marker.exists()


class _Touch:
    """Unpickling this creates a file: a stand-in for code a pickle could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


# ---- single-file checkpoints ---------------------------------------------------------------------


def test_single_file_converts_to_the_same_model(demo, demo_dir, single_file, models_cache):
    bundle = load_model(str(single_file), cache_dir=models_cache, single_file_config=demo_dir)
    for part in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(bundle, part), getattr(demo, part))
        assert all(p.dtype == torch.float32 and not p.requires_grad for p in getattr(bundle, part).parameters())
    assert bundle.tokenizer(PROMPT).input_ids == demo.tokenizer(PROMPT).input_ids
    assert isinstance(bundle.scheduler, DDIMScheduler)
    assert bundle.scheduler.config.steps_offset == 1
    assert bundle.spec == str(single_file)
    assert bundle.identity != demo.identity
    assert load_model(str(single_file), cache_dir=models_cache, single_file_config=demo_dir).identity == bundle.identity


def test_single_file_prefers_ema_weights(demo, demo_dir, original_state, tmp_path, models_cache):
    """A full training checkpoint keeps raw UNet weights under model.diffusion_model and EMA ones apart."""
    unet_prefix = "model.diffusion_model."
    full = {k: torch.zeros_like(v) if k.startswith(unet_prefix) else v for k, v in original_state.items()}
    # The original code names EMA weights by their UNet key with the dots taken out.
    ema = {
        "model_ema." + key[len("model.") :].replace(".", ""): value
        for key, value in original_state.items()
        if key.startswith(unet_prefix)
    }
    checkpoint = _write(tmp_path / "full.safetensors", {**full, **ema})
    bundle = load_model(str(checkpoint), cache_dir=models_cache, single_file_config=demo_dir)
    _assert_same_weights(bundle.unet, demo.unet)


def test_single_file_uses_real_sd1_configs_by_default(single_file, models_cache):
    with pytest.raises(ModelError) as refused:
        load_model(str(single_file), cache_dir=models_cache)
    _assert_user_message(refused.value, "not a Stable Diffusion 1.x checkpoint", str(SD1_CONFIG_DIR))


class _Payload:
    """Pickles into a call that creates a file: proof of whether loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_checkpoints_need_allow_pickle_and_never_run_code(
    demo, demo_dir, original_state, tmp_path, models_cache
):
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": original_state, "global_step": 7}, ckpt)
    with pytest.raises(ModelError) as refused:
        load_model(str(ckpt), cache_dir=models_cache, single_file_config=demo_dir)
    _assert_user_message(refused.value, "pickle", "--allow-pickle", str(ckpt))

    bundle = load_model(str(ckpt), cache_dir=models_cache, single_file_config=demo_dir, allow_pickle=True)
    _assert_same_weights(bundle.unet, demo.unet)

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": original_state, "callback": _Payload(marker)}, hostile)
    with pytest.raises(ModelError) as refused:
        load_model(str(hostile), cache_dir=models_cache, single_file_config=demo_dir, allow_pickle=True)
    assert not marker.exists()
    _assert_user_message(refused.value, "will not unpickle", str(hostile))


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    safetensors.torch.save_file(tensors, path)
    return path


def _without(state: dict[str, torch.Tensor], test) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if not test(key)}


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


XL_KEY = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
SD2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"

# How to make a bad model file in folder d, from the tiny checkpoint file (sf) or its state dict (st),
# and what the refusal must say.
BAD_FILES = {
    "missing": (lambda d, sf, st: d / "nothing-here.safetensors", "no such file or folder"),
    "empty-folder": (lambda d, sf, st: d, "no model_index.json"),
    "truncated": (
        lambda d, sf, st: _bytes(d / "half.safetensors", sf.read_bytes()[:20000]),
        "not a readable safetensors",
    ),
    "junk": (lambda d, sf, st: _bytes(d / "junk.safetensors", b"not a model at all"), "not a readable safetensors"),
    "text-file": (lambda d, sf, st: _text(d / "notes.txt", "hello"), "not a model file"),
    "sdxl": (lambda d, sf, st: _write(d / "xl.safetensors", {XL_KEY: torch.zeros(4)}), "Stable Diffusion XL"),
    "sd2": (lambda d, sf, st: _write(d / "v2.safetensors", {SD2_KEY: torch.zeros(320, 1024)}), "Stable Diffusion 2.x"),
    "lora": (
        lambda d, sf, st: _write(d / "lora.safetensors", {"lora_unet_down_blocks_0.alpha": torch.zeros(1)}),
        "not a Stable Diffusion checkpoint",
    ),
    "no-vae": (
        lambda d, sf, st: _write(d / "novae.safetensors", _without(st, lambda k: k.startswith("first_stage_model."))),
        "lacks the VAE",
    ),
    "missing-unet-weight": (
        lambda d, sf, st: _write(
            d / "nounet.safetensors", _without(st, lambda k: k == "model.diffusion_model.out.2.bias")
        ),
        "UNet weights are missing",
    ),
    "missing-text-weight": (
        lambda d, sf, st: _write(d / "notext.safetensors", _without(st, lambda k: k.endswith("final_layer_norm.bias"))),
        "text encoder weights are missing",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_refused_clearly(tmp_path, demo_dir, single_file, original_state, models_cache, case):
    make, expected = BAD_FILES[case]
    (tmp_path / "work").mkdir()
    target = make(tmp_path / "work", single_file, original_state)
    with pytest.raises(ModelError) as refused:
        load_model(str(target), cache_dir=models_cache, single_file_config=demo_dir)
    _assert_user_message(refused.value, expected, str(target))


def test_v_prediction_yaml_beside_a_checkpoint_is_refused(single_file, demo_dir, tmp_path, models_cache):
    checkpoint = Path(shutil.copy(single_file, tmp_path / "vpred.safetensors"))
    (tmp_path / "vpred.yaml").write_text("model:\n  params:\n    parameterization: v\n")
    with pytest.raises(ModelError) as refused:
        load_model(str(checkpoint), cache_dir=models_cache, single_file_config=demo_dir)
    _assert_user_message(refused.value, "v-prediction", "epsilon")


# ---- Hugging Face ids ----------------------------------------------------------------------------


def test_hub_id_missing_from_the_cache_says_where_it_looked(tmp_path, models_cache):
    with pytest.raises(ModelError) as refused:
        load_model("CompVis/stable-diffusion-v1-4", cache_dir=models_cache)
    _assert_user_message(refused.value, "CompVis/stable-diffusion-v1-4", str(tmp_path / "hf-cache"), "--allow-download")


def _install_in_hub_cache(folder: Path, hub_cache: Path, repo_id: str) -> None:
    """Lay `folder` out the way huggingface_hub caches a snapshot: blobs, symlinked from snapshots/."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / revision / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_hub_id_in_the_cache_loads_offline(demo, demo_dir, tmp_path, models_cache):
    hub_cache = tmp_path / "hf-cache"
    _install_in_hub_cache(demo_dir, hub_cache, "retake-tests/tiny-sd")
    bundle = load_model("retake-tests/tiny-sd", cache_dir=models_cache)
    assert bundle.spec == "retake-tests/tiny-sd"
    assert bundle.identity == demo.identity
    _assert_same_weights(bundle.unet, demo.unet)
    assert cached_hub_models() == ["retake-tests/tiny-sd"]
    lines = describe_model_sources(models_cache)
    assert any("retake-tests/tiny-sd" in line and str(hub_cache) in line for line in lines)


# ---- device, precision, places -------------------------------------------------------------------


def test_precision_and_device_requests(models_cache, demo):
    with pytest.raises(ModelError) as refused:
        load_model(TINY, cache_dir=models_cache, device="cpu", dtype="fp16")
    _assert_user_message(refused.value, "fp16", "CPU")
    with pytest.raises(ModelError):
        load_model(TINY, cache_dir=models_cache, dtype="fp8")
    with pytest.raises(ModelError):
        load_model(TINY, cache_dir=models_cache, device="abacus")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError) as refused:
            load_model(TINY, cache_dir=models_cache, device="cuda")
        _assert_user_message(refused.value, "CUDA")
    bundle = load_model(TINY, cache_dir=models_cache, device="cpu", dtype="bf16")
    assert bundle.sample_dtype == torch.bfloat16
    assert next(bundle.unet.parameters()).dtype == torch.float32
    assert bundle.identity == demo.identity


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RETAKE_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("RETAKE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "retake"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "retake"


def test_describe_model_sources_names_every_place(tmp_path):
    lines = describe_model_sources(tmp_path / "retake")
    text = "\n".join(lines)
    assert str(tmp_path / "hf-cache") in text and str(tmp_path / "retake") in text and str(SD1_CONFIG_DIR) in text
    assert str(demo_model_dir("demo")) in text and str(demo_model_dir(TINY)) in text


# ---- the shipped SD 1.x configs ------------------------------------------------------------------


def test_shipped_configs_match_the_original_sd1_config():
    """The hand-written diffusers configs say what diffusers itself derives from v1-inference.yaml."""
    original = yaml.safe_load(SD1_ORIGINAL_CONFIG.read_text())
    unet = _with_defaults(UNet2DConditionModel, UNet2DConditionModel.load_config(SD1_CONFIG_DIR, subfolder="unet"))
    for key, value in create_unet_diffusers_config_from_ldm(original, {}).items():
        assert unet[key] == (list(value) if isinstance(value, tuple) else value), key
    vae = _with_defaults(AutoencoderKL, AutoencoderKL.load_config(SD1_CONFIG_DIR, subfolder="vae"))
    for key, value in create_vae_diffusers_config_from_ldm(original, {}).items():
        if key != "sample_size":  # a default resolution hint, 256 in the yaml and 512 in SD 1.5's config
            assert vae[key] == value, key
    assert original["model"]["params"]["linear_start"] == 0.00085 and original["model"]["params"]["linear_end"] == 0.012

    text = CLIPTextConfig.from_pretrained(SD1_CONFIG_DIR, subfolder="text_encoder")
    shape = (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size)
    assert shape == (768, 12, 12, 3072)
    vocabulary = (text.vocab_size, text.max_position_embeddings, text.hidden_act, text.projection_dim)
    assert vocabulary == (49408, 77, "quick_gelu", 768)
    assert unet["cross_attention_dim"] == text.hidden_size

    scheduler = json.loads((SD1_CONFIG_DIR / "scheduler" / "scheduler_config.json").read_text())
    schedule = (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"])
    assert schedule == (0.00085, 0.012, "scaled_linear")
    assert (scheduler["steps_offset"], scheduler["clip_sample"], scheduler["set_alpha_to_one"]) == (1, False, False)


def _with_defaults(cls, config: dict) -> dict:
    """`config` completed with the class's constructor defaults, as the model would be built."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **config}


def _to_original_layout(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    """Write a diffusers SD 1.x model back as an original CompVis checkpoint state dict.

    Test-only inverse of diffusers' single-file converters (convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint), for any layers_per_block.
    """
    state: dict[str, torch.Tensor] = {}
    state.update(_unet_to_original(bundle.unet.state_dict(), bundle.unet.config))
    state.update(_vae_to_original(bundle.vae.state_dict(), len(bundle.vae.config.block_out_channels)))
    text = bundle.text_encoder.state_dict()
    state.update({f"cond_stage_model.transformer.text_model.{key}": value for key, value in text.items()})
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def _rename(state: dict[str, torch.Tensor], prefixes: dict[str, str], tail) -> dict[str, torch.Tensor]:
    """Replace each key's longest matching prefix by its original-layout name; `tail` renames the rest.

    `tail(diffusers_prefix, rest, value)` returns the renamed rest and the (reshaped) value.
    """
    renamed = {}
    for key, value in state.items():
        prefix = max((p for p in prefixes if key.startswith(p)), key=len, default="")
        rest, value = tail(prefix, key[len(prefix):], value)
        renamed[prefixes.get(prefix, prefix) + rest] = value
    return renamed


def _unet_to_original(state, config) -> dict[str, torch.Tensor]:
    per_block = config["layers_per_block"] + 1
    prefixes = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i, up_type in enumerate(config["up_block_types"]):
        for j in range(per_block - 1):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{per_block * i + j + 1}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{per_block * i + j + 1}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{per_block * (i + 1)}.0.op."
        for j in range(per_block):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{per_block * i + j}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{per_block * i + j}.1."
        upsampler = 2 if up_type.startswith("CrossAttn") else 1
        prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{per_block * i + per_block - 1}.{upsampler}."
    resnet = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "norm2.": "out_layers.0.",
              "conv2.": "out_layers.3.", "time_emb_proj.": "emb_layers.1.", "conv_shortcut.": "skip_connection."}

    def tail(prefix, rest, value):
        if ".resnets." in prefix:
            old = next(o for o in resnet if rest.startswith(o))
            rest = resnet[old] + rest[len(old):]
        return rest, value

    return {f"model.diffusion_model.{k}": v for k, v in _rename(state, prefixes, tail).items()}


def _vae_to_original(state, levels: int) -> dict[str, torch.Tensor]:
    prefixes = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for side in ("encoder", "decoder"):
        prefixes[f"{side}.mid_block.resnets.0."] = f"{side}.mid.block_1."
        prefixes[f"{side}.mid_block.resnets.1."] = f"{side}.mid.block_2."
        prefixes[f"{side}.mid_block.attentions.0."] = f"{side}.mid.attn_1."
    for i in range(levels):
        prefixes[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        prefixes[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{levels - 1 - i}.block."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{levels - 1 - i}.upsample."
    attention = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}

    def tail(prefix, rest, value):
        rest = rest.replace("conv_shortcut.", "nin_shortcut.")
        if ".attentions." in prefix:
            old = next(o for o in attention if rest.startswith(o))
            rest = attention[old] + rest[len(old):]
            if value.ndim == 2:
                value = value[:, :, None, None]  # the original stores these projections as 1x1 convolutions
        return rest, value

    return {f"first_stage_model.{k}": v for k, v in _rename(state, prefixes, tail).items()}


def test_a_model_works_at_the_size_it_was_trained_at(demo_dir, single_file, tmp_path):
    assert (native_side("demo"), native_side("demo-tiny"), native_side(str(single_file))) == (128, 64, SD1_SIDE)
    folder = _copy_demo(demo_dir, tmp_path)
    config_file = folder / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "sample_size": 96}))  # a fine-tune trained at 768 px
    assert native_side(str(folder)) == 768
    config_file.write_text(json.dumps({**config, "sample_size": 5}))  # 40 px: no side Retake can work at
    assert native_side(str(folder)) == SD1_SIDE
    config_file.unlink()
    assert native_side(str(folder)) == SD1_SIDE == native_side(str(tmp_path / "nothing"))

    def side(**given) -> int:
        request = EditRequest(target_prompt=DEMO_EDIT.target, image=str(DEMO_EDIT.image), source_prompt=DEMO_EDIT.source,
                              project=str(tmp_path / "p.retake"), **given)
        return resolve(request).max_side

    assert side() == 128  # the default model is the demo-world one
    assert side(model="demo-tiny") == 64 and side(model="demo", max_side=256) == 256
