"""The Project: one folder per photo, safe to close at any instant, readable days later.

Three promises shape the code (docs/project-format.md states them for people):

* Crash safety. New content always goes to new file names, each written atomically; project.json,
  which says which files make up the project, is replaced last. Killing Retake at any instant
  leaves the previous project or the new one, both complete.
* Honest loading, cheap opening. `Project.open` checks project.json whole and looks at every file it
  names (present, of its recorded size, headers that fit), and either returns a sound project or
  raises one ProjectError saying what is wrong with which file, and how to repair it when it can be.
  It hashes nothing: a file's SHA-256 is checked when its content is read, and every file's by
  `retake project check` (`verify=True`). It never writes to the folder unless asked to recover.
* No lost updates. Writers take the lock; each save re-reads project.json under it and applies its
  change to the latest version, so two Retake windows on one project both keep their edits.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.metadata
import io
import json
import math
import numbers
import os
import threading
import tomllib
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import safetensors.torch
import torch
from PIL import Image

from pipeline.errors import ImageError, ProjectError, shorten
from pipeline.files import fsync_directory, temp_target
from pipeline.images import png_with_metadata, to_rgb
from pipeline.project.codec import EDIT_ID, KEY, MAX_IMAGE_SIDE, encode_manifest, parse_manifest
from pipeline.project.content import (
    INVERSION_FORMAT, INVERSION_METADATA_KEY, image_png, mask_png, sha256_bytes,
)
from pipeline.project.folder import (
    CREATING_FILE, GENERATED, INPUT_NAME, INPUTS_DIR, INVERSIONS_DIR, LOCK_FILE, MANIFEST_FILE, MASKS_DIR,
    RESULTS_DIR, SOURCE_FILE, Folder, shown,
)
from pipeline.project.lock import DEFAULT_LOCK_TIMEOUT_S, ProjectLock
from pipeline.project.recovery import set_aside
from pipeline.project.retention import KEEP_TUNINGS, Pruned, superseded_tunings, unneeded
from pipeline.project.records import (
    AreaSettings, Crop, EditRecord, FileRecord, ImageRecord, InputKind, InputRecord, InversionRecord, Json, Manifest,
    ModelRecord, Settings,
)
from pipeline.project.state import KEEP, InputValue, NewEdit, SettingsUpdate
from pipeline.project.verify import CHECKSUM_MISMATCH, Problem, find_problems, what

T = TypeVar("T")

_MAX_MANIFEST_BYTES = 64 << 20
# Files an operating system drops into any folder it shows; they do not make a folder "not empty".
_OS_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".directory"})
_FILE_FOLDERS = (MASKS_DIR, RESULTS_DIR, INVERSIONS_DIR, INPUTS_DIR)


class SetAside(ProjectError):
    """A read of a project opened with recovery found its file damaged or missing and set it aside
    (quarantine/, its records dropped); the message is the sentence for the user."""


class Project:
    """A per-image project folder. Get one with `Project.create` or `Project.open`.

    Reads come from the state validated at open (or written by this object since). Every write is
    a transaction against the latest project.json on disk, under the lock, so concurrent writers
    from other processes are merged rather than overwritten.
    """

    def __init__(self, folder: Folder, manifest: Manifest, manifest_sha256: str, lock_timeout: float) -> None:
        """Internal: use `Project.create` or `Project.open`."""
        self._folder = folder
        self._root = folder.root
        self._manifest = manifest
        self._manifest_sha256 = manifest_sha256
        self._lock_timeout = lock_timeout
        self._write_lock = threading.Lock()
        self._lock: ProjectLock | None = None  # held during a transaction
        self._app_version = app_version()
        self._recovered: tuple[str, ...] = ()
        self._recovering = False  # opened with recovery: a damaged file found when read is set aside

    def __repr__(self) -> str:
        m = self._manifest
        return f"Project({str(self._root)!r}, edits={len(m.edits)}, inversions={len(m.inversions)})"

    # ---- creating and opening

    @classmethod
    def create(cls, path: str | os.PathLike[str], image: Image.Image, *,
               lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> Project:
        """Make a new project for `image` (normally from images.load_image) in folder `path`.

        The folder is created if needed. An existing folder must be empty (or hold only the
        remains of an interrupted create); a folder that is already a project, or holds anything
        else, is refused with ProjectError.
        """
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise ProjectError(f"Cannot create a project at {shown(root)}: it is a file, not a folder.")
        if not isinstance(image, Image.Image):
            raise TypeError(f"image must be a PIL image, not {type(image).__name__}")
        check_photo_fits(*image.size)
        folder = Folder(root)
        if root.is_dir():
            _check_can_create(folder)  # before touching the folder (the lock file is a write)
        source_png = image_png(image)
        try:
            new_parent = not root.exists()
            root.mkdir(parents=True, exist_ok=True)
            if new_parent:
                fsync_directory(root.parent)
            with ProjectLock(folder, lock_timeout):
                _check_can_create(folder)
                folder.write(SOURCE_FILE, source_png)
                now = _now()
                width, height = image.size
                manifest = Manifest(
                    app_version=app_version(), created=now, modified=now,
                    image=ImageRecord(SOURCE_FILE, sha256_bytes(source_png), width, height, len(source_png)),
                    settings=Settings(model=None, source_prompt="", method=None, params={}),
                    inversions=(), edits=(),
                )
                data = encode_manifest(manifest)
                folder.write(MANIFEST_FILE, data)
        except OSError as exc:
            raise ProjectError(f"Cannot create a project at {shown(root)}: {exc.strerror or exc}.") from exc
        return cls(folder, manifest, sha256_bytes(data), lock_timeout)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
             recover: bool = False, verify: bool = False) -> Project:
        """Open and check the project in folder `path`.

        Opening reads project.json whole and looks at every file it names: present, a regular file
        of the size recorded, the photo's PNG header and each inversion's safetensors header fit
        (pipeline.project.verify). It hashes nothing, so it costs the same for kilobytes or gigabytes
        of inversions; each file's SHA-256 is checked when its content is read (`image`,
        `load_inversion`, `input_image`, `result_bytes`, `mask_image`). With `verify`, every file is
        hashed now too (`retake project check` and `--repair`).

        Without `recover` it never writes to the folder: any problem raises one ProjectError naming
        it and the file (and, when it can be repaired, saying how). With `recover`, damaged or
        missing inversions, results, masks and inputs are moved to quarantine/ and their records
        dropped (see `recovered`): those found now, and any whose content a later read finds damaged
        or missing (that read raises SetAside, whose message says so). Damage to project.json or the
        photo still raises ProjectError.
        """
        root = Path(path)
        if not root.exists():
            raise ProjectError(f"There is no project at {shown(root)}: the folder does not exist.")
        if not root.is_dir():
            raise ProjectError(f"Cannot open {shown(root)} as a project: it is a file, not a project folder.")
        folder = Folder(root)
        retries = 2
        while True:
            folder.audit()
            data = read_manifest_bytes(folder)
            manifest = parse_manifest(root, data)
            problems = find_problems(folder, manifest, first_only=not recover, hashes=verify)
            # A writer in another process may have replaced the manifest and removed the files it
            # no longer needs while we were checking the old one: check the new one.
            if problems and retries > 0 and _manifest_changed(folder, data):
                retries -= 1
                continue
            break
        project = cls(folder, manifest, sha256_bytes(data), lock_timeout)
        project._recovering = recover
        if problems:
            if not recover or not all(p.repairable for p in problems):
                raise ProjectError(cannot_open_message(root, problems))
            project._recover(verify)
        return project

    def _recover(self, hashes: bool) -> None:
        def change(base: Manifest) -> tuple[Manifest | None, tuple[str, ...]]:
            problems = find_problems(self._folder, base, hashes=hashes)
            if not problems:
                return None, ()
            if not all(p.repairable for p in problems):
                raise ProjectError(cannot_open_message(self._root, problems))
            return set_aside(self._folder, base, problems)

        self._recovered = self._commit(change)

    # ---- reading

    @property
    def path(self) -> Path:
        return self._root

    @property
    def recovered(self) -> tuple[str, ...]:
        """What `open(recover=True)` set aside, one sentence per loss for the user; () if nothing."""
        return self._recovered

    @property
    def manifest(self) -> Manifest:
        return copy.deepcopy(self._manifest)

    @property
    def image_record(self) -> ImageRecord:
        return self._manifest.image

    @property
    def settings(self) -> Settings:
        return copy.deepcopy(self._manifest.settings)

    @property
    def inversions(self) -> tuple[InversionRecord, ...]:
        return copy.deepcopy(self._manifest.inversions)

    @property
    def edits(self) -> tuple[EditRecord, ...]:
        """The edit history, oldest first."""
        return copy.deepcopy(self._manifest.edits)

    @property
    def inputs(self) -> tuple[InputRecord, ...]:
        """The named inputs (masks, reference images), in the order they were first set."""
        return self._manifest.inputs

    def _check_crop(self, crop: Crop | None) -> Crop | None:
        """`crop` as a tuple of four pixel coordinates inside the photo, or None."""
        if crop is None:
            return None
        image = self._manifest.image
        values = tuple(crop)
        if (len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
                or not (0 <= values[0] < values[2] <= image.width and 0 <= values[1] < values[3] <= image.height)):
            raise ValueError(f"a crop must be (left, top, right, bottom) inside the {image.width}x{image.height} "
                             f"photo, not {crop!r}")
        return values

    def image(self) -> Image.Image:
        """The source photo (RGB, upright, full resolution), checked against its SHA-256."""
        record = self._manifest.image
        return self._decode(record.file, record.sha256, "image", "RGB")

    def find_inversion(self, key: str) -> InversionRecord | None:
        for record in self._manifest.inversions:
            if record.key == key:
                return copy.deepcopy(record)
        return None

    def load_inversion(self, key: str) -> dict[str, torch.Tensor]:
        """The tensors stored under `key`, after checking the file's SHA-256. KeyError if absent."""
        record = self.find_inversion(key)
        if record is None:
            raise KeyError(f"no inversion with key {key!r} in {self._root}")
        data = self._read_checked(record.file, record.file_sha256, "inversion")
        return safetensors.torch.load(data)

    def find_edit(self, edit_id: str) -> EditRecord | None:
        for edit in self._manifest.edits:
            if edit.id == edit_id:
                return copy.deepcopy(edit)
        return None

    def result_path(self, edit: EditRecord | str) -> Path:
        """Absolute path of an edit's result PNG (which carries its parameters in text chunks); read it
        with `result_bytes` or `result_image`, which check it."""
        return self._folder.path(self._edit(edit).result.file)

    def result_bytes(self, edit: EditRecord | str) -> bytes:
        """An edit's result PNG as stored (with its parameters), checked against its SHA-256."""
        result = self._edit(edit).result
        return self._read_checked(result.file, result.sha256, "result")

    def result_image(self, edit: EditRecord | str) -> Image.Image:
        """An edit's result (RGB), checked against its SHA-256."""
        result = self._edit(edit).result
        return self._decode(result.file, result.sha256, "result", "RGB")

    def mask_path(self, edit: EditRecord | str) -> Path | None:
        mask = self._edit(edit).mask
        return None if mask is None else self._folder.path(mask.file)

    def mask_image(self, edit: EditRecord | str) -> Image.Image | None:
        """An edit's mask (8-bit greyscale, 255 = edited), checked against its SHA-256; None if it had none."""
        mask = self._edit(edit).mask
        return None if mask is None else self._decode(mask.file, mask.sha256, "mask", "L")

    def input_names(self) -> tuple[str, ...]:
        """The names of the stored inputs, in the order they were first set."""
        return tuple(item.name for item in self._manifest.inputs)

    def input_image(self, name: str) -> Image.Image | None:
        """The input `name` (RGB for an image, 8-bit greyscale for a mask), checked; None if not set."""
        record = self._input(name)
        if record is None:
            return None
        return self._decode(record.file.file, record.file.sha256, "input", "RGB" if record.kind == "image" else "L")

    def input_prompt(self, name: str) -> str | None:
        """The prompt stored with the input image `name`; None if it has none or is not set."""
        record = self._input(name)
        return None if record is None else record.prompt

    def _input(self, name: str) -> InputRecord | None:
        return next((item for item in self._manifest.inputs if item.name == name), None)

    def _edit(self, edit: EditRecord | str) -> EditRecord:
        edit_id = edit.id if isinstance(edit, EditRecord) else edit
        for record in self._manifest.edits:
            if record.id == edit_id:
                return record
        raise KeyError(f"no edit {edit_id!r} in {self._root}")

    def _read_checked(self, rel: str, sha256: str, kind: str) -> bytes:
        """The bytes of the referenced file `rel` (a file of `kind`: "image", "inversion", ...), read
        once and checked against its SHA-256; the one way content leaves a project.

        A damaged or missing file raises ProjectError saying how to repair it, or, in a project opened
        with recovery, is set aside first (SetAside).
        """
        path = shown(self._root / rel)
        try:
            data = self._folder.read(rel)
        except FileNotFoundError:
            problem = Problem(kind, rel, "is missing", True)
            failure = f"The {what(kind)} file {path} is missing from the project"
        except OSError as exc:
            raise ProjectError(f"Cannot read the {what(kind)} file {path}: {exc.strerror or exc}.") from exc
        else:
            if sha256_bytes(data) == sha256:
                return data
            problem = Problem(kind, rel, CHECKSUM_MISMATCH, False)
            failure = (f"The {what(kind)} file {path} is damaged: its contents no longer match the checksum "
                       f"recorded in project.json")
        if self._recovering and problem.repairable:
            raise SetAside(self._set_aside(problem, sha256))
        raise ProjectError(f"{failure}; {repair_advice(self._root, problem.repairable)}.")

    def _set_aside(self, problem: Problem, sha256: str) -> str:
        """Recovery at read time: move the file of `problem` to quarantine/ and drop its records in one
        commit, as opening with recovery would have; returns the sentence for the user."""
        def change(base: Manifest) -> tuple[Manifest | None, tuple[str, ...]]:
            if not any(ref.file == problem.file and ref.sha256 == sha256 for ref in base.file_references()):
                return None, ()  # another writer has already replaced or dropped it
            return set_aside(self._folder, base, [problem])

        sentences = self._commit(change)
        self._recovered += sentences
        return " ".join(sentences) or (f"The {what(problem.kind)} file {shown(self._root / problem.file)} "
                                       f"{problem.reason}, and another Retake has since changed the project; "
                                       f"try again.")

    def _decode(self, rel: str, sha256: str, kind: str, mode: str) -> Image.Image:
        data = self._read_checked(rel, sha256, kind)
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.convert(mode)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ProjectError(f"The {what(kind)} file {shown(self._root / rel)} cannot be decoded "
                               f"({shorten(exc)}).") from exc

    # ---- writing

    def save_state(self, settings: SettingsUpdate | None = None,
                   inputs: Mapping[str, InputValue | None] | None = None,
                   edit: NewEdit | None = None) -> EditRecord | None:
        """Write the state of an edit session in one commit: `settings`, every named input in `inputs`
        (a value stores or replaces it, None forgets it; a name not given stays as it is) and, after a
        run, a new `edit`; returns the new edit's record (None without one).

        Everything is checked and encoded first; then, under the lock, the new files are written under
        names nothing references yet and project.json is replaced last. A process killed at any instant
        therefore leaves the project as it was before this save or as it is after it, never a mix (the
        new prompt with the old mask). Writes nothing if nothing changed.
        """
        new_settings = None if settings is None else self._checked_settings(settings)
        contents = {name: None if value is None else _input_content(name, value)
                    for name, value in (inputs or {}).items()}
        prepared = None if edit is None else self._prepared_edit(edit)

        def change(base: Manifest) -> tuple[Manifest | None, EditRecord | None]:
            new = base
            if new_settings is not None:
                new = dataclasses.replace(new, settings=new_settings(base.settings))
            for name, content in contents.items():
                new = self._with_input(base, new, name, content)
            record = None
            if prepared is not None:
                new, record = self._with_edit(base, new, prepared)
            return (None if new == base else new), record

        return self._commit(change)

    def update_settings(self, *, model_spec: str | None, model_identity: str | None, source_prompt: str,
                        method: str | None, params: Mapping[str, Any], max_side: int | None = None,
                        image_encoder: str | None = None, area: AreaSettings | None = None) -> Settings:
        """Remember the current settings (restored on reopen). Writes only if something changed.

        `max_side` is the working-size bound the edit used (None: not known). `image_encoder` is the
        image encoder the user named; None keeps the one stored, "" forgets it. `area` is the area
        choice the edit used; None keeps the one stored.
        """
        if (model_spec is None) != (model_identity is None):
            raise ValueError("model_spec and model_identity must be given together")
        model = None if model_spec is None else ModelRecord(model_spec, model_identity)  # type: ignore[arg-type]
        self.save_state(SettingsUpdate(source_prompt, method, params, model=model, max_side=max_side,
                                       image_encoder=SettingsUpdate.named_encoder(image_encoder),
                                       area=KEEP if area is None else area))
        return self.settings

    def save_inversion(self, key: str, tensors: Mapping[str, torch.Tensor], *, method: str,
                       model_identity: str, source_prompt: str, params: Mapping[str, Any],
                       size: tuple[int, int], steps: int, parts: Mapping[str, str] | None = None,
                       tuning_of: str | None = None, keep_tunings: int = KEEP_TUNINGS,
                       metadata: Mapping[str, str] | None = None, crop: Crop | None = None) -> InversionRecord:
        """Store `tensors` (copied to contiguous CPU memory) as the inversion `key`; returns its record.

        `params` are the inversion-stage parameters; `parts` the identities of the extra model parts
        it was computed with, by name; `metadata` adds strings to the file's own header. A record
        with the same key is replaced (its old file is removed after the commit). `tuning_of` makes
        it a tuning learned from that inversion: the same commit then drops that inversion's tunings
        beyond the `keep_tunings` most recently used (pipeline.project.retention). `crop` is the box of
        the photo it was computed on (None: the whole photo).
        """
        _check_key(key)
        crop = self._check_crop(crop)
        if tuning_of is not None and (_check_key(tuning_of) == key or keep_tunings < 1):
            raise ValueError(f"a tuning must name another inversion and keep itself, not {tuning_of!r}, "
                             f"keep {keep_tunings}")
        record_params = _params_copy(params, "params")
        record_parts = {}
        for name, identity in (parts or {}).items():
            if not isinstance(name, str) or not INPUT_NAME.fullmatch(name):
                raise ValueError(f"a model part's name must be an identifier, not {name!r}")
            record_parts[name] = _check_str(identity, f"parts[{name!r}]", nonempty=True)
        width, height = size
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (width, height, steps)):
            raise ValueError(f"size and steps must be positive integers, not {size} and {steps}")
        _check_str(method, "method", nonempty=True)
        _check_str(model_identity, "model_identity", nonempty=True)
        _check_str(source_prompt, "source_prompt")
        if not tensors:
            raise ValueError("an inversion needs at least one tensor")
        cpu = {}
        for name, tensor in tensors.items():
            if not isinstance(name, str) or not name or name == "__metadata__":
                raise ValueError(f"invalid tensor name {name!r}")
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
            cpu[name] = tensor.detach().to("cpu", copy=True).contiguous()
        described = {str(k): _check_str(v, f"metadata[{k!r}]") for k, v in (metadata or {}).items()}
        if {"format", "key"} & set(described):
            raise ValueError("metadata must not redefine 'format' or 'key'")
        described.update({"format": INVERSION_FORMAT, "key": key})
        # One metadata entry holding sorted JSON: safetensors writes a multi-entry table in hash
        # order, which would make identical inversions differ byte for byte.
        header = {INVERSION_METADATA_KEY: json.dumps(described, sort_keys=True, ensure_ascii=False)}
        # Serialised in memory and hashed from the same bytes that are written: no re-read.
        data = safetensors.torch.save(cpu, metadata=header)
        del cpu
        digest = sha256_bytes(data)
        rel = f"{INVERSIONS_DIR}/{key}.{digest[:16]}.safetensors"

        def change(base: Manifest) -> tuple[Manifest, InversionRecord]:
            record = InversionRecord(
                key=key, file=rel, file_sha256=digest, method=method, model_identity=model_identity,
                source_prompt=source_prompt, params=record_params, size=(width, height), steps=steps,
                created=_now(), parts=dict(record_parts), tuning_of=tuning_of, file_nbytes=len(data), crop=crop,
            )
            self._store(base, rel, digest, data)
            kept = tuple(inv for inv in base.inversions if inv.key != key)
            new = dataclasses.replace(base, inversions=kept + (record,))
            if tuning_of is not None:
                dropped = superseded_tunings(new, tuning_of, keep_tunings)
                new = dataclasses.replace(new, inversions=tuple(i for i in new.inversions if i.key not in dropped))
            return new, copy.deepcopy(record)

        return self._commit(change)

    def add_edit(self, *, target_prompt: str, source_prompt: str, model: ModelRecord, method: str,
                 params: Mapping[str, Any], seed: int | None, inversion_key: str | None,
                 result: Image.Image, mask: torch.Tensor | Image.Image | None = None,
                 png_metadata: Mapping[str, Any] | None = None, tuning_key: str | None = None,
                 crop: Crop | None = None, feather: int | None = None) -> EditRecord:
        """Append an edit to the history: stores the result PNG (with every parameter in its text
        chunks, plus any `png_metadata` entries) and the mask if any; returns the new record.

        `tuning_key` names the tuning record the edit used; the inversion and tuning it used become
        the most recently used (they move to the end of the manifest's list). `crop` is the box of the
        photo the edit worked on (None: the whole photo), `feather` the pixels over which its result
        fades into the photo (both also go into the PNG's metadata)."""
        record = self.save_state(edit=NewEdit(
            target_prompt=target_prompt, source_prompt=source_prompt, model=model, method=method, params=params,
            seed=seed, inversion_key=inversion_key, result=result, mask=mask, png_metadata=png_metadata,
            tuning_key=tuning_key, crop=crop, feather=feather))
        assert record is not None
        return record

    def prunable(self, *, inversions: bool = False) -> Pruned:
        """What `prune` would drop now, and the bytes of those files; reads only."""
        tunings, dropped = unneeded(self._manifest, inversions)
        files = {record.file for record in self._manifest.inversions if record.key in tunings | dropped}
        return Pruned(tuple(sorted(tunings)), tuple(sorted(dropped)), sum(self._sizes(files).values()))

    def prune(self, *, inversions: bool = False) -> Pruned:
        """Drop every tuning record no re-edit of the newest edit needs, and with `inversions` every such
        inversion too (pipeline.project.retention); returns what was dropped and the bytes removed.

        One commit: project.json stops naming the records, then their files are removed through the
        journal, so a crash at any instant leaves a whole project (the next save removes what is left).
        """
        def change(base: Manifest) -> tuple[Manifest | None, tuple[set[str], set[str], dict[str, int]]]:
            tunings, dropped = unneeded(base, inversions)
            if not tunings | dropped:
                return None, (set(), set(), {})
            kept = tuple(i for i in base.inversions if i.key not in tunings | dropped)
            files = {i.file for i in base.inversions if i.key in tunings | dropped}
            return dataclasses.replace(base, inversions=kept), (tunings, dropped, self._sizes(files))

        removed: set[str] = set()
        tunings, dropped, sizes = self._commit(change, removed)
        return Pruned(tuple(sorted(tunings)), tuple(sorted(dropped)),
                      sum(size for rel, size in sizes.items() if rel in removed))

    def _sizes(self, files: set[str]) -> dict[str, int]:
        """The size in bytes of each of `files` there is (a plain file in the project)."""
        return {rel: info.st_size for rel in files if (info := self._folder.lstat(rel)) is not None}

    def set_input(self, name: str, image: Image.Image | torch.Tensor, *, kind: InputKind,
                  prompt: str | None = None) -> None:
        """Store the named input `name` (e.g. "edit_mask", "reference"), replacing any earlier one.

        An image (PIL, or a tensor in [-1, 1]) is stored as RGB PNG with an optional `prompt`
        describing it; a mask (PIL, or a tensor of 0..1) as 8-bit greyscale PNG, without a prompt.
        """
        self.save_state(inputs={name: InputValue(kind, image, prompt)})

    def remove_input(self, name: str) -> None:
        """Forget the input `name` (its file is removed after the commit). KeyError if it is not set."""
        if self._input(name) is None:
            raise KeyError(f"no input {name!r} in {self._root}")
        self.save_state(inputs={name: None})

    # ---- the parts of a save: each checked before the commit, applied to the manifest inside it

    @staticmethod
    def _checked_settings(update: SettingsUpdate) -> Callable[[Settings], Settings]:
        """`update` checked now; the function that applies it to the settings stored when the save commits."""
        if update.model is not KEEP and update.model is not None:
            if not isinstance(update.model, ModelRecord):
                raise TypeError(f"model must be a ModelRecord, not {type(update.model).__name__}")
            _check_str(update.model.spec, "model_spec", nonempty=True)
            _check_str(update.model.identity, "model_identity", nonempty=True)
        max_side = update.max_side
        if max_side is not KEEP and max_side is not None and (
                isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
            raise ValueError(f"max_side must be a positive integer or None, not {max_side!r}")
        _check_str(update.source_prompt, "source_prompt")
        if update.method is not None:
            _check_str(update.method, "method", nonempty=True)
        if update.image_encoder is not KEEP and update.image_encoder is not None:
            _check_str(update.image_encoder, "image_encoder")
        if update.area is not KEEP and update.area is not None:
            _check_area(update.area)
        params = _params_copy(update.params, "params")
        return lambda stored: update.resolve(stored, copy.deepcopy(params))

    def _with_input(self, base: Manifest, new: Manifest, name: str,
                    content: tuple[InputRecord, bytes] | None) -> Manifest:
        """`new` with input `name` stored (its file written) or, for None, forgotten."""
        if content is None:
            kept = tuple(item for item in new.inputs if item.name != name)
            return new if kept == new.inputs else dataclasses.replace(new, inputs=kept)
        record, data = content
        if record in new.inputs:
            return new
        self._store(base, record.file.file, record.file.sha256, data)
        names = [item.name for item in new.inputs]
        inputs = (tuple(record if item.name == name else item for item in new.inputs) if name in names
                  else new.inputs + (record,))
        return dataclasses.replace(new, inputs=inputs)

    def _prepared_edit(self, edit: NewEdit) -> _PreparedEdit:
        """An edit's arguments checked and its files encoded (the result PNG carries its parameters)."""
        for name, value in (("target_prompt", edit.target_prompt), ("source_prompt", edit.source_prompt)):
            _check_str(value, name)
        _check_str(edit.method, "method", nonempty=True)
        if not isinstance(edit.model, ModelRecord):
            raise TypeError(f"model must be a ModelRecord, not {type(edit.model).__name__}")
        seed = edit.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
        for used in (edit.inversion_key, edit.tuning_key):
            if used is not None:
                _check_key(used)
        self._check_crop(edit.crop)
        if edit.feather is not None and (isinstance(edit.feather, bool) or not isinstance(edit.feather, int)
                                         or edit.feather < 0):
            raise ValueError(f"feather must be a whole number of pixels, not {edit.feather!r}")
        edit_params = _params_copy(edit.params, "params")
        if not isinstance(edit.result, Image.Image):
            raise TypeError(f"result must be a PIL image, not {type(edit.result).__name__}")
        rgb = edit.result if edit.result.mode == "RGB" else to_rgb(edit.result)
        created = _now()
        reproduce = {
            "app": f"Retake {self._app_version}",
            "source_prompt": edit.source_prompt,
            "target_prompt": edit.target_prompt,
            "method": edit.method,
            "params": edit_params,
            "seed": seed,
            "model": edit.model.spec,
            "model_identity": edit.model.identity,
            "inversion_key": edit.inversion_key,
            "tuning_key": edit.tuning_key,
            "source_image_sha256": self._manifest.image.sha256,
            "created": created,
            "crop": None if edit.crop is None else list(edit.crop),
            "feather": edit.feather,
        }
        extra = _params_copy(edit.png_metadata or {}, "png_metadata")
        clash = sorted(set(extra) & set(reproduce))
        if clash:
            raise ValueError(f"png_metadata must not redefine {', '.join(clash)}")
        result_png = png_with_metadata(rgb, {**reproduce, **extra})
        mask_data = None if edit.mask is None else mask_png(edit.mask)
        mask_record = None if mask_data is None else FileRecord(
            f"{MASKS_DIR}/{sha256_bytes(mask_data)[:16]}.png", sha256_bytes(mask_data), len(mask_data))
        return _PreparedEdit(edit, edit_params, created, result_png, sha256_bytes(result_png), mask_record, mask_data)

    def _with_edit(self, base: Manifest, new: Manifest, prepared: _PreparedEdit) -> tuple[Manifest, EditRecord]:
        """`new` with the edit appended (its mask and result written) and the inversion and tuning it used
        moved to the end of the list (the most recently used)."""
        edit = prepared.edit
        edit_id = _next_edit_id(new.edits)
        if prepared.mask_record is not None:
            assert prepared.mask_data is not None
            self._store(base, prepared.mask_record.file, prepared.mask_record.sha256, prepared.mask_data)
        result_record = FileRecord(f"{RESULTS_DIR}/{edit_id}.png", prepared.result_sha256, len(prepared.result_png))
        self._store(base, result_record.file, prepared.result_sha256, prepared.result_png)  # a new id
        record = EditRecord(
            id=edit_id, created=prepared.created, source_prompt=edit.source_prompt,
            target_prompt=edit.target_prompt, model=edit.model, method=edit.method, params=prepared.params,
            seed=edit.seed, inversion_key=edit.inversion_key, mask=prepared.mask_record, result=result_record,
            tuning_key=edit.tuning_key, crop=None if edit.crop is None else tuple(edit.crop), feather=edit.feather,
        )
        used = (edit.inversion_key, edit.tuning_key)
        inversions = (tuple(i for i in new.inversions if i.key not in used)
                      + tuple(i for i in new.inversions if i.key in used))
        return (dataclasses.replace(new, edits=new.edits + (record,), inversions=inversions),
                copy.deepcopy(record))

    # ---- the transaction

    def _commit(self, change: Callable[[Manifest], tuple[Manifest | None, T]],
                removed: set[str] | None = None) -> T:
        """Apply `change` to the latest manifest under the lock and commit it.

        `change` writes any new files through `_store` (always under names the base manifest does
        not reference) and returns the new manifest, or None for no change. project.json is
        replaced last. Afterwards the files this save (or a dead save whose lock it took over)
        journaled and the manifest does not reference are removed, with their temporary files;
        their names are added to `removed` when it is given.
        """
        with self._write_lock:
            try:
                with ProjectLock(self._folder, self._lock_timeout) as lock:
                    self._lock = lock
                    keep: set[str] | None = None  # unknown until the base manifest is read: delete nothing
                    try:
                        self._folder.audit()
                        base = self._latest()
                        keep = base.referenced_files()
                        new, result = change(base)
                        if new is not None:
                            keep |= new.referenced_files()
                            new = dataclasses.replace(new, app_version=self._app_version, modified=_now())
                            data = encode_manifest(new)
                            for rel in sorted(base.referenced_files() - new.referenced_files()):
                                lock.record(rel)
                            lock.record(MANIFEST_FILE)
                            self._folder.write(MANIFEST_FILE, data)
                            self._manifest, self._manifest_sha256 = new, sha256_bytes(data)
                            keep = new.referenced_files()
                    finally:
                        self._lock = None
                        if keep is not None:
                            gone = self._remove_journaled(lock, keep | {MANIFEST_FILE})
                            if removed is not None:
                                removed |= gone
            except OSError as exc:
                raise ProjectError(f"Cannot save the project at {shown(self._root)}: "
                                   f"{exc.strerror or exc}.") from exc
            return result

    def _store(self, base: Manifest, rel: str, sha256: str, data: bytes) -> None:
        """Write a new file of this transaction, journaled first; nothing to do if `base` already
        references the same content under that name."""
        if any(ref.file == rel and ref.sha256 == sha256 for ref in base.file_references()):
            return
        assert self._lock is not None, "files are written only inside a transaction"
        self._lock.record(rel)
        self._folder.write(rel, data)

    def _remove_journaled(self, lock: ProjectLock, keep: set[str]) -> set[str]:
        """Best effort: delete journaled files outside `keep`, and temporary files of journaled names;
        returns the names deleted.

        Only names of the forms Retake generates are deleted, whatever a (possibly forged) journal says.
        """
        removed = set()
        by_folder: dict[str, set[str]] = {}
        for rel in lock.journal:
            parent, _, name = rel.rpartition("/")
            by_folder.setdefault(parent, set()).add(name)
        for parent, names in by_folder.items():
            doomed = [name for name in names if _join(parent, name) not in keep and GENERATED.fullmatch(_join(parent, name))]
            doomed += [entry for entry in self._folder.names(parent) if temp_target(entry) in names]
            for name in doomed:
                try:
                    if self._folder.remove(_join(parent, name)):
                        removed.add(_join(parent, name))
                except (OSError, ProjectError):
                    pass
        return removed

    def _latest(self) -> Manifest:
        """The manifest on disk now: ours if unchanged, else the one another process committed."""
        data = read_manifest_bytes(self._folder)
        if sha256_bytes(data) == self._manifest_sha256:
            return self._manifest
        manifest = parse_manifest(self._root, data)
        if manifest.image != self._manifest.image:
            raise ProjectError(f"The project at {shown(self._root)} now holds a different photo; open it again.")
        return manifest


def cannot_open_message(root: Path, problems: list[Problem]) -> str:
    """The one sentence refusing to open a project with `problems`, saying whether it can be repaired."""
    return (f"Cannot open the project at {shown(root)}: {problems[0].text}; "
            f"{repair_advice(root, all(p.repairable for p in problems))}.")


def repair_advice(root: Path, repairable: bool) -> str:
    """How to repair the project at `root`, or that it cannot be: a clause ending a sentence."""
    if repairable:
        return (f"`retake project check {shown(root)} --repair` moves the damaged files aside and keeps "
                f"the rest")
    return "Retake cannot repair a project whose photo is lost or damaged"


def check_photo_fits(width: int, height: int) -> None:
    """Refuse, before any work, a photo that a project cannot hold: a side over MAX_IMAGE_SIDE pixels
    (ImageError). A photo that passes the decoder's pixel bound can still be a 1 x 1,100,000 strip."""
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ImageError(f"The photo is {width}x{height} pixels; a Retake project holds photos of at most "
                         f"{MAX_IMAGE_SIDE:,} pixels a side, so crop or scale it first.")


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _next_edit_id(edits: tuple[EditRecord, ...]) -> str:
    numbers = [int(m.group(1)) for e in edits if (m := EDIT_ID.fullmatch(e.id))]
    return f"e{max(numbers, default=0) + 1:04d}"


def read_manifest_bytes(folder: Folder) -> bytes:
    """project.json's bytes, or the ProjectError that says why a folder is not a readable project."""
    root = shown(folder.root)
    try:
        data = folder.read(MANIFEST_FILE, _MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ProjectError(f"{root} is not a Retake project: it has no project.json.") from None
    except IsADirectoryError:
        raise ProjectError(f"{root} is not a Retake project: its project.json is a folder.") from None
    except OSError as exc:
        raise ProjectError(f"Cannot read the project.json of {root}: {exc.strerror or exc}.") from exc
    if len(data) > _MAX_MANIFEST_BYTES:
        raise ProjectError(f"Cannot open the project at {root}: project.json is too large to be a Retake manifest.")
    return data


def _manifest_changed(folder: Folder, data: bytes) -> bool:
    try:
        return folder.read(MANIFEST_FILE, _MAX_MANIFEST_BYTES) != data
    except (OSError, ProjectError):
        return False


def _check_can_create(folder: Folder) -> None:
    """Refuse a folder that is a project or holds anything but remains of an interrupted create."""
    root = shown(folder.root)
    folder.audit()
    if folder.lstat(MANIFEST_FILE) is not None:
        raise ProjectError(f"Cannot create a project at {root}: it already holds a Retake project; open it instead.")
    if not only_creation_remains(folder.root):
        raise ProjectError(f"Cannot create a project at {root}: the folder is not empty; choose an empty folder.")


def only_creation_remains(root: Path) -> bool:
    """Whether the folder `root` holds nothing but what a running or interrupted first edit leaves (the
    photo, the lock, the claim of a first edit, temporary files, empty file folders, an operating
    system's clutter): a project may be made there."""
    folder = Folder(root)
    for name in folder.names(""):
        if name in (SOURCE_FILE, LOCK_FILE, CREATING_FILE) or name in _OS_CLUTTER or temp_target(name) is not None:
            continue
        if name in _FILE_FOLDERS and not folder.names(name):
            continue
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Argument checking (programmer errors: TypeError / ValueError)


def _json_copy(value: Any, where: str) -> Json:
    """A deep copy of `value` as plain JSON data; tuples become lists; NaN, sets etc. are refused."""
    if isinstance(value, str):
        return _check_str(value, where)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):  # includes numpy integers
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, not {value}")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_json_copy(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} that is not a string")
            out[_check_str(k, f"a key of {where}")] = _json_copy(v, f"{where}.{k}")
        return out
    raise TypeError(f"{where} must hold only JSON values, not {type(value).__name__}")


def _params_copy(value: Any, where: str) -> dict[str, Json]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a mapping, not {type(value).__name__}")
    return _json_copy(value, where)


def _check_area(area: AreaSettings) -> None:
    if not isinstance(area, AreaSettings) or area.mode not in (None, "whole", "region") or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in (area.padding, area.feather)):
        raise ValueError(f"not an area choice: {area!r}")


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValueError(f"an inversion key must be 1-128 letters, digits, '-' or '_', not {key!r}")
    return key


def _input_content(name: str, value: InputValue) -> tuple[InputRecord, bytes]:
    """The record and PNG bytes of an input to store, checked (programmer errors: ValueError, TypeError)."""
    _check_input_name(name)
    if value.kind not in ("image", "mask"):
        raise ValueError(f"kind must be 'image' or 'mask', not {value.kind!r}")
    if value.prompt is not None:
        _check_str(value.prompt, "prompt")
        if value.kind == "mask":
            raise ValueError("a mask input has no prompt")
    data = image_png(value.picture) if value.kind == "image" else mask_png(value.picture)
    digest = sha256_bytes(data)
    return InputRecord(name, value.kind, FileRecord(f"{INPUTS_DIR}/{name}.{digest[:16]}.png", digest, len(data)),
                       value.prompt), data


@dataclasses.dataclass(frozen=True)
class _PreparedEdit:
    """A new edit checked and encoded before its commit; the commit gives it its id."""

    edit: NewEdit
    params: dict[str, Json]
    created: str
    result_png: bytes
    result_sha256: str
    mask_record: FileRecord | None
    mask_data: bytes | None


def _check_input_name(name: str) -> str:
    if not isinstance(name, str) or not INPUT_NAME.fullmatch(name):
        raise ValueError(f"an input name must be a letter then up to 39 letters, digits or '_', not {name!r}")
    return name


def _check_str(value: Any, name: str, *, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if nonempty and not value:
        raise ValueError(f"{name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode text (it holds a lone surrogate)") from None
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@functools.cache
def app_version() -> str:
    """This Retake's version: from the installed package, else from pyproject.toml in a checkout."""
    try:
        return importlib.metadata.version("retake")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"
