"""Between the document and the project folder: what the project-I/O thread reads and writes.

Every function here runs off the UI thread (on gui.io_worker's thread; `build_request` on the
engine's): it takes plain data (a path, a DocumentState snapshot) and returns plain data (an
OpenedProject, a ProjectHistory), and touches no widget and no Document. The engine writes
inversions, tunings and results into the project itself; what the artist changes in the window
(prompts, method, parameters, masks, references) is written by `save_document`, through the one
commit every writer of a project's settings and inputs uses (pipeline.project's `save_state`, which
the engine's commit of a run uses too). Masks and references travel to the engine as PNG files in
a scratch folder, the same way the CLI gives them.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gui.document import DocumentState, Reference, method_defaults, method_title, reference_masks
from gui.qimage import Shown
from gui.restore import checked_method

PROJECT_SUFFIX = ".retake"
EXIF_IMAGE_DESCRIPTION = 0x010E
THUMBNAIL_SIDE = 72
LATENT_CELL = 8
"""Pixels of one latent cell of every SD 1.x VAE and of the demo models': a photo narrower than one cannot
be edited at all (pipeline.images.check_editable), so it is refused before a project is made for it."""
SETTINGS_KEYS = ("source_prompt", "target_prompt", "method", "params")


@dataclass(frozen=True)
class ResultEntry:
    """One edit of the history, as the project recorded it, with a thumbnail of its result."""

    edit_id: str
    source_prompt: str
    target_prompt: str
    method: str
    params: dict[str, Any]
    path: Path
    created: str = ""
    thumbnail: Image.Image | None = None


@dataclass(frozen=True)
class ProjectHistory:
    """The project's results, oldest first, how many inversions (and tunings) it stores, and the newest
    result's picture, ready for the canvas (`shown`)."""

    results: tuple[ResultEntry, ...] = ()
    inversions: int = 0
    newest: Image.Image | None = None
    shown: Shown = field(default_factory=Shown)


@dataclass(frozen=True)
class OpenedProject:
    """A project read for the window: its photo, the document's state as saved (checked), its history,
    and `notices`: what opening repaired and what of the saved settings could not be used."""

    path: Path
    image: Image.Image
    state: DocumentState
    history: ProjectHistory
    notices: tuple[str, ...] = ()
    shown: Shown = field(default_factory=Shown)
    """The photo and the masks painted on it, ready for the canvas."""


def is_project(path: Path) -> bool:
    from pipeline.project import MANIFEST_FILE

    return (path / MANIFEST_FILE).is_file()


def project_folder_for(image_path: Path, projects_dir: str = "") -> Path:
    """Where a new photo's project goes: beside it (PHOTO.retake) or in the projects folder."""
    parent = Path(projects_dir) if projects_dir else image_path.parent
    return parent / (image_path.stem + PROJECT_SUFFIX)


def project_for_image(image_path: Path, projects_dir: str = "") -> Path:
    """The project of a photo: the existing one when it holds these pixels, else a new one."""
    from pipeline.images import check_editable, load_image
    from pipeline.project import Project
    from pipeline.request import pixels_sha256

    image = load_image(image_path)
    check_editable(*image.size, max_side=max(image.size), cell=LATENT_CELL)  # a 1x1 photo: said, no project
    wanted = pixels_sha256(image)
    base = project_folder_for(image_path, projects_dir)
    candidate, n = base, 1
    while candidate.exists():
        if is_project(candidate) and pixels_sha256(Project.open(candidate).image()) == wanted:
            return candidate
        n += 1
        candidate = base.with_name(f"{image_path.stem}-{n}{PROJECT_SUFFIX}")
    Project.create(candidate, image)
    return candidate


def open_project(path: Path, new_params: Mapping[str, Any] | None = None) -> OpenedProject:
    """Read the project at `path` (repairing what can be repaired) for the window. Its saved method and
    parameters are checked as --param is: an unknown method or an invalid value is replaced by the
    default and named in `notices`. `new_params` (the app's settings for a new project) replace the
    method's defaults that it has, in a project with no parameters or edits yet, checked the same way."""
    from pipeline.project import Project

    project = Project.open(path, recover=True)
    settings = project.settings
    notices = list(project.recovered)
    method, params, refused = checked_method(settings.method, settings.params) if settings.method else ("p2p", {}, [])
    if method is None:
        notices.append(f"{path.name} was saved with {refused[0]}; {method_title('p2p')} with its defaults is shown "
                       "instead.")
        method, params = "p2p", {}
    elif refused:
        notices.append(f"Some saved parameters of {path.name} could not be used ({'; '.join(refused)}); "
                       "their defaults are shown instead.")
    defaults = method_defaults(method)
    if not project.edits and not settings.params and new_params:
        _, wanted, problems = checked_method(method, {k: v for k, v in new_params.items() if k in defaults})
        params = {**wanted, **params}
        if problems:
            notices.append(f"Some settings for new projects could not be used ({'; '.join(problems)}); "
                           "the method's defaults are used for them.")
    masks: dict[str, np.ndarray] = {}
    references: dict[str, Reference] = {}
    for record in project.inputs:
        image = project.input_image(record.name)
        if record.kind == "mask" and image is not None:
            masks[record.name] = np.array(image, np.uint8)  # a writable copy: the document paints on it
        elif image is not None:
            references[record.name] = Reference(image, record.prompt or "")
    target = project.edits[-1].target_prompt if project.edits else ""
    state = DocumentState(settings.source_prompt, target, method, {**defaults, **params}, masks, references)
    photo = project.image()
    on_photo = tuple(pixels for name, pixels in masks.items() if name not in reference_masks(method))
    return OpenedProject(path, photo, state, read_history(project), tuple(notices), Shown((photo,), on_photo))


def read_history(project: Any, thumbnails: Mapping[Path, Image.Image] | None = None) -> ProjectHistory:
    """The history of `project` (a Project, or the path of one, opened here), with a thumbnail of each
    result (those in `thumbnails` are not read again: results never change) and the newest's picture,
    each read through the project (its checksum checked; a result that cannot be read has none)."""
    from pipeline.project import Project

    if not isinstance(project, Project):
        project = Project.open(project)
    known = thumbnails or {}
    entries = []
    newest = None
    edits = project.edits
    for index, edit in enumerate(edits):
        path = project.result_path(edit)
        picture = read_result(project, edit.id) if index == len(edits) - 1 or path not in known else None
        thumbnail = known.get(path) or _thumbnail(picture)
        newest = picture if index == len(edits) - 1 else newest
        entries.append(ResultEntry(edit.id, edit.source_prompt, edit.target_prompt, edit.method, dict(edit.params),
                                   path, edit.created, thumbnail))
    return ProjectHistory(tuple(entries), len(project.inversions), newest, Shown(() if newest is None else (newest,)))


def read_result(project: Any, edit_id: str) -> Image.Image | None:
    """An edit's result (RGB) from `project` (a Project, or the path of one), checked against its
    checksum; None if it cannot be read (the history still lists the edit)."""
    from pipeline.errors import RetakeError
    from pipeline.project import Project

    try:
        return (project if isinstance(project, Project) else Project.open(project)).result_image(edit_id)
    except (RetakeError, OSError):
        return None


def _thumbnail(picture: Image.Image | None) -> Image.Image | None:
    if picture is None:
        return None
    thumbnail = picture.copy()
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return thumbnail


def save_document(path: Path, state: DocumentState) -> None:
    """Write what the artist changed (prompts, method, parameters, masks, references) into the project at
    `path`, in one commit: a mask with nothing painted and a reference without a picture are forgotten.
    The model and working size the project recorded stay as they are."""
    from pipeline.project import InputValue, Project, SettingsUpdate

    inputs: dict[str, InputValue | None] = {
        name: InputValue("mask", Image.fromarray(pixels, "L")) if pixels.any() else None
        for name, pixels in state.masks.items()}
    inputs.update({name: InputValue("image", ref.image, ref.prompt or None) if ref.image is not None else None
                   for name, ref in state.references.items()})
    Project.open(path).save_state(SettingsUpdate(state.source_prompt, state.method_id, state.params), inputs)


def build_request(project: Path, state: DocumentState, options: dict[str, Any], scratch: Path,
                  preview_side: int = 160, preview_every: int = 1) -> Any:
    """The EditRequest of the document as it stands, with a cheap preview every `preview_every` steps
    (0: none, a draft's).

    Every input the method declares is given as the window shows it: masks and reference pictures as
    PNG files in `scratch`, with the reference's prompt; an input the document lacks (an unpainted
    mask, no reference) is given as "" ("without it"), so the run never falls back to one the project
    stored earlier that the artist has since cleared.
    """
    from pipeline.methods.base import input_specs
    from pipeline.methods.registry import get_method
    from pipeline.request import EditRequest

    inputs: dict[str, str] = {}
    prompts: dict[str, str] = {}
    for spec in input_specs(get_method(state.method_id).Params):
        file = scratch / f"{spec.name}.png"
        inputs[spec.name] = ""
        mask = state.masks.get(spec.name)
        if spec.kind == "mask" and mask is not None and mask.any():
            Image.fromarray(mask, "L").save(file)
            inputs[spec.name] = str(file)
        elif spec.kind == "image" and (ref := state.references.get(spec.name)) and ref.image is not None:
            ref.image.save(file)
            inputs[spec.name] = str(file)
            prompts[spec.name] = ref.prompt
    return EditRequest(target_prompt=state.target_prompt, source_prompt=state.source_prompt,
                       project=str(project), method=state.method_id, params=dict(state.params), inputs=inputs,
                       input_prompts=prompts, preview_every=preview_every, preview_side=preview_side, **options)


def png_settings(path: Path) -> dict[str, Any] | None:
    """What a Retake result PNG says it was made with (prompts, method, parameters, the app that made
    it), as stored: unchecked (gui.restore checks it); None for a PNG that holds no Retake settings.
    A PNG that cannot be read raises the RetakeError the CLI gives for it."""
    from pipeline.images import read_png_metadata

    data = read_png_metadata(path)
    if not any(key in data for key in SETTINGS_KEYS):
        return None
    return {key: data[key] for key in (*SETTINGS_KEYS, "app") if key in data}


def copy_project(source: Path, target: Path) -> None:
    """Save as: a copy of the project folder (without its lock), made in a temporary folder beside the
    target and renamed into place, so a failed copy leaves no half project at `target`."""
    from pipeline.project import LOCK_FILE

    if target.exists():
        raise FileExistsError(17, "it exists already", str(target))
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(LOCK_FILE))
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def prunable(path: Path) -> tuple[Any, Any]:
    """What Free disk space can drop: (the tunings only, with the inversions too), as `Pruned`s."""
    from pipeline.project import Project

    project = Project.open(path)
    return project.prunable(), project.prunable(inversions=True)


def prune(path: Path, inversions: bool) -> Any:
    from pipeline.project import Project

    return Project.open(path).prune(inversions=inversions)


def export_result(project: Path, edit_id: str, target: Path, quality: int = 95) -> None:
    """Export a result of the project (its checksum checked): a PNG keeps its text chunks; JPEG and WebP
    carry the same JSON as the EXIF image description, so every format says how it was made."""
    import io

    from pipeline.errors import ImageError
    from pipeline.files import write_atomically
    from pipeline.project import Project

    suffix = target.suffix.lower()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(suffix)
    if fmt is None:
        raise ImageError(f"Export as .png, .jpg or .webp, not {suffix or 'no extension'}.")
    data = Project.open(project).result_bytes(edit_id)
    if fmt == "PNG":
        write_atomically(target, data)
        return
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        parameters = getattr(image, "text", {}).get("retake", "")
        rgb = image.convert("RGB")
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = parameters
    buffer = io.BytesIO()
    rgb.save(buffer, format=fmt, quality=quality, exif=exif.tobytes())
    write_atomically(target, buffer.getvalue())
