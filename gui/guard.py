"""No exception escapes to the event loop unseen: every slot that can raise reports it instead.

Qt calls a slot from its event loop; an exception raised there reaches only sys.excepthook (a line on
a terminal the artist never sees) and leaves whatever the slot was doing half done. The window wraps
each slot it connects (menu actions, drops, the session's callbacks, closing) with `guarded`, which
turns an exception into one sentence for the message bar, with the traceback as its details: a
RetakeError or an OSError is a user's problem and says so plainly; anything else is a bug and is
called one (and logged).
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
Report = Callable[[str, str], None]


def explain(error: BaseException, doing: str) -> str:
    """One sentence for the user about `error`, raised while `doing` ("saving house.retake")."""
    from pipeline.errors import RetakeError, shorten

    if isinstance(error, RetakeError):
        return str(error)
    if isinstance(error, OSError):
        where = f" ({shorten(error.filename)})" if error.filename else ""
        return f"Could not finish {doing}: {error.strerror or error}{where}."
    return (f"Unexpected internal error while {doing} ({type(error).__name__}: {shorten(error, 200)}); "
            "the details say where.")


def guarded(report: Report, doing: str) -> Callable[[F], F]:
    """A decorator: the slot's exceptions go to `report(sentence, traceback)` instead of the event loop."""

    def wrap(slot: F) -> F:
        @functools.wraps(slot)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return slot(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - reported to the user, never lost
                log.exception("error while %s", doing)
                report(explain(error, doing), traceback.format_exc())
                return None

        return run  # type: ignore[return-value]

    return wrap
