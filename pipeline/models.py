"""Finding, checking and loading Stable Diffusion 1.x models, offline.

Retake edits photos with Stable Diffusion 1.x (1.4, 1.5 and their fine-tunes) and nothing else: its
inversion and attention control are written against SD 1.x's UNet, VAE, CLIP text encoder and noise
schedule. This module turns what the user typed -- a model folder, a checkpoint file, a Hugging Face
id or the word `demo` -- into a `ModelBundle` of those five parts, or into one `ModelError` sentence
that says what is wrong and what to do about it. It never touches the network unless asked to
(`allow_download`), and never unpickles a file unless asked to (`allow_pickle`).

Where models come from:

* a diffusers folder (`model_index.json` with unet/, vae/, text_encoder/, tokenizer/, scheduler/):
  each part is loaded with its class's `from_pretrained`, safetensors preferred;
* a Hugging Face id (`runwayml/stable-diffusion-v1-5`): the snapshot already in the local Hugging
  Face cache, which is then an ordinary diffusers folder;
* a single-file checkpoint in the original CompVis layout (`.safetensors`; `.ckpt`/`.pt`/`.bin`
  only with `allow_pickle`): converted by diffusers' single-file loaders, using the SD 1.x configs
  shipped in `resources/configs/sd-v1` so that conversion needs nothing from the Hub;
* `demo` and `demo-tiny`: the small trained models with SD 1.x's architecture that ship in
  resources/demo_world (the default) and resources/demo_model (the tests'), see `pipeline.demo_model`;
  loaded as diffusers folders like any other, but for a packed token table (`pipeline.token_table`).

Precision: the weights are held in float32 on the device, because optimisation (null-text
inversion) needs float32 gradients and activations; `ModelBundle.sample_dtype` is the precision the
engine samples in, under autocast (float16 on CUDA, float32 on the CPU). That choice belongs to the
engine: the bundle only records it.

Identity: every bundle carries a content hash of the files it was built from, so projects can tell
whether they are being reopened with the same model. Hashing a 4 GB checkpoint takes seconds, so
file hashes are remembered in a small JSON file in the Retake cache folder, keyed by the file's
absolute path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import safetensors
import safetensors.torch
import torch
import yaml
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm, infer_diffusers_model_type
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from transformers import CLIPTextModel, CLIPTokenizer

from pipeline.control.processor import install as install_controlled_attention
from pipeline.demo_model import DEMO_MODELS, demo_model_dir
from pipeline.errors import ModelError, OutOfMemoryError, ParamError
from pipeline.model_limits import NOT_ONLY_TENSORS, check_configs_fit_weights
from pipeline.paths import RESOURCES
from pipeline.preflight import check_max_side
from pipeline.token_table import ROWS_FILE, is_packed, load_packed_text_encoder
from pipeline.tokenizer import BPE_FILE, load_clip_tokenizer

_RESOURCES = RESOURCES / "configs"
SD1_CONFIG_DIR = _RESOURCES / "sd-v1"
"""Diffusers-format configs (no weights) of SD 1.x, used to convert single-file checkpoints."""
SD1_ORIGINAL_CONFIG = _RESOURCES / "v1-inference.yaml"
"""SD 1.x's original CompVis config; the reference the configs in SD1_CONFIG_DIR are checked against."""

DEMO_SPEC = "demo"
SD1_SIDE = 512
"""The side Stable Diffusion 1.x was trained at (its UNet's sample_size, 64 latents, times 8)."""
SAMPLE_DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
)

_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_HASH_CACHE_FILE = "file-hashes.json"
_IDENTITY_FORMAT = b"retake-model-identity-v1\n"
# A file changed less than this long ago may change again within the same timestamp tick on coarse
# filesystems, so its hash is not remembered (git's "racily clean" rule).
_RACY_NS = 2_000_000_000

# SD 1.x's noise schedule, for scheduler configs that leave it out (DDIMScheduler's own defaults differ).
_SD1_SCHEDULE = MappingProxyType(
    {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
)
# Key prefixes of the three networks in an original-format SD 1.x checkpoint.
_LDM_PREFIXES = MappingProxyType(
    {"UNet": "model.diffusion_model.", "VAE": "first_stage_model.", "text encoder": "cond_stage_model.transformer."}
)
# What diffusers' checkpoint sniffing (infer_diffusers_model_type) calls models Retake cannot use.
_FOREIGN_CHECKPOINTS = MappingProxyType({
    "v2": "a Stable Diffusion 2.x checkpoint",
    "inpainting_v2": "a Stable Diffusion 2.x inpainting checkpoint",
    "inpainting": "an inpainting checkpoint (its UNet takes 9 input channels, not 4)",
    "instruct-pix2pix": "an InstructPix2Pix checkpoint",
    "xl_base": "a Stable Diffusion XL checkpoint",
    "xl_refiner": "a Stable Diffusion XL refiner checkpoint",
    "xl_inpaint": "a Stable Diffusion XL inpainting checkpoint",
    "playground-v2-5": "a Playground v2.5 checkpoint",
    "upscale": "a Stable Diffusion upscaler checkpoint",
    "controlnet": "a ControlNet, not a full model",
})
_SUPPORTED = "Retake supports Stable Diffusion 1.x models only"
# What diffusers, transformers, safetensors and torch raise when a model's files are bad.
_LIBRARY_FAILURES = (
    OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError, safetensors.SafetensorError
)
# The component configs of an SD 1.x model, relative to its folder (or to a single-file config folder).
_CONFIG_FILES = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json")
_Module = TypeVar("_Module", bound=torch.nn.Module)


@dataclass(frozen=True)
class ModelBundle:
    """The five parts of a Stable Diffusion 1.x model, ready for the engine; never changed by a run.

    All networks are in eval mode with gradients off, in float32 on `device`; the engine runs them
    under autocast to `sample_dtype` when sampling and in float32 when optimising. The scheduler is
    a DDIMScheduler on the model's own noise schedule (see `load_model`). Every attention layer of
    the UNet carries a `ControlledProcessor` from loading on; runs pass their controllers with each
    call, so no run changes the bundle.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    spec: str
    """What the user asked for, as given: a path, a hub id or "demo"."""
    identity: str
    """Content hash of the model files, "sha256:<hex>"."""
    device: torch.device
    sample_dtype: torch.dtype
    parts: Mapping[str, Any] = field(default_factory=dict)
    """Extra model parts some methods need (e.g. "image_encoder"), by name."""
    sampling_unet: UNet2DConditionModel | None = None
    """A copy of `unet` with its matrix weights held in `sample_dtype`, for the fast path's calls without
    gradients (pipeline.held_weights); None until the fast path first asks for it."""

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for SD 1.x)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the latent image (4 for SD 1.x)."""
        return int(self.vae.config.latent_channels)


@dataclass
class _Parts:
    """Networks and scheduler config as loaded, before checks, placement and hashing."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: Mapping[str, Any]
    files: dict[str, Path]
    """Files the model was read from, by a name that does not depend on where they are stored."""


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Retake's cache folder: $RETAKE_CACHE_DIR, else $XDG_CACHE_HOME/retake, else ~/.cache/retake."""
    if explicit := os.environ.get("RETAKE_CACHE_DIR"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "retake"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (as huggingface_hub does at import)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if value := os.environ.get(variable):
            return Path(os.path.expandvars(value)).expanduser()
    if hf_home := os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(hf_home)).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def cached_hub_models(hub_cache: Path | None = None) -> list[str]:
    """Ids of the diffusers models present in the Hugging Face cache (any snapshot with a model_index.json)."""
    hub_cache = hf_hub_cache_dir() if hub_cache is None else Path(hub_cache)
    found = []
    for repo in sorted(hub_cache.glob("models--*--*")):
        if any(repo.glob("snapshots/*/model_index.json")):
            found.append(repo.name.removeprefix("models--").replace("--", "/", 1))
    return found


def describe_model_sources(cache_dir: Path | None = None) -> list[str]:
    """One line per place models are looked for or kept, for `retake info`."""
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    hub_cache = hf_hub_cache_dir()
    hub_models = ", ".join(cached_hub_models(hub_cache)) or "no diffusers models"
    return [
        "Model folders and checkpoint files: any path you give (a diffusers folder, or a .safetensors file).",
        f"Hugging Face ids: the local Hugging Face cache {hub_cache} ({hub_models}); "
        "nothing is downloaded without --allow-download.",
        f"Single-file checkpoints are converted with the Stable Diffusion 1.x configs in {SD1_CONFIG_DIR}.",
        f"The demo models: demo {demo_model_dir('demo')}, demo-tiny {demo_model_dir('demo-tiny')}.",
        f"Retake cache: {cache_dir} (remembered file hashes).",
    ]


def load_model(
    spec: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    allow_download: bool = False,
    allow_pickle: bool = False,
    cache_dir: Path | None = None,
    single_file_config: Path | None = None,
) -> ModelBundle:
    """Load the Stable Diffusion 1.x model `spec` names, or raise a ModelError saying why not.

    spec: a diffusers model folder, a single-file checkpoint, a Hugging Face id found in the local
        Hugging Face cache, or a shipped demo model's name ("demo", "demo-tiny"; the word wins
        over a folder of that name: write ./demo).
    device: "cpu", "cuda", "cuda:1", ...; default CUDA when available, else the CPU.
    dtype: sampling precision "fp16", "bf16" or "fp32"; default fp16 on CUDA, fp32 elsewhere.
    allow_download: fetch a Hugging Face id that is not cached (the --allow-download flag).
    allow_pickle: read pickle files (.ckpt, .pt, .bin), with torch.load(weights_only=True) (the
        --allow-pickle flag). Pickles can run code when loaded; safetensors files cannot.
    cache_dir: Retake's cache folder (demo model, file hashes); default `default_cache_dir()`.
    single_file_config: diffusers-format config folder used to convert a single-file checkpoint;
        default the shipped SD 1.x configs.

    The scheduler is always a DDIMScheduler, on the model's own noise schedule (betas, schedule
    type and steps_offset from its scheduler config, SD 1.x's values where the config is silent)
    with clip_sample and set_alpha_to_one off, as inversion needs. Models that predict anything
    but the noise (v-prediction) are refused.

    Raises ModelError for anything wrong with the model or the request, and OutOfMemoryError when
    the weights do not fit on the device.
    """
    target = resolve_device(device)
    sample_dtype = _resolve_sample_dtype(dtype, target)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)

    parts = _read_parts(
        spec,
        allow_download=allow_download,
        allow_pickle=allow_pickle,
        cache_dir=cache_dir,
        single_file_config=SD1_CONFIG_DIR if single_file_config is None else Path(single_file_config),
    )
    scheduler = _ddim_scheduler(parts.scheduler_config, spec)
    with _library_errors(f"'{spec}'"):  # a file vanishing or unreadable while it is hashed
        identity = files_identity(parts.files, cache_dir)
    _place((parts.unet, parts.vae, parts.text_encoder), target)
    install_controlled_attention(parts.unet)
    return ModelBundle(
        unet=parts.unet,
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        scheduler=scheduler,
        spec=spec,
        identity=identity,
        device=target,
        sample_dtype=sample_dtype,
    )


def model_identity(spec: str, *, allow_download: bool = False, allow_pickle: bool = False,
                   cache_dir: Path | None = None) -> str:
    """The identity `load_model(spec)` gives its bundle, from the model's files alone: found and checked as
    `load_model` finds them, and hashed, but no weight is read into a network (a batch keys its finished
    photos on it before any worker has loaded the model). ModelError, as `load_model`, when they are not
    there; a checkpoint whose weights are wrong inside is only found out by loading it."""
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    location = _model_location(spec, allow_download=allow_download)
    if location.is_dir():
        files = _folder_layout(location, allow_pickle=allow_pickle).files
    else:
        _check_checkpoint_kind(location, allow_pickle=allow_pickle)
        files = _single_file_files(location, SD1_CONFIG_DIR)
    with _library_errors(f"'{spec}'"):
        return files_identity(files, cache_dir)


# --------------------------------------------------------------------------------------------------
# Device and precision
# --------------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    """The torch device `device` names (None: CUDA when there is a GPU, else the CPU); ModelError says
    why a named one cannot be used. Shared by every model Retake loads (the diffusion model, SAM)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"Unknown device '{device}'; use cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"Device '{device}' was requested but this PyTorch has no CUDA GPU available.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelError(
                f"Device '{device}' was requested but only {torch.cuda.device_count()} CUDA GPU(s) are available."
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"Device '{device}' was requested but Apple's MPS backend is not available here.")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"Unknown device '{device}'; use cpu, cuda or cuda:N.")
    return resolved


def _resolve_sample_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    resolved = SAMPLE_DTYPES.get(dtype.lower())
    if resolved is None:
        raise ModelError(f"Unknown precision '{dtype}'; use fp16, bf16 or fp32.")
    if resolved == torch.float16 and device.type == "cpu":
        raise ModelError("Half precision (fp16) is not usable on the CPU; use fp32 or bf16 there, or run on a GPU.")
    if resolved == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelError("This GPU does not support bf16; use fp16 or fp32.")
    return resolved


def _place(modules: tuple[torch.nn.Module, ...], device: torch.device) -> None:
    """Freeze `modules` and move them, in float32, to `device`."""
    for module in modules:
        module.requires_grad_(False)
        module.eval()
        module.float()  # converters may hand back the checkpoint's own precision
    try:
        for module in modules:
            module.to(device)
    except torch.OutOfMemoryError:
        size = sum(p.numel() * p.element_size() for module in modules for p in module.parameters()) / 2**30
        raise OutOfMemoryError(
            f"The model needs {size:.1f} GB of memory on {device} (Retake keeps its weights in float32) and "
            "does not fit; close other programs using the GPU and try again."
        ) from None


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def _read_parts(
    spec: str, *, allow_download: bool, allow_pickle: bool, cache_dir: Path, single_file_config: Path
) -> _Parts:
    """Dispatch on what `spec` is and load the parts in float32 on the CPU."""
    location = _model_location(spec, allow_download=allow_download)
    if location.is_dir():
        return _read_diffusers_folder(location, allow_pickle=allow_pickle)
    return _read_single_file(location, config_dir=single_file_config, allow_pickle=allow_pickle)


def _model_location(spec: str, *, allow_download: bool) -> Path:
    """The folder or file a model spec names (a demo model's name wins over a folder of that name)."""
    if not spec.strip():
        raise ModelError("No model was given; name a model folder, a checkpoint file, a Hugging Face id or demo.")
    if spec in DEMO_MODELS:
        return demo_model_dir(spec)
    return locate(spec, allow_download=allow_download, hub_patterns=_hub_patterns())


def locate(spec: str, *, allow_download: bool, hub_patterns: list[str]) -> Path:
    """The file or folder `spec` names: a path as given, else the folder of a Hugging Face id in the local
    cache (fetching the files matching `hub_patterns` only if `allow_download`); ModelError if neither.

    One resolver for every model part a user names (the model itself, an image encoder)."""
    path = Path(spec).expanduser()
    if path.is_dir() or path.is_file():
        return path
    if path.exists():
        raise ModelError(f"'{spec}' is neither a model folder nor a checkpoint file.")
    if _HUB_ID.fullmatch(spec):
        return _hub_snapshot(spec, allow_download=allow_download, patterns=hub_patterns)
    raise ModelError(f"There is no model at '{spec}': no such file or folder.")


def native_side(spec: str) -> int:
    """The picture side the model `spec` was trained at, from its configs alone (no weights read).

    Retake works at this size unless the user or the project chooses another: a model run far from
    its own scale draws badly (the demo-world model, trained at 128 px, turns a 512-px photo into
    blotches). It is the UNet's `sample_size` in pixels: 512 for SD 1.x (and what a single-file
    checkpoint, converted with SD 1.x's configs, gets), 768 for a fine-tune whose config says 96, 128
    for `demo`, 64 for `demo-tiny`. Where the configs cannot be read, 512: loading the model then
    says what is wrong with it.
    """
    try:
        folder = demo_model_dir(spec) if spec in DEMO_MODELS else locate(
            spec, allow_download=False, hub_patterns=_hub_patterns())
        if not folder.is_dir():
            return SD1_SIDE
        unet, vae = (read_json_config(folder / name, folder) for name in _CONFIG_FILES[:2])
        return check_max_side(int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1))
    except (ModelError, ParamError, KeyError, TypeError, ValueError):
        return SD1_SIDE


def _hub_snapshot(repo_id: str, *, allow_download: bool, patterns: list[str]) -> Path:
    """The folder of `repo_id` in the Hugging Face cache, downloading only the files of `patterns` if allowed."""
    hub_cache = hf_hub_cache_dir()
    not_cached = (
        f"'{repo_id}' is not a file or folder, and no Hugging Face model '{repo_id}' is in the local cache "
        f"{hub_cache}; run once with --allow-download to fetch it, or give the path of a model folder or file."
    )
    try:
        folder = snapshot_download(
            repo_id,
            cache_dir=hub_cache,
            local_files_only=not allow_download,
            allow_patterns=patterns,
        )
    except IncompleteSnapshotError as exc:
        # Files Retake does not need may be what is missing (e.g. only the fp16 weights were
        # fetched): let the folder loader say precisely what, if anything, is lacking.
        return Path(exc.snapshot_path)
    except LocalEntryNotFoundError as exc:
        if not allow_download:
            raise ModelError(not_cached) from None
        raise ModelError(
            f"Could not download '{repo_id}' and it is not in the local cache {hub_cache}: {_first_line(exc)}"
        ) from exc
    except (RepositoryNotFoundError, GatedRepoError):
        raise ModelError(f"The Hugging Face Hub has no public model '{repo_id}'.") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"Could not fetch '{repo_id}' from the Hugging Face Hub: {_first_line(exc)}") from exc
    return Path(folder)


def _hub_patterns() -> list[str]:
    """Files of a hub repo that make up an SD 1.x model (no safety checker, no fp16/non-EMA copies)."""
    patterns = ["model_index.json", "scheduler/*.json", "tokenizer/*"]
    stems = {"unet": _DIFFUSERS_STEMS[0], "vae": _DIFFUSERS_STEMS[0], "text_encoder": _TRANSFORMERS_STEMS[0]}
    for component, stem in stems.items():
        patterns += [f"{component}/config.json", f"{component}/{stem}.safetensors"]
        patterns += [f"{component}/{stem}.safetensors.index.json", f"{component}/{stem}-*-of-*.safetensors"]
    return patterns


# ---- diffusers folders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Weights:
    files: tuple[Path, ...]
    safetensors: bool
    variant: str | None


# Weight file stems by library: (safetensors stem, pickle stem).
_DIFFUSERS_STEMS = ("diffusion_pytorch_model", "diffusion_pytorch_model")
_TRANSFORMERS_STEMS = ("model", "pytorch_model")
_EXPECTED_CLASSES = MappingProxyType(
    {
        "unet": "UNet2DConditionModel",
        "vae": "AutoencoderKL",
        "text_encoder": "CLIPTextModel",
        "tokenizer": "CLIPTokenizer",
    }
)


@dataclass(frozen=True)
class _FolderLayout:
    """What a diffusers folder holds, found and checked without reading a weight."""

    scheduler_config: Mapping[str, Any]
    unet: _Weights
    vae: _Weights
    text_encoder: _Weights
    tokenizer_files: list[Path]
    packed_table: bool
    files: dict[str, Path]
    """Every file the model is read from, by its path in the folder: what its identity hashes."""


def _folder_layout(folder: Path, *, allow_pickle: bool) -> _FolderLayout:
    index = _read_model_index(folder)
    _check_pipeline_components(index, folder)

    unet_config, vae_config, text_config, scheduler_config = (
        read_json_config(folder / name, folder) for name in _CONFIG_FILES
    )
    _check_sd1_configs(unet_config, vae_config, text_config, scheduler_config, f"'{folder}'")

    unet_weights = _find_weights(folder, "unet", _DIFFUSERS_STEMS, allow_pickle)
    vae_weights = _find_weights(folder, "vae", _DIFFUSERS_STEMS, allow_pickle)
    text_weights = _find_weights(folder, "text_encoder", _TRANSFORMERS_STEMS, allow_pickle)
    check_configs_fit_weights(folder, (unet_config, vae_config, text_config),
                              (unet_weights.files, vae_weights.files, text_weights.files))
    tokenizer_files = sorted(p for p in (folder / "tokenizer").glob("*") if p.is_file())
    packed_table = is_packed(folder / "text_encoder")

    files = {name: folder / name for name in ("model_index.json", *_CONFIG_FILES)}
    for weights in (unet_weights, vae_weights, text_weights):
        files.update({path.relative_to(folder).as_posix(): path for path in weights.files})
    if packed_table:
        files[f"text_encoder/{ROWS_FILE}"] = folder / "text_encoder" / ROWS_FILE
    files.update({path.relative_to(folder).as_posix(): path for path in tokenizer_files}
                 if tokenizer_files else {f"tokenizer/{BPE_FILE.name}": BPE_FILE})
    return _FolderLayout(scheduler_config, unet_weights, vae_weights, text_weights, tokenizer_files, packed_table,
                         files)


def _read_diffusers_folder(folder: Path, *, allow_pickle: bool) -> _Parts:
    """The five parts of a diffusers folder. A folder without tokenizer/ files (the demo models ship
    none) uses SD 1.x's CLIP tokenizer, rebuilt from the shipped BPE file as for a single file; a
    text encoder whose token table is packed (the demo-world model's) is loaded by pipeline.token_table."""
    layout = _folder_layout(folder, allow_pickle=allow_pickle)
    unet_weights, vae_weights, text_weights = layout.unet, layout.vae, layout.text_encoder
    tokenizer_files, packed_table = layout.tokenizer_files, layout.packed_table

    with _library_errors(f"'{folder}'"):
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", **_weight_kwargs(unet_weights), torch_dtype=torch.float32
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", **_weight_kwargs(vae_weights), torch_dtype=torch.float32
        )
        text_encoder = (load_packed_text_encoder(folder / "text_encoder") if packed_table else
                        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                      **_weight_kwargs(text_weights), dtype=torch.float32))
        tokenizer = (CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
                     if tokenizer_files else load_clip_tokenizer())
    return _Parts(unet, vae, text_encoder, tokenizer, layout.scheduler_config, layout.files)


def _read_model_index(folder: Path) -> dict[str, Any]:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        hint = ""
        if any(folder.glob("*.safetensors")) or any(folder.glob("*.ckpt")):
            hint = "; to load a single-file checkpoint, give the file itself"
        raise ModelError(f"'{folder}' is not a diffusers model folder: it has no model_index.json{hint}.")
    return read_json_config(index_file, folder)


def _check_pipeline_components(index: Mapping[str, Any], folder: Path) -> None:
    pipeline = str(index.get("_class_name", "an unknown pipeline"))
    if "text_encoder_2" in index or "XL" in pipeline:
        raise ModelError(f"'{folder}' is a Stable Diffusion XL model; {_SUPPORTED}.")
    for component, expected in _EXPECTED_CLASSES.items():
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == expected):
            raise ModelError(
                f"'{folder}' holds a {pipeline} whose {component} is not a {expected}; {_SUPPORTED}."
            )


def _find_weights(folder: Path, component: str, stems: tuple[str, str], allow_pickle: bool) -> _Weights:
    """The weight files from_pretrained will read for `component`: safetensors first, plain before fp16."""
    directory = folder / component
    safe_stem, pickle_stem = stems
    for is_safetensors, stem, extension in ((True, safe_stem, "safetensors"), (False, pickle_stem, "bin")):
        for variant in (None, "fp16"):
            name = f"{stem}.{variant}.{extension}" if variant else f"{stem}.{extension}"
            if (directory / name).is_file():
                found = _Weights((directory / name,), is_safetensors, variant)
            elif (directory / f"{name}.index.json").is_file():
                found = _Weights(_sharded_files(directory / f"{name}.index.json", folder), is_safetensors, variant)
            else:
                continue
            if not is_safetensors and not allow_pickle:
                raise ModelError(
                    f"The {component} weights in '{folder}' exist only as pickle (.bin) files, which can run code "
                    "when loaded; convert them to .safetensors, or pass --allow-pickle if you trust their source."
                )
            return found
    raise ModelError(f"The model folder '{folder}' has no {component} weights in {component}/.")


def _sharded_files(index_file: Path, folder: Path) -> tuple[Path, ...]:
    weight_map = read_json_config(index_file, folder).get("weight_map", {})
    shards = tuple(index_file.parent / name for name in sorted(set(weight_map.values())))
    missing = [shard.name for shard in shards if not shard.is_file()]
    if not shards or missing:
        lacking = ", ".join(missing) or "its shards"
        raise ModelError(f"The model folder '{folder}' is incomplete: {index_file.parent.name}/ lacks {lacking}.")
    return (index_file, *shards)


def _weight_kwargs(weights: _Weights) -> dict[str, Any]:
    return {"use_safetensors": weights.safetensors, "variant": weights.variant, "local_files_only": True}


# ---- single-file checkpoints ---------------------------------------------------------------------


def _read_single_file(path: Path, *, config_dir: Path, allow_pickle: bool) -> _Parts:
    checkpoint = _read_checkpoint(path, allow_pickle=allow_pickle)
    _check_sd1_checkpoint(checkpoint, path)
    unet_config, vae_config, text_config, scheduler_config = (
        read_json_config(config_dir / name, config_dir) for name in _CONFIG_FILES
    )
    _check_sd1_configs(unet_config, vae_config, text_config, scheduler_config, f"The config folder '{config_dir}'")

    config = str(config_dir)
    unet = _convert(
        "UNet", path, config_dir,
        # Full training checkpoints hold EMA and raw UNet weights; the EMA ones are those meant for sampling.
        lambda: UNet2DConditionModel.from_single_file(
            checkpoint, config=config, subfolder="unet", local_files_only=True, extract_ema=True
        ),
    )
    vae = _convert(
        "VAE", path, config_dir,
        lambda: AutoencoderKL.from_single_file(checkpoint, config=config, subfolder="vae", local_files_only=True),
    )
    text_encoder = _convert(
        "text encoder", path, config_dir,
        lambda: create_diffusers_clip_model_from_ldm(
            CLIPTextModel, checkpoint, config=config, subfolder="text_encoder", local_files_only=True
        ),
    )
    return _Parts(unet, vae, text_encoder, load_clip_tokenizer(), scheduler_config, _single_file_files(path, config_dir))


def _single_file_files(path: Path, config_dir: Path) -> dict[str, Path]:
    """What a single-file model's identity hashes: the checkpoint, the configs it is converted with, and
    the tokenizer (SD 1.x checkpoints carry none: they all use CLIP's, rebuilt from the shipped BPE file)."""
    files = {"checkpoint": path, f"tokenizer/{BPE_FILE.name}": BPE_FILE}
    files.update({f"configs/{name}": config_dir / name for name in _CONFIG_FILES})
    return files


def _convert(name: str, path: Path, config_dir: Path, load: Callable[[], _Module]) -> _Module:
    """Run one of diffusers' single-file converters; say plainly when the checkpoint does not fit.

    The converters build the network on the meta device and fill it from the checkpoint, so a
    weight the checkpoint lacks stays an empty meta tensor (or fails when diffusers moves the
    model), and a weight of the wrong shape fails outright: both mean "not this architecture".
    """
    not_sd1 = f"'{path}' is not a Stable Diffusion 1.x checkpoint of the layout in {config_dir}"
    try:
        module = load()
    except NotImplementedError as exc:  # diffusers moving a network that still has meta tensors
        raise ModelError(f"{not_sd1}: some of its {name} weights are missing.") from exc
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"{not_sd1}: its {name} weights do not have the expected names and shapes.") from exc
    except OSError as exc:
        raise ModelError(f"Could not read the {name} config in '{config_dir}': {_first_line(exc)}") from exc
    missing = [key for key, param in module.named_parameters() if param.is_meta]
    if missing:
        raise ModelError(f"{not_sd1}: {len(missing)} of its {name} weights are missing, such as {missing[0]}.")
    return module


def _check_checkpoint_kind(path: Path, *, allow_pickle: bool) -> None:
    """Refuse a file that is no checkpoint Retake reads, or a pickle without `allow_pickle`, before reading it."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return
    if suffix not in _PICKLE_SUFFIXES:
        raise ModelError(
            f"'{path}' is not a model file Retake can read; give a diffusers model folder, "
            "a .safetensors checkpoint or a Hugging Face id."
        )
    if not allow_pickle:
        raise ModelError(
            f"'{path}' is a pickle checkpoint ({suffix}), which can run arbitrary code when loaded; use a "
            ".safetensors version of the model, or pass --allow-pickle if you trust its source."
        )


def _read_checkpoint(path: Path, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    _check_checkpoint_kind(path, allow_pickle=allow_pickle)
    if path.suffix.lower() == ".safetensors":
        try:
            return safetensors.torch.load_file(path)
        except (safetensors.SafetensorError, OSError, ValueError) as exc:
            raise ModelError(
                f"'{path}' is not a readable safetensors file (it may be truncated or damaged): {_first_line(exc)}"
            ) from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"'{path}' {NOT_ONLY_TENSORS}.") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"'{path}' is not a readable checkpoint (it may be truncated or damaged): {_first_line(exc)}"
        ) from exc
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(f"'{path}' does not hold a model state dict.")
    return loaded


def _check_sd1_checkpoint(checkpoint: Mapping[str, torch.Tensor], path: Path) -> None:
    try:
        kind = infer_diffusers_model_type(checkpoint)
    except (KeyError, ValueError, IndexError, AttributeError):
        kind = "unknown"
    if kind in _FOREIGN_CHECKPOINTS:
        raise ModelError(f"'{path}' is {_FOREIGN_CHECKPOINTS[kind]}; {_SUPPORTED}.")
    if kind != "v1":
        raise ModelError(f"'{path}' is not a Stable Diffusion checkpoint (it looks like '{kind}'); {_SUPPORTED}.")
    absent = [name for name, prefix in _LDM_PREFIXES.items() if not any(key.startswith(prefix) for key in checkpoint)]
    if len(absent) == len(_LDM_PREFIXES):
        raise ModelError(f"'{path}' is not a Stable Diffusion checkpoint; {_SUPPORTED}.")
    if absent:
        raise ModelError(
            f"'{path}' lacks the {' and '.join(absent)} of a Stable Diffusion 1.x checkpoint "
            f"(no keys starting with {', '.join(_LDM_PREFIXES[name] for name in absent)})."
        )
    _check_original_yaml(path)


def _check_original_yaml(path: Path) -> None:
    """Refuse v-prediction checkpoints announced by a config beside them (model.yaml next to model.safetensors)."""
    sidecar = path.with_suffix(".yaml")
    if not sidecar.is_file():
        return
    try:
        original = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
        parameterization = original["model"]["params"].get("parameterization", "eps")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return
    if parameterization != "eps":
        raise ModelError(
            f"'{path}' is a {parameterization}-prediction model (see {sidecar.name}); "
            f"{_SUPPORTED} that predict the noise (epsilon)."
        )


# ---- checks and the scheduler --------------------------------------------------------------------


def _check_sd1_configs(
    unet: Mapping[str, Any], vae: Mapping[str, Any], text: Mapping[str, Any], scheduler: Mapping[str, Any], where: str
) -> None:
    """Refuse models that are not SD 1.x-shaped before any weight is read."""
    if unet.get("addition_embed_type") is not None:
        raise ModelError(f"{where} is a Stable Diffusion XL-style model; {_SUPPORTED}.")
    if unet.get("cross_attention_dim") == 1024:
        raise ModelError(f"{where} is a Stable Diffusion 2.x model; {_SUPPORTED}.")
    if unet.get("in_channels") != 4 or unet.get("out_channels") != 4:
        raise ModelError(
            f"{where} has a UNet with {unet.get('in_channels')} input channels (an inpainting or image-conditioned "
            f"model); {_SUPPORTED} with 4."
        )
    if unet.get("class_embed_type") is not None or unet.get("num_class_embeds") is not None:
        raise ModelError(f"{where} is a class-conditioned model (such as an upscaler); {_SUPPORTED}.")
    if unet.get("cross_attention_dim") != text.get("hidden_size"):
        raise ModelError(
            f"{where} pairs a UNet expecting {unet.get('cross_attention_dim')}-wide text features with a text "
            f"encoder producing {text.get('hidden_size')}; the model is inconsistent."
        )
    if vae.get("latent_channels") != 4:
        raise ModelError(f"{where} has a VAE with {vae.get('latent_channels')} latent channels; {_SUPPORTED} (4).")
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ModelError(
            f"{where} is a {prediction} model (such as Stable Diffusion 2.x 768-v); "
            f"{_SUPPORTED} that predict the noise (epsilon)."
        )


def _ddim_scheduler(config: Mapping[str, Any], spec: str) -> DDIMScheduler:
    """DDIM on the model's own schedule, in the settings deterministic inversion requires."""
    schedule = {key: config.get(key, default) for key, default in _SD1_SCHEDULE.items()}
    with _library_errors(f"the scheduler config of '{spec}'"):
        return DDIMScheduler.from_config(
            dict(config),
            **schedule,
            clip_sample=False,
            set_alpha_to_one=False,
            prediction_type="epsilon",
        )


# --------------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------------


def files_identity(files: Mapping[str, Path], cache_dir: Path) -> str:
    """sha256 over (name, sha256 of content) of every file, sorted by name: independent of listing order
    and of where the files are (a copy of a model folder has the same identity)."""
    hashes = FileHashes(cache_dir / _HASH_CACHE_FILE)
    digest = hashlib.sha256(_IDENTITY_FORMAT)
    for name in sorted(files):
        digest.update(f"{name}\t{hashes.sha256(files[name])}\n".encode())
    hashes.save()
    return f"sha256:{digest.hexdigest()}"


class FileHashes:
    """sha256 of files, remembered in a JSON file by (absolute path, size, mtime_ns).

    The cache is an optimisation only: a missing, unreadable or unwritable cache file just means
    hashing again.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._entries: dict[str, dict[str, Any]] = {}
        self._changed = False
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self._entries = {k: v for k, v in loaded.items() if isinstance(v, dict)}
        except (OSError, ValueError):
            pass

    def sha256(self, file: Path) -> str:
        real = file.resolve()
        stat = real.stat()
        key = str(real)
        entry = self._entries.get(key)
        if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return str(entry["sha256"])
        with open(real, "rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
            self._entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
            self._changed = True
        return digest

    def save(self) -> None:
        """Write the cache atomically (temporary file, then rename); entries of deleted files are dropped."""
        if not self._changed:
            return
        entries = {key: entry for key, entry in self._entries.items() if os.path.exists(key)}
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".tmp")
        except OSError:
            return
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(entries, stream, indent=0, sort_keys=True)
            os.replace(temporary, self._path)
        except OSError:
            with suppress(OSError):
                os.unlink(temporary)


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def read_json_config(file: Path, where: Path) -> dict[str, Any]:
    """The JSON object in `file` (a config of the model at `where`); ModelError if it is missing or not one."""
    try:
        loaded = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"'{where}' is incomplete: {file.relative_to(where).as_posix()} is missing.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"'{file}' is not a readable JSON config: {_first_line(exc)}") from exc
    except RecursionError:
        raise ModelError(f"'{file}' is not a readable JSON config: it is nested too deeply.") from None
    if not isinstance(loaded, dict):
        raise ModelError(f"'{file}' is not a JSON config object.")
    return loaded


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    line = line if len(line) <= 240 else line[:237] + "..."
    return line if line.endswith(".") else line + "."


@contextmanager
def _library_errors(where: str) -> Iterator[None]:
    """Turn what diffusers/transformers/safetensors raise about a bad model into one ModelError."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(f"Ran out of memory while loading {where}.") from None
    except pickle.UnpicklingError as exc:
        raise ModelError(f"A weights file of {where} {NOT_ONLY_TENSORS}.") from exc
    except _LIBRARY_FAILURES as exc:
        raise ModelError(f"Could not load the model from {where}: {_first_line(exc)}") from exc
