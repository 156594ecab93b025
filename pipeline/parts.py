"""Extra model parts some methods need beyond Stable Diffusion's five, loaded only when one runs.

A method names the parts it needs (`Method.parts`); the engine calls `with_parts` after loading the
model, which returns a new frozen `ModelBundle` with those parts added (the bundle itself is never
changed, so a run that does not need them never pays for them).

The one part today is the image encoder StyleDiffusion maps to its value inputs: a CLIP vision
transformer (`transformers.CLIPVisionModel`; ViT-B/16 in the paper). It is looked for, in order:

1. the model's own folder: `image_encoder/` beside `unet/` (a diffusers folder, the folder of a
   cached hub id, a demo model: the demo models ship small ones, made by
   resources/demo_model/image_encoder.py);
2. the paper's encoder, `openai/clip-vit-base-patch16`, in the local Hugging Face cache, fetched
   only when the user allowed downloads (`--allow-download`).

Weights are read from `model.safetensors`; a pickled `pytorch_model.bin` only with `--allow-pickle`
(read with weights_only). Its features are those of every token after the final layer norm,
before the projection (`image_features`), as the authors take them (in fp32 here; their OpenAI CLIP
runs in fp16 on a GPU). The mapping network multiplies them into the text embedding, so the
encoder's width must equal the text encoder's (768 for SD 1.x), which is checked here. Nothing missing is silently replaced: a part
that is not found is one ModelError sentence naming what was looked for and where.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import CLIPVisionModel

from pipeline.demo_model import DEMO_MODELS, demo_model_dir
from pipeline.errors import ModelError, shorten
from pipeline.models import ModelBundle, hf_hub_cache_dir

IMAGE_ENCODER = "image_encoder"
DEFAULT_IMAGE_ENCODER = "openai/clip-vit-base-patch16"
"""The encoder of the StyleDiffusion paper (ViT-B/16, 224 px, 197 tokens of width 768)."""
# OpenAI CLIP's input normalisation (its preprocessing and every CLIP image processor config use it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HUB_FILES = ["config.json", "model.safetensors", "pytorch_model.bin"]


def with_parts(bundle: ModelBundle, names: tuple[str, ...], *, allow_download: bool = False,
               allow_pickle: bool = False) -> ModelBundle:
    """`bundle` with the parts `names` added (those it lacks are loaded); the same bundle if none lacks."""
    missing = [name for name in names if name not in bundle.parts]
    if not missing:
        return bundle
    loaded = dict(bundle.parts)
    for name in missing:
        if name != IMAGE_ENCODER:
            raise ModelError(f"Retake does not know how to load the model part {name!r}.")
        loaded[name] = load_image_encoder(bundle, allow_download=allow_download, allow_pickle=allow_pickle)
    return dataclasses.replace(bundle, parts=MappingProxyType(loaded))


def load_image_encoder(bundle: ModelBundle, *, allow_download: bool = False,
                       allow_pickle: bool = False) -> CLIPVisionModel:
    """The CLIP image encoder for `bundle` (see the module doc for where it is looked for), frozen,
    in float32 on the bundle's device."""
    own = _model_folder(bundle.spec)
    folder = own / IMAGE_ENCODER if own is not None and (own / IMAGE_ENCODER / "config.json").is_file() else None
    if folder is None:
        folder = _cached_hub_encoder(allow_download)
    if folder is None:
        place = f"{shorten(own / IMAGE_ENCODER)} nor " if own is not None else ""
        raise ModelError(
            f"StyleDiffusion needs a CLIP image encoder, and there is none in {place}the Hugging Face cache "
            f"{shorten(hf_hub_cache_dir())} ({DEFAULT_IMAGE_ENCODER}); run once with --allow-download to fetch "
            f"it, or put a CLIPVisionModel folder at image_encoder/ in the model folder.")
    encoder = _read_encoder(folder, allow_pickle)
    width = int(bundle.unet.config.cross_attention_dim)
    if encoder.config.hidden_size != width:
        raise ModelError(
            f"The image encoder in {shorten(folder)} is {encoder.config.hidden_size} wide but the model's text "
            f"embeddings are {width} wide; StyleDiffusion needs the two equal (CLIP ViT-B/16 for SD 1.x).")
    return encoder.requires_grad_(False).eval().to(bundle.device)


def image_features(encoder: CLIPVisionModel, image: torch.Tensor) -> torch.Tensor:
    """Features [1, tokens, width] of an image [1, 3, H, W] in [-1, 1]: every token after the final
    layer norm, before the projection.

    The whole image is resized (bicubic, antialiased) to the encoder's square input and normalised
    as CLIP's preprocessing does. The authors centre-crop their photo to a square first; Retake edits
    the whole photo, so its encoder sees the whole photo too (identical for a square one).
    """
    side = int(encoder.config.image_size)
    pixels = F.interpolate(image.float(), size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    pixels = (pixels.clamp(-1, 1) + 1) / 2
    mean = torch.tensor(CLIP_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=pixels.device).view(1, 3, 1, 1)
    device = next(encoder.parameters()).device
    with torch.no_grad():
        hidden = encoder(pixel_values=((pixels - mean) / std).to(device)).last_hidden_state
        return encoder.post_layernorm(hidden).float()


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


def _cached_hub_encoder(allow_download: bool) -> Path | None:
    """The paper's encoder in the Hugging Face cache (fetched only if allowed), or None."""
    try:
        folder = Path(snapshot_download(DEFAULT_IMAGE_ENCODER, cache_dir=hf_hub_cache_dir(),
                                        local_files_only=not allow_download, allow_patterns=_HUB_FILES))
    except LocalEntryNotFoundError:
        if allow_download:
            raise ModelError(f"Could not download {DEFAULT_IMAGE_ENCODER} from the Hugging Face Hub.") from None
        return None
    except (OSError, ValueError) as error:
        raise ModelError(f"Could not fetch {DEFAULT_IMAGE_ENCODER} from the Hugging Face Hub: {error}.") from None
    return folder if (folder / "config.json").is_file() else None


def _read_encoder(folder: Path, allow_pickle: bool) -> CLIPVisionModel:
    safe = (folder / "model.safetensors").is_file()
    if not safe and not (allow_pickle and (folder / "pytorch_model.bin").is_file()):
        lacking = "has its weights only as a pickle (pytorch_model.bin); pass --allow-pickle if you trust it" if (
            folder / "pytorch_model.bin").is_file() else "has no model.safetensors"
        raise ModelError(f"The image encoder folder {shorten(folder)} {lacking}.")
    try:
        return CLIPVisionModel.from_pretrained(folder, dtype=torch.float32, use_safetensors=safe, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelError(f"The image encoder in {shorten(folder)} could not be read: {error}.") from None
