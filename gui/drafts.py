"""Live drafts: once a photo's inversion is stored, a change the artist makes is drafted after a pause.

Why: an artist tunes a target prompt, a word chip or a parameter by looking; pressing Run for each try
is slow on the hand and writes a result each time. A draft is a run without its commit
(`Engine.draft` through the session's `start_draft`): the same stages, the stored inversion (and
tuning) only, nothing written, so it never starts an inversion and the project, its manifest and the
undo history stay as they are. Its picture is the result a Run would commit, shown on the canvas with
a Draft badge; Run then commits that very result without computing it again (the engine keeps the last
draft and commits it when the run's job is the draft's, `Engine.run`; after any change it computes).
A draft's notices (a prompt longer than the text window) are shown as a run's, but not again by each
draft after it that says the same (the session remembers what the last drafts said).

Every change goes through the undo stack (gui.commands), so a change of the stack's index is a change
to draft: the draft in flight is cancelled at once (its picture would be stale) and a new one starts
`DELAY_MS` after the last change. The session shows a draft only if it is the last one asked for and
the document is still what it was made from. Drafts are on by default with a GPU (a draft of SD 1.5 at
512 px is a few seconds there) and off on a CPU (bench/results/draft-*.json); the setting
`live_drafts` (auto, on, off) decides, and Run > Live drafts flips it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer

from gui.document import Document
from gui.session import EditSession
from gui.settings import AppSettings

DELAY_MS = 600
"""The pause after the last change before a draft starts: longer than the gap between a typist's keys
and a slider's steps, short enough to feel live."""


class LiveDrafts(QObject):
    """Starts the session's drafts when the document changes, as the `live_drafts` setting says."""

    def __init__(self, doc: Document, session: EditSession, settings: AppSettings,
                 options: Callable[[], dict[str, Any] | None], parent: QObject | None = None) -> None:
        """`options()` gives the request options a run would use now, or None while no draft should start
        (a model choice is loading: a draft would load the model in use again in its way)."""
        super().__init__(parent)
        self.doc, self.session, self.settings, self._options = doc, session, settings, options
        self.gpu = False  # whether the engine's device is a GPU (the engine's status says)
        self._pending = False  # a draft waits for the one in flight to stop
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DELAY_MS)
        self.timer.timeout.connect(self.start)
        doc.undo.indexChanged.connect(self._on_index)
        doc.projectChanged.connect(self.reset)
        session.draftChanged.connect(self._on_draft_changed)
        session.engine.status.connect(self._on_status)

    def enabled(self) -> bool:
        """The setting: on, off, or auto (on with a GPU)."""
        choice = self.settings.get("live_drafts")
        return choice == "on" or (choice == "auto" and self.gpu)

    def set_enabled(self, on: bool) -> None:
        """Run > Live drafts: on or off from now on (no longer following the device)."""
        self.settings.set("live_drafts", "on" if on else "off")
        if on:
            self.changed()
        else:
            self.timer.stop()
            self._pending = False
            self.session.clear_draft()

    def wanted(self) -> bool:
        """Whether the document as it stands is worth a draft: drafts are on, a project is open, it has an
        inversion stored, the target prompt is written, and no run is in flight or waiting."""
        return (self.enabled() and self.doc.project_path is not None and self.session.inversions > 0
                and bool(self.doc.target_prompt.strip()) and self.session.ready and not self.session.running)

    def reset(self) -> None:
        """Another project: nothing to draft until the artist changes something."""
        self.timer.stop()
        self._pending = False

    def changed(self) -> None:
        """The document changed: the draft in flight is stale; draft again after the pause."""
        self.session.cancel_draft()
        if self.wanted():
            self.timer.start()
        else:
            self.timer.stop()
            self.session.clear_draft()

    def start(self) -> None:
        """Start the draft now, or as soon as the draft in flight has stopped."""
        if not self.wanted() or self.session.io.blocking:
            return
        if self.session.drafting:
            self._pending = True
            self.session.cancel_draft()
            return
        self._pending = False
        assert self.doc.project_path is not None
        if (options := self._options()) is not None:
            self.session.start_draft(self.doc.project_path, self.doc.snapshot(), options)

    def shutdown(self) -> None:
        """The window is closing: no more drafts (the undo stack still signals as it is torn down)."""
        self.timer.stop()
        self.doc.undo.indexChanged.disconnect(self._on_index)

    def _on_index(self, _index: int) -> None:
        self.changed()

    def _on_draft_changed(self) -> None:
        if self._pending and not self.session.drafting and not self.session.running:
            self.start()

    def _on_status(self, status: dict) -> None:
        self.gpu = bool(status.get("gpu"))
