"""Checking the files a manifest references, one problem per damaged or missing file.

Opening stops at the first problem; checking and repairing want them all, and recovery wants to
know which record each belongs to, so problems are values rather than exceptions. A link or special
file is not a problem of this kind: Folder refuses it outright (ProjectError), and it is never
repaired automatically.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from pipeline.errors import shorten
from pipeline.project.codec import Damage, file_checksums
from pipeline.project.content import inversion_description, read_safetensors_header
from pipeline.project.folder import Folder
from pipeline.project.records import Manifest

_WHAT = {"image": "source image", "inversion": "inversion", "result": "result", "mask": "mask", "input": "input"}


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
        return f"the {_WHAT[self.kind]} file {shorten(self.file)} {self.reason}"

    @property
    def repairable(self) -> bool:
        """Everything but the photo can be set aside: inversions are recomputed, the rest is history."""
        return self.kind != "image"


def _kinds(manifest: Manifest) -> dict[str, str]:
    kinds = {manifest.image.file: "image"}
    kinds.update({inv.file: "inversion" for inv in manifest.inversions})
    for edit in manifest.edits:
        kinds[edit.result.file] = "result"
        if edit.mask is not None:
            kinds[edit.mask.file] = "mask"
    kinds.update({item.file.file: "input" for item in manifest.inputs})
    return kinds


def find_problems(folder: Folder, manifest: Manifest, *, first_only: bool = False) -> list[Problem]:
    """Every referenced file that is missing, not a file, or not what project.json says it is.

    Raises ProjectError (from Folder) for a link or special file. Reads only.
    """
    kinds = _kinds(manifest)
    keys = {inv.file: inv.key for inv in manifest.inversions}
    problems: list[Problem] = []
    checked: set[str] = set()
    for rel, sha256 in file_checksums(manifest):
        if rel in checked:
            continue
        checked.add(rel)
        kind = kinds[rel]
        try:
            actual = folder.sha256(rel)
            if actual != sha256:
                reason = "is damaged (its contents do not match the checksum in project.json)"
            elif kind == "image":
                reason = _image_problem(folder, rel, manifest)
            elif kind == "inversion":
                reason = _inversion_problem(folder, rel, keys[rel])
            else:
                reason = None
        except FileNotFoundError:
            problems.append(Problem(kind, rel, "is missing", True))
        except IsADirectoryError:
            problems.append(Problem(kind, rel, "is not a regular file", False))
        except OSError as exc:
            problems.append(Problem(kind, rel, f"cannot be read ({shorten(exc.strerror or exc)})", False))
        else:
            if reason is not None:
                problems.append(Problem(kind, rel, reason, False))
        if problems and first_only:
            break
    return problems


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
