"""Extra model parts some methods need beyond Stable Diffusion's five, loaded only when one runs.

A method names the parts it needs (`Method.parts`); the engine calls `with_parts` after loading the
model, which returns a new frozen `ModelBundle` with those parts added (the bundle itself is never
changed, so a run that does not need them never pays for them).

The one part today is the image encoder StyleDiffusion maps to its value inputs: a CLIP vision
transformer (ViT-B/16 in the paper), held as an `ImageEncoder`: the network, the normalisation of
its image processor config, what it was asked for as (`spec`) and its content identity (the inversion
key of a method that uses it covers it: another encoder re-trains, a copy of the same does not).
The user may name one (`--image-encoder`, the app's Settings), loaded the same ways as the diffusion
model (`pipeline.models.locate`: a folder, a Hugging Face id from the local cache, fetched only with
`--allow-download`):

* a folder holding `config.json` and `model.safetensors` of a `CLIPVisionModel`,
  `CLIPVisionModelWithProjection` or whole `CLIPModel` (its vision half is read), with its
  `preprocessor_config.json` if it has one; or a diffusers folder whose `image_encoder/` is one
  (its processor config then is `feature_extractor/preprocessor_config.json`);
* a Hugging Face id of such a folder.

Unnamed, it is looked for, in order:

1. the model's own folder: `image_encoder/` beside `unet/` (a diffusers folder, the folder of a
   cached hub id, a demo model: the demo models ship small ones, made by
   resources/demo_model/image_encoder.py); a single-file checkpoint has no such folder;
2. the paper's encoder, `openai/clip-vit-base-patch16`, in the local Hugging Face cache, fetched
   only when the user allowed downloads (`--allow-download`).

Weights are read from `model.safetensors`; a pickled `pytorch_model.bin` only with `--allow-pickle`
(read with weights_only). A checkpoint that lacks any of the vision transformer's weights is refused
(transformers would fill them with random numbers). The image is normalised with the processor
config's `image_mean` and `image_std` (OpenAI CLIP's when there is none) at the model's own input
size. Its features are those of every token after the final layer norm, before the projection
(`image_features`), as the authors take them (in fp32 here; their OpenAI CLIP runs in fp16 on a GPU).
The mapping network multiplies them into the text embedding, so the encoder's width must equal the
text encoder's (768 for SD 1.x), which is checked here. Nothing missing is silently replaced: a part
that is not found or not readable is one ModelError sentence naming what was looked for, where, and
the option that sets it.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import CLIPVisionModel

from pipeline.demo_model import DEMO_MODELS, demo_model_dir
from pipeline.errors import ModelError, shorten
from pipeline.model_limits import NOT_ONLY_TENSORS
from pipeline.models import ModelBundle, default_cache_dir, files_identity, hf_hub_cache_dir, locate, read_json_config

IMAGE_ENCODER = "image_encoder"
DEFAULT_IMAGE_ENCODER = "openai/clip-vit-base-patch16"
"""The encoder of the StyleDiffusion paper (ViT-B/16, 224 px, 197 tokens of width 768)."""
# OpenAI CLIP's input normalisation (its preprocessing and every CLIP image processor config use it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROCESSOR_CONFIG = "preprocessor_config.json"
SET_IT = ("give a CLIP vision model folder (config.json + model.safetensors) or a cached Hugging Face id with "
          "--image-encoder (in the app: Settings, Image encoder)")
_VISION_TYPES = ("clip_vision_model", "clip")
_HUB_FILES = ["config.json", "model.safetensors", PROCESSOR_CONFIG, f"{IMAGE_ENCODER}/config.json",
              f"{IMAGE_ENCODER}/model.safetensors", f"feature_extractor/{PROCESSOR_CONFIG}"]
_PICKLE = "pytorch_model.bin"


@dataclass(frozen=True)
class ImageEncoder:
    """A CLIP image encoder, frozen in float32 on the model's device, and where it came from."""

    model: CLIPVisionModel
    spec: str
    """What the user named ("": looked up beside the model, then the paper's encoder in the cache)."""
    identity: str
    """Content hash of its files (config, weights, processor config), "sha256:<hex>"."""
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


def with_parts(bundle: ModelBundle, names: tuple[str, ...], *, image_encoder: str = "",
               allow_download: bool = False, allow_pickle: bool = False,
               cache_dir: Path | None = None) -> ModelBundle:
    """`bundle` with the parts `names` added: those it lacks, or holds as another spec than asked
    (`image_encoder`: see the module doc), are loaded; the same bundle if none is."""
    specs = {IMAGE_ENCODER: image_encoder}
    stale = [name for name in names if name not in bundle.parts or bundle.parts[name].spec != specs.get(name)]
    if not stale:
        return bundle
    loaded = dict(bundle.parts)
    for name in stale:
        if name != IMAGE_ENCODER:
            raise ModelError(f"Retake does not know how to load the model part {name!r}.")
        loaded[name] = load_image_encoder(bundle, image_encoder, allow_download=allow_download,
                                          allow_pickle=allow_pickle, cache_dir=cache_dir)
    return dataclasses.replace(bundle, parts=MappingProxyType(loaded))


def part_identities(bundle: ModelBundle, names: tuple[str, ...]) -> dict[str, str]:
    """The content identity of each loaded part in `names`: what a stage's key and record add to the model's."""
    return {name: bundle.parts[name].identity for name in names}


def load_image_encoder(bundle: ModelBundle, spec: str = "", *, allow_download: bool = False,
                       allow_pickle: bool = False, cache_dir: Path | None = None) -> ImageEncoder:
    """The CLIP image encoder `spec` names, or the one found for `bundle` when it names none (see the
    module doc), frozen, in float32 on the bundle's device."""
    folder = (_named_encoder(spec, allow_download, allow_pickle) if spec.strip()
              else _default_encoder(bundle, allow_download, allow_pickle))
    encoder, files = _read_encoder(folder, allow_pickle)
    width = int(bundle.unet.config.cross_attention_dim)
    if encoder.config.hidden_size != width:
        raise ModelError(
            f"The image encoder in {shorten(folder)} is {encoder.config.hidden_size} wide but the model's text "
            f"embeddings are {width} wide; StyleDiffusion needs the two equal (CLIP ViT-B/16 for SD 1.x); {SET_IT}.")
    mean, std = _normalisation(files.get(PROCESSOR_CONFIG))
    identity = files_identity(files, default_cache_dir() if cache_dir is None else cache_dir)
    return ImageEncoder(encoder.requires_grad_(False).eval().to(bundle.device), spec, identity, mean, std)


def image_features(encoder: ImageEncoder, image: torch.Tensor) -> torch.Tensor:
    """Features [1, tokens, width] of an image [1, 3, H, W] in [-1, 1]: every token after the final
    layer norm, before the projection.

    The whole image is resized (bicubic, antialiased) to the encoder's square input and normalised
    with the encoder's image processor config, as CLIP's preprocessing does. The authors centre-crop
    their photo to a square first; Retake edits the whole photo, so its encoder sees the whole photo
    too (identical for a square one).
    """
    network = encoder.model
    side = int(network.config.image_size)
    pixels = F.interpolate(image.float(), size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    pixels = (pixels.clamp(-1, 1) + 1) / 2
    mean = torch.tensor(encoder.mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=pixels.device).view(1, 3, 1, 1)
    device = next(network.parameters()).device
    with torch.no_grad():
        hidden = network(pixel_values=((pixels - mean) / std).to(device)).last_hidden_state
        return network.post_layernorm(hidden).float()


def _named_encoder(spec: str, allow_download: bool, allow_pickle: bool) -> Path:
    """The encoder folder a user named: a folder (or a diffusers folder's image_encoder/), or a hub id."""
    try:
        found = locate(spec, allow_download=allow_download, hub_patterns=_hub_files(allow_pickle))
    except ModelError as error:
        raise ModelError(f"The image encoder was not found ({str(error).rstrip('.')}); {SET_IT}.") from None
    if (found / "config.json").is_file():
        return found
    if (found / IMAGE_ENCODER / "config.json").is_file():
        return found / IMAGE_ENCODER
    what = "a file" if found.is_file() else "a folder without config.json (nor image_encoder/config.json)"
    raise ModelError(f"The image encoder {shorten(spec)} is {what}; {SET_IT}.")


def _default_encoder(bundle: ModelBundle, allow_download: bool, allow_pickle: bool) -> Path:
    """The model folder's image_encoder/, else the paper's encoder from the Hugging Face cache."""
    own = _model_folder(bundle.spec)
    if own is not None and (own / IMAGE_ENCODER / "config.json").is_file():
        return own / IMAGE_ENCODER
    try:
        folder = locate(DEFAULT_IMAGE_ENCODER, allow_download=allow_download, hub_patterns=_hub_files(allow_pickle))
    except ModelError as error:
        if allow_download:
            raise ModelError(f"The image encoder {DEFAULT_IMAGE_ENCODER} could not be fetched "
                             f"({str(error).rstrip('.')}); {SET_IT}.") from None
        folder = None
    if folder is None or not (folder / "config.json").is_file():
        place = f"{shorten(own / IMAGE_ENCODER)} nor " if own is not None else ""
        raise ModelError(
            f"StyleDiffusion needs a CLIP image encoder, and there is none in {place}the Hugging Face cache "
            f"{shorten(hf_hub_cache_dir())} ({DEFAULT_IMAGE_ENCODER}); run once with --allow-download to fetch "
            f"it, or {SET_IT}.")
    return folder


def _hub_files(allow_pickle: bool) -> list[str]:
    """What to fetch of an encoder's hub repo: configs and safetensors, the pickle only if allowed."""
    return _HUB_FILES + ([_PICKLE, f"{IMAGE_ENCODER}/{_PICKLE}"] if allow_pickle else [])


def _model_folder(spec: str) -> Path | None:
    """The folder a model spec was loaded from (None for a single-file checkpoint or an uncached id)."""
    if spec in DEMO_MODELS:
        return demo_model_dir(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        return None  # a single file: no folder of parts beside it
    try:
        return Path(snapshot_download(spec, cache_dir=hf_hub_cache_dir(), local_files_only=True,
                                      allow_patterns=[f"{IMAGE_ENCODER}/*"]))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _read_encoder(folder: Path, allow_pickle: bool) -> tuple[CLIPVisionModel, dict[str, Path]]:
    """The vision transformer in `folder` and the files it was read from (by location-free names)."""
    safe = (folder / "model.safetensors").is_file()
    if not safe and not (allow_pickle and (folder / _PICKLE).is_file()):
        lacking = (f"has its weights only as a pickle ({_PICKLE}); pass --allow-pickle if you trust it"
                   if (folder / _PICKLE).is_file() else "has no model.safetensors")
        raise ModelError(f"The image encoder folder {shorten(folder)} {lacking}; or {SET_IT}.")
    model_type = _json(folder / "config.json").get("model_type")
    if model_type not in _VISION_TYPES:
        raise ModelError(f"The image encoder folder {shorten(folder)} holds a {shorten(str(model_type))} model, not a "
                         f"CLIP vision model; {SET_IT}.")
    try:
        encoder, info = CLIPVisionModel.from_pretrained(folder, dtype=torch.float32, use_safetensors=safe,
                                                        local_files_only=True, output_loading_info=True)
    except pickle.UnpicklingError:
        raise ModelError(f"The image encoder's {_PICKLE} in {shorten(folder)} {NOT_ONLY_TENSORS}; or "
                         f"{SET_IT}.") from None
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelError(f"The image encoder in {shorten(folder)} could not be read: {shorten(error)}; "
                         f"{SET_IT}.") from None
    missing = sorted(info["missing_keys"])
    if missing:
        raise ModelError(f"The image encoder in {shorten(folder)} lacks {len(missing)} of a CLIP vision model's "
                         f"weights, such as {missing[0]}; {SET_IT}.")
    weights = "model.safetensors" if safe else _PICKLE
    files = {"config.json": folder / "config.json", weights: folder / weights}
    processor = folder / PROCESSOR_CONFIG
    if not processor.is_file() and folder.name == IMAGE_ENCODER:  # a diffusers folder keeps it beside
        processor = folder.parent / "feature_extractor" / PROCESSOR_CONFIG
    if processor.is_file():
        files[PROCESSOR_CONFIG] = processor
    return encoder, files


def _normalisation(processor: Path | None) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The (mean, std) of an image processor config; OpenAI CLIP's without one."""
    if processor is None:
        return CLIP_MEAN, CLIP_STD
    config = _json(processor)
    pairs = [config.get(name, default) for name, default in (("image_mean", CLIP_MEAN), ("image_std", CLIP_STD))]
    if not all(isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
               for v in pairs) or not all(x > 0 for x in pairs[1]):
        raise ModelError(f"The image processor config {shorten(processor)} does not give three image_mean and "
                         f"three positive image_std values; {SET_IT}.")
    mean, std = (tuple(float(x) for x in v) for v in pairs)
    return mean, std  # type: ignore[return-value]


def _json(file: Path) -> Mapping:
    try:
        return read_json_config(file, file.parent)
    except ModelError as error:
        raise ModelError(f"The image encoder's config: {str(error).rstrip('.')}; {SET_IT}.") from None
