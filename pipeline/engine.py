"""The one way in: a serialisable EditRequest goes in, events come out.

The CLI uses it now; the GUI's worker thread, scripts and batch jobs use the same call. The engine
resolves what the request leaves open from the project (re-editing names only a target prompt),
reuses the project's stored inversion when the image, model, method, source prompt and inversion
parameters are unchanged, and otherwise inverts again. Every failure becomes one Failed event with
a sentence for the user; a cancelled or failed run writes nothing half-made: the project gains an
inversion only once it is complete, and a result only once it is decoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.errors import Cancelled, ImageError, OutOfMemoryError, ProjectError, PromptError, RetakeError
from pipeline.events import CancelledEvent, CancelToken, Done, Emit, Event, Failed
from pipeline.images import from_tensor, load_image, load_mask, restore_aspect, to_tensor, working_size, write_atomically
from pipeline.methods.registry import get_method
from pipeline.models import ModelBundle, load_model
from pipeline.params import PROMPT_BOUND_KINDS, canonical_json, param_specs, params_from_dict, params_to_dict
from pipeline.project import MANIFEST_FILE, ModelRecord, Project
from pipeline.run import RunContext

log = logging.getLogger(__name__)

DEFAULT_MODEL = "demo"
DEFAULT_METHOD = "p2p"


@dataclass
class EditRequest:
    """Everything one edit needs; fields left None are taken from the project, then from defaults."""

    target_prompt: str
    image: str | None = None
    source_prompt: str | None = None
    project: str | None = None
    model: str | None = None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    mask: str | None = None
    output: str | None = None
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    max_side: int = 512
    allow_download: bool = False
    allow_pickle: bool = False
    previews: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EditRequest:
        return cls(**json.loads(text))


def default_project_path(image: Path) -> Path:
    """Where a photo's project lives unless the user says otherwise: beside it, as NAME.retake."""
    return image.with_name(image.stem + ".retake")


def inversion_key(image_sha256: str, size: tuple[int, int], model_identity: str, method: str,
                  source_prompt: str, params: dict[str, Any]) -> str:
    """The identity of an inversion: what it was computed from, hashed."""
    data = {"image": image_sha256, "size": list(size), "model": model_identity, "method": method,
            "source_prompt": source_prompt, "params": params}
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:32]


class Engine:
    """Runs edit requests; keeps the last loaded model so repeated edits do not reload it."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._model: tuple[tuple, ModelBundle] | None = None

    def model(self, spec: str, request: EditRequest) -> ModelBundle:
        key = (spec, request.device, request.dtype, request.allow_download, request.allow_pickle)
        if self._model is None or self._model[0] != key:
            self._model = None  # free the old model before loading the next
            bundle = load_model(spec, device=request.device, dtype=request.dtype,
                                allow_download=request.allow_download, allow_pickle=request.allow_pickle,
                                cache_dir=self.cache_dir)
            self._model = (key, bundle)
        return self._model[1]

    def run(self, request: EditRequest, emit: Emit, cancel: CancelToken | None = None) -> Event:
        """Run one request to its end; the final event (Done, Failed or CancelledEvent) is also returned."""
        cancel = cancel or CancelToken()
        stage = {"name": "preparing"}

        def tracking_emit(event: Event) -> None:
            stage["name"] = getattr(event, "stage", stage["name"])
            emit(event)

        try:
            final: Event = self._run(request, tracking_emit, cancel)
        except Cancelled:
            final = CancelledEvent(stage["name"])
        except RetakeError as error:
            final = Failed(str(error))
        except torch.cuda.OutOfMemoryError:
            final = Failed(str(OutOfMemoryError(
                "The GPU ran out of memory; close other GPU programs, lower the image size "
                "(--max-side) or run on the CPU. Nothing was written.")))
        except Exception as error:  # a bug, not a user mistake: say so, keep the traceback in the log
            log.exception("unexpected error")
            final = Failed(f"Unexpected internal error ({type(error).__name__}: {error}); nothing was written.")
        emit(final)
        return final

    def _run(self, request: EditRequest, emit: Emit, cancel: CancelToken) -> Done:
        if request.seed is not None:
            torch.manual_seed(request.seed)
        project_path, project = self._project(request)
        settings = project.settings if project is not None else None
        image = load_image(Path(request.image)) if request.image is not None else project.image()
        image_sha = pixels_sha256(image)
        if project is not None and request.image is not None and pixels_sha256(project.image()) != image_sha:
            raise ProjectError(f"The project {project_path} belongs to another photo; "
                               "give a new --project for this one.")

        source = request.source_prompt if request.source_prompt is not None else (
            settings.source_prompt if settings is not None and settings.source_prompt else None)
        if not (source or "").strip():
            raise PromptError("Describe the photo with a source prompt (--source) before editing it.")
        if not request.target_prompt.strip():
            raise PromptError("The target prompt is empty; type what the photo should become.")
        method_id = request.method or (settings.method if settings is not None else None) or DEFAULT_METHOD
        method = get_method(method_id)
        stored = {}
        if settings is not None and settings.method == method_id:
            # words name parts of one prompt pair: a re-edit with a new target starts without them
            kinds = {spec.name: spec.kind for spec in param_specs(method.Params)}
            stored = {k: v for k, v in settings.params.items() if kinds.get(k) not in PROMPT_BOUND_KINDS}
        params = params_from_dict(method.Params, {**stored, **request.params})
        stored_model = settings.model.spec if settings is not None and settings.model is not None else None
        spec = request.model or stored_model or DEFAULT_MODEL
        bundle = self.model(spec, request)
        ctx = RunContext(bundle, cancel, emit, previews=request.previews)

        method.check(bundle.tokenizer, source, request.target_prompt, params)
        size = working_size(*image.size, max_side=request.max_side)
        key_params = method.inversion_key_params(params)
        key = inversion_key(image_sha, size, bundle.identity, method_id, source, key_params)
        mask = None
        if request.mask is not None:
            mask = load_mask(Path(request.mask), size)
        inversion = None
        if project is not None and project.find_inversion(key) is not None:
            inversion = project.load_inversion(key)
        reused = inversion is not None

        if inversion is None:
            latent = ctx.encode_image(to_tensor(image, size))
            inversion = {k: v.detach().cpu().contiguous() for k, v in
                         method.invert(ctx, latent, source, params).items()}
            ctx.cancel.check()
            if project is None:
                project = Project.create(project_path, image)
            project.save_inversion(key, inversion, method=method_id, model_identity=bundle.identity,
                                   source_prompt=source, params=key_params, size=size,
                                   steps=int(key_params.get("steps", 0)) or 1)
        latent_mask = None
        if mask is not None:
            latent_size = tuple(n // bundle.vae_scale_factor for n in size)[::-1]
            latent_mask = (F.interpolate(mask, size=latent_size, mode="area") >= 0.5).float().to(bundle.device)
        latents = method.edit(ctx, inversion, source, request.target_prompt, params, latent_mask)
        ctx.cancel.check()
        result = restore_aspect(from_tensor(ctx.decode(latents[1:2])), image.size)

        params_json = params_to_dict(params)
        model = ModelRecord(spec, bundle.identity)
        project.update_settings(model_spec=spec, model_identity=bundle.identity, source_prompt=source,
                                method=method_id, params=params_json)
        # the project adds prompts, model, method, params, seed and inversion key to the PNG itself
        extra = {"image_sha256": image_sha, "working_size": list(size), "max_side": request.max_side}
        edit = project.add_edit(target_prompt=request.target_prompt, source_prompt=source, model=model,
                                method=method_id, params=params_json, seed=request.seed, inversion_key=key,
                                result=result, mask=mask, png_metadata=extra)
        output = None
        if request.output is not None:
            output = Path(request.output)
            write_atomically(output, project.result_path(edit).read_bytes())
        return Done(project.result_path(edit), output, project_path, edit.id, reused, result)

    def _project(self, request: EditRequest) -> tuple[Path, Project | None]:
        if request.project is not None:
            path = Path(request.project)
        elif request.image is not None:
            path = default_project_path(Path(request.image))
        else:
            raise ImageError("Give an image to edit, or a project to re-edit.")
        exists = (path / MANIFEST_FILE).is_file()
        if request.image is None and not exists:
            raise ProjectError(f"There is no Retake project at {path}; give the photo to start one.")
        return path, Project.open(path) if exists else None


def pixels_sha256(image: Image.Image) -> str:
    """Identity of an image's pixels, whatever file format they came from."""
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
