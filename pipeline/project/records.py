"""What project.json holds, as typed values: frozen records the rest of Retake reads and passes around.

Records are frozen so that a record handed to a caller cannot change the project behind its back;
their `params` dicts are private copies (the Project hands out deep copies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Json = Any  # None | bool | int | float | str | list[Json] | dict[str, Json]
InputKind = Literal["image", "mask"]


@dataclass(frozen=True)
class FileRecord:
    """A file inside the project, the SHA-256 of its bytes and their number (None: recorded by a Retake
    before project format 5, which did not record sizes)."""

    file: str
    sha256: str
    nbytes: int | None = None


@dataclass(frozen=True)
class ImageRecord:
    """The source photo: RGB, upright, full resolution, stored losslessly as PNG (`nbytes`: the PNG's
    size, None when recorded before project format 5)."""

    file: str
    sha256: str
    width: int
    height: int
    nbytes: int | None = None


@dataclass(frozen=True)
class ModelRecord:
    """A model as the user named it (`spec`: a path or hub id) and as its weights are (`identity`)."""

    spec: str
    identity: str


Crop = tuple[int, int, int, int]
"""A box of the photo's pixels an inversion or edit worked on: left, top, right, bottom (the last two excluded)."""


@dataclass(frozen=True)
class AreaSettings:
    """Which part of the photo an edit works on (pipeline.area): `mode` "whole", "region" or None (a
    crop around the region when the photo is larger than the working size), the crop's `padding` and
    the `feather` of the paste-back, in photo pixels."""

    mode: str | None
    padding: int
    feather: int


@dataclass(frozen=True)
class Settings:
    """The last settings used on this photo, restored when the project is reopened.

    `max_side` is the working-size bound (longest side in pixels) the inversion was computed at;
    None when no edit has said. `image_encoder` is the image encoder the user named (a folder or
    hub id; pipeline.parts), None when none was: then it is looked for beside the model. `area` is
    the area choice the last edit used (None: none recorded).
    """

    model: ModelRecord | None
    source_prompt: str
    method: str | None
    params: dict[str, Json]
    max_side: int | None = None
    image_encoder: str | None = None
    area: AreaSettings | None = None


@dataclass(frozen=True)
class InversionRecord:
    """One stored inversion and everything that determined it (which the engine hashed into `key`).

    `parts` names the content identity of each extra model part it was computed with (pipeline.parts:
    StyleDiffusion's image encoder), by part name; empty for methods that use none. A method's tuning
    is stored as a record too: `tuning_of` is the key of the inversion it was learned from (None for
    an inversion). The manifest lists these records in the order they were last used, oldest first
    (pipeline.project.retention). `file_nbytes` is the file's size (None when recorded before project
    format 5); `crop` is the box of the photo it was computed on (None: the whole photo).
    """

    key: str
    file: str
    file_sha256: str
    method: str
    model_identity: str
    source_prompt: str
    params: dict[str, Json]
    size: tuple[int, int]
    steps: int
    created: str
    parts: dict[str, str] = field(default_factory=dict)
    tuning_of: str | None = None
    file_nbytes: int | None = None
    crop: Crop | None = None


@dataclass(frozen=True)
class EditRecord:
    """One edit in the history, with everything needed to reproduce it (`tuning_key`: the tuning record
    it used, for a method that tunes; kept as history even if that record is later dropped). `crop` is
    the box of the photo it edited (None: the whole photo) and `feather` the pixels over which its
    result fades into the photo (None: made before schema 5, with the older composite)."""

    id: str
    created: str
    source_prompt: str
    target_prompt: str
    model: ModelRecord
    method: str
    params: dict[str, Json]
    seed: int | None
    inversion_key: str | None
    mask: FileRecord | None
    result: FileRecord
    tuning_key: str | None = None
    crop: Crop | None = None
    feather: int | None = None


@dataclass(frozen=True)
class InputRecord:
    """A named input a method uses besides the photo (an edit mask, a reference image and its prompt)."""

    name: str
    kind: InputKind
    file: FileRecord
    prompt: str | None


@dataclass(frozen=True)
class Manifest:
    """The whole of project.json (minus the format marker and schema version)."""

    app_version: str
    created: str
    modified: str
    image: ImageRecord
    settings: Settings
    inversions: tuple[InversionRecord, ...]
    edits: tuple[EditRecord, ...]
    inputs: tuple[InputRecord, ...] = ()

    def file_references(self) -> list[FileRecord]:
        """Every file reference (file, sha256, size), in manifest order: the photo, the inversions, each
        edit's result and mask, the inputs (a mask shared by several edits repeats)."""
        refs = [FileRecord(self.image.file, self.image.sha256, self.image.nbytes)]
        refs += [FileRecord(inv.file, inv.file_sha256, inv.file_nbytes) for inv in self.inversions]
        for edit in self.edits:
            refs += [edit.result] + ([] if edit.mask is None else [edit.mask])
        refs += [item.file for item in self.inputs]
        return refs

    def referenced_files(self) -> set[str]:
        """Every file (relative path) this manifest says belongs to the project, project.json aside."""
        return {ref.file for ref in self.file_references()}
