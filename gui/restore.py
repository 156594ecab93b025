"""Settings that come from outside the document, checked before the document changes.

A result PNG's metadata, a project.json written by another Retake, an edit of the history, a preset:
each names a method, parameters and perhaps prompts, and any of them may come from a newer (or an
older, or a tampered) Retake. Every value goes through the check the command line gives --param
(pipeline.params.check_params: types, ranges, NaN and infinities, unknown names), the method must be
one this Retake has, and a prompt must be text. What is known and valid is taken; the rest is named
in one message, e.g. "house.png was made by Retake 0.2.0: method evil is unknown to this Retake
(0.1.0); prompts restored, parameters skipped." Nothing here changes the document: the caller applies
what `Restorable` holds (one undoable step) and shows `message`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Restorable:
    """What of some outside settings the document may take: each prompt (None: not given or not
    text), a method this Retake knows (None: none given, or an unknown one), the valid values of that
    method's parameters (JSON-ready), and `refused`: one sentence per thing left out."""

    source_prompt: str | None
    target_prompt: str | None
    method: str | None
    params: dict[str, Any]
    refused: tuple[str, ...] = ()
    unknown_method: str | None = None


def checked_method(method: object, params: object) -> tuple[str | None, dict[str, Any], list[str]]:
    """A method id and its parameters from outside: (the method if known, its valid parameters,
    sentences for what was refused). An unknown method refuses its parameters with it."""
    from pipeline.errors import shorten
    from pipeline.methods.registry import get_method, method_ids
    from pipeline.params import check_params

    if not isinstance(method, str) or method not in method_ids():
        return None, {}, [f"method {shorten(repr(method))} is unknown to this Retake ({_version()})"]
    if not isinstance(params, Mapping):
        return method, {}, [f"its parameters are {type(params).__name__}, not a set of named values"]
    checked = check_params(get_method(method).Params, params)
    refused = [f"unknown parameter {name}" for name in checked.unknown]
    refused += [_lower_first(text.rstrip(".")) for text in checked.invalid.values()]
    return method, checked.json_values(), refused


def from_settings(data: Mapping[str, Any]) -> Restorable:
    """The prompts, method and parameters in `data` (a result PNG's metadata, an edit of the history),
    each checked."""
    prompts = {}
    refused = []
    for which in ("source", "target"):
        value = data.get(f"{which}_prompt")
        prompts[which] = _prompt(value)
        if value is not None and prompts[which] is None:
            refused.append(f"its {which} prompt is not text")
    method, params, problems = checked_method(data.get("method"), data.get("params", {}))
    unknown = None if method is not None else str(data.get("method"))
    return Restorable(prompts["source"], prompts["target"], method, params, tuple(refused + problems), unknown)


def message(restorable: Restorable, origin: str, made_by: object = None) -> str:
    """One sentence naming what of `origin`'s settings was not restored, and what was; "" if all was.
    `made_by` is the app that wrote them (a result PNG's "app"), named when its method is unknown."""
    if not restorable.refused:
        return ""
    from pipeline.errors import shorten

    subject = origin
    if restorable.unknown_method is not None and isinstance(made_by, str) and made_by \
            and made_by != f"Retake {_version()}":
        subject = f"{origin} was made by {shorten(made_by)}"
    taken = [name for name, value in (("prompts", restorable.source_prompt or restorable.target_prompt),
                                      ("method", restorable.method)) if value is not None]
    if restorable.method is None:
        outcome = f"{' and '.join(taken)} restored, parameters skipped" if taken else "nothing was restored"
    else:
        outcome = "the rest was restored"
    return f"{subject}: {'; '.join(restorable.refused)}; {outcome}."


def _prompt(value: object) -> str | None:
    from pipeline.params import is_text

    return value if isinstance(value, str) and is_text(value) else None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _version() -> str:
    from pipeline.project import app_version

    return app_version()
