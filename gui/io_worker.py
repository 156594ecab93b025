"""The project-I/O thread: opening, saving, refreshing and pruning projects away from the UI thread.

Reading or writing a project can take seconds (a project holds gigabytes of tunings; a save fsyncs
every file), and the window must keep painting meanwhile. Each piece of work is a plain function run
on one thread of its own, in the order submitted, so two saves never interleave; its result (or the
exception it raised) comes back to the UI thread as a queued signal, where the callback given with it
runs. As in superqt's thread workers, the function knows nothing of Qt; unlike them, the thread is one
long-lived QThread, because project writes must stay in order.

`wait(task)` turns a nested event loop until a task is done, for an action that cannot go on without
its result (Quit with "Save", a script that saves then reads): the window keeps painting and
answering, and the window refuses the actions that would conflict meanwhile (see `busy`).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QEventLoop, QObject, QThread, Signal, Slot

from gui.threads import stop_with

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Task:
    """One piece of work on the I/O thread: `label` says what it is ("Saving house.retake"); once `done`,
    `result` holds what it returned, or `error` what it raised (with `details`, the traceback)."""

    label: str
    work: Callable[[], Any]
    on_done: Callable[[Task], None] | None = None
    exclusive: bool = True
    """Whether the window refuses to open, write or run on the project meanwhile (an open, a save, a
    copy, a prune); a read for display (a result's picture, the history after a run) is not."""
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    details: str = ""
    _loops: list[QEventLoop] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.done and self.error is None


class _Runner(QObject):
    """Lives on the I/O thread and runs each task it is sent."""

    finished = Signal(object)

    @Slot(object)
    def run(self, task: Task) -> None:
        try:
            task.result = task.work()
        except Exception as error:  # noqa: BLE001 - handed to the UI thread, which says what happened
            task.error, task.details = error, traceback.format_exc()
        self.finished.emit(task)


class IoWorker(QObject):
    """Runs project I/O in order on its own thread; `busy` is the label of the oldest task not done
    ("" when idle), `blocking` that of the oldest exclusive one, and `busyChanged` says when they
    change."""

    busyChanged = Signal(str)
    failed = Signal(object)  # a task whose callback raised: the caller shows it
    _submit = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: list[Task] = []
        self._thread = QThread()
        self._thread.setObjectName("retake-project-io")
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._submit.connect(self._runner.run)
        self._runner.finished.connect(self._on_finished)
        self._thread.start()
        self._stop = stop_with(self, self._thread)

    @property
    def busy(self) -> str:
        return self._pending[0].label if self._pending else ""

    @property
    def blocking(self) -> str:
        return next((task.label for task in self._pending if task.exclusive), "")

    def submit(self, label: str, work: Callable[[], Any], on_done: Callable[[Task], None] | None = None,
               exclusive: bool = True) -> Task:
        """Queue `work` (a function that touches no Qt object); `on_done(task)` runs on the UI thread."""
        task = Task(label, work, on_done, exclusive)
        self._pending.append(task)
        if len(self._pending) == 1:
            self.busyChanged.emit(self.busy)
        self._submit.emit(task)
        return task

    def wait(self, task: Task) -> Task:
        """Turn a nested event loop until `task` is done (its callback has run); returns it."""
        if not task.done:
            loop = QEventLoop()
            task._loops.append(loop)
            loop.exec()
        return task

    def wait_idle(self) -> None:
        """Wait until every task submitted so far is done."""
        while self._pending:
            self.wait(self._pending[-1])

    def shutdown(self) -> None:
        """Finish what is queued (saves must land), then stop the thread."""
        self.wait_idle()
        self._stop()

    def _on_finished(self, task: Task) -> None:
        task.done = True
        if task in self._pending:
            self._pending.remove(task)
        try:
            if task.on_done is not None:
                task.on_done(task)
        except Exception as error:  # noqa: BLE001 - a bug in a callback: said, never lost in the event loop
            log.exception("callback of %s failed", task.label)
            self.failed.emit(Task(task.label, task.work, done=True, error=error, details=traceback.format_exc()))
        finally:
            for loop in task._loops:
                loop.quit()
            self.busyChanged.emit(self.busy)
