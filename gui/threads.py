"""The window's threads end with their owner, also in a script that never closes its window.

Qt aborts the process when a QThread object is destroyed while its thread runs, which is what
happens at interpreter exit to a thread nobody stopped. Each owner of a thread (the engine client,
the segmenter, the project-I/O worker) registers it here once; the thread is stopped when the owner
is collected or, at the latest, when Python exits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from PySide6.QtCore import QThread


def stop_with(owner: object, thread: QThread, first: Callable[[], None] | None = None,
              wait_ms: int = -1) -> weakref.finalize:
    """Stop `thread` (after calling `first`, e.g. to cancel a run) when `owner` goes or Python exits;
    calling the returned finalizer stops it now (once)."""
    return weakref.finalize(owner, _stop, thread, first, wait_ms)


def _stop(thread: QThread, first: Callable[[], None] | None, wait_ms: int) -> None:
    if first is not None:
        first()
    thread.quit()
    thread.wait() if wait_ms < 0 else thread.wait(wait_ms)
