"""Which photos a batch edits, and what varies from one to the next: a folder, or a manifest.

A folder gives one row per photo in it (its subfolders are not searched). A manifest, CSV with a
header or JSONL with one object per line, gives one row per edit, so a photo may appear on several
rows (many targets for one photo: its inversion is made once). Its columns:

    photo               the photo file (relative to the manifest's folder, or absolute); required
    name                the result's name (default: the photo's stem, numbered when the photo repeats)
    source, target      the prompts, over the recipe's
    mask                the edit mask file (as --mask)
    reference, reference_mask, reference_prompt     as --reference, --reference-mask, --reference-prompt
    input.NAME, input_prompt.NAME, param.NAME        as --input NAME=FILE, an input's prompt, --param NAME=VALUE

Any other column is a field for the recipe's templates (`{colour}` in "a {colour} car"); a column no
template names is refused, since it is most likely a misspelt one. Empty cells mean "not given".
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.batch.recipe import RecipeError, strict_json
from pipeline.errors import shorten
from pipeline.images import PHOTO_SUFFIXES

BUILTIN_FIELDS = ("stem", "file", "folder")
"""Template fields every photo gives: its file name without and with its ending, and its folder's name."""
MANIFEST_SUFFIXES = (".csv", ".jsonl")
_SHORTHANDS = {"mask": ("input", "edit_mask"), "reference": ("input", "reference"),
               "reference_mask": ("input", "reference_mask"), "reference_prompt": ("input_prompt", "reference")}
_PREFIXES = ("input.", "input_prompt.", "param.")
_MAX_MANIFEST_BYTES = 256 << 20


@dataclass(frozen=True)
class Row:
    """One edit asked for, as given: a photo and the values that vary for it (not yet checked against files)."""

    photo: Path
    where: str
    """Where the row came from, for messages: 'photos/a.jpg' or 'the manifest m.csv, line 4'."""
    name: str | None = None
    source: str | None = None
    target: str | None = None
    inputs: dict[str, Path] = field(default_factory=dict)
    input_prompts: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    """The values of the manifest's extra columns, for the recipe's templates."""


@dataclass(frozen=True)
class Inputs:
    """A batch's rows and the folder that relative paths in them and in the recipe's templates start from."""

    rows: tuple[Row, ...]
    base: Path
    columns: frozenset[str] = frozenset()
    """The manifest's extra columns (template fields); none for a folder."""


def read_inputs(path: Path) -> Inputs:
    """The rows of a folder of photos or of a manifest file; RecipeError says what is wrong with it."""
    if path.is_dir():
        return Inputs(_folder_rows(path), path)
    if not path.is_file():
        raise RecipeError(f"The inputs {shorten(path)} are neither a folder of photos nor a manifest file.")
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise RecipeError(f"The manifest {shorten(path)} must be a .csv or a .jsonl file (or give a folder of photos).")
    try:
        raw = path.read_bytes()[: _MAX_MANIFEST_BYTES + 1]
        text = raw.decode("utf-8-sig")
    except OSError as error:
        raise RecipeError(f"Cannot read the manifest {shorten(path)}: {error.strerror or error}.") from None
    except UnicodeDecodeError:
        raise RecipeError(f"The manifest {shorten(path)} is not UTF-8 text.") from None
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise RecipeError(f"The manifest {shorten(path)} is larger than 256 MB; split the batch.")
    records = _csv_records(text, path) if suffix == ".csv" else _jsonl_records(text, path)
    if not records:
        raise RecipeError(f"The manifest {shorten(path)} lists no photos.")
    rows = tuple(_row(values, where, path.parent) for where, values in records)
    columns = frozenset(name for row in rows for name in row.fields)
    return Inputs(rows, path.parent, columns)


def _folder_rows(folder: Path) -> tuple[Row, ...]:
    try:
        photos = sorted(p for p in folder.iterdir()
                        if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".") and p.is_file())
    except OSError as error:
        raise RecipeError(f"Cannot list the folder {shorten(folder)}: {error.strerror or error}.") from None
    if not photos:
        raise RecipeError(f"The folder {shorten(folder)} holds no photos ({', '.join(PHOTO_SUFFIXES)}); its "
                          "subfolders are not searched.")
    return tuple(Row(photo, shorten(photo, 120)) for photo in photos)


def _csv_records(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        header = [name.strip() for name in header]
        duplicate = next((name for name in header if header.count(name) > 1), None)
        if duplicate is not None:
            raise RecipeError(f"The manifest {shorten(path)} has the column {shorten(duplicate)!r} twice.")
        records = []
        for cells in reader:
            where = f"the manifest {shorten(path)}, line {reader.line_num}"
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header):
                raise RecipeError(f"In {where} there are {len(cells)} cells for {len(header)} columns.")
            records.append((where, {name: cell for name, cell in zip(header, cells) if cell.strip()}))
    except csv.Error as error:
        raise RecipeError(f"The manifest {shorten(path)} is not valid CSV near line {reader.line_num} ({error}).") from None
    return records


def _jsonl_records(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"the manifest {shorten(path)}, line {number}"
        try:
            values = strict_json(line)
        except ValueError as error:
            raise RecipeError(f"In {where} the JSON is not valid ({shorten(error, 80)}).") from None
        if not isinstance(values, dict):
            raise RecipeError(f"In {where} the line must be a JSON object such as {{\"photo\": \"a.jpg\"}}.")
        records.append((where, {k: v for k, v in values.items() if v is not None and v != ""}))
    return records


def _row(values: dict[str, Any], where: str, base: Path) -> Row:
    def text(name: str, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in ("photo", "name"):
            return json.dumps(value)
        raise RecipeError(f"In {where} the {name} must be text, not {shorten(json.dumps(value))}.")

    photo = values.get("photo")
    if photo is None:
        raise RecipeError(f"In {where} there is no photo; every row needs a photo column.")
    row: dict[str, Any] = {"inputs": {}, "input_prompts": {}, "params": {}, "fields": {}}
    for name, value in values.items():
        kind, key = _SHORTHANDS.get(name, (None, None))
        prefix = next((p for p in _PREFIXES if name.startswith(p)), None)
        if name in ("photo", "name", "source", "target"):
            row[name] = text(name, value)
        elif kind is None and prefix is not None:
            kind, key = prefix[:-1], name[len(prefix):]
        elif kind is None:
            if name in BUILTIN_FIELDS or not name.isidentifier():
                raise RecipeError(f"In {where} the column {shorten(name)!r} is neither one Retake knows nor a "
                                  f"template field (a plain name other than {', '.join(BUILTIN_FIELDS)}).")
            row["fields"][name] = text(name, value)
        if kind == "input":
            row["inputs"][key] = base / text(name, value)
        elif kind == "input_prompt":
            row["input_prompts"][key] = text(name, value)
        elif kind == "param":
            row["params"][key] = value
    return Row(photo=base / row.pop("photo"), where=where, **row)
