"""One folder per photo: the image, its costly inversions and its edit history, safe to close at any time.

Inverting a photo into the diffusion model's noise space is the expensive step of an edit (minutes
on a laptop); trying a new target prompt on a stored inversion is cheap. A project keeps everything
needed to come back to a photo days later and carry on: the source image, the last settings, every
inversion (keyed by the engine from everything that determines it), and every edit with the exact
parameters that produced it. docs/project-format.md describes the format for people.

Three promises shape the code:

* Crash safety. New content always goes to new file names, each written to a temporary name,
  fsynced and renamed; project.json, which says which files make up the project, is replaced last.
  Killing Retake at any instant leaves the previous project or the new one, both complete.
* Honest loading. `Project.open` checks everything (JSON, format, version, every field, every file
  and its SHA-256, safetensors headers) and either returns a sound project or raises one
  ProjectError saying what is wrong with which file. It never writes to the folder.
* No lost updates. Writers take a lock file; each save re-reads project.json under the lock and
  applies its change to the latest version, so two Retake windows on one project both keep their
  edits. Readers need no lock.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import math
import numbers
import os
import re
import secrets
import socket
import stat
import struct
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import safetensors.torch
import torch
from PIL import Image

from pipeline.errors import ProjectError
from pipeline.images import TEMP_SUFFIX, fsync_directory, png_with_metadata, to_rgb, write_atomically

FORMAT = "retake-project"
SCHEMA_VERSION = 1

MANIFEST_FILE = "project.json"
SOURCE_FILE = "source.png"
LOCK_FILE = ".lock"
MASKS_DIR, RESULTS_DIR, INVERSIONS_DIR = "masks", "results", "inversions"

INVERSION_FORMAT = "retake-inversion"
INVERSION_METADATA_KEY = "retake"  # the safetensors metadata entry describing an inversion file

# A save holds the lock for seconds at most; a lock this old belongs to a dead or hung process
# (or to a reused pid after a crash), whatever its pid says.
LOCK_STALE_AFTER_S = 600.0
DEFAULT_LOCK_TIMEOUT_S = 30.0

_MAX_MANIFEST_BYTES = 64 << 20
_MAX_SAFETENSORS_HEADER = 100 << 20
_HASH_CHUNK = 1 << 20

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_EDIT_ID = re.compile(r"e([0-9]{4,9})")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}"
# Where each kind of file may live; anything else in project.json is damage (or an attack).
_FILE_PATTERNS = {
    "image": re.compile(re.escape(SOURCE_FILE)),
    "mask": re.compile(rf"{MASKS_DIR}/{_NAME}\.png"),
    "result": re.compile(rf"{RESULTS_DIR}/{_NAME}\.png"),
    "inversion": re.compile(rf"{INVERSIONS_DIR}/{_NAME}\.safetensors"),
}
# Names this code generates; only these (and temporary files) are ever deleted by cleanup.
_GENERATED = {
    MASKS_DIR: re.compile(r"[0-9a-f]{16}\.png"),
    RESULTS_DIR: re.compile(r"e[0-9]{4,9}\.png"),
    INVERSIONS_DIR: re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\.[0-9a-f]{16}\.safetensors"),
}
_TEMP = re.compile(r"\..+\.[0-9a-f]{12}" + re.escape(TEMP_SUFFIX))
# Files an operating system drops into any folder it shows; they do not make a folder "not empty".
_OS_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".directory"})

_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}

Json = Any  # None | bool | int | float | str | list[Json] | dict[str, Json]
T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Schema migrations: MIGRATIONS[n] turns a parsed version-n manifest into a version-(n + 1) one.
# Opening upgrades in memory only; the next save writes the current version.

MIGRATIONS: Mapping[int, Callable[[dict[str, Json]], dict[str, Json]]] = {}


class _TooNew(Exception):
    """project.json is of a schema version newer than this code knows."""


class _Damage(Exception):
    """A problem in project.json or a file; str() is a phrase naming the field or the fault."""


def _migrate(
    data: dict[str, Json],
    migrations: Mapping[int, Callable[[dict[str, Json]], dict[str, Json]]],
    target: int,
) -> dict[str, Json]:
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _Damage(f"schema_version must be an integer, not {_show(version)}")
    if version > target:
        raise _TooNew(version)
    data = copy.deepcopy(data)
    while version < target:
        step = migrations.get(version)
        if step is None:
            raise _Damage(f"schema_version {version} is not a project format Retake has ever written")
        data = step(data)
        version += 1
        data["schema_version"] = version
    return data


def migrate_manifest(
    data: dict[str, Json],
    migrations: Mapping[int, Callable[[dict[str, Json]], dict[str, Json]]] = MIGRATIONS,
    target: int = SCHEMA_VERSION,
) -> dict[str, Json]:
    """Upgrade a parsed manifest step by step to schema `target`; the input is not modified.

    Raises ProjectError for a version newer than `target` or one with no upgrade path.
    """
    try:
        return _migrate(data, migrations, target)
    except _TooNew as exc:
        raise ProjectError(_too_new_message("This project", exc.args[0], target)) from None
    except _Damage as damage:
        raise ProjectError(f"project.json is damaged: {damage}.") from None


def _too_new_message(subject: str, version: int, target: int) -> str:
    return (f"{subject} was made by a newer Retake (project format {version}; this Retake reads up to "
            f"format {target}); update Retake to open it.")


# --------------------------------------------------------------------------------------------------
# Records: what project.json holds, as typed values. Frozen; params dicts are private copies.


@dataclass(frozen=True)
class FileRecord:
    """A file inside the project and the SHA-256 of its bytes."""

    file: str
    sha256: str


@dataclass(frozen=True)
class ImageRecord:
    """The source photo: RGB, upright, full resolution, stored losslessly as PNG."""

    file: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class ModelRecord:
    """A model as the user named it (`spec`: a path or hub id) and as its weights are (`identity`)."""

    spec: str
    identity: str


@dataclass(frozen=True)
class Settings:
    """The last settings used on this photo, restored when the project is reopened."""

    model: ModelRecord | None
    source_prompt: str
    method: str | None
    params: dict[str, Json]


@dataclass(frozen=True)
class InversionRecord:
    """One stored inversion and everything that determined it (which the engine hashed into `key`)."""

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


@dataclass(frozen=True)
class EditRecord:
    """One edit in the history, with everything needed to reproduce it."""

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

    def referenced_files(self) -> set[str]:
        files = {self.image.file}
        files.update(inv.file for inv in self.inversions)
        for edit in self.edits:
            files.add(edit.result.file)
            if edit.mask is not None:
                files.add(edit.mask.file)
        return files


# --------------------------------------------------------------------------------------------------
# Encoding


def _model_json(model: ModelRecord | None) -> Json:
    return None if model is None else {"spec": model.spec, "identity": model.identity}


def _file_json(record: FileRecord | None) -> Json:
    return None if record is None else {"file": record.file, "sha256": record.sha256}


def manifest_to_json(manifest: Manifest) -> dict[str, Json]:
    """The JSON document for `manifest`, in the current schema."""
    m = manifest
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "app_version": m.app_version,
        "created": m.created,
        "modified": m.modified,
        "image": {"file": m.image.file, "sha256": m.image.sha256, "width": m.image.width,
                  "height": m.image.height},
        "settings": {
            "model": _model_json(m.settings.model),
            "source_prompt": m.settings.source_prompt,
            "method": m.settings.method,
            "params": m.settings.params,
        },
        "inversions": [
            {
                "key": inv.key, "file": inv.file, "file_sha256": inv.file_sha256, "method": inv.method,
                "model_identity": inv.model_identity, "source_prompt": inv.source_prompt,
                "params": inv.params, "size": list(inv.size), "steps": inv.steps, "created": inv.created,
            }
            for inv in m.inversions
        ],
        "edits": [
            {
                "id": e.id, "created": e.created, "source_prompt": e.source_prompt,
                "target_prompt": e.target_prompt, "model": _model_json(e.model), "method": e.method,
                "params": e.params, "seed": e.seed, "inversion_key": e.inversion_key,
                "mask": _file_json(e.mask), "result": _file_json(e.result),
            }
            for e in m.edits
        ],
    }


def _encode(manifest: Manifest) -> bytes:
    text = json.dumps(manifest_to_json(manifest), indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Decoding: strict, with messages that say where the problem is ("edits[2].seed ...").


def _expect_dict(value: Json, where: str) -> dict[str, Json]:
    if not isinstance(value, dict):
        raise _Damage(f"{where} must be an object")
    return value


def _qualified(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _field(obj: dict[str, Json], key: str, where: str) -> Json:
    if key not in obj:
        raise _Damage(f"{_qualified(where, key)} is missing")
    return obj[key]


def _str(obj: dict[str, Json], key: str, where: str, *, nullable: bool = False,
         nonempty: bool = False, pattern: re.Pattern[str] | None = None) -> str | None:
    value = _field(obj, key, where)
    name = _qualified(where, key)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise _Damage(f"{name} must be a string{' or null' if nullable else ''}, not {_show(value)}")
    if nonempty and not value:
        raise _Damage(f"{name} must not be empty")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Damage(f"{name} has an invalid value {_show(value)}")
    return value


def _int(obj: dict[str, Json], key: str, where: str, *, minimum: int | None = None,
         nullable: bool = False) -> int | None:
    value = _field(obj, key, where)
    name = _qualified(where, key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Damage(f"{name} must be an integer{' or null' if nullable else ''}, not {_show(value)}")
    if minimum is not None and value < minimum:
        raise _Damage(f"{name} must be at least {minimum}, not {value}")
    return value


def _time(obj: dict[str, Json], key: str, where: str) -> str:
    value = _str(obj, key, where)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _Damage(f"{_qualified(where, key)} is not a date and time: {_show(value)}") from None
    return value


def _list(obj: dict[str, Json], key: str, where: str) -> list[Json]:
    value = _field(obj, key, where)
    if not isinstance(value, list):
        raise _Damage(f"{_qualified(where, key)} must be a list, not {_show(value)}")
    return value


def _params(obj: dict[str, Json], key: str, where: str) -> dict[str, Json]:
    value = _field(obj, key, where)
    if not isinstance(value, dict):
        raise _Damage(f"{_qualified(where, key)} must be an object, not {_show(value)}")
    return value


def _file_path(value: str, kind: str, name: str) -> str:
    if not _FILE_PATTERNS[kind].fullmatch(value):
        raise _Damage(f"{name} names {_show(value)}, which is not where a Retake project keeps a {kind} file")
    return value


def _show(value: Json) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, (set, bytes)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model(value: Json, where: str, *, nullable: bool) -> ModelRecord | None:
    if value is None and nullable:
        return None
    obj = _expect_dict(value, where)
    return ModelRecord(spec=_str(obj, "spec", where, nonempty=True),
                       identity=_str(obj, "identity", where, nonempty=True))


def _file_record(value: Json, where: str, kind: str, *, nullable: bool) -> FileRecord | None:
    if value is None and nullable:
        return None
    obj = _expect_dict(value, where)
    return FileRecord(file=_file_path(_str(obj, "file", where), kind, f"{where}.file"),
                      sha256=_str(obj, "sha256", where, pattern=_SHA256))


def _manifest_from_json(data: dict[str, Json]) -> Manifest:
    image_obj = _expect_dict(_field(data, "image", ""), "image")
    image = ImageRecord(
        file=_file_path(_str(image_obj, "file", "image"), "image", "image.file"),
        sha256=_str(image_obj, "sha256", "image", pattern=_SHA256),
        width=_int(image_obj, "width", "image", minimum=1),
        height=_int(image_obj, "height", "image", minimum=1),
    )
    settings_obj = _expect_dict(_field(data, "settings", ""), "settings")
    settings = Settings(
        model=_model(_field(settings_obj, "model", "settings"), "settings.model", nullable=True),
        source_prompt=_str(settings_obj, "source_prompt", "settings"),
        method=_str(settings_obj, "method", "settings", nullable=True),
        params=_params(settings_obj, "params", "settings"),
    )

    inversions = []
    for i, item in enumerate(_list(data, "inversions", "")):
        where = f"inversions[{i}]"
        obj = _expect_dict(item, where)
        size = _field(obj, "size", where)
        if (not isinstance(size, list) or len(size) != 2
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size)):
            raise _Damage(f"{where}.size must be [width, height] in pixels, not {_show(size)}")
        inversions.append(InversionRecord(
            key=_str(obj, "key", where, pattern=_KEY),
            file=_file_path(_str(obj, "file", where), "inversion", f"{where}.file"),
            file_sha256=_str(obj, "file_sha256", where, pattern=_SHA256),
            method=_str(obj, "method", where, nonempty=True),
            model_identity=_str(obj, "model_identity", where, nonempty=True),
            source_prompt=_str(obj, "source_prompt", where),
            params=_params(obj, "params", where),
            size=(size[0], size[1]),
            steps=_int(obj, "steps", where, minimum=1),
            created=_time(obj, "created", where),
        ))
    _unique([inv.key for inv in inversions], "inversions", "key")
    _unique([inv.file for inv in inversions], "inversions", "file")

    edits = []
    for i, item in enumerate(_list(data, "edits", "")):
        where = f"edits[{i}]"
        obj = _expect_dict(item, where)
        edits.append(EditRecord(
            id=_str(obj, "id", where, pattern=_EDIT_ID),
            created=_time(obj, "created", where),
            source_prompt=_str(obj, "source_prompt", where),
            target_prompt=_str(obj, "target_prompt", where),
            model=_model(_field(obj, "model", where), f"{where}.model", nullable=False),
            method=_str(obj, "method", where, nonempty=True),
            params=_params(obj, "params", where),
            seed=_int(obj, "seed", where, nullable=True),
            inversion_key=_str(obj, "inversion_key", where, nullable=True, pattern=_KEY),
            mask=_file_record(_field(obj, "mask", where), f"{where}.mask", "mask", nullable=True),
            result=_file_record(_field(obj, "result", where), f"{where}.result", "result", nullable=False),
        ))
    _unique([e.id for e in edits], "edits", "id")
    _unique([e.result.file for e in edits], "edits", "result file")

    return Manifest(
        app_version=_str(data, "app_version", ""),
        created=_time(data, "created", ""),
        modified=_time(data, "modified", ""),
        image=image,
        settings=settings,
        inversions=tuple(inversions),
        edits=tuple(edits),
    )


def _unique(values: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise _Damage(f"two {where} share the {what} {_show(value)}")
        seen.add(value)


def _parse_manifest(root: Path, data: bytes) -> Manifest:
    """project.json bytes -> Manifest (migrated), or one ProjectError sentence about `root`."""

    def damaged(problem: str) -> NoReturn:
        raise ProjectError(f"Cannot open the project at {root}: project.json is damaged ({problem}).")

    def no_constants(name: str) -> NoReturn:
        raise ValueError(f"{name} is not a JSON number")

    try:
        document = json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        damaged("it is not UTF-8 text")
    except json.JSONDecodeError as exc:
        damaged(f"it is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        damaged(f"it is not valid JSON: {exc}")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ProjectError(f"{root} is not a Retake project: its project.json is not a Retake manifest.")
    try:
        return _manifest_from_json(_migrate(document, MIGRATIONS, SCHEMA_VERSION))
    except _TooNew as exc:
        raise ProjectError(_too_new_message(f"The project at {root}", exc.args[0], SCHEMA_VERSION)) from None
    except _Damage as damage:
        damaged(str(damage))


# --------------------------------------------------------------------------------------------------
# Input checking (programmer errors: TypeError / ValueError)


def _json_copy(value: Any, where: str) -> Json:
    """A deep copy of `value` as plain JSON data; tuples become lists; NaN, sets etc. are refused."""
    if value is None or isinstance(value, (bool, str)):
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
            out[k] = _json_copy(v, f"{where}.{k}")
        return out
    raise TypeError(f"{where} must hold only JSON values, not {type(value).__name__}")


def _params_copy(value: Any, where: str) -> dict[str, Json]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a mapping, not {type(value).__name__}")
    return _json_copy(value, where)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"an inversion key must be 1-128 letters, digits, '-' or '_', not {key!r}")
    return key


def _check_str(value: Any, name: str, *, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if nonempty and not value:
        raise ValueError(f"{name} must not be empty")
    return value


# --------------------------------------------------------------------------------------------------
# Files


def _sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def app_version() -> str:
    """This Retake's version: from the installed package, else from pyproject.toml in a checkout."""
    try:
        return importlib.metadata.version("retake")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"


def _read_safetensors_header(path: Path) -> tuple[dict[str, Json], dict[str, str]]:
    """Parse and check a safetensors header against the file size; returns (tensors, metadata).

    Raises _Damage. Checks that every tensor's byte range matches its dtype and shape and that the
    ranges tile the data section exactly, so a file that passes can be loaded.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise _Damage("it is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_SAFETENSORS_HEADER, size - 8):
            raise _Damage("its safetensors header length is impossible")
        raw = file.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _Damage("its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _Damage("its safetensors header is not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Damage("its safetensors metadata is not a string table")
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _Damage(f"its tensor {name!r} has no description")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _SAFETENSORS_DTYPE_BYTES:
            raise _Damage(f"its tensor {name!r} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise _Damage(f"its tensor {name!r} has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)):
            raise _Damage(f"its tensor {name!r} has invalid data offsets")
        if offsets[1] - offsets[0] != math.prod(shape) * _SAFETENSORS_DTYPE_BYTES[dtype]:
            raise _Damage(f"its tensor {name!r} has a size that does not match its shape")
        spans.append((offsets[0], offsets[1]))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise _Damage("its tensors do not tile the data section")
        end = stop
    if 8 + header_len + end != size:
        raise _Damage("its size does not match its safetensors header")
    return header, metadata


def _inversion_description(metadata: dict[str, str]) -> dict[str, Json]:
    """The JSON object an inversion file carries in its safetensors metadata ({} if none or broken)."""
    try:
        described = json.loads(metadata.get(INVERSION_METADATA_KEY, "{}"))
    except (json.JSONDecodeError, RecursionError):
        return {}
    return described if isinstance(described, dict) else {}


def _mask_png(mask: torch.Tensor | Image.Image) -> bytes:
    """Encode a mask (tensor of 0..1 or bools, or a PIL image) as an 8-bit greyscale PNG."""
    if isinstance(mask, Image.Image):
        grey = mask.convert("L") if mask.mode in ("1", "L") else to_rgb(mask).convert("L")
    elif isinstance(mask, torch.Tensor):
        values = mask.detach().to("cpu")
        while values.dim() > 2 and values.shape[0] == 1:
            values = values[0]
        if values.dim() != 2:
            raise ValueError(f"a mask tensor must be [1, 1, H, W], [1, H, W] or [H, W], not {tuple(mask.shape)}")
        values = values.to(torch.float32)
        if not torch.isfinite(values).all():
            raise ValueError("a mask tensor must not contain NaN or infinity")
        grey = Image.fromarray((values.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "L")
    else:
        raise TypeError(f"a mask must be a torch.Tensor or a PIL image, not {type(mask).__name__}")
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    return buffer.getvalue()


def _plain_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# The lock


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: exists, not ours
        try:
            code = ctypes.c_ulong()
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return bool(ok) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            return stat[stat.rindex(")") + 2] != "Z"
        except (OSError, ValueError, IndexError):
            return True
    return True


class _ProjectLock:
    """An exclusive writer lock: `.lock` created with O_CREAT | O_EXCL, holding the owner's pid.

    A lock left by a dead process on this machine, or older than LOCK_STALE_AFTER_S, is taken over.
    Waits up to `timeout` seconds for a live holder (saves are short), then raises ProjectError.
    """

    def __init__(self, root: Path, timeout: float) -> None:
        self._path = root / LOCK_FILE
        self._timeout = timeout
        self._token = secrets.token_hex(8)

    def __enter__(self) -> _ProjectLock:
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self._token,
                              "app": "Retake", "since": _now()}).encode()
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # released between our attempt and our look
                    continue
                if self._is_stale(*holder):
                    self._break(holder[0])
                    continue
                if time.monotonic() >= deadline:
                    raise ProjectError(self._busy_message(holder)) from None
                time.sleep(0.05)
                continue
            except OSError as exc:
                raise ProjectError(f"Cannot save the project at {self._path.parent}: {exc.strerror or exc}.") from exc
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            current = json.loads(self._path.read_bytes())
            if isinstance(current, dict) and current.get("token") == self._token:
                os.unlink(self._path)
        except (OSError, ValueError):
            pass

    def _holder(self) -> tuple[bytes, dict[str, Any] | None, float] | None:
        """(raw content, parsed content or None, age in seconds), or None if the lock just vanished."""
        try:
            raw = self._path.read_bytes()
            age = time.time() - self._path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return raw, parsed if isinstance(parsed, dict) else None, age

    @staticmethod
    def _is_stale(_raw: bytes, info: dict[str, Any] | None, age: float) -> bool:
        if age > LOCK_STALE_AFTER_S:
            return True
        if info is None:  # a lock is written right after it is created; garbage that stays is dead
            return age > 5.0
        pid = info.get("pid")
        if info.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False  # another machine's process: only age can tell
        return not _pid_alive(pid)

    def _break(self, stale: bytes) -> None:
        """Remove a stale lock without ever removing a live one that replaced it meanwhile."""
        aside = self._path.with_name(f".{LOCK_FILE}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            os.rename(self._path, aside)
        except FileNotFoundError:
            return  # someone else broke it first
        try:
            moved = aside.read_bytes()
            if moved != stale:  # we moved a fresh lock: put it back if still free
                try:
                    fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    pass
                else:
                    with os.fdopen(fd, "wb") as file:
                        file.write(moved)
        except OSError:
            pass
        finally:
            try:
                os.unlink(aside)
            except OSError:
                pass

    def _busy_message(self, holder: tuple[bytes, dict[str, Any] | None, float] | None) -> str:
        info = holder[1] if holder else None
        who = "another Retake process"
        if info and isinstance(info.get("pid"), int):
            host = info.get("host")
            who += f" (pid {info['pid']}" + (f" on {host})" if host != socket.gethostname() else ")")
        return (f"The project at {self._path.parent} is being saved by {who}; try again when it has "
                f"finished, or delete {self._path} if no Retake is running.")


# --------------------------------------------------------------------------------------------------
# The project


class Project:
    """A per-image project folder. Get one with `Project.create` or `Project.open`.

    Reads come from the state validated at open (or written by this object since). Every write is
    a transaction against the latest project.json on disk, under the lock, so concurrent writers
    from other processes are merged rather than overwritten.
    """

    def __init__(self, root: Path, manifest: Manifest, manifest_sha256: str, lock_timeout: float) -> None:
        """Internal: use `Project.create` or `Project.open`."""
        self._root = root
        self._manifest = manifest
        self._manifest_sha256 = manifest_sha256
        self._lock_timeout = lock_timeout
        self._write_lock = threading.Lock()
        self._app_version = app_version()

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
            raise ProjectError(f"Cannot create a project at {root}: it is a file, not a folder.")
        if not isinstance(image, Image.Image):
            raise TypeError(f"image must be a PIL image, not {type(image).__name__}")
        if root.is_dir():
            _check_can_create(root)  # before touching the folder (the lock file is a write)
        rgb = image if image.mode == "RGB" else to_rgb(image)
        source_png = _plain_png(rgb)
        try:
            new_parent = not root.exists()
            root.mkdir(parents=True, exist_ok=True)
            if new_parent:
                fsync_directory(root.parent)
            with _ProjectLock(root, lock_timeout):
                _check_can_create(root)
                write_atomically(root / SOURCE_FILE, source_png)
                now = _now()
                manifest = Manifest(
                    app_version=app_version(), created=now, modified=now,
                    image=ImageRecord(SOURCE_FILE, _sha256_bytes(source_png), rgb.width, rgb.height),
                    settings=Settings(model=None, source_prompt="", method=None, params={}),
                    inversions=(), edits=(),
                )
                data = _encode(manifest)
                write_atomically(root / MANIFEST_FILE, data)
        except OSError as exc:
            raise ProjectError(f"Cannot create a project at {root}: {exc.strerror or exc}.") from exc
        return cls(root, manifest, _sha256_bytes(data), lock_timeout)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> Project:
        """Open and fully check the project in folder `path`. Never writes to the folder.

        Raises one ProjectError naming the problem and the file: not a project, made by a newer
        Retake, a damaged or missing file, a checksum mismatch.
        """
        root = Path(path)
        if not root.exists():
            raise ProjectError(f"There is no project at {root}: the folder does not exist.")
        if not root.is_dir():
            raise ProjectError(f"Cannot open {root} as a project: it is a file, not a project folder.")
        retries = 2
        while True:
            data = _read_manifest_bytes(root)
            manifest = _parse_manifest(root, data)
            try:
                _verify_files(root, manifest)
            except ProjectError:
                # A writer in another process may have replaced the manifest and removed the files
                # it no longer needs while we were checking the old one: check the new one.
                if retries > 0 and _manifest_changed(root, data):
                    retries -= 1
                    continue
                raise
            return cls(root, manifest, _sha256_bytes(data), lock_timeout)

    # ---- reading

    @property
    def path(self) -> Path:
        return self._root

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

    def image(self) -> Image.Image:
        """The source photo (RGB, upright, full resolution), checked against its SHA-256."""
        record = self._manifest.image
        data = self._read_checked(record.file, record.sha256, "source image")
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise ProjectError(f"The source image {self._root / record.file} cannot be decoded ({exc}).") from exc

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
        """Absolute path of an edit's result PNG (which carries its parameters in text chunks)."""
        return self._root / self._edit(edit).result.file

    def mask_path(self, edit: EditRecord | str) -> Path | None:
        mask = self._edit(edit).mask
        return None if mask is None else self._root / mask.file

    def _edit(self, edit: EditRecord | str) -> EditRecord:
        edit_id = edit.id if isinstance(edit, EditRecord) else edit
        for record in self._manifest.edits:
            if record.id == edit_id:
                return record
        raise KeyError(f"no edit {edit_id!r} in {self._root}")

    def _read_checked(self, rel: str, sha256: str, what: str) -> bytes:
        path = self._root / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ProjectError(f"The {what} file {path} is missing from the project.") from None
        except OSError as exc:
            raise ProjectError(f"Cannot read the {what} file {path}: {exc.strerror or exc}.") from exc
        if _sha256_bytes(data) != sha256:
            raise ProjectError(f"The {what} file {path} is damaged: its contents no longer match "
                               f"the checksum recorded in project.json.")
        return data

    # ---- writing

    def update_settings(self, *, model_spec: str | None, model_identity: str | None, source_prompt: str,
                        method: str | None, params: Mapping[str, Any]) -> Settings:
        """Remember the current settings (restored on reopen). Writes only if something changed."""
        if (model_spec is None) != (model_identity is None):
            raise ValueError("model_spec and model_identity must be given together")
        model = None if model_spec is None else ModelRecord(
            _check_str(model_spec, "model_spec", nonempty=True),
            _check_str(model_identity, "model_identity", nonempty=True))
        settings = Settings(model=model, source_prompt=_check_str(source_prompt, "source_prompt"),
                            method=None if method is None else _check_str(method, "method", nonempty=True),
                            params=_params_copy(params, "params"))

        def change(base: Manifest) -> tuple[Manifest | None, Settings]:
            if base.settings == settings:
                return None, copy.deepcopy(settings)
            return dataclasses.replace(base, settings=settings), copy.deepcopy(settings)

        return self._commit(change)

    def save_inversion(self, key: str, tensors: Mapping[str, torch.Tensor], *, method: str,
                       model_identity: str, source_prompt: str, params: Mapping[str, Any],
                       size: tuple[int, int], steps: int,
                       metadata: Mapping[str, str] | None = None) -> InversionRecord:
        """Store `tensors` (copied to contiguous CPU memory) as the inversion `key`; returns its record.

        `params` are the inversion-stage parameters; `metadata` adds strings to the file's own
        header. A record with the same key is replaced (its old file is removed after the commit).
        """
        _check_key(key)
        record_params = _params_copy(params, "params")
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
        digest = _sha256_bytes(data)
        rel = f"{INVERSIONS_DIR}/{key}.{digest[:16]}.safetensors"

        def change(base: Manifest) -> tuple[Manifest, InversionRecord]:
            record = InversionRecord(
                key=key, file=rel, file_sha256=digest, method=method, model_identity=model_identity,
                source_prompt=source_prompt, params=record_params, size=(width, height), steps=steps,
                created=_now(),
            )
            current = {inv.file: inv.file_sha256 for inv in base.inversions}
            if current.get(rel) != digest:  # identical content already referenced: nothing to write
                self._write(rel, data)
            kept = tuple(inv for inv in base.inversions if inv.key != key)
            return dataclasses.replace(base, inversions=kept + (record,)), copy.deepcopy(record)

        return self._commit(change)

    def add_edit(self, *, target_prompt: str, source_prompt: str, model: ModelRecord, method: str,
                 params: Mapping[str, Any], seed: int | None, inversion_key: str | None,
                 result: Image.Image, mask: torch.Tensor | Image.Image | None = None,
                 png_metadata: Mapping[str, Any] | None = None) -> EditRecord:
        """Append an edit to the history: stores the result PNG (with every parameter in its text
        chunks, plus any `png_metadata` entries) and the mask if any; returns the new record."""
        for name, value in (("target_prompt", target_prompt), ("source_prompt", source_prompt)):
            _check_str(value, name)
        _check_str(method, "method", nonempty=True)
        if not isinstance(model, ModelRecord):
            raise TypeError(f"model must be a ModelRecord, not {type(model).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
        if inversion_key is not None:
            _check_key(inversion_key)
        edit_params = _params_copy(params, "params")
        if not isinstance(result, Image.Image):
            raise TypeError(f"result must be a PIL image, not {type(result).__name__}")
        rgb = result if result.mode == "RGB" else to_rgb(result)
        created = _now()
        reproduce = {
            "app": f"Retake {self._app_version}",
            "source_prompt": source_prompt,
            "target_prompt": target_prompt,
            "method": method,
            "params": edit_params,
            "seed": seed,
            "model": model.spec,
            "model_identity": model.identity,
            "inversion_key": inversion_key,
            "source_image_sha256": self._manifest.image.sha256,
            "created": created,
        }
        extra = _params_copy(png_metadata or {}, "png_metadata")
        clash = sorted(set(extra) & set(reproduce))
        if clash:
            raise ValueError(f"png_metadata must not redefine {', '.join(clash)}")
        result_png = png_with_metadata(rgb, {**reproduce, **extra})
        result_sha = _sha256_bytes(result_png)
        mask_png = None if mask is None else _mask_png(mask)
        mask_sha = None if mask_png is None else _sha256_bytes(mask_png)

        def change(base: Manifest) -> tuple[Manifest, EditRecord]:
            edit_id = _next_edit_id(base.edits)
            mask_record = None
            if mask_png is not None:
                mask_record = FileRecord(f"{MASKS_DIR}/{mask_sha[:16]}.png", mask_sha)
                referenced = {e.mask.file: e.mask.sha256 for e in base.edits if e.mask is not None}
                if referenced.get(mask_record.file) != mask_sha:
                    self._write(mask_record.file, mask_png)
            result_record = FileRecord(f"{RESULTS_DIR}/{edit_id}.png", result_sha)
            self._write(result_record.file, result_png)  # a new id: never a referenced file
            record = EditRecord(
                id=edit_id, created=created, source_prompt=source_prompt, target_prompt=target_prompt,
                model=model, method=method, params=edit_params, seed=seed, inversion_key=inversion_key,
                mask=mask_record, result=result_record,
            )
            return dataclasses.replace(base, edits=base.edits + (record,)), copy.deepcopy(record)

        return self._commit(change)

    # ---- the transaction

    def _commit(self, change: Callable[[Manifest], tuple[Manifest | None, T]]) -> T:
        """Apply `change` to the latest manifest under the lock and commit it.

        `change` writes any new files (always under names the base manifest does not reference)
        and returns the new manifest, or None for no change. project.json is replaced last; files
        no longer referenced, and leftovers of interrupted saves, are removed after the commit.
        """
        with self._write_lock:
            try:
                with _ProjectLock(self._root, self._lock_timeout):
                    base = self._latest()
                    new, result = change(base)
                    if new is None:
                        return result
                    new = dataclasses.replace(new, app_version=self._app_version, modified=_now())
                    data = _encode(new)
                    write_atomically(self._root / MANIFEST_FILE, data)
                    self._manifest, self._manifest_sha256 = new, _sha256_bytes(data)
                    _remove_leftovers(self._root, new)
            except OSError as exc:
                raise ProjectError(f"Cannot save the project at {self._root}: {exc.strerror or exc}.") from exc
            return result

    def _latest(self) -> Manifest:
        """The manifest on disk now: ours if unchanged, else the one another process committed."""
        data = _read_manifest_bytes(self._root)
        if _sha256_bytes(data) == self._manifest_sha256:
            return self._manifest
        manifest = _parse_manifest(self._root, data)
        if manifest.image != self._manifest.image:
            raise ProjectError(f"The project at {self._root} now holds a different photo; open it again.")
        return manifest

    def _write(self, rel: str, data: bytes) -> None:
        path = self._root / rel
        if not path.parent.is_dir():
            path.parent.mkdir(exist_ok=True)
            fsync_directory(self._root)
        write_atomically(path, data)


def _next_edit_id(edits: tuple[EditRecord, ...]) -> str:
    numbers = [int(m.group(1)) for e in edits if (m := _EDIT_ID.fullmatch(e.id))]
    return f"e{max(numbers, default=0) + 1:04d}"


def _read_manifest_bytes(root: Path) -> bytes:
    path = root / MANIFEST_FILE
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ProjectError(f"Cannot open the project at {root}: project.json is too large to be a Retake manifest.")
        return path.read_bytes()
    except FileNotFoundError:
        raise ProjectError(f"{root} is not a Retake project: it has no project.json.") from None
    except IsADirectoryError:
        raise ProjectError(f"{root} is not a Retake project: its project.json is a folder.") from None
    except OSError as exc:
        raise ProjectError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


def _manifest_changed(root: Path, data: bytes) -> bool:
    try:
        return (root / MANIFEST_FILE).read_bytes() != data
    except OSError:
        return False


def _verify_files(root: Path, manifest: Manifest) -> None:
    """Check every file project.json references: present, a regular file, SHA-256 as recorded."""
    checked: dict[str, str] = {}

    def check(rel: str, sha256: str, what: str) -> Path:
        path = root / rel
        if rel in checked:
            if checked[rel] != sha256:
                fail(f"project.json records two different checksums for {rel}")
            return path
        try:
            info = path.lstat()
        except FileNotFoundError:
            fail(f"the {what} file {rel} is missing")
        except OSError as exc:
            fail(f"the {what} file {rel} cannot be read ({exc.strerror or exc})")
        if not _is_regular(info):
            fail(f"the {what} file {rel} is not a regular file")
        try:
            actual = _sha256_file(path)
        except OSError as exc:
            fail(f"the {what} file {rel} cannot be read ({exc.strerror or exc})")
        if actual != sha256:
            fail(f"the {what} file {rel} is damaged (its contents do not match the checksum in project.json)")
        checked[rel] = sha256
        return path

    def fail(problem: str) -> NoReturn:
        raise ProjectError(f"Cannot open the project at {root}: {problem}.")

    image = manifest.image
    source = check(image.file, image.sha256, "source image")
    try:
        with Image.open(source) as img:
            if img.format != "PNG" or img.size != (image.width, image.height):
                fail(f"{image.file} is not the {image.width}x{image.height} PNG that project.json describes")
    except (OSError, SyntaxError, ValueError):
        fail(f"{image.file} is not a readable PNG image")
    for inv in manifest.inversions:
        path = check(inv.file, inv.file_sha256, "inversion")
        try:
            _, metadata = _read_safetensors_header(path)
        except _Damage as damage:
            fail(f"the inversion file {inv.file} is damaged ({damage})")
        except OSError as exc:
            fail(f"the inversion file {inv.file} cannot be read ({exc.strerror or exc})")
        if _inversion_description(metadata).get("key") != inv.key:
            fail(f"the inversion file {inv.file} does not hold the inversion {inv.key}")
    for edit in manifest.edits:
        check(edit.result.file, edit.result.sha256, "result")
        if edit.mask is not None:
            check(edit.mask.file, edit.mask.sha256, "mask")


def _is_regular(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode)


def _check_can_create(root: Path) -> None:
    """Refuse a folder that is a project or holds anything but remains of an interrupted create."""
    if (root / MANIFEST_FILE).exists():
        raise ProjectError(f"Cannot create a project at {root}: it already holds a Retake project; open it instead.")
    for entry in root.iterdir():
        name = entry.name
        if name in (SOURCE_FILE, LOCK_FILE) or name in _OS_CLUTTER or _TEMP.fullmatch(name):
            continue
        if name in _GENERATED and entry.is_dir() and not any(entry.iterdir()):
            continue
        raise ProjectError(f"Cannot create a project at {root}: the folder is not empty; choose an empty folder.")


def _remove_leftovers(root: Path, manifest: Manifest) -> None:
    """Delete temporary files and generated files `manifest` does not reference. Best effort.

    Only names this module generates are candidates, so files a person put in the folder survive.
    """
    referenced = manifest.referenced_files()
    for folder in (None, *_GENERATED):
        directory = root if folder is None else root / folder
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            rel = entry.name if folder is None else f"{folder}/{entry.name}"
            temp = _TEMP.fullmatch(entry.name) is not None
            orphan = folder is not None and _GENERATED[folder].fullmatch(entry.name) and rel not in referenced
            if (temp or orphan) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
