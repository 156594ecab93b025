"""Checking the files a manifest references, one problem per damaged or missing file.

Two depths. Opening checks what costs no more than a look at each file: it exists, it is a regular
file of the size project.json records, the photo's PNG header gives its recorded size, an inversion's
safetensors header describes exactly its file and names its key. Hashing every file is what
`retake project check` and a repair do (`hashes=True`); otherwise a file's SHA-256 is checked when its
content is read (`Project.image`, `load_inversion`, ...), so opening a project with gigabytes of
tunings reads kilobytes.

Opening stops at the first problem; checking and repairing want them all, and recovery wants to
know which record each belongs to, so problems are values rather than exceptions. A link or special
file is not a problem of this kind: Folder refuses it outright (ProjectError), and it is never
repaired automatically.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

from PIL import Image

from pipeline.errors import shorten
from pipeline.project.codec import Damage
from pipeline.project.content import inversion_description, read_safetensors_header
from pipeline.project.folder import Folder
from pipeline.project.records import FileRecord, Manifest

_WHAT = {"image": "source image", "inversion": "inversion", "result": "result", "mask": "mask", "input": "input"}
CHECKSUM_MISMATCH = "is damaged (its contents do not match the checksum in project.json)"


@dataclass(frozen=True)
class Problem:
    """A referenced file that is missing or damaged. `text` is a phrase: 'the result file X is missing'."""

    kind: str  # "image", "inversion", "result", "mask" or "input"
    file: str
    reason: str  # "is missing", "is damaged (...)", ...
    missing: bool

    @property
    def text(self) -> str:
        """The problem as a phrase: 'the result file results/e0002.png is missing'."""
        return f"the {what(self.kind)} file {shorten(self.file)} {self.reason}"

    @property
    def repairable(self) -> bool:
        """Everything but the photo can be set aside: inversions are recomputed, the rest is history."""
        return self.kind != "image"


def what(kind: str) -> str:
    """A file kind as said to a person: 'source image', 'inversion', 'result', 'mask', 'input'."""
    return _WHAT[kind]


def _kinds(manifest: Manifest) -> dict[str, str]:
    kinds = {manifest.image.file: "image"}
    kinds.update({inv.file: "inversion" for inv in manifest.inversions})
    for edit in manifest.edits:
        kinds[edit.result.file] = "result"
        if edit.mask is not None:
            kinds[edit.mask.file] = "mask"
    kinds.update({item.file.file: "input" for item in manifest.inputs})
    return kinds


def _references(manifest: Manifest) -> list[FileRecord]:
    """Each referenced file once, with its size where any reference recorded it (a mask shared by an
    edit from before format 5 and a newer one)."""
    merged: dict[str, FileRecord] = {}
    for ref in manifest.file_references():
        first = merged.setdefault(ref.file, ref)
        if first.nbytes is None and ref.nbytes is not None:
            merged[ref.file] = ref
    return list(merged.values())


def find_problems(folder: Folder, manifest: Manifest, *, first_only: bool = False,
                  hashes: bool = False) -> list[Problem]:
    """Every referenced file that is missing, not a regular file, not of its recorded size, or with a
    header that does not fit it; with `hashes`, also every file whose SHA-256 is not the recorded one.

    Raises ProjectError (from Folder) for a link or special file. Reads only: headers, and with
    `hashes` every byte.
    """
    kinds = _kinds(manifest)
    keys = {inv.file: inv.key for inv in manifest.inversions}
    problems: list[Problem] = []
    for ref in _references(manifest):
        kind = kinds[ref.file]
        try:
            reason = _problem(folder, ref, kind, manifest, keys, hashes)
        except FileNotFoundError:
            problems.append(Problem(kind, ref.file, "is missing", True))
        except OSError as exc:
            problems.append(Problem(kind, ref.file, f"cannot be read ({shorten(exc.strerror or exc)})", False))
        else:
            if reason is not None:
                problems.append(Problem(kind, ref.file, reason, False))
        if problems and first_only:
            break
    return problems


def _problem(folder: Folder, ref: FileRecord, kind: str, manifest: Manifest, keys: dict[str, str],
             hashes: bool) -> str | None:
    info = folder.lstat(ref.file)
    if info is None:
        raise FileNotFoundError(ref.file)
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if ref.nbytes is not None and info.st_size != ref.nbytes:
        return (f"is damaged (it holds {shorten(info.st_size)} bytes; project.json records "
                f"{shorten(ref.nbytes)})")
    if hashes and folder.sha256(ref.file) != ref.sha256:
        return CHECKSUM_MISMATCH
    if kind == "image":
        return _image_problem(folder, ref.file, manifest)
    if kind == "inversion":
        return _inversion_problem(folder, ref.file, keys[ref.file])
    return None


def _image_problem(folder: Folder, rel: str, manifest: Manifest) -> str | None:
    image = manifest.image
    try:
        with folder.open(rel) as file, Image.open(file) as img:
            if img.format != "PNG" or img.size != (image.width, image.height):
                return f"is not the {shorten(image.width)}x{shorten(image.height)} PNG that project.json describes"
    except (SyntaxError, ValueError, Image.DecompressionBombError):
        return "is not a readable PNG image"
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError)):
            raise
        return "is not a readable PNG image"
    return None


def _inversion_problem(folder: Folder, rel: str, key: str) -> str | None:
    try:
        _, metadata = read_safetensors_header(folder, rel)
    except Damage as damage:
        return f"is damaged ({damage})"
    if inversion_description(metadata).get("key") != key:
        return f"does not hold the inversion {shorten(key)}"
    return None
