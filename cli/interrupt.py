"""Ctrl-C and SIGTERM: the first asks the engine to stop, a second one leaves at once, both cleanly.

A KeyboardInterrupt raised inside `Thread.join()` leaves the thread marked finished on Python
3.11/3.12 while it still runs, so the CLI never lets one be raised there: while the engine works,
SIGINT and SIGTERM only set its CancelToken, and the main thread keeps waiting for the engine's
final event. A second signal means "now": one line, then `os._exit`, which skips interpreter and
C++ teardown under a running worker thread (the source of "terminate called without an active
exception" aborts). Every save is atomic, so leaving mid-run cannot leave half a file behind.

This module imports nothing but the standard library, so `main.py` can use it before the slow
start-up imports (torch, diffusers), during which Ctrl-C must also end in one line.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # imported lazily: this module must load in a millisecond (see above)
    from pipeline.events import CancelToken

EXIT_CANCELLED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_cancelled(line: str) -> NoReturn:
    """Print `line` on stderr and leave at once with exit status 130, skipping all teardown.

    The signals are blocked first, so a further Ctrl-C cannot add a second line.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    os._exit(EXIT_CANCELLED)


def _ignored(number: int) -> bool:
    """Signals ignored from the start stay ignored: a shell runs `retake ... &` that way on purpose."""
    return signal.getsignal(number) is signal.SIG_IGN


def _install(handler: Callable[[int, FrameType | None], None]) -> dict[int, Any]:
    """Give SIGINT and SIGTERM (those not ignored) to `handler`; the previous handlers, to restore."""
    return {number: signal.signal(number, handler) for number in SIGNALS if not _ignored(number)}


def exit_on_signals(line: str) -> None:
    """From now on SIGINT and SIGTERM leave at once with `line`: for phases with nothing to cancel.

    Installed for good, not for a block: a handler restored while the interpreter winds down would
    let a late Ctrl-C end the process with a KeyboardInterrupt. During start-up a KeyboardInterrupt
    raised inside a library's import can also be swallowed by a bare `except:` there and resurface
    as an unrelated ImportError; leaving from the handler avoids both.
    """
    _install(lambda _signum, _frame: exit_cancelled(line))


@contextmanager
def cancel_on_signals(cancel: CancelToken, second: Callable[[], str]) -> Iterator[None]:
    """Within the block SIGINT and SIGTERM cancel `cancel`; a second one exits with the line `second()`.

    Must be entered in the main thread (only it may install signal handlers).
    """

    def handle(_signum: int, _frame: FrameType | None) -> None:
        if cancel.cancelled:
            exit_cancelled(second())
        cancel.cancel()

    previous = _install(handle)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
