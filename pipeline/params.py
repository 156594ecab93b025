"""Method parameters described once, rendered everywhere.

Each method declares a frozen dataclass whose fields carry a `ParamSpec` in their metadata: default,
range or choices, help text, the kind of value (a step range is drawn as a band on the GUI's
timeline, a step fraction as a tick) and the stage it belongs to (changing an `inversion` parameter
invalidates the stored inversion; an `edit` parameter does not). The CLI, the GUI form, the project
manifest and `main.py methods --json` all read these specs; nothing is special-cased per method.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import ParamError, shorten

Kind = Literal["float", "int", "bool", "choice", "step_fraction", "step_range", "words", "word_values"]
Stage = Literal["inversion", "tuning", "edit"]
"""Which cached stage a parameter (or named input) changes: the inversion, a method's tuning, or only the edit."""
# Parameters of these kinds name words of one particular source/target pair.
PROMPT_BOUND_KINDS = ("words", "word_values")


def param_label(name: str) -> str:
    """A parameter as people read it (blend words): its name is the command line's and the files' word."""
    return name.replace("_", " ")


@dataclass(frozen=True)
class ParamSpec:
    """How one parameter is shown, parsed and checked."""

    name: str
    kind: Kind
    default: Any
    help: str
    stage: Stage = "edit"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return param_label(self.name)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["choices"] = list(self.choices)
        data["default"] = to_json_value(self.kind, self.default)
        return data


def param(
    default: Any,
    *,
    help: str,
    kind: Kind,
    stage: Stage = "edit",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
) -> Any:
    """A dataclass field carrying its ParamSpec (the name is filled in by `param_specs`)."""
    spec = ParamSpec("", kind, default, help, stage, minimum, maximum, choices)
    if isinstance(default, (dict, list)):
        raise TypeError("use a tuple (words) or a tuple of pairs (word_values) as an immutable default")
    return dataclasses.field(default=default, metadata={"retake": spec})


def param_specs(params_type: type) -> list[ParamSpec]:
    """The specs of a Params dataclass, in declaration order."""
    return [dataclasses.replace(f.metadata["retake"], name=f.name) for f in dataclasses.fields(params_type)]


def to_json_value(kind: Kind, value: Any) -> Any:
    """Word/value pairs become a JSON object and other tuples lists, so manifests stay plain JSON."""
    if kind == "word_values":
        return {str(word): number for word, number in value}
    if isinstance(value, tuple):
        return list(value)
    return value


def params_to_dict(params: Any) -> dict[str, Any]:
    """JSON-ready dict of a Params instance."""
    return {s.name: to_json_value(s.kind, getattr(params, s.name)) for s in param_specs(type(params))}


@dataclass(frozen=True)
class CheckedParams:
    """Values from outside (a command line, a result PNG, a project.json, saved settings, a preset),
    each checked on its own: `values` holds the valid ones as the Params dataclass takes them,
    `unknown` the names the method does not have, `invalid` why each other value was refused."""

    params_type: type
    values: dict[str, Any]
    unknown: tuple[str, ...]
    invalid: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.invalid

    def first_error(self) -> ParamError | None:
        """The one sentence a command line shows: the unknown names first, else the first invalid value."""
        if self.unknown:
            known = ", ".join(s.name for s in param_specs(self.params_type))
            return ParamError(f"Unknown parameter {', '.join(self.unknown)} for this method (known: {known}).")
        return ParamError(next(iter(self.invalid.values()))) if self.invalid else None

    def json_values(self) -> dict[str, Any]:
        """The valid values JSON-ready, as a project, a preset or the GUI's document holds them."""
        kinds = {s.name: s.kind for s in param_specs(self.params_type)}
        return {name: to_json_value(kinds[name], value) for name, value in self.values.items()}


def check_params(params_type: type, values: Mapping[str, Any]) -> CheckedParams:
    """Check every value against its spec (type, range, choices, NaN and infinities, valid text), the one
    validation of parameters that come from outside: `params_from_dict` (the CLI's --param) refuses on
    the first problem, a restore in the GUI keeps what is valid and names the rest."""
    specs = {s.name: s for s in param_specs(params_type)}
    names = [name for name in values if isinstance(name, str)]
    unknown = tuple(sorted(shorten(repr(name)) for name in values if not isinstance(name, str)) +
                    sorted(shorten(name) for name in names if name not in specs))
    valid: dict[str, Any] = {}
    invalid: dict[str, str] = {}
    for name in names:
        if name in specs:
            try:
                valid[name] = _coerce(specs[name], values[name])
            except ParamError as error:
                invalid[name] = str(error)
    return CheckedParams(params_type, valid, unknown, invalid)


def params_from_dict(params_type: type, values: Mapping[str, Any]) -> Any:
    """Build and validate a Params instance; unknown names and out-of-range values raise ParamError."""
    checked = check_params(params_type, values)
    if (error := checked.first_error()) is not None:
        raise error
    return params_type(**checked.values)


def parse_assignment(text: str) -> tuple[str, str]:
    """Split `NAME=VALUE` as typed on a command line; the value is checked later against the method."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ParamError(f"Parameter {text!r} should look like NAME=VALUE.")
    return name.strip().replace("-", "_"), value.strip()


def _from_text(spec: ParamSpec, text: str) -> Any:
    """Typed text (`0,0.8`, `cat,dog`, `cat:2,dog:0.5`) to the structure the kind expects."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if spec.kind == "step_range":
        return text.replace(":", ",").split(",")
    if spec.kind == "words":
        return items
    pairs = {}
    for item in items:
        word, colon, number = item.rpartition(":")
        if not colon or not word.strip():
            raise ParamError(f"Parameter {spec.name} takes word:value pairs, e.g. {spec.name}=cat:2,dog:0.5.")
        pairs[word.strip()] = number
    return pairs


def _number(spec: ParamSpec, value: Any, integer: bool = False) -> float | int:
    """`value` as a number within the spec's bounds; NaN and infinities are refused for every kind.

    NaN compares false with every bound, so without the explicit check it would pass the range test
    and surface as a crash deep inside sampling.
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        finite = math.isfinite(float(value))
        number = int(value) if integer and finite else float(value)
        if float(value) != number and finite:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        kind = "a whole number" if integer else "a number"
        raise ParamError(f"Parameter {spec.name} must be {kind}, not {_shown(value)}.") from None
    if not finite:
        raise ParamError(f"Parameter {spec.name} must be a finite number, not {shorten(value)}.")
    lo, hi = spec.minimum, spec.maximum
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ParamError(f"Parameter {spec.name} must lie between {lo:g} and {hi:g}, not {shorten(f'{number:g}')}.")
    return number


def _coerce(spec: ParamSpec, value: Any) -> Any:
    if isinstance(value, str) and spec.kind in ("step_range", "words", "word_values"):
        value = _from_text(spec, value)
    if spec.kind == "int":
        return _number(spec, value, integer=True)
    if spec.kind in ("float", "step_fraction"):
        return _number(spec, value)
    if spec.kind == "bool":
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, bool):
            return value
        raise ParamError(f"Parameter {spec.name} must be true or false, not {_shown(value)}.")
    if spec.kind == "choice":
        if value not in spec.choices:
            raise ParamError(f"Parameter {spec.name} must be one of {', '.join(spec.choices)}, not {_shown(value)}.")
        return value
    if spec.kind == "step_range":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ParamError(f"Parameter {spec.name} is a step range: two fractions, e.g. {spec.name}=0,0.8.")
        start, end = (_number(spec, v) for v in value)
        if start > end:
            raise ParamError(f"Parameter {spec.name} starts after it ends ({start:g} > {end:g}).")
        return (start, end)
    if spec.kind == "words":
        if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) for w in value):
            raise ParamError(f"Parameter {spec.name} is a list of words.")
        _check_words(spec, value)
        return tuple(value)
    if spec.kind == "word_values":
        if not isinstance(value, Mapping) or not all(isinstance(w, str) for w in value):
            raise ParamError(f"Parameter {spec.name} maps words to numbers, e.g. {{\"cat\": 2.0}}.")
        _check_words(spec, value)
        return tuple((word, _number(spec, number)) for word, number in value.items())
    raise AssertionError(f"unhandled kind {spec.kind}")


def _shown(value: Any) -> str:
    """`value` as a message shows it: its repr, shortened (an integer too long for text says its size)."""
    try:
        return shorten(repr(value))
    except ValueError:
        return shorten(value)


def _check_words(spec: ParamSpec, words: Any) -> None:
    if not all(is_text(word) for word in words):
        raise ParamError(f"The {spec.name} parameter is not valid text (it holds a lone surrogate, such as bytes "
                         "that are not UTF-8 become); type it again.")


def is_text(value: str) -> bool:
    """Whether `value` can be written as UTF-8 (a lone surrogate, which JSON escapes can spell, cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def canonical_json(data: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used to derive keys and hashes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
