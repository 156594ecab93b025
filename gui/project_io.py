"""Between the document and the project folder: open, create, save, and the request a run sends.

The engine writes inversions and results into the project itself; what the artist changes in the
window (prompts, method, parameters, masks, references) is written here on Save. Masks and
references travel to the engine as PNG files in a scratch folder, the same way the CLI gives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gui.document import Document, ResultEntry, method_defaults

PROJECT_SUFFIX = ".retake"
EXIF_IMAGE_DESCRIPTION = 0x010E


def is_project(path: Path) -> bool:
    from pipeline.project import MANIFEST_FILE

    return (path / MANIFEST_FILE).is_file()


def project_folder_for(image_path: Path, projects_dir: str = "") -> Path:
    """Where a new photo's project goes: beside it (PHOTO.retake) or in the projects folder."""
    parent = Path(projects_dir) if projects_dir else image_path.parent
    return parent / (image_path.stem + PROJECT_SUFFIX)


def project_for_image(image_path: Path, projects_dir: str = "") -> Path:
    """The project of a photo: the existing one when it holds these pixels, else a new one."""
    from pipeline.images import load_image
    from pipeline.project import Project
    from pipeline.request import pixels_sha256

    image = load_image(image_path)
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


def read_results(project: Any) -> list[ResultEntry]:
    return [ResultEntry(e.id, e.source_prompt, e.target_prompt, e.method, dict(e.params),
                        project.result_path(e), e.created) for e in project.edits]


def load_document(doc: Document, path: Path, new_params: dict[str, Any] | None = None) -> None:
    """Open the project at `path` into the document (prompts, method, parameters, masks, results);
    `new_params` replace the method's defaults that it has, in a project with no parameters or edits yet."""
    from pipeline.methods.registry import method_ids
    from pipeline.project import Project

    project = Project.open(path, recover=True)
    doc.reset(path, project.image())
    settings = project.settings
    method = settings.method if settings.method in method_ids() else "p2p"
    defaults = method_defaults(method)
    if not project.edits and not settings.params:
        defaults.update({k: v for k, v in (new_params or {}).items() if k in defaults})
    params = {**defaults, **{k: v for k, v in settings.params.items() if k in defaults}}
    doc.write_method(method, params)
    doc.write_prompt("source", settings.source_prompt)
    doc.write_prompt("target", project.edits[-1].target_prompt if project.edits else "")
    for record in project.inputs:
        image = project.input_image(record.name)
        if record.kind == "mask" and image is not None:
            doc.load_mask(record.name, np.asarray(image, np.uint8))
        elif image is not None:
            doc.load_reference(record.name, image, record.prompt or "")
    doc.set_results(read_results(project), len(project.inversions))
    doc.undo.clear()
    doc.mark_saved()


def refresh_results(doc: Document) -> None:
    """Re-read the history after the engine wrote a result; the newest becomes current."""
    from pipeline.project import Project

    if doc.project_path is not None:
        project = Project.open(doc.project_path)
        doc.set_results(read_results(project), len(project.inversions))


def save_document(doc: Document) -> None:
    """Write what the artist changed (prompts, method, parameters, masks, references) into the project."""
    from pipeline.project import Project

    assert doc.project_path is not None
    project = Project.open(doc.project_path)
    model = project.settings.model
    project.update_settings(model_spec=model.spec if model else None, model_identity=model.identity if model else None,
                            source_prompt=doc.source_prompt, method=doc.method_id, params=doc.params,
                            max_side=project.settings.max_side)
    stored = set(project.input_names())
    for name, pixels in doc.masks.items():
        if pixels.any():
            project.set_input(name, Image.fromarray(pixels, "L"), kind="mask")
        elif name in stored:
            project.remove_input(name)
    for name, reference in doc.references.items():
        if reference.image is not None:
            project.set_input(name, reference.image, kind="image", prompt=reference.prompt or None)
    doc.mark_saved()


def build_request(doc: Document, options: dict[str, Any], scratch: Path, preview_side: int = 160) -> Any:
    """The EditRequest of the document as it stands, with a cheap preview at every step.

    Every input the method declares is given as the window shows it: masks and reference pictures as
    PNG files in `scratch`, with the reference's prompt; an input the document lacks (an unpainted
    mask, no reference) is given as "" ("without it"), so the run never falls back to one the project
    stored earlier that the artist has since cleared.
    """
    from pipeline.methods.base import input_specs
    from pipeline.methods.registry import get_method
    from pipeline.request import EditRequest

    assert doc.project_path is not None
    inputs: dict[str, str] = {}
    prompts: dict[str, str] = {}
    for spec in input_specs(get_method(doc.method_id).Params):
        file = scratch / f"{spec.name}.png"
        inputs[spec.name] = ""
        if spec.kind == "mask" and doc.has_mask(spec.name):
            Image.fromarray(doc.masks[spec.name], "L").save(file)
            inputs[spec.name] = str(file)
        elif spec.kind == "image" and (ref := doc.references.get(spec.name)) and ref.image is not None:
            ref.image.save(file)
            inputs[spec.name] = str(file)
            prompts[spec.name] = ref.prompt
    return EditRequest(target_prompt=doc.target_prompt, source_prompt=doc.source_prompt,
                       project=str(doc.project_path), method=doc.method_id, params=dict(doc.params), inputs=inputs,
                       input_prompts=prompts, preview_every=1, preview_side=preview_side, **options)


def png_settings(path: Path) -> dict[str, Any] | None:
    """The prompts, method and parameters a Retake result PNG was made with; None for other files."""
    from pipeline.errors import RetakeError
    from pipeline.images import read_png_metadata

    try:
        data = read_png_metadata(path)
    except RetakeError:
        return None
    if not {"target_prompt", "method", "params"} <= set(data):
        return None
    return {"source_prompt": data.get("source_prompt", ""), "target_prompt": data["target_prompt"],
            "method": data["method"], "params": data["params"]}


def export_result(source: Path, target: Path, quality: int = 95) -> None:
    """Export a result: a PNG keeps its text chunks; JPEG and WebP carry the same JSON as the EXIF
    image description, so every format says how it was made."""
    import io

    from pipeline.files import write_atomically

    suffix = target.suffix.lower()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(suffix)
    if fmt is None:
        raise ValueError(f"Export as .png, .jpg or .webp, not {suffix or 'no extension'}.")
    if fmt == "PNG":
        write_atomically(target, source.read_bytes())
        return
    with Image.open(source) as image:
        image.load()
        parameters = getattr(image, "text", {}).get("retake", "")
        rgb = image.convert("RGB")
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = parameters
    buffer = io.BytesIO()
    rgb.save(buffer, format=fmt, quality=quality, exif=exif.tobytes())
    write_atomically(target, buffer.getvalue())
