"""project.json as bytes and as records: encoding, strict decoding, and schema migrations.

Decoding trusts nothing: every field's presence, type and range is checked, and a problem becomes
one phrase naming the field ("edits[2].seed must be an integer ..."), echoing at most a shortened
copy of the bad value, so a damaged manifest gives a message a person can read.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from pipeline.errors import ProjectError, printable, shorten
from pipeline.project.folder import FILE_PATTERNS, INPUT_NAME, shown
from pipeline.project.records import (
    AreaSettings, Crop, EditRecord, FileRecord, ImageRecord, InputRecord, InversionRecord, Json, Manifest, ModelRecord,
    Settings,
)

FORMAT = "retake-project"
SCHEMA_VERSION = 6

KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
EDIT_ID = re.compile(r"e([0-9]{4,9})")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_INPUT_KINDS = ("image", "mask")
MAX_IMAGE_SIDE = 1 << 20
"""The largest width or height of a photo a project holds (pixels): far beyond any photo Retake decodes."""
_MAX_FILE_BYTES = (1 << 63) - 1

Migration = Callable[[dict[str, Json]], dict[str, Json]]


class TooNew(Exception):
    """project.json is of a schema version newer than this code knows."""


class Damage(Exception):
    """A problem in project.json or a file; str() is a phrase naming the field or the fault."""


# --------------------------------------------------------------------------------------------------
# Schema migrations: MIGRATIONS[n] turns a parsed version-n manifest into a version-(n + 1) one.
# Opening upgrades in memory only; the next save writes the current version. A step must accept
# damaged data (decoding, which runs after it, reports the damage).


def _v1_to_v2(data: dict[str, Json]) -> dict[str, Json]:
    """Version 2 adds settings.max_side (unknown for older projects) and named inputs (none yet)."""
    if isinstance(data.get("settings"), dict):
        data["settings"].setdefault("max_side", None)
    data.setdefault("inputs", [])
    return data


def _v2_to_v3(data: dict[str, Json]) -> dict[str, Json]:
    """Version 3 adds settings.image_encoder (none named) and the model parts of each inversion (none)."""
    if isinstance(data.get("settings"), dict):
        data["settings"].setdefault("image_encoder", None)
    for inversion in data.get("inversions") if isinstance(data.get("inversions"), list) else ():
        if isinstance(inversion, dict):
            inversion.setdefault("parts", {})
    return data


def _v3_to_v4(data: dict[str, Json]) -> dict[str, Json]:
    """Version 4 ties tunings to their inversion and edits to their tuning: none is known for older projects."""
    for name, key in (("inversions", "tuning_of"), ("edits", "tuning_key")):
        for item in data.get(name) if isinstance(data.get(name), list) else ():
            if isinstance(item, dict):
                item.setdefault(key, None)
    return data


def _v4_to_v5(data: dict[str, Json]) -> dict[str, Json]:
    """Version 5 records each file's size, which opening checks instead of hashing: unknown for older files."""
    references = [data.get("image")]
    for edit in data.get("edits") if isinstance(data.get("edits"), list) else ():
        if isinstance(edit, dict):
            references += [edit.get("result"), edit.get("mask")]
    for item in data.get("inputs") if isinstance(data.get("inputs"), list) else ():
        if isinstance(item, dict):
            references.append(item.get("file"))
    for reference in references:
        if isinstance(reference, dict):
            reference.setdefault("bytes", None)
    for inversion in data.get("inversions") if isinstance(data.get("inversions"), list) else ():
        if isinstance(inversion, dict):
            inversion.setdefault("file_bytes", None)
    return data


def _v5_to_v6(data: dict[str, Json]) -> dict[str, Json]:
    """Version 6 records the area an edit worked on: older inversions and edits worked on the whole
    photo (crop null), older edits' feather is unknown (null: the composite of their day), and no
    area choice is recorded."""
    if isinstance(data.get("settings"), dict):
        data["settings"].setdefault("area", None)
    for name, keys in (("inversions", ("crop",)), ("edits", ("crop", "feather"))):
        for item in data.get(name) if isinstance(data.get(name), list) else ():
            if isinstance(item, dict):
                for key in keys:
                    item.setdefault(key, None)
    return data


MIGRATIONS: Mapping[int, Migration] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6}


def _migrate(data: dict[str, Json], migrations: Mapping[int, Migration], target: int) -> dict[str, Json]:
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise Damage(f"schema_version must be an integer, not {show(version)}")
    if version > target:
        raise TooNew(version)
    data = copy.deepcopy(data)
    while version < target:
        step = migrations.get(version)
        if step is None:
            raise Damage(f"schema_version {show(version)} is not a project format Retake has ever written")
        data = step(data)
        version += 1
        data["schema_version"] = version
    return data


def migrate_manifest(data: dict[str, Json], migrations: Mapping[int, Migration] = MIGRATIONS,
                     target: int = SCHEMA_VERSION) -> dict[str, Json]:
    """Upgrade a parsed manifest step by step to schema `target`; the input is not modified.

    Raises ProjectError for a version newer than `target` or one with no upgrade path.
    """
    try:
        return _migrate(data, migrations, target)
    except TooNew as exc:
        raise ProjectError(_too_new_message("This project", exc.args[0], target)) from None
    except Damage as damage:
        raise ProjectError(f"project.json is damaged: {damage}.") from None


def _too_new_message(subject: str, version: int, target: int) -> str:
    return (f"{subject} was made by a newer Retake (project format {show(version)}; this Retake reads up "
            f"to format {target}); update Retake to open it.")


# --------------------------------------------------------------------------------------------------
# Encoding


def _model_json(model: ModelRecord | None) -> Json:
    return None if model is None else {"spec": model.spec, "identity": model.identity}


def _file_json(record: FileRecord | None) -> Json:
    return None if record is None else {"file": record.file, "sha256": record.sha256, "bytes": record.nbytes}


def _area_json(area: AreaSettings | None) -> Json:
    return None if area is None else {"mode": area.mode, "padding": area.padding, "feather": area.feather}


def manifest_to_json(manifest: Manifest) -> dict[str, Json]:
    """The JSON document for `manifest`, in the current schema."""
    m = manifest
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "app_version": m.app_version,
        "created": m.created,
        "modified": m.modified,
        "image": {"file": m.image.file, "sha256": m.image.sha256, "bytes": m.image.nbytes, "width": m.image.width,
                  "height": m.image.height},
        "settings": {
            "model": _model_json(m.settings.model),
            "source_prompt": m.settings.source_prompt,
            "method": m.settings.method,
            "params": m.settings.params,
            "max_side": m.settings.max_side,
            "image_encoder": m.settings.image_encoder,
            "area": _area_json(m.settings.area),
        },
        "inversions": [
            {
                "key": inv.key, "file": inv.file, "file_sha256": inv.file_sha256, "file_bytes": inv.file_nbytes,
                "method": inv.method,
                "model_identity": inv.model_identity, "source_prompt": inv.source_prompt,
                "params": inv.params, "size": list(inv.size), "steps": inv.steps, "created": inv.created,
                "parts": inv.parts, "tuning_of": inv.tuning_of, "crop": None if inv.crop is None else list(inv.crop),
            }
            for inv in m.inversions
        ],
        "edits": [
            {
                "id": e.id, "created": e.created, "source_prompt": e.source_prompt,
                "target_prompt": e.target_prompt, "model": _model_json(e.model), "method": e.method,
                "params": e.params, "seed": e.seed, "inversion_key": e.inversion_key,
                "mask": _file_json(e.mask), "result": _file_json(e.result), "tuning_key": e.tuning_key,
                "crop": None if e.crop is None else list(e.crop), "feather": e.feather,
            }
            for e in m.edits
        ],
        "inputs": [
            {"name": item.name, "kind": item.kind, "file": _file_json(item.file), "prompt": item.prompt}
            for item in m.inputs
        ],
    }


def encode_manifest(manifest: Manifest) -> bytes:
    """project.json's bytes for `manifest`: UTF-8 JSON with 2-space indentation and a final newline."""
    text = json.dumps(manifest_to_json(manifest), indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Decoding: strict, with messages that say where the problem is ("edits[2].seed ...").


def show(value: Json) -> str:
    """A value from a manifest as echoed in a message or a terminal: JSON, shortened, with every character
    that is not printable escaped (JSON escapes only C0 controls; C1 controls such as U+009B, which some
    terminals take for an escape sequence, and invisible format characters are escaped too)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(printable(text))


def _expect_dict(value: Json, where: str) -> dict[str, Json]:
    if not isinstance(value, dict):
        raise Damage(f"{where} must be an object, not {show(value)}")
    return value


def _qualified(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _field(obj: dict[str, Json], key: str, where: str) -> Json:
    if key not in obj:
        raise Damage(f"{_qualified(where, key)} is missing")
    return obj[key]


def _str(obj: dict[str, Json], key: str, where: str, *, nullable: bool = False,
         nonempty: bool = False, pattern: re.Pattern[str] | None = None) -> str | None:
    value = _field(obj, key, where)
    name = _qualified(where, key)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise Damage(f"{name} must be a string{' or null' if nullable else ''}, not {show(value)}")
    if nonempty and not value:
        raise Damage(f"{name} must not be empty")
    if pattern is not None and not pattern.fullmatch(value):
        raise Damage(f"{name} has an invalid value {show(value)}")
    return value


def _int(obj: dict[str, Json], key: str, where: str, *, minimum: int | None = None,
         maximum: int | None = None, nullable: bool = False) -> int | None:
    value = _field(obj, key, where)
    name = _qualified(where, key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Damage(f"{name} must be an integer{' or null' if nullable else ''}, not {show(value)}")
    if minimum is not None and value < minimum:
        raise Damage(f"{name} must be at least {minimum}, not {show(value)}")
    if maximum is not None and value > maximum:
        raise Damage(f"{name} must be at most {maximum}, not {show(value)}")
    return value


def _time(obj: dict[str, Json], key: str, where: str) -> str:
    value = _str(obj, key, where)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise Damage(f"{_qualified(where, key)} is not a date and time: {show(value)}") from None
    return value


def _list(obj: dict[str, Json], key: str, where: str) -> list[Json]:
    value = _field(obj, key, where)
    if not isinstance(value, list):
        raise Damage(f"{_qualified(where, key)} must be a list, not {show(value)}")
    return value


def _params(obj: dict[str, Json], key: str, where: str) -> dict[str, Json]:
    return _expect_dict(_field(obj, key, where), _qualified(where, key))


def _file_path(value: str, kind: str, name: str) -> str:
    if not FILE_PATTERNS[kind].fullmatch(value):
        raise Damage(f"{name} names {show(value)}, which is not where a Retake project keeps a {kind} file")
    return value


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
                      sha256=_str(obj, "sha256", where, pattern=_SHA256), nbytes=_nbytes(obj, "bytes", where))


def _nbytes(obj: dict[str, Json], key: str, where: str) -> int | None:
    """A file's size in bytes; null for a file recorded before format 5 (its size was not recorded)."""
    return _int(obj, key, where, minimum=0, maximum=_MAX_FILE_BYTES, nullable=True)


def _items(data: dict[str, Json], key: str) -> list[tuple[str, dict[str, Json]]]:
    """The objects of the list `key`, each with its place for messages ("edits[2]")."""
    return [(f"{key}[{i}]", _expect_dict(item, f"{key}[{i}]")) for i, item in enumerate(_list(data, key, ""))]


def _crop(obj: dict[str, Json], where: str) -> Crop | None:
    value = _field(obj, "crop", where)
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_IMAGE_SIDE for v in value)
            or value[0] >= value[2] or value[1] >= value[3]):
        raise Damage(f"{where}.crop must be [left, top, right, bottom] in pixels or null, not {show(value)}")
    return value[0], value[1], value[2], value[3]


def _area(value: Json, where: str) -> AreaSettings | None:
    if value is None:
        return None
    obj = _expect_dict(value, where)
    mode = _field(obj, "mode", where)
    if mode not in (None, "whole", "region"):
        raise Damage(f"{where}.mode must be \"whole\", \"region\" or null, not {show(mode)}")
    return AreaSettings(mode=mode, padding=_int(obj, "padding", where, minimum=0, maximum=MAX_IMAGE_SIDE),
                        feather=_int(obj, "feather", where, minimum=0, maximum=MAX_IMAGE_SIDE))


def _inversion(obj: dict[str, Json], where: str) -> InversionRecord:
    size = _field(obj, "size", where)
    if (not isinstance(size, list) or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size)):
        raise Damage(f"{where}.size must be [width, height] in pixels, not {show(size)}")
    record = InversionRecord(
        key=_str(obj, "key", where, pattern=KEY),
        file=_file_path(_str(obj, "file", where), "inversion", f"{where}.file"),
        file_sha256=_str(obj, "file_sha256", where, pattern=_SHA256),
        file_nbytes=_nbytes(obj, "file_bytes", where),
        method=_str(obj, "method", where, nonempty=True),
        model_identity=_str(obj, "model_identity", where, nonempty=True),
        source_prompt=_str(obj, "source_prompt", where),
        params=_params(obj, "params", where),
        size=(size[0], size[1]),
        steps=_int(obj, "steps", where, minimum=1),
        created=_time(obj, "created", where),
        parts=_parts(obj, where),
        tuning_of=_str(obj, "tuning_of", where, nullable=True, pattern=KEY),
        crop=_crop(obj, where),
    )
    if record.tuning_of == record.key:
        raise Damage(f"{where}.tuning_of names the record itself")
    return record


def _parts(obj: dict[str, Json], where: str) -> dict[str, str]:
    parts = _params(obj, "parts", where)
    for name in parts:
        if not INPUT_NAME.fullmatch(name):
            raise Damage(f"{where}.parts names a part {show(name)}, which is not a part name")
        _str(parts, name, f"{where}.parts", nonempty=True)
    return parts


def _edit(obj: dict[str, Json], where: str) -> EditRecord:
    return EditRecord(
        id=_str(obj, "id", where, pattern=EDIT_ID),
        created=_time(obj, "created", where),
        source_prompt=_str(obj, "source_prompt", where),
        target_prompt=_str(obj, "target_prompt", where),
        model=_model(_field(obj, "model", where), f"{where}.model", nullable=False),
        method=_str(obj, "method", where, nonempty=True),
        params=_params(obj, "params", where),
        seed=_int(obj, "seed", where, nullable=True),
        inversion_key=_str(obj, "inversion_key", where, nullable=True, pattern=KEY),
        mask=_file_record(_field(obj, "mask", where), f"{where}.mask", "mask", nullable=True),
        result=_file_record(_field(obj, "result", where), f"{where}.result", "result", nullable=False),
        tuning_key=_str(obj, "tuning_key", where, nullable=True, pattern=KEY),
        crop=_crop(obj, where),
        feather=_int(obj, "feather", where, minimum=0, maximum=MAX_IMAGE_SIDE, nullable=True),
    )


def _input(obj: dict[str, Json], where: str) -> InputRecord:
    kind = _field(obj, "kind", where)
    if kind not in _INPUT_KINDS:
        raise Damage(f"{where}.kind must be \"image\" or \"mask\", not {show(kind)}")
    prompt = _str(obj, "prompt", where, nullable=True)
    if kind == "mask" and prompt is not None:
        raise Damage(f"{where}.prompt must be null for a mask")
    return InputRecord(name=_str(obj, "name", where, pattern=INPUT_NAME), kind=kind,
                       file=_file_record(_field(obj, "file", where), f"{where}.file", "input", nullable=False),
                       prompt=prompt)


def _manifest_from_json(data: dict[str, Json]) -> Manifest:
    image_obj = _expect_dict(_field(data, "image", ""), "image")
    image = ImageRecord(
        file=_file_path(_str(image_obj, "file", "image"), "image", "image.file"),
        sha256=_str(image_obj, "sha256", "image", pattern=_SHA256),
        width=_int(image_obj, "width", "image", minimum=1, maximum=MAX_IMAGE_SIDE),
        height=_int(image_obj, "height", "image", minimum=1, maximum=MAX_IMAGE_SIDE),
        nbytes=_nbytes(image_obj, "bytes", "image"),
    )
    settings_obj = _expect_dict(_field(data, "settings", ""), "settings")
    settings = Settings(
        model=_model(_field(settings_obj, "model", "settings"), "settings.model", nullable=True),
        source_prompt=_str(settings_obj, "source_prompt", "settings"),
        method=_str(settings_obj, "method", "settings", nullable=True),
        params=_params(settings_obj, "params", "settings"),
        max_side=_int(settings_obj, "max_side", "settings", minimum=1, nullable=True),
        image_encoder=_str(settings_obj, "image_encoder", "settings", nullable=True, nonempty=True),
        area=_area(_field(settings_obj, "area", "settings"), "settings.area"),
    )
    inversions = [_inversion(obj, where) for where, obj in _items(data, "inversions")]
    _unique([inv.key for inv in inversions], "inversions", "key")
    _unique([inv.file for inv in inversions], "inversions", "file")
    edits = [_edit(obj, where) for where, obj in _items(data, "edits")]
    _unique([e.id for e in edits], "edits", "id")
    _unique([e.result.file for e in edits], "edits", "result file")
    inputs = [_input(obj, where) for where, obj in _items(data, "inputs")]
    _unique([item.name for item in inputs], "inputs", "name")
    _unique([item.file.file for item in inputs], "inputs", "file")
    manifest = Manifest(
        app_version=_str(data, "app_version", ""),
        created=_time(data, "created", ""),
        modified=_time(data, "modified", ""),
        image=image,
        settings=settings,
        inversions=tuple(inversions),
        edits=tuple(edits),
        inputs=tuple(inputs),
    )
    _one_record_per_file(manifest)
    _crops_inside(manifest)
    return manifest


def _crops_inside(manifest: Manifest) -> None:
    """Every recorded crop lies inside the photo."""
    width, height = manifest.image.width, manifest.image.height
    for where, items in (("inversions", manifest.inversions), ("edits", manifest.edits)):
        for i, item in enumerate(items):
            if item.crop is not None and (item.crop[2] > width or item.crop[3] > height):
                raise Damage(f"{where}[{i}].crop {show(list(item.crop))} reaches outside the {width}x{height} photo")


def _unique(values: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise Damage(f"two {where} share the {what} {show(value)}")
        seen.add(value)


def _one_record_per_file(manifest: Manifest) -> None:
    seen: dict[str, FileRecord] = {}
    for ref in manifest.file_references():
        first = seen.setdefault(ref.file, ref)
        if first.sha256 != ref.sha256:
            raise Damage(f"it records two different checksums for {show(ref.file)}")
        if None not in (first.nbytes, ref.nbytes) and first.nbytes != ref.nbytes:  # None: not recorded
            raise Damage(f"it records two different sizes for {show(ref.file)}")


def parse_manifest(root: Path, data: bytes) -> Manifest:
    """project.json bytes -> Manifest (migrated), or one ProjectError sentence about `root`."""

    def damaged(problem: str) -> NoReturn:
        raise ProjectError(f"Cannot open the project at {shown(root)}: project.json is damaged ({problem}); "
                           f"Retake cannot repair its manifest.")

    def no_constants(name: str) -> NoReturn:
        raise ValueError(f"{name} is not a JSON number")

    try:
        document = json.loads(data.decode("utf-8"), parse_constant=no_constants)
        json.dumps(document, ensure_ascii=False).encode("utf-8")  # escapes can spell lone surrogates
    except UnicodeEncodeError:
        damaged("it holds text that is not valid Unicode")
    except UnicodeDecodeError:
        damaged("it is not UTF-8 text")
    except json.JSONDecodeError as exc:
        damaged(f"it is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        damaged(f"it is not valid JSON: {shorten(exc)}")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ProjectError(f"{shown(root)} is not a Retake project: its project.json is not a Retake manifest.")
    try:
        return _manifest_from_json(_migrate(document, MIGRATIONS, SCHEMA_VERSION))
    except TooNew as exc:
        raise ProjectError(_too_new_message(f"The project at {shown(root)}", exc.args[0], SCHEMA_VERSION)) from None
    except Damage as damage:
        damaged(str(damage))
    except RecursionError:
        damaged("it is nested too deeply")
