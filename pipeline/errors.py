"""Errors a user can act on.

Every failure a person can cause or fix (a broken image, a damaged project, a word that is not in
the prompt, a missing model, out of GPU memory, a cancelled run) is raised as a RetakeError whose
message is one complete sentence fit to show as is, in a terminal or a dialog.
"""

from __future__ import annotations


class RetakeError(Exception):
    """Base of every user-facing error; str(error) is the one line shown to the user."""


class ImageError(RetakeError):
    """An input image that cannot be read or used."""


class ModelError(RetakeError):
    """A model that cannot be found, read or converted."""


class ProjectError(RetakeError):
    """A project folder that is missing, damaged or of an unknown format."""


class PromptError(RetakeError):
    """A prompt or word choice the method cannot use (word not in prompt, unequal word counts)."""


class ParamError(RetakeError):
    """A method parameter that is unknown or out of range."""


class OutOfMemoryError(RetakeError):
    """The device ran out of memory."""


class Cancelled(RetakeError):
    """The user cancelled the run; nothing was written."""


class NeedsRun(RetakeError):
    """A draft cannot be made without work that only a run does: the project has no stored inversion (or,
    for a method that tunes, no stored tuning) for the settings as they stand."""


def shorten(value: object, limit: int = 60) -> str:
    """`value` as text for a message, cut in the middle with an ellipsis when longer than `limit`.

    Messages echo what the user or a damaged file gave (a path, a number, a word); a 4,000-digit
    number must not become a 4,000-character message.
    """
    try:
        text = str(value)
    except ValueError:  # an integer beyond Python's 4,300-digit limit for conversion to text
        text = f"an integer of {int(value.bit_length() * 0.30103) + 1} digits"  # type: ignore[attr-defined]
    if len(text) <= limit:
        return text
    keep = max(limit - 1, 2)
    return text[: keep - keep // 2] + "…" + text[len(text) - keep // 2 :]


def printable(text: str) -> str:
    """`text` with every character that is not printable written as an escape (\\u001b): controls,
    including C1 controls such as U+009B that some terminals take for an escape sequence, and invisible
    format characters. Text from a file (a manifest, a file name) echoed to a terminal cannot drive it."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
