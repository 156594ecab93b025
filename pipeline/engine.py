"""The engine: a request goes in, events come out, in stages a front end can call one by one.

`run` does everything in order; a GUI calls the stages itself (`resolve`, `load_model`, `invert`, `edit`
as often as the artist likes, `commit`; `edit` first tunes, or reuses the project's tuning, for a method
with a tuning stage) so the model stays loaded and an inversion is made once. `draft` is a run without
its commit that only reuses: the stored inversion (and tuning) the request's key names, else it stops at
once (NeedsRun); it writes nothing anywhere, and its result is the one a run of the same request would
commit, pixel for pixel. So the engine keeps the last draft's result, by everything that result was
made from (`_result_identity`); a run whose job has that identity, while the project still holds the
inversion (and tuning) it used, commits it instead of editing again (Done.from_draft). The inversion
last read or made is kept too (one, by project, key and file digest), so a draft after a draft or a run
reads nothing from the project; `forget` drops what is kept when the front end closes the project.
One engine serves one model and runs one job at a time: every stage holds the engine's lock, so a
second thread's run waits its turn instead of sharing the UNet. No stage changes shared state:
controllers travel with each UNet call, and each run has its own torch.Generator.

On a GPU the stages take the fast path (pipeline.fast) unless the request turns it off. It needs more
GPU memory than the eager path (user guide, GPU memory), so a stage that runs out of GPU memory on it is
run again eagerly, once, with a Notice, after the fast path's fp16 copy of the UNet is given back (for
good: that model is not copied again); the same stage of the same method at the same working size then
runs eagerly for as long as the engine lives, so a card that cannot hold the fast path pays for finding
out once.

A failure becomes one Failed event with a sentence for the user that says truly what was kept; a
cancelled or failed run writes nothing half-made: the project gains an inversion only once it is
complete (and keeps it if a later stage fails), a result only once it is decoded.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.errors import Cancelled, ImageError, NeedsRun, OutOfMemoryError, RetakeError, shorten
from pipeline.events import CancelledEvent, CancelToken, Done, Drafted, Emit, Event, Failed, Notice, Progress, Stage
from pipeline.fast import FastOptions, applies
from pipeline.held_weights import release, released, with_sampling_unet
from pipeline.files import write_atomically
from pipeline.images import check_editable, from_tensor, paste_result, region_at_photo_size, to_tensor
from pipeline.methods.base import EDIT_MASK, EditOutput, Inputs, Tensors, input_specs, stage_key_params, tunes
from pipeline.models import ModelBundle, default_cache_dir, load_model
from pipeline.params import canonical_json, params_to_dict
from pipeline.parts import part_identities, with_parts
from pipeline.preview import LatentRGB, fit_latent_rgb
from pipeline.project import InputValue, ModelRecord, NewEdit, Project, SetAside, SettingsUpdate, making_project
from pipeline.request import EditRequest, Job, inversion_key, made_meanwhile, resolve, tuning_key
from pipeline.run import RunContext, RunOptions
from pipeline.text import check_change_within_window, prompt_overflow

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Inversion:
    """A stored or fresh inversion of a job's photo: its key, its tensors, and whether it was reused."""

    key: str
    tensors: Tensors
    reused: bool


@dataclass(frozen=True)
class EditResult:
    """An edit not yet committed: the method's latents, the decoded result at working size, and the
    result at the photo's own size with the photo's pixels kept outside the edit's region."""

    output: EditOutput
    image: Image.Image
    working_image: Image.Image
    tuning_key: str | None = None
    """The key of the tuning the edit used (a method that tunes), recorded with the edit."""


@dataclass(frozen=True)
class _Drafted:
    """The last draft's result, with the identity of what it was made from (`Engine._result_identity`)."""

    identity: str
    inversion: Inversion
    result: EditResult


@runtime_checkable
class EditEngine(Protocol):
    """What a front end drives: load a model ahead of the first edit, run a request to its end while
    its events come back, decode a step's latent in full. `Engine` is the real one; the GUI's tests
    drive the window with a scripted stand-in (tests/gui/fakes.FakeEngine) that implements the same,
    and tests/test_engine_protocol.py checks that both match this signature for signature."""

    def preload(self, model_spec: str, device: str | None = None, dtype: str | None = None, *,
                allow_download: bool = False, allow_pickle: bool = False,
                emit: Emit | None = None) -> ModelBundle: ...

    def run(self, request: EditRequest, emit: Emit, cancel: CancelToken | None = None) -> Event: ...

    def draft(self, request: EditRequest, emit: Emit, cancel: CancelToken | None = None) -> Event: ...

    def decode(self, bundle: ModelBundle, latent: torch.Tensor) -> Image.Image: ...

    def forget(self) -> None: ...


class Engine:
    """Runs edit requests one at a time; keeps the last loaded model so repeated edits do not reload it."""

    def __init__(self, cache_dir: Path | None = None, fast: FastOptions = FastOptions()) -> None:
        self.cache_dir = cache_dir
        self.fast = fast
        """How a request's fast path runs where it applies (on CUDA; anywhere with `emulate`, for tests)."""
        self._eager_places: set[tuple[str, str, tuple[int, int], str]] = set()
        """Where the fast path ran out of GPU memory: (model identity, method, working size, stage), run
        eagerly from then on."""
        self._no_copy: set[str] = set()
        """The models (by identity) whose fp16 copy was given back when the GPU ran out of memory."""
        self._model: tuple[tuple, ModelBundle] | None = None
        self._preview_maps: dict[str, LatentRGB] = {}
        self._tuned: tuple[tuple[Path, str], Tensors] | None = None
        """The last tuning used, by project and key: a re-edit does not read it from disk again (a
        specref reference's features are a gigabyte at 512 px)."""
        self._inverted: tuple[tuple[Path, str, str], Tensors] | None = None
        """The last inversion read or made, by project, key and its file's digest: a draft (or run) after
        it does not read it from disk again; another file under the key (the project made anew) is read."""
        self._drafted: _Drafted | None = None
        """The last draft's result: the next run of the same job commits it instead of editing again."""
        self._busy = threading.RLock()

    # -- stages ---------------------------------------------------------------------------------
    def resolve(self, request: EditRequest) -> Job:
        """Check the request (files, project, prompts, parameters) without touching a model."""
        return resolve(request)

    def preload(self, model_spec: str, device: str | None = None, dtype: str | None = None, *,
                allow_download: bool = False, allow_pickle: bool = False,
                emit: Emit | None = None) -> ModelBundle:
        """Load a model and keep it (the one kept before is freed first), or return the kept one if it
        is the same; a front end calls it to have the model ready before the first job."""
        key = (model_spec, device, dtype, allow_download, allow_pickle)
        emit = emit or (lambda event: None)
        with self._busy:
            if self._model is None or self._model[0] != key:
                emit(Progress(Stage.LOADING_MODEL, 0, 1, None))
                self._model = None  # free the old model before loading the next
                bundle = load_model(model_spec, device=device, dtype=dtype, allow_download=allow_download,
                                    allow_pickle=allow_pickle, cache_dir=self.cache_dir)
                self._model = (key, bundle)
                emit(Progress(Stage.LOADING_MODEL, 1, 1, 0.0))
            return self._model[1]

    def load_model(self, job: Job, emit: Emit) -> ModelBundle:
        """The job's model with the extra parts its method needs (and, for the fast path on a GPU, the UNet
        copy it samples with), loaded once and kept for the following jobs."""
        request = job.request
        with self._busy:
            bundle = self.preload(job.model_spec, request.device, request.dtype, allow_download=request.allow_download,
                                  allow_pickle=request.allow_pickle, emit=emit)
            with_them = with_parts(bundle, job.method.parts, image_encoder=job.image_encoder,
                                   allow_download=request.allow_download, allow_pickle=request.allow_pickle,
                                   cache_dir=self.cache_dir)
            if request.fast and applies(self.fast, bundle.device) and bundle.identity not in self._no_copy:
                with_them = self._with_sampling_copy(with_them, emit)  # the fast path's held weights
            if with_them is not bundle:  # kept with the model once loaded
                bundle = with_them
                self._model = (self._model[0], bundle)
        self._check_prompts(job, bundle, emit)
        return bundle

    def _with_sampling_copy(self, bundle: ModelBundle, emit: Emit) -> ModelBundle:
        """`bundle` with the fast path's UNet copy, or without it (the fast path then casts the weights at
        each call, as the eager path does) when the GPU has no room for it, as for later jobs."""
        try:
            return with_sampling_unet(bundle)
        except torch.cuda.OutOfMemoryError:
            pass
        self._no_copy.add(bundle.identity)
        gc.collect()  # outside the handler: what the failed copy allocated is unreferenced now
        torch.cuda.empty_cache()
        emit(Notice("The GPU has no room for the fast path's fp16 copy of the model (1.6 GiB for SD 1.x); "
                    "Retake samples with the model's own weights instead, a little slower."))
        return bundle

    def _fast_or_eager(self, job: Job, bundle: ModelBundle, stage: str, emit: Emit,
                       work: Callable[[ModelBundle, bool], T]) -> T:
        """`work(bundle, fast)` for one stage ("inversion", "edit"), on the fast path where it applies;
        if that runs out of GPU memory, once more eagerly, without the fast path's UNet copy, with a
        Notice, and eagerly from then on for this model, method, working size and stage."""
        with self._busy:  # the stage's lock, held by the fallback too, which changes what the engine keeps
            if bundle.sampling_unet is not None and released(bundle.sampling_unet):  # given back at an earlier stage
                bundle = replace(bundle, sampling_unet=None)
            place = (bundle.identity, job.method_id, job.size, stage)
            fast = job.request.fast and applies(self.fast, bundle.device) and place not in self._eager_places
            try:
                return work(bundle, fast)
            except torch.cuda.OutOfMemoryError:
                if not fast:
                    raise
            # Outside the handler, so the failed attempt's frames (its graphs, pools and activations) are gone.
            self._eager_places.add(place)
            self._no_copy.add(bundle.identity)
            if bundle.sampling_unet is not None:  # released in place: this stage's callers hold bundles naming it
                release(bundle.sampling_unet)
                bundle = replace(bundle, sampling_unet=None)
            if self._model is not None and self._model[1].identity == bundle.identity:
                self._model = (self._model[0], replace(self._model[1], sampling_unet=None))
            gc.collect()
            torch.cuda.empty_cache()
            width, height = job.size
            emit(Notice(f"The GPU ran out of memory on the fast path during the {stage}; Retake is running it "
                        f"again with the fast path off, as it will {job.method_id}'s {stage}s at {width}x{height} "
                        "until it is closed (the fast path needs more GPU memory: see the user guide)."))
            return work(bundle, False)

    def invert(self, job: Job, bundle: ModelBundle, emit: Emit, cancel: CancelToken) -> Inversion:
        """The job's inversion: the project's stored one when its key matches, else computed and stored.

        The photo is first checked against what the model can edit at the working size. A first edit
        (no project yet) holds the claim on making the project from before its inversion until the
        project holds it, so a second first edit of the photo waits (saying so), then reuses it.
        """
        return self._fast_or_eager(job, bundle, "inversion", emit,
                                   lambda bundle, fast: self._invert(job, bundle, emit, cancel, fast))

    def _invert(self, job: Job, bundle: ModelBundle, emit: Emit, cancel: CancelToken, fast: bool) -> Inversion:
        check_editable(*job.image.size, max_side=job.max_side, cell=bundle.vae_scale_factor)
        ctx = self._context(job, bundle, emit, cancel, fast)
        inputs = self._inputs(job, ctx, "inversion")
        key_params = stage_key_params(job.params, "inversion")
        parts = part_identities(bundle, job.method.parts)
        key = self._inversion_key(job, bundle)
        with contextlib.ExitStack() as first_edit:
            project = job.project
            if project is None:
                first_edit.enter_context(making_project(job.project_path, self._waiting(job, emit, cancel)))
                project = made_meanwhile(job)
            stored = self._stored(project, key, emit)
            if stored is not None:
                return Inversion(key, stored, True)
            ctx.start_stage(Stage.ENCODING, 1)
            latent = ctx.encode_image(to_tensor(job.working_image(), job.size))
            ctx.advance(1)
            tensors = {k: v.detach().cpu().contiguous()
                       for k, v in job.method.invert(ctx, latent, job.prompts, job.params, inputs).items()}
            cancel.check()
            if project is None:
                project = Project.create(job.project_path, job.image)
            record = project.save_inversion(key, tensors, method=job.method_id, model_identity=bundle.identity,
                                            source_prompt=job.prompts.source, params=key_params, size=job.size,
                                            steps=int(key_params.get("steps", 0)) or 1, parts=parts,
                                            crop=job.crop)
            self._inverted = ((project.path, key, record.file_sha256), tensors)
            return Inversion(key, tensors, False)

    def _inversion_key(self, job: Job, bundle: ModelBundle) -> str:
        """The key the job's inversion is stored under (its photo, crop, model, parts, inversion
        parameters and inversion-stage inputs)."""
        return inversion_key(job, bundle.identity, stage_key_params(job.params, "inversion"),
                             self._digests(job, "inversion"), part_identities(bundle, job.method.parts))

    def _stored(self, project: Project | None, key: str, emit: Emit) -> Tensors | None:
        """The project's inversion `key`, or None: absent, or found damaged when read and set aside (a
        project opened with recovery; the Notice says so), so it is computed again. The one kept in
        memory when it is this project's file under this key, else read and kept."""
        record = project.find_inversion(key) if project is not None else None
        if record is None:
            return None
        assert project is not None
        kept_as = (project.path, key, record.file_sha256)
        if self._inverted is not None and self._inverted[0] == kept_as:
            return self._inverted[1]
        try:
            tensors = project.load_inversion(key)
        except SetAside as aside:
            emit(Notice(str(aside)))
            return None
        self._inverted = (kept_as, tensors)
        return tensors

    def forget(self) -> None:
        """The front end closed the project (or opened another): drop what is kept of it in memory (the
        last inversion, tuning and draft); the next job reads what it needs from its project."""
        with self._busy:
            self._inverted = self._tuned = self._drafted = None

    @staticmethod
    def _waiting(job: Job, emit: Emit, cancel: CancelToken) -> Callable[[str], None]:
        """What a first edit does while another process makes the same project: says so once, and
        stops waiting when cancelled."""
        said: list[str] = []

        def waiting(holder: str) -> None:
            if not said:
                said.append(holder)
                emit(Notice(f"{holder[0].upper()}{holder[1:]} is making the first edit of this photo in "
                            f"{shorten(job.project_path)}; waiting for it, to reuse its inversion."))
            cancel.check()

        return waiting

    def edit(self, job: Job, bundle: ModelBundle, inversion: Inversion, emit: Emit, cancel: CancelToken, *,
             stored_only: bool = False) -> EditResult:
        """Sample the target from an inversion (tuned first, for a method that tunes) and decode it.

        Nothing is written but a finished tuning, which the project keeps under its own key; with
        `stored_only` (a draft) a tuning the project has not stored raises NeedsRun instead.
        """
        return self._fast_or_eager(job, bundle, "edit", emit, lambda bundle, fast: self._edit(
            job, bundle, inversion, emit, cancel, fast, stored_only))

    def _edit(self, job: Job, bundle: ModelBundle, inversion: Inversion, emit: Emit, cancel: CancelToken,
              fast: bool, stored_only: bool) -> EditResult:
        ctx = self._context(job, bundle, emit, cancel, fast)
        tuning_key, tuned = self._tune(job, ctx, inversion, stored_only)
        tensors = {**inversion.tensors, **tuned}
        output = job.method.edit(ctx, tensors, job.prompts, job.params, self._inputs(job, ctx, "edit"))
        cancel.check()
        ctx.start_stage(Stage.DECODING, 1)
        working = from_tensor(ctx.decode(output.target))
        full = paste_result(job.image, working, job.crop, self._region(job, output), job.area.feather)
        ctx.advance(1)
        return EditResult(output, full, working, tuning_key)

    @staticmethod
    def _region(job: Job, output: EditOutput) -> np.ndarray | None:
        """Where the edit may have changed the photo, at the photo's size: the painted mask itself when the
        method's region is exactly that mask, else its region's latent cells over the crop (or photo)."""
        if output.region is None:
            return None
        if output.region_input in job.photo_masks:
            return job.photo_masks[output.region_input]
        width, height = job.image.size
        return region_at_photo_size(output.region.cpu(), job.crop or (0, 0, width, height), job.image.size)

    def _tune(self, job: Job, ctx: RunContext, inversion: Inversion,
              stored_only: bool = False) -> tuple[str | None, Tensors]:
        """The job's tuning key and tuned tensors: the project's when the key matches (kept in memory for
        the next edit), else learned and stored (the project then drops the inversion's tunings used
        least recently, pipeline.project.retention), or NeedsRun with `stored_only`; (None, {}) for a
        method that does not tune."""
        if not tunes(job.method):
            return None, {}
        key_params = stage_key_params(job.params, "tuning")
        target = job.prompts.target if getattr(job.method, "tune_on_target", False) else None
        key = tuning_key(inversion.key, target, key_params, self._digests(job, "tuning"))
        project = job.project if job.project is not None else Project.open(job.project_path)
        if project.find_inversion(key) is not None:
            if self._tuned is None or self._tuned[0] != (job.project_path, key):
                self._tuned = ((job.project_path, key), project.load_inversion(key))
            return key, self._tuned[1]
        if stored_only:
            raise NeedsRun(f"{job.method_id} must tune again for these settings (the target prompt, or a tuning "
                           "parameter, changed); press Run.")
        tuned = job.method.tune(ctx, inversion.tensors, job.prompts, job.params, self._inputs(job, ctx, "tuning"))
        tuned = {name: t.detach().cpu().contiguous() for name, t in tuned.items()}
        clash = sorted(set(tuned) & set(inversion.tensors))
        if clash:
            raise RuntimeError(f"{job.method_id}: tuned tensors {clash} would shadow the inversion's")
        ctx.cancel.check()
        project.save_inversion(key, tuned, method=job.method_id, model_identity=ctx.bundle.identity,
                               source_prompt=job.prompts.source, params=key_params, size=job.size,
                               steps=int(stage_key_params(job.params, "inversion").get("steps", 0)) or 1,
                               parts=part_identities(ctx.bundle, job.method.parts), tuning_of=inversion.key,
                               crop=job.crop)
        self._tuned = ((job.project_path, key), tuned)
        return key, tuned

    def commit(self, job: Job, bundle: ModelBundle, inversion: Inversion, result: EditResult) -> Done:
        """Write the run into the project in one commit (its settings, the named inputs it was given or
        told to drop, the result and its mask, with the inversion and tuning keys it used), then the
        job's output file; returns the Done event. A process killed meanwhile leaves the project as it
        was before the run's commit or with all of it."""
        with self._busy:
            project = job.project if job.project is not None else Project.open(job.project_path)
            params_json = params_to_dict(job.params)
            kinds = {spec.name: spec.kind for spec in input_specs(job.method.Params)}
            inputs = {name: None if source is None else InputValue(
                kinds[name], source, job.input_prompts.get(name) if kinds[name] == "image" else None)
                for name, source in job.input_sources.items()}
            model = ModelRecord(job.model_spec, bundle.identity)
            extra = {"image_sha256": job.image_sha256, "working_size": list(job.size), "max_side": job.max_side}
            edit = project.save_state(
                SettingsUpdate(job.prompts.source, job.method_id, params_json, model=model, max_side=job.max_side,
                               image_encoder=SettingsUpdate.named_encoder(job.request.image_encoder), area=job.area),
                inputs,
                NewEdit(target_prompt=job.prompts.target, source_prompt=job.prompts.source, model=model,
                        method=job.method_id, params=params_json, seed=job.request.seed,
                        inversion_key=inversion.key, result=result.image, mask=self._edit_mask(job),
                        png_metadata=extra, tuning_key=result.tuning_key, crop=job.crop,
                        feather=job.area.feather))
            assert edit is not None
            if job.output is not None:
                try:
                    write_atomically(job.output, project.result_path(edit).read_bytes())
                except OSError as error:
                    raise ImageError(
                        f"The result was saved in the project as {shorten(project.result_path(edit))}, but "
                        f"{shorten(job.output)} could not be written ({error.strerror or error}).") from None
            return Done(project.result_path(edit), job.output, job.project_path, edit.id, inversion.reused,
                        result.image)

    @staticmethod
    def _edit_mask(job: Job) -> torch.Tensor | None:
        """The edit's painted mask, as the project keeps it with the edit: at the photo's own size."""
        painted = job.photo_masks.get(EDIT_MASK.name)
        return None if painted is None else torch.from_numpy(painted.astype(np.float32))[None, None]

    # -- the whole run --------------------------------------------------------------------------
    def run(self, request: EditRequest, emit: Emit, cancel: CancelToken | None = None) -> Event:
        """Run one request to its end; the final event (Done, Failed or CancelledEvent) is also returned."""
        cancel = cancel or CancelToken()
        return self._to_the_end(lambda tracking, state: self._run(request, tracking, cancel, state), emit)

    def draft(self, request: EditRequest, emit: Emit, cancel: CancelToken | None = None) -> Event:
        """A run without its commit, from the stored inversion only: the Drafted event carries the result
        the same request's run would commit; nothing is written (the project is opened without recovery,
        no inversion, tuning, result or output file is made). NeedsRun (a Failed event of that kind) when
        the project holds no inversion, or tuning, for the request's key. The final event is returned."""
        cancel = cancel or CancelToken()
        return self._to_the_end(lambda tracking, _state: self._draft(request, tracking, cancel), emit)

    def _to_the_end(self, work: Callable[[Emit, dict], Done | Drafted], emit: Emit) -> Event:
        """Run `work(emit, state)` under the lock; its final event (or the one a failure or a cancel
        becomes, naming the stage it stopped in) is emitted and returned."""
        state = {"stage": str(Stage.RESOLVING), "kept": False}

        def tracking(event: Event) -> None:
            if isinstance(event, Progress):
                state["stage"] = str(event.stage)
            emit(event)

        with self._busy:
            final = self._guarded(lambda: work(tracking, state), state)
            emit(final)
        return final

    def _draft(self, request: EditRequest, emit: Emit, cancel: CancelToken) -> Drafted:
        job = resolve(request, recover=False)
        for notice in job.notices:
            emit(Notice(notice))
        cancel.check()
        bundle = self.load_model(job, emit)
        check_editable(*job.image.size, max_side=job.max_side, cell=bundle.vae_scale_factor)
        key = self._inversion_key(job, bundle)
        stored = self._stored(job.project, key, emit)
        if stored is None:
            raise NeedsRun("These settings need a new inversion of the photo (the photo's description, the "
                           "model, the crop or an inversion parameter changed); press Run.")
        cancel.check()
        inversion = Inversion(key, stored, True)
        result = self.edit(job, bundle, inversion, emit, cancel, stored_only=True)
        self._drafted = _Drafted(self._result_identity(job, bundle, key), inversion, result)
        return Drafted(result.image, key)

    def _run(self, request: EditRequest, emit: Emit, cancel: CancelToken, state: dict) -> Done:
        job = self.resolve(request)
        for notice in job.notices:
            emit(Notice(notice))
        cancel.check()
        bundle = self.load_model(job, emit)
        cancel.check()
        drafted = self._the_draft_of(job, bundle)
        if drafted is not None:
            inversion, result = drafted.inversion, drafted.result
        else:
            inversion = self.invert(job, bundle, emit, cancel)
            state["kept"] = not inversion.reused
            result = self.edit(job, bundle, inversion, emit, cancel)
        emit(Progress(Stage.SAVING, 0, 1, None))
        done = self.commit(job, bundle, inversion, result)
        emit(Progress(Stage.SAVING, 1, 1, 0.0))
        return replace(done, from_draft=drafted is not None)

    def _the_draft_of(self, job: Job, bundle: ModelBundle) -> _Drafted | None:
        """The last draft, taken (it is committed once), when it is this job's result: made from exactly
        what the job is made from, with the inversion (and tuning) it used still in the project."""
        drafted, self._drafted = self._drafted, None
        if drafted is None or job.project is None:
            return None
        if drafted.identity != self._result_identity(job, bundle, self._inversion_key(job, bundle)):
            return None
        used = (drafted.inversion.key, drafted.result.tuning_key)
        return drafted if all(job.project.find_inversion(key) is not None for key in used if key) else None

    @staticmethod
    def _result_identity(job: Job, bundle: ModelBundle, inversion_key: str) -> str:
        """Everything an edit's result is made from, hashed: the inversion's key (the photo, its crop and
        working size, the model and its parts, the method, the source prompt, the inversion's parameters
        and inputs), the project, the target prompt, every parameter, the seed, every input (and the
        masks at the photo's size, which the paste-back follows), the area, the device and precision.
        Only the previews and the output file are left out: they do not change the result."""
        masks = {name: hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest()
                 for name, mask in sorted(job.photo_masks.items())}
        data = {"inversion": inversion_key, "project": str(job.project_path), "target": job.prompts.target,
                "method": job.method_id, "params": params_to_dict(job.params), "seed": job.request.seed,
                "inputs": job.input_digests, "input_prompts": job.input_prompts, "masks": masks,
                "area": [job.area.mode, job.area.padding, job.area.feather], "crop": job.crop,
                "size": list(job.size), "model": bundle.identity, "device": str(bundle.device),
                "dtype": str(bundle.sample_dtype), "fast": job.request.fast}
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()

    def _guarded(self, work: Callable[[], Done | Drafted], state: dict) -> Event:
        def kept() -> str:
            return ("the finished inversion was kept in the project, nothing else was written" if state["kept"]
                    else "nothing was written")

        try:
            return work()
        except Cancelled:
            return CancelledEvent(state["stage"])
        except RetakeError as error:
            return Failed(str(error), type(error).__name__)
        except torch.cuda.OutOfMemoryError:  # with the fast path off: a stage on it is run again eagerly
            return Failed(str(OutOfMemoryError(
                "The GPU ran out of memory; close other GPU programs, lower the image size (--max-side) or "
                f"run on the CPU; {kept()}.")), OutOfMemoryError.__name__)
        except Exception as error:  # a bug, not a user mistake: say so, keep the traceback in the log
            log.exception("unexpected error")
            return Failed(f"Unexpected internal error ({type(error).__name__}: {error}); {kept()}.")

    def decode(self, bundle: ModelBundle, latent: torch.Tensor) -> Image.Image:
        """A full VAE decode of a latent (a Preview's, when the artist scrubs to that step)."""
        with self._busy:
            return from_tensor(RunContext(bundle, CancelToken(), lambda event: None).decode(
                latent.to(bundle.device, torch.float32)))

    # -- helpers --------------------------------------------------------------------------------
    def _check_prompts(self, job: Job, bundle: ModelBundle, emit: Emit) -> None:
        """Prompt and word errors before any model work; a Notice for words the encoder's window cuts off."""
        tokenizer = bundle.tokenizer
        check_change_within_window(tokenizer, job.prompts.source, job.prompts.target)
        job.method.check(tokenizer, job.prompts, job.params)
        for name, prompt in (("source", job.prompts.source), ("target", job.prompts.target)):
            cut = prompt_overflow(tokenizer, prompt)
            if cut:
                emit(Notice(f"The {name} prompt is longer than the text encoder's {tokenizer.model_max_length}-token "
                            f"window; these words are ignored: {shorten(' '.join(cut))}."))

    def _context(self, job: Job, bundle: ModelBundle, emit: Emit, cancel: CancelToken, fast: bool) -> RunContext:
        request = job.request
        preview_map = None
        if request.preview_every > 0:
            latent_rgb = self._preview_maps.get(bundle.identity)
            if latent_rgb is None:  # fitted once per model, then read from the cache folder
                latent_rgb = self._preview_maps[bundle.identity] = fit_latent_rgb(
                    bundle, self.cache_dir or default_cache_dir())
            scale = bundle.vae_scale_factor
            preview_map = lambda x0: latent_rgb(x0, scale=scale)  # noqa: E731
        options = RunOptions(request.preview_every, request.preview_side, request.seed, preview_map,
                             self.fast if fast else None)
        return RunContext(bundle, cancel, emit, options)

    def _inputs(self, job: Job, ctx: RunContext, stage: str) -> Inputs:
        """The job's named inputs a stage sees, prepared at working size: masks at latent size, images as
        latents. An edit sees every input; the inversion and the tuning only those of their own stage."""
        latent_size = tuple(n // ctx.bundle.vae_scale_factor for n in job.size)[::-1]
        masks, images, prompts = {}, {}, {}
        for spec in input_specs(job.method.Params):
            if stage != "edit" and spec.stage != stage:
                continue
            if spec.name in job.masks:
                mask = F.interpolate(job.masks[spec.name], size=latent_size, mode="area")
                masks[spec.name] = (mask >= 0.5).float().to(ctx.device)
            elif spec.name in job.images:
                images[spec.name] = ctx.encode_image(job.images[spec.name])
                prompts[spec.name] = job.input_prompts[spec.name]
        return Inputs(masks=masks, images=images, prompts=prompts)

    @staticmethod
    def _digests(job: Job, stage: str) -> dict[str, str]:
        """The digests of the inputs that belong to one cached stage (its key covers them)."""
        return {spec.name: job.input_digests[spec.name] for spec in input_specs(job.method.Params)
                if spec.stage == stage and spec.name in job.input_digests}
