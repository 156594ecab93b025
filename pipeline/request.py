"""What a front end asks for (EditRequest), and the rule that fills in what it leaves open.

A request is plain data (JSON round-trip) so the CLI, the GUI's worker, scripts and batch jobs build
the same thing. `resolve` turns it into a `Job` before any model work: it opens or plans the project,
checks the photo, the output path, the working size, the prompts and every parameter, and applies
the one rule for what a re-edit inherits from its project (`inherit_params`), so a mistake costs a
second, not an inversion.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pipeline.area import DEFAULT_PADDING, MAX_PADDING, MODES, choose_crop
from pipeline.errors import (
    ImageError, ModelError, ParamError, ProjectError, PromptError, RetakeError, printable, shorten,
)
from pipeline.images import (
    DEFAULT_FEATHER, Box, load_image, mask_at_photo_size, mask_tensor, read_mask_image, to_tensor, working_size,
)
from pipeline.methods.base import InputSpec, Method, Prompts, input_specs
from pipeline.methods.registry import get_method
from pipeline.models import native_side
from pipeline.params import PROMPT_BOUND_KINDS, canonical_json, param_specs, params_from_dict
from pipeline.preflight import check_max_side, check_output_path, check_project_folder, check_seed
from pipeline.project import MANIFEST_FILE, AreaSettings, Project, Settings, check_photo_fits

DEFAULT_MODEL = "demo"
DEFAULT_METHOD = "p2p"


@dataclass
class EditRequest:
    """Everything one edit needs; fields left None are taken from the project, then from defaults.

    `inputs` maps a method's named inputs (see its Params' INPUTS) to files; `mask` is shorthand for
    the "edit_mask" input. An input not given is taken from the project when it keeps one; an empty
    path means "without this input" (and the project forgets it when the edit is saved).
    `input_prompts` describes image inputs (a reference picture's prompt). `image_encoder` names the
    image encoder of a method that needs one (a folder or hub id, pipeline.parts): None takes the
    project's, "" looks for one beside the model. `area` ("whole" or "region"), `area_padding` and
    `feather` (photo pixels) choose the part of the photo the edit works on and how its result is
    pasted back (pipeline.area); None takes the project's, else the default (a crop around the region
    when the photo is larger than the working size, 32 and 4 pixels). `fast` takes the fast path on a
    GPU (pipeline.fast: CUDA graphs, the UNet held in fp16, optimisation in bf16 or TF32; its gates passed on an
    H100, bench/results/speed-nvidia-h100-80gb-hbm3.md); off, every stage runs eagerly, as on the CPU,
    bit for bit as before the fast path.
    """

    target_prompt: str
    image: str | None = None
    source_prompt: str | None = None
    project: str | None = None
    model: str | None = None
    image_encoder: str | None = None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    mask: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    input_prompts: dict[str, str] = field(default_factory=dict)
    output: str | None = None
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    max_side: int | None = None
    area: str | None = None
    area_padding: int | None = None
    feather: int | None = None
    allow_download: bool = False
    allow_pickle: bool = False
    preview_every: int = 0
    preview_side: int = 256
    fast: bool = True

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EditRequest:
        return cls(**json.loads(text))

    def input_files(self) -> dict[str, str]:
        """Named input files, with `mask` as the edit mask."""
        files = dict(self.inputs)
        if self.mask is not None:
            files.setdefault("edit_mask", self.mask)
        return files


@dataclass(frozen=True)
class Job:
    """A request resolved and checked: what every stage of the engine works from."""

    request: EditRequest
    project_path: Path
    project: Project | None
    image: Image.Image
    image_sha256: str
    prompts: Prompts
    method_id: str
    method: Method[Any]
    params: Any
    model_spec: str
    image_encoder: str
    """The image encoder named by the request or the project ("": looked for beside the model)."""
    max_side: int
    size: tuple[int, int]
    """The working size: of the crop when there is one, else of the photo."""
    output: Path | None
    masks: dict[str, torch.Tensor]
    """The named mask inputs at working size, [1, 1, H, W] in 0..1, read once here."""
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    """The named image inputs at working size, [1, 3, H, W] in [-1, 1]."""
    input_prompts: dict[str, str] = field(default_factory=dict)
    """The prompt of each image input ("" when none was given)."""
    input_digests: dict[str, str] = field(default_factory=dict)
    """What each input the method receives is, hashed: part of the keys of the stages it belongs to."""
    input_sources: dict[str, Image.Image | None] = field(default_factory=dict)
    """Each input as read at its own size (what the project keeps); None: the project forgets it."""
    notices: tuple[str, ...] = ()
    crop: Box | None = None
    """The box of the photo the edit works on (pipeline.area); None: the whole photo."""
    area: AreaSettings = AreaSettings(None, DEFAULT_PADDING, DEFAULT_FEATHER)
    """The area choice the job was made with (the project keeps it for the next re-edit)."""
    photo_masks: dict[str, Any] = field(default_factory=dict)
    """The named masks drawn on the photo, bool [H, W] at the photo's own size (for the paste-back)."""

    def working_image(self) -> Image.Image:
        """The photo, or its crop: what the model is given (at `size`)."""
        return self.image if self.crop is None else self.image.crop(self.crop)


def default_project_path(image: Path) -> Path:
    """Where a photo's project lives unless the user says otherwise: beside it, as NAME.retake."""
    return image.with_name(image.stem + ".retake")


def pixels_sha256(image: Image.Image) -> str:
    """Identity of an image's pixels, whatever file format they came from."""
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def inherit_params(settings: Settings | None, method_id: str, method: Method[Any],
                   given: dict[str, Any]) -> dict[str, Any]:
    """The one rule for a re-edit: the project's stored parameters of the same method, except those
    naming words of the previous prompt pair, overridden by what the request gives."""
    stored: dict[str, Any] = {}
    if settings is not None and settings.method == method_id:
        kinds = {spec.name: spec.kind for spec in param_specs(method.Params)}
        stored = {k: v for k, v in settings.params.items() if kinds.get(k) not in PROMPT_BOUND_KINDS}
    return {**stored, **given}


def resolve(request: EditRequest, *, recover: bool = True) -> Job:
    """Check the request against the file system and the project; no model is loaded."""
    check_seed(request.seed)
    _check_text(request.target_prompt, "The target prompt", PromptError)
    for name, prompt in request.input_prompts.items():
        _check_text(prompt, f"The prompt of {shorten(printable(name))}", PromptError)
    output = check_output_path(Path(request.output)) if request.output is not None else None
    project_path, project = _project(request, recover)
    settings = project.settings if project is not None else None
    stored_model = settings.model.spec if settings is not None and settings.model is not None else None
    model_spec = request.model or stored_model or DEFAULT_MODEL
    for spec, what in ((model_spec, "model"), (request.image_encoder or "", "image encoder")):
        _check_text(spec, f"The {what} {shorten(printable(spec))}", ModelError,
                    "its name cannot be recorded in the project; rename it")
    stored_side = settings.max_side if settings is not None else None
    max_side = check_max_side(request.max_side if request.max_side is not None else
                              stored_side or native_side(model_spec))
    if request.image is not None:
        image = load_image(Path(request.image))
        check_photo_fits(*image.size)
    else:
        assert project is not None
        image = project.image()
    image_sha = pixels_sha256(image)
    if project is not None and request.image is not None:
        _check_same_photo(project, image_sha, project_path)

    source = request.source_prompt if request.source_prompt is not None else (
        settings.source_prompt if settings is not None and settings.source_prompt else None)
    _check_text(source or "", "The source prompt", PromptError)
    if not (source or "").strip():
        raise PromptError("Describe the photo with a source prompt (--source) before editing it.")
    if not request.target_prompt.strip():
        raise PromptError("The target prompt is empty; type what the photo should become.")
    method_id = request.method or (settings.method if settings is not None else None) or DEFAULT_METHOD
    method = get_method(method_id)
    params = params_from_dict(method.Params, inherit_params(settings, method_id, method, request.params))
    area = _area(request, settings)
    sources = _read_sources(request, method_id, method, project)
    photo_masks = {name: mask_at_photo_size(source, image.size) for name, (spec, source) in sources.items()
                   if spec.kind == "mask" and spec.picture is None and source is not None}
    bounding = [photo_masks[name] for name, (spec, _) in sources.items() if spec.bounds and name in photo_masks]
    crop = choose_crop(area.mode, bounding, image.size, max_side, area.padding, area.feather)
    notices = list(project.recovered if project is not None else ())
    if area.mode == "region" and crop is None and not any(m.any() for m in bounding):
        notices.append("The whole photo was edited: no mask bounds this edit before it runs (blend words find "
                       "their region only during the run); paint an edit region to edit a crop.")
    size = working_size(*(image.size if crop is None else (crop[2] - crop[0], crop[3] - crop[1])), max_side=max_side)
    inputs = _prepare_inputs(request, sources, project, size, crop, image.size)
    return Job(
        request=request, project_path=project_path, project=project, image=image, image_sha256=image_sha,
        prompts=Prompts(source or "", request.target_prompt), method_id=method_id, method=method, params=params,
        model_spec=model_spec,
        image_encoder=request.image_encoder if request.image_encoder is not None else (
            settings.image_encoder if settings is not None and settings.image_encoder else ""),
        max_side=max_side,
        size=size, output=output, masks=inputs.masks, images=inputs.images, input_prompts=inputs.prompts,
        input_digests=inputs.digests, input_sources=inputs.sources, notices=tuple(notices), crop=crop, area=area,
        photo_masks=photo_masks,
    )


def _area(request: EditRequest, settings: Settings | None) -> AreaSettings:
    """The area choice: the request's, else the project's, else the defaults; checked like an argument."""
    stored = settings.area if settings is not None and settings.area is not None else AreaSettings(
        None, DEFAULT_PADDING, DEFAULT_FEATHER)
    mode = check_area_mode(request.area if request.area is not None else stored.mode)
    padding = check_pixels("area_padding", stored.padding if request.area_padding is None else request.area_padding)
    return AreaSettings(mode, padding, check_pixels("feather", stored.feather if request.feather is None else
                                                    request.feather))


def check_area_mode(mode: Any) -> str | None:
    """An area choice from outside (a request, a recipe): one of MODES, or None (automatic)."""
    if mode is not None and (not isinstance(mode, str) or mode not in MODES):
        raise ParamError(f"The area must be {' or '.join(MODES)}, not {shorten(repr(mode))}.")
    return mode


def check_pixels(name: str, value: Any) -> int:
    """A crop padding or feather from outside: a whole number of photo pixels, 0 to MAX_PADDING."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PADDING:
        raise ParamError(f"{name} must be a whole number of pixels from 0 to {MAX_PADDING}, not {shorten(repr(value))}.")
    return value


def made_meanwhile(job: Job) -> Project | None:
    """The project another process made in the job's folder after `resolve` found none there (a first
    edit that waited for another one's claim), opened as `resolve` opens one and checked to hold the
    job's photo; None when there is still none."""
    if not (job.project_path / MANIFEST_FILE).is_file():
        return None
    project = Project.open(job.project_path, recover=True)
    _check_same_photo(project, job.image_sha256, job.project_path)
    return project


def _check_same_photo(project: Project, image_sha: str, path: Path) -> None:
    if pixels_sha256(project.image()) != image_sha:
        raise ProjectError(f"The project {shorten(path)} belongs to another photo; give a new --project for this one.")


def _check_text(value: Any, what: str, error: type[RetakeError],
                consequence: str = "type it again") -> None:
    """Refuse text that project.json and the tokenizer cannot hold: a lone surrogate (what Python makes of
    command-line bytes that are not UTF-8), in a string or anywhere in a JSON value."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} is not valid text (it holds a lone surrogate, such as bytes that are not UTF-8 "
                    f"become); {consequence}.") from None


def _project(request: EditRequest, recover: bool) -> tuple[Path, Project | None]:
    if request.project is not None:
        path = Path(request.project)
    elif request.image is not None:
        path = default_project_path(Path(request.image))
    else:
        raise ImageError("Give an image to edit, or a project to re-edit.")
    check_project_folder(path)
    exists = (path / MANIFEST_FILE).is_file()
    if request.image is None and not exists:
        raise ProjectError(f"There is no Retake project at {shorten(path)}; give the photo to start one.")
    return path, Project.open(path, recover=recover) if exists else None


def check_input_names(method_id: str, method: Method[Any], names: Iterable[str]) -> None:
    """Every name is one of the method's named inputs (ParamError naming the first that is not)."""
    declared = [spec.name for spec in input_specs(method.Params)]
    for name in names:
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ParamError(f"The method {method_id} takes no input {shorten(name)!r} (it takes: {known}).")


@dataclass
class _ReadInputs:
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Image.Image | None] = field(default_factory=dict)


def _read_sources(request: EditRequest, method_id: str, method: Method[Any],
                  project: Project | None) -> dict[str, tuple[InputSpec, Image.Image | None]]:
    """Every named input the method declares, read once at its own size and checked now (not after the
    inversion): from the request's file, else from the project (None: without it); every required one present."""
    declared = {spec.name: spec for spec in input_specs(method.Params)}
    files = request.input_files()
    check_input_names(method_id, method, [*files, *request.input_prompts])
    read: dict[str, tuple[InputSpec, Image.Image | None]] = {}
    for name, spec in declared.items():
        given = files.get(name)
        if given == "":
            source = None
        elif given is not None:
            source = load_image(Path(given)) if spec.kind == "image" else read_mask_image(Path(given))
        else:
            source = project.input_image(name) if project is not None and name in project.input_names() else None
        if source is None and spec.required:
            raise ParamError(f"The method {method_id} needs {spec.label.lower()} ({spec.name}).")
        read[name] = (spec, source)
    return read


def _prepare_inputs(request: EditRequest, sources: dict[str, tuple[InputSpec, Image.Image | None]],
                    project: Project | None, size: tuple[int, int], crop: Box | None,
                    photo_size: tuple[int, int]) -> _ReadInputs:
    """The inputs at working size: a mask drawn on the photo cut to the crop first (a mask drawn on a
    reference picture, and a reference picture, are taken whole)."""
    files = request.input_files()
    read = _ReadInputs()
    for name, (spec, source) in sources.items():
        given = files.get(name)
        if given is not None:
            read.sources[name] = source
        if source is None:
            continue
        if spec.kind == "mask":
            if spec.picture is None and crop is not None:
                source = source.convert("L").resize(photo_size, Image.Resampling.BILINEAR).crop(crop)
            read.masks[name] = mask_tensor(source, size)
            read.digests[name] = _digest(read.masks[name])
        else:
            stored = project.input_prompt(name) if project is not None and given is None else None
            prompt = request.input_prompts.get(name, stored or "")
            read.images[name] = to_tensor(source, size)
            read.prompts[name] = prompt
            read.digests[name] = _digest(read.images[name], prompt)
            if given is None and name in request.input_prompts:
                read.sources[name] = source  # the stored picture with a new prompt
    return read


def _digest(tensor: torch.Tensor, text: str = "") -> str:
    h = hashlib.sha256(tensor.contiguous().numpy().tobytes())
    h.update(text.encode())
    return h.hexdigest()[:16]


def inversion_key(job: Job, model_identity: str, key_params: dict[str, Any], input_digests: dict[str, str],
                  parts: dict[str, str] | None = None) -> str:
    """The identity of an inversion: what it was computed from, hashed (the identities of the extra
    model parts it used among them: another image encoder is another inversion)."""
    data = {"image": job.image_sha256, "size": list(job.size), "model": model_identity, "method": job.method_id,
            "source_prompt": job.prompts.source, "params": key_params}
    if job.crop is not None:  # a crop is another picture: its own inversion (the whole photo's keys are unchanged)
        data["crop"] = list(job.crop)
    if input_digests:
        data["inputs"] = input_digests
    if parts:
        data["parts"] = parts
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:32]


def tuning_key(inversion_key: str, target_prompt: str | None, key_params: dict[str, Any],
               input_digests: dict[str, str]) -> str:
    """The identity of a method's tuning: the inversion it learned from, the target prompt when the
    method tunes on it, its own parameters and inputs, hashed."""
    data = {"inversion": inversion_key, "target_prompt": target_prompt, "params": key_params,
            "inputs": input_digests}
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:32]
