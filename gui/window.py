"""The main window: canvas in the middle, panels around it, the timeline along the bottom.

The window wires widgets to the document (what the artist edits) and the edit session (the engine,
the run, the project's history, project I/O: gui.session) and renders what they say; it owns no
editing state of its own. Everything slow (importing the pipeline, loading the model, inverting,
editing, segmenting, reading and writing the project) happens on worker threads, so the window is
usable at once and stays responsive. Every slot that can raise is wrapped (gui.guard): an error is
shown in the message bar, never lost in the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, QStandardPaths, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar, QScrollArea, QVBoxLayout, QWidget,
)

from gui import batch_dialog, project_io, restore
from gui.canvas import Canvas, Tool
from gui.demo_scenes import choose_demo_scene
from gui.document import Document
from gui.drafts import LiveDrafts
from gui.estimate import LONG_RUN_S, Estimate, estimate, stored_stages
from gui.guard import explain, guarded
from gui.guide import GuideWindow, guide_path
from gui.history import HistoryPanel
from gui.io_worker import Task
from gui.message_bar import MessageBar
from gui.method_form import MethodPanel
from gui.panels import FittingScrollArea
from gui.model_choice import ModelChoice, model_name
from gui.models_dialog import ModelsDialog
from gui.project_io import ResultEntry
from gui.prompts import PromptPanel
from gui.qimage import from_qimage
from gui.reference import ReferencePanel
from gui.session import EditSession
from gui.segment_help import SegmentHelp, chosen_checkpoint
from gui.settings import AppSettings, SettingsDialog
from gui.shortcuts import ShortcutsDialog
from gui.timeline import Timeline
from gui.tools import ToolPanel
from gui.welcome import WelcomeView
from gui.worker import EngineClient, EngineFactory, SegmentClient, real_engine
from pipeline.events import Stage

BRUSH_STEP = 1.25
MANIFEST_NAME = "project.json"  # a project's manifest, dropped or chosen: its folder is opened
BLOCKED_BY_IO = ("new", "open", "demo_scene", "save_as", "load_png", "paste", "free_space")
"""Actions refused while a project is being opened, saved, copied or pruned (Run too; Save waits)."""
SAVE_FAILED_KEEPS = ("Your changes are kept in this window, unsaved; the project folder holds its last "
                     "complete save.")


STANDARD_FALLBACKS = {  # where the platform binds no key to a standard action (Qt's offscreen platform)
    QKeySequence.StandardKey.New: "Ctrl+N", QKeySequence.StandardKey.Open: "Ctrl+O",
    QKeySequence.StandardKey.Save: "Ctrl+S", QKeySequence.StandardKey.SaveAs: "Ctrl+Shift+S",
    QKeySequence.StandardKey.Quit: "Ctrl+Q", QKeySequence.StandardKey.Undo: "Ctrl+Z",
    QKeySequence.StandardKey.Redo: "Ctrl+Shift+Z", QKeySequence.StandardKey.Paste: "Ctrl+V",
    QKeySequence.StandardKey.ZoomIn: "Ctrl++", QKeySequence.StandardKey.ZoomOut: "Ctrl+-",
}


def key_sequences(shortcut: str | QKeySequence.StandardKey) -> list[QKeySequence]:
    """The keys of a shortcut: the platform's for a standard action (a fallback where it has none)."""
    if isinstance(shortcut, QKeySequence.StandardKey):
        return QKeySequence.keyBindings(shortcut) or [QKeySequence(STANDARD_FALLBACKS[shortcut])]
    return [QKeySequence(shortcut)]


def sam_factory(settings: AppSettings) -> Callable[[], Any]:
    def make() -> Any:
        from pipeline.segment import load_segmenter

        return load_segmenter(chosen_checkpoint(settings), settings.request_options()["device"])

    return make


class MainWindow(QMainWindow):
    """Retake's desktop window over one document and its edit session."""

    def __init__(self, settings: AppSettings | None = None, engine_factory: EngineFactory = real_engine,
                 segmenter_factory: Callable[[], Any] | None = None) -> None:
        super().__init__()
        self.settings = settings or AppSettings()
        self.doc = Document(self)
        self.session = EditSession(self.doc, engine_factory, self)
        self._segmenter_factory = segmenter_factory
        self.segmenter = SegmentClient(segmenter_factory or sam_factory(self.settings), self)
        self._pending: list[Path] = []
        self._closing = False
        self._io_said = ""  # what the status bar last said of project I/O
        self._estimated_run: tuple[str, dict[str, Any]] | None = None  # the last run's method and parameters
        self.models_dialog: ModelsDialog | None = None
        self.model_choice = ModelChoice(self.settings)
        self.setAcceptDrops(True)
        self.resize(1400, 900)

        self.canvas = Canvas(self.doc, self.session)
        self.message = MessageBar()
        centre = QWidget()
        column = QVBoxLayout(centre)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.message)
        column.addWidget(self.canvas, 1)
        self.setCentralWidget(centre)

        self.drafts = LiveDrafts(self.doc, self.session, self.settings, self._draft_options, self)
        self.actions: dict[str, QAction] = {}
        self._make_actions()
        self.tools = ToolPanel(self.doc, self.canvas, self.actions, self.settings)
        self.prompts = PromptPanel(self.doc)
        self.method = MethodPanel(self.doc, self.settings, lambda: self.session.gpu)
        self.reference = ReferencePanel(self.doc)
        self.history = HistoryPanel(self.session)
        self.timeline = Timeline(self.doc, self.session)
        self.docks = {
            "tools": self._dock("Tools", self.tools, Qt.DockWidgetArea.LeftDockWidgetArea),
            "prompts": self._dock("Prompts", self.prompts, Qt.DockWidgetArea.RightDockWidgetArea),
            "method": self._dock("Method", self.method, Qt.DockWidgetArea.RightDockWidgetArea, scroll=True),
            "reference": self._dock("Reference", self.reference, Qt.DockWidgetArea.RightDockWidgetArea),
            "history": self._dock("History", self.history, Qt.DockWidgetArea.LeftDockWidgetArea),
            "timeline": self._dock("Timeline", FittingScrollArea(self.timeline), Qt.DockWidgetArea.BottomDockWidgetArea),
        }
        self.tabifyDockWidget(self.docks["method"], self.docks["reference"])
        self.docks["method"].raise_()
        self._make_menus()
        self._make_status_bar()

        guard = self._guard
        self.doc.undo.cleanChanged.connect(lambda _clean: self._update_title())
        self.doc.projectChanged.connect(self._update_title)
        self.doc.refused.connect(lambda text: self.message.show_message(text))
        session = self.session
        session.historyChanged.connect(self._update_inversion)
        session.modelChanged.connect(guard("loading the model")(self._on_model_state))
        session.preloaded.connect(guard("loading the model")(self._on_preloaded))
        session.progressed.connect(guard("showing the run's progress")(self._on_progress))
        session.previewed.connect(guard("showing a step of the run")(self._on_preview))
        session.noticed.connect(lambda text: self.message.show_message(text, error=False))
        session.runFinished.connect(guard("showing the run's result")(self._on_finished))
        session.draftChanged.connect(guard("showing the draft")(self._on_draft))
        session.stepDecoded.connect(guard("showing a decoded step")(self._on_decoded))
        session.ioChanged.connect(guard("showing the project's state")(self._on_io))
        session.io.failed.connect(lambda task: self._report_task(task, task.label.lower()))
        session.failed.connect(self._report_task)
        self.engine.ready.connect(guard("starting the engine")(self._on_ready))
        self.engine.loadFailed.connect(self._on_load_failed)
        self.engine.status.connect(self._on_status)
        self.engine.busyChanged.connect(self._update_actions)
        self.reference.problem.connect(self.message.show_message)
        self.method.problem.connect(self.message.show_message)
        self.history.restoreRequested.connect(guard("restoring settings")(self.restore_entry))
        self.canvas.segmentRequested.connect(guard("segmenting")(self._segment))
        self.segmenter.masked.connect(guard("applying a segmentation")(self._on_segment_mask))
        self.segment_help = SegmentHelp(self)
        self.tools.show_mask.toggled.connect(self.actions["show_mask"].setChecked)
        self.timeline.stepChosen.connect(guard("showing a step")(self.show_step))
        self.timeline.resultChosen.connect(self.show_result)
        self.reference.paintMaskRequested.connect(self._paint_reference_mask)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.timeout.connect(guard("autosaving")(self.autosave_now))
        self.apply_settings()
        self._restore_layout()
        self._update_title()
        self._update_actions()
        self.actions["models"].setEnabled(False)  # it lists the Hugging Face cache through the pipeline
        self.welcome = WelcomeView(self)  # over the canvas while no project is open

    @property
    def engine(self) -> EngineClient:
        """The session's engine client (scripts and tests wait on its readiness and signals)."""
        return self.session.engine

    def _guard(self, doing: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A slot wrapper that shows, instead of raising, what went wrong while `doing` (gui.guard)."""
        return guarded(lambda text, details: self.message.show_message(text, details), doing)

    # -- construction ---------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea, scroll: bool = False) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower()}")
        if scroll:
            area_widget = QScrollArea()
            area_widget.setWidgetResizable(True)
            area_widget.setWidget(widget)
            widget = area_widget
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, name: str, text: str, slot: Callable[[], Any],
                shortcut: str | QKeySequence.StandardKey | None = None, checkable: bool = False,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcuts(key_sequences(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setCheckable(checkable)
        action.setToolTip(tip or text)
        run = self._guard(text.replace("&", "").rstrip("…").lower())(slot)
        action.triggered.connect(lambda _checked=False: run())
        self.addAction(action)
        self.actions[name] = action
        return action

    def _history_action(self, text: str, which: str) -> QAction:
        """Undo or Redo with a fixed text, the command it would undo in its tooltip: Qt's own actions put
        the command in their text ("Undo Change blend words"), so the toolbar buttons changed width
        with every edit and Run moved under the artist's mouse."""
        stack, word = self.doc.undo, text.replace("&", "")
        action = QAction(text, self)
        action.triggered.connect(getattr(stack, which))
        can = getattr(stack, f"can{word}")
        getattr(stack, f"can{word}Changed").connect(action.setEnabled)
        action.setEnabled(can())

        def tell(command: str) -> None:
            action.setToolTip(f"{word} {command}" if command else f"Nothing to {which}")
            action.setStatusTip(action.toolTip())

        getattr(stack, f"{which}TextChanged").connect(tell)
        tell(getattr(stack, f"{which}Text")())
        return action

    def _make_actions(self) -> None:
        k = QKeySequence.StandardKey
        a = self._action
        a("new", "&New project from image…", self._choose_image, k.New)
        a("open", "&Open project…", self._choose_project, k.Open)
        a("demo_scene", "Open &demo scene…", lambda: choose_demo_scene(self), "Ctrl+Shift+N",
          tip="A demo-world picture for each method, with its prompts and settings filled in")
        a("save", "&Save", self.save, k.Save)
        a("save_as", "Save &as…", self._choose_save_as, k.SaveAs)
        a("export", "&Export result…", self._choose_export, "Ctrl+E")
        a("load_png", "Load settings from a result PNG…", self._choose_png_settings, "Ctrl+Shift+O")
        a("save_recipe", "Save &recipe…", lambda: batch_dialog.save_recipe(self), "Ctrl+Shift+B")
        a("apply_folder", "&Apply to a folder…", lambda: batch_dialog.apply_to_folder(self), "Ctrl+B")
        a("settings", "Se&ttings…", self.open_settings, "Ctrl+,")
        a("quit", "&Quit", self.close, k.Quit)
        undo, redo = self._history_action("&Undo", "undo"), self._history_action("&Redo", "redo")
        undo.setShortcuts(key_sequences(k.Undo))
        redo_keys = key_sequences(k.Redo)
        if QKeySequence("Ctrl+Shift+Z") not in redo_keys:  # the other platforms' redo, on every platform
            redo_keys.append(QKeySequence("Ctrl+Shift+Z"))
        redo.setShortcuts(redo_keys)
        for name, action in (("undo", undo), ("redo", redo)):
            self.addAction(action)
            self.actions[name] = action
        a("paste", "&Paste image as new project", self.paste_image, k.Paste)
        a("reference_load", "Load &reference image…", lambda: self.reference.choose_file(), "Ctrl+Shift+R")
        a("reference_paste", "Paste reference image", lambda: self.reference.paste(), "Ctrl+Shift+V")
        a("models", "&Models…", self.open_models, "Ctrl+M")
        a("free_space", "&Free disk space…", self.free_disk_space, "Ctrl+Shift+D",
          tip="Drop the stored tunings (and, if you say so, inversions) the newest result does not need")
        a("fit", "&Fit to window", self.canvas.fit, "F")
        a("actual", "&100%", self.canvas.actual_size, "Ctrl+1")
        a("zoom_in", "Zoom &in", lambda: self.canvas.zoom_by(1.25), k.ZoomIn)
        a("zoom_out", "Zoom &out", lambda: self.canvas.zoom_by(0.8), k.ZoomOut)
        a("compare", "Toggle &before / after", self._toggle_compare, "X")
        a("show_mask", "Show &mask", self._toggle_mask, "M", checkable=True).setChecked(True)
        for tool, key in ((Tool.BRUSH, "B"), (Tool.ERASER, "E"), (Tool.SEGMENT, "S"), (Tool.PAN, "H")):
            a(f"tool_{tool.name.lower()}", tool.value, lambda t=tool: self.set_tool(t), key, checkable=True)
        a("brush_bigger", "Bigger brush", lambda: self.canvas.set_brush_size(self.canvas.brush_size * BRUSH_STEP), "]")
        a("brush_smaller", "Smaller brush",
          lambda: self.canvas.set_brush_size(self.canvas.brush_size / BRUSH_STEP), "[")
        a("mask_fill", "Fill", lambda: self._mask_op("fill"), "Shift+F", tip="Fill the whole mask")
        a("mask_clear", "Clear", lambda: self._mask_op("clear"), "Shift+Del", tip="Clear the mask")
        a("mask_invert", "Invert", lambda: self._mask_op("invert"), "Ctrl+I", tip="Invert the mask")
        a("segment_clear", "Clear clicks", self.canvas.clear_clicks, "Shift+S",
          tip="Forget the segment clicks and box (the mask stays)")
        a("softer", "Softer brush", lambda: self.canvas.set_hardness(self.canvas.hardness - 0.1), "{")
        a("harder", "Harder brush", lambda: self.canvas.set_hardness(self.canvas.hardness + 0.1), "}")
        a("next_mask", "&Next mask", lambda: self.tools.next_purpose(), "N",
          tip="Paint the method's next mask (a reference's mask is painted on the reference)")
        a("step_prev", "&Previous step", lambda: self.timeline.step_by(-1), ",",
          tip="Show the previous step of the run on the canvas")
        a("step_next", "N&ext step", lambda: self.timeline.step_by(1), ".",
          tip="Show the next step of the run on the canvas")
        a("show_result", "Back to the &result", lambda: self.timeline.back_to_result(), "R")
        a("run", "&Run edit", self.run_edit, "Ctrl+Return", tip="Invert (once) and edit (Ctrl+Enter)")
        a("cancel", "&Cancel", self.cancel_run, "Esc", tip="Stop the run (Esc)")
        a("live_drafts", "&Live drafts", lambda: self.drafts.set_enabled(self.actions["live_drafts"].isChecked()),
          "Ctrl+L", checkable=True,
          tip="Draft each change after a short pause, from the stored inversion, without saving it")
        a("shortcuts", "&Keyboard shortcuts", self.show_shortcuts, "F1")
        a("guide", "&User guide", self.show_guide, "Shift+F1")
        a("about", "&About Retake", self._about)
        self.actions["tool_brush"].setChecked(True)

    def _make_menus(self) -> None:
        bar = self.menuBar()
        menus = {
            "&File": ["new", "open", "recent", "demo_scene", "save", "save_as", None, "export", "load_png",
                      "save_recipe", None, "models", "settings", None, "quit"],
            "&Edit": ["undo", "redo", None, "paste", None, "reference_load", "reference_paste"],
            "&View": ["fit", "actual", "zoom_in", "zoom_out", None, "compare", "show_mask", None, "step_prev",
                      "step_next", "show_result"],
            "&Tools": ["tool_brush", "tool_eraser", "tool_segment", "tool_pan", None, "brush_bigger",
                       "brush_smaller", "softer", "harder", None, "next_mask", "mask_fill", "mask_clear",
                       "mask_invert", "segment_clear"],
            "&Run": ["run", "cancel", None, "live_drafts"],
            "&Project": ["free_space", "apply_folder"],
            "&Help": ["guide", "shortcuts", "about"],
        }
        for title, names in menus.items():
            menu = bar.addMenu(title)
            for name in names:
                if name is None:
                    menu.addSeparator()
                elif name == "recent":
                    self.recent_menu = menu.addMenu("Open &recent")
                    self.recent_menu.aboutToShow.connect(self._fill_recent)
                else:
                    menu.addAction(self.actions[name])
            if title == "&View":
                menu.addSeparator()
                for number, (name, dock) in enumerate(self.docks.items(), start=1):
                    toggle = dock.toggleViewAction()
                    toggle.setText(f"{dock.windowTitle()} panel")
                    toggle.setShortcut(QKeySequence(f"Alt+{number}"))
                    menu.addAction(toggle)
                    self.actions[f"panel_{name}"] = toggle
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("toolbar-main")
        for name in ("new", "open", "save", None, "undo", "redo", None, "tool_brush", "tool_eraser", "tool_segment",
                     "tool_pan", None, "fit", "compare", None, "run", "cancel"):
            if name is None:
                toolbar.addSeparator()
            else:
                toolbar.addAction(self.actions[name])

    def _make_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_engine = QLabel("Engine: loading…")
        self.status_device = QLabel("Device: …")
        self.status_model = QLabel()
        self.status_memory = QLabel("GPU memory: …")
        self.status_inversion = QLabel("Inversion: none")
        self.status_stage = QLabel()
        self.status_draft = QLabel()
        self.status_draft.setObjectName("statusDraft")
        self.status_draft.setStyleSheet("color: rgb(230, 160, 50);")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        for widget in (self.status_stage, self.progress, self.status_draft):
            bar.addWidget(widget)
        for widget in (self.status_inversion, self.status_model, self.status_device, self.status_memory,
                       self.status_engine):
            bar.addPermanentWidget(widget)
        self._update_model_status()

    # -- settings and layout --------------------------------------------------------------------
    def apply_settings(self) -> None:
        """Take in the settings that apply at once (live drafts, autosave, the SAM checkpoint, the status bar)."""
        self.actions["live_drafts"].setChecked(self.drafts.enabled())
        minutes = self.settings.get("autosave_minutes")
        if minutes > 0:
            self.autosave_timer.start(minutes * 60_000)
        else:
            self.autosave_timer.stop()
        self.segmenter.set_factory(self._segmenter_factory or sam_factory(self.settings))
        self._update_model_status()

    def open_settings(self) -> None:
        before = self.settings.request_options()
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings()
            chosen = dialog.load_values()
            if any(self.settings.get(name) != value for name, value in chosen.items()):
                self.choose_model(chosen)
            elif self.settings.request_options() != before:
                self._preload()

    def open_models(self) -> ModelsDialog:
        """The model manager (non-modal): choosing a model there loads it."""
        if self.models_dialog is None:
            self.models_dialog = ModelsDialog(self.settings, self)
            self.models_dialog.chosen.connect(self._guard("choosing a model")(self.use_model))
        else:
            self.models_dialog.refresh()
        self.models_dialog.show()
        self.models_dialog.raise_()
        return self.models_dialog

    def use_model(self, spec: str, download: bool = False) -> None:
        """Load `spec` now (`download`: fetch a Hugging Face id first); it becomes the model once loaded."""
        self.choose_model({"model": spec}, download)

    def choose_model(self, values: dict[str, Any], download: bool = False) -> None:
        """Try a model, device or precision (gui.model_choice): recorded once loaded, else the one in use stays."""
        self.session.preload(self.model_choice.choose(values), download)
        self._update_model_status()
        self._show_settings_problems()

    def _preload(self) -> None:
        """Load the model the settings record."""
        self.session.preload(self.settings.request_options())
        self._show_settings_problems()

    def _on_preloaded(self, options: dict[str, Any], error: str) -> None:
        """A preload ended: a choice that loaded is recorded; one that failed is said, and the model in use
        is loaded again (the engine let it go to try the new one)."""
        said = self.model_choice.settle(options, error)
        if said is None:
            if error and self.model_choice.pending is None:  # the recorded model itself did not load
                self.message.show_message(error)
        elif said:
            self.message.show_message(said, error)
            self._preload()
        self._update_model_status()
        if self.models_dialog is not None and self.models_dialog.isVisible():
            self.models_dialog.settled(said or "")

    def _show_settings_problems(self) -> None:
        """Saved settings that could not be used (each replaced by its default), said once, after what the
        message bar says already."""
        if problems := self.settings.take_problems():
            shown = self.message.text.text() if self.message.isVisible() else ""
            self.message.show_message(f"{shown} Some saved settings could not be used, so their defaults are: "
                                      f"{' '.join(problems)}".strip(), error=False)

    def _restore_layout(self) -> None:
        geometry = self.settings.store.value("window/geometry")
        state = self.settings.store.value("window/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def _save_layout(self) -> None:
        self.settings.store.setValue("window/geometry", self.saveGeometry())
        self.settings.store.setValue("window/state", self.saveState())

    # -- engine state ---------------------------------------------------------------------------
    def _on_ready(self, tokenizer: Any) -> None:
        self.status_engine.setText("Engine: ready")
        self.actions["models"].setEnabled(True)
        self.method.set_ready()
        self.prompts.set_tokenizer(tokenizer)
        for panel in (self.timeline, self.reference, self.tools):
            panel.set_ready()
        self._preload()
        pending, self._pending = self._pending, []
        for path in pending:
            self.open_path(path)

    def _on_load_failed(self, details: str) -> None:
        self.status_engine.setText("Engine: failed")
        self.message.show_message(details.split("\n")[0], details)

    def _on_status(self, status: dict) -> None:
        self.status_device.setText(f"Device: {status.get('device', '?')}")
        self.status_memory.setText(status.get("memory", ""))
        self.actions["live_drafts"].setChecked(self.drafts.enabled())

    def _on_model_state(self, details: str) -> None:
        self._update_model_status()
        if details:
            self.message.show_message(details)

    def _update_model_status(self) -> None:
        """The recorded model and its state; while another is tried, that it is being loaded (the
        session's state may still be the model in use's, until the engine takes the choice up)."""
        name = model_name(self.settings.get("model"))
        if trying := self.model_choice.pending_name():
            self.status_model.setText(f"Model: {name}; {trying} loading…")
        else:
            self.status_model.setText(f"Model: {name} ({self.session.model_state})")
        self.status_model.setToolTip(self.settings.get("model"))

    def _update_inversion(self) -> None:
        n = self.session.inversions
        self.status_inversion.setText("Inversion: none yet" if not n else f"Inversion: {n} stored")

    def _update_title(self) -> None:
        name = self.doc.project_path.name if self.doc.project_path else "no project"
        self.setWindowTitle(f"{name}[*] — Retake")
        self.setWindowModified(self.doc.dirty)

    # -- project I/O: on the session's worker thread; the window shows it and refuses what conflicts --
    def _on_io(self, label: str) -> None:
        """Say what project I/O is in flight (and clear it when done, unless something else was said)."""
        if label:
            self._say_io(f"{label}…")
        elif self.status_stage.text() == self._io_said:
            self.status_stage.setText("")
        self._update_actions()

    def _say_io(self, text: str) -> None:
        self._io_said = text
        self.status_stage.setText(text)

    def _update_actions(self) -> None:
        """While a project is opened, saved, copied or pruned, the actions that would open, write or
        run on it wait (Save stays: it waits its turn); during a run, Run is Cancel."""
        running, blocked = self.session.running, bool(self.session.io.blocking)
        for name in BLOCKED_BY_IO:
            self.actions[name].setEnabled(not blocked)
        self.actions["run"].setEnabled(not running and not blocked)
        self.actions["cancel"].setEnabled(running)
        self.progress.setVisible(running or bool(self.session.io_busy))
        if not running:
            self.progress.setRange(0, 0 if self.session.io_busy else 1)

    def _refused_while_busy(self) -> bool:
        """Say so and refuse when a project is being opened, saved, copied or pruned."""
        if busy := self.session.io.blocking:
            self._say_io(f"{busy}… (try again when it is done)")
            return True
        return False

    def _run_io(self, label: str, work: Callable[[], Any], exclusive: bool = True) -> Task:
        """Run `work` on the project-I/O thread and wait for it, the window painting meanwhile."""
        return self.session.io.wait(self.session.io.submit(label, work, exclusive=exclusive))

    def _report_task(self, task: Task, doing: str, kept: str = "", lead: str = "") -> None:
        """Show why `task` failed (its traceback as details), after `lead`, and what was kept."""
        assert task.error is not None
        self.message.show_message(" ".join(part for part in (lead, explain(task.error, doing), kept) if part),
                                  task.details)

    # -- projects -------------------------------------------------------------------------------
    def open_path(self, path: Path) -> bool:
        """Open whatever the artist gave: a project folder, a result PNG (its settings), or a photo."""
        path = Path(path)
        if not self.session.ready:
            self._pending.append(path)
            self.status_stage.setText(f"{path.name} opens once the engine is loaded…")
            return True
        if self._refused_while_busy():
            return False
        if path.name == MANIFEST_NAME:
            path = path.parent
        found, unreadable = None, ""
        if path.suffix.lower() == ".png":
            task = self._run_io(f"Reading {path.name}", lambda: project_io.png_settings(path), exclusive=False)
            if task.ok and task.result is not None and self.doc.project_path is not None:
                return self.restore_png_settings(task.result, path)
            found = task.result if task.ok else None
            unreadable = "" if task.ok else explain(task.error, f"reading the settings in {path.name}")
        if not self.open_project(path):
            return False
        if found is not None:
            self.restore_png_settings(found, path)
        elif unreadable:
            self.message.show_message(f"{unreadable} {path.name} was opened as a photo.", error=False)
        return True

    def open_project(self, path: Path) -> bool:
        """Open a project folder, or the project of a photo (found, or made, in the projects folder)."""
        if self._refused_while_busy() or not self._confirm_discard():
            return False
        task = self.session.io.wait(self.session.open(Path(path), self.settings.get("projects_dir"),
                                                      self.settings.new_project_params(self.session.gpu)))
        if not task.ok:
            self._report_task(task, f"opening {Path(path).name}", "The window shows what it showed before.")
            return False
        opened = task.result
        self.settings.add_recent(opened.path)
        self.message.hide()
        if opened.notices:
            self.message.show_message(" ".join(opened.notices), error=False)
        self._show_settings_problems()
        self.status_stage.setText(f"Opened {opened.path.name}")
        return True

    def free_disk_space(self) -> bool:
        """Project > Free disk space: drop the stored tunings (and, if the artist says so, the inversions)
        a re-edit of the newest result does not need, saying how much it frees (pipeline.project.retention)."""
        path = self.doc.project_path
        if path is None or self.session.running or self._refused_while_busy():
            return False
        self.session.clear_draft()  # a draft in flight reads the inversion this may drop
        task = self._run_io(f"Measuring what {path.name} can free", lambda: project_io.prunable(path))
        if not task.ok:
            self._report_task(task, f"measuring {path.name}", "Nothing was dropped.")
            return False
        tunings, everything = task.result
        if not everything.freed_bytes:
            self.status_stage.setText(everything.summary())
            return False
        also_inversions = self._ask_free_space(tunings.freed_bytes, everything.freed_bytes)
        if also_inversions is None:
            return False
        task = self._run_io(f"Freeing disk space in {path.name}", lambda: project_io.prune(path, also_inversions))
        self.session.io.wait(self.session.refresh())
        if not task.ok:
            self._report_task(task, f"freeing disk space in {path.name}",
                              "The project holds what it held before, or what this prune left whole.")
            return False
        self.status_stage.setText(task.result.summary())
        return True

    def _ask_free_space(self, tunings: int, everything: int) -> bool | None:
        """What to drop, given the bytes each choice frees: True the inversions too, False the tunings
        only, None nothing."""
        box = QMessageBox(self)
        box.setWindowTitle("Free disk space")
        box.setText(f"Stored tunings the newest result does not need take {tunings / 1e6:,.1f} MB; with the "
                    f"inversions it did not use, {everything / 1e6:,.1f} MB. Whatever is dropped is computed "
                    "again if an edit ever needs it; results are kept.")
        only = box.addButton(f"Free {tunings / 1e6:,.1f} MB", QMessageBox.ButtonRole.AcceptRole)
        also = box.addButton(f"Also inversions: {everything / 1e6:,.1f} MB", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        only.setEnabled(tunings > 0)
        box.exec()
        clicked = box.clickedButton()
        return True if clicked == also else False if clicked == only else None

    def paste_image(self) -> None:
        """A picture on the clipboard becomes a new project (saved as a PNG in the projects folder)."""
        image = QGuiApplication.clipboard().image()
        if image.isNull() or not self.session.ready:
            self.status_stage.setText("No image on the clipboard." if image.isNull() else "The engine is loading…")
            return
        if self._refused_while_busy():
            return
        projects = self.settings.get("projects_dir")
        folder = Path(projects) if projects else Path(QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.PicturesLocation) or Path.home()) / "Retake"
        path = folder / f"pasted-{time.strftime('%Y%m%d-%H%M%S')}.png"
        picture = from_qimage(image)

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(path)

        task = self._run_io(f"Writing {path.name}", write)
        if not task.ok:
            self._report_task(task, f"writing {path}", "Nothing was opened.")
            return
        self.open_path(path)

    def save(self) -> bool:
        """Write the document into its project (on the I/O thread, after whatever is in flight), and say
        so; a failure is shown with what was kept, and the document stays unsaved."""
        if self.doc.project_path is None:
            return False
        self.session.io.wait_idle()  # an open or a save in flight comes first
        name = self.doc.project_path.name
        task = self.session.io.wait(self.session.save())
        if not task.ok:
            self._report_task(task, f"saving {name}", SAVE_FAILED_KEEPS)
            return False
        self.status_stage.setText(f"Saved {name}")
        return True

    def save_as(self, target: Path) -> bool:
        """Copy the project folder to `target` and carry on there."""
        source = self.doc.project_path
        if source is None:
            self.message.show_message("Open a photo first.")
            return False
        if self._refused_while_busy():
            return False
        task = self._run_io(f"Copying {source.name} to {target.name}", lambda: project_io.copy_project(source, target))
        if not task.ok:
            self._report_task(task, f"saving as {target}", f"{source.name} is unchanged and still open.")
            return False
        self.doc.project_path = target
        self.doc.projectChanged.emit()
        self.settings.add_recent(target)
        self.session.refresh()
        return self.save()

    def export(self, target: Path) -> bool:
        entry, project = self.session.result(), self.doc.project_path
        if entry is None or project is None:
            self.message.show_message("There is no result to export yet: run an edit first.")
            return False
        task = self._run_io(f"Exporting {target.name}",
                            lambda: project_io.export_result(project, entry.edit_id, target), exclusive=False)
        if not task.ok:
            self._report_task(task, f"exporting {target.name}", "The project is unchanged.")
            return False
        self.status_stage.setText(f"Exported {target.name}")
        return True

    def restore_png_settings(self, found: dict, path: Path) -> bool:
        """Restore what is known and valid of the settings a result PNG holds; the rest is named."""
        return self._restore(restore.from_settings(found), path.name, found.get("app"))

    def restore_entry(self, entry: ResultEntry) -> bool:
        """History › Restore settings: an edit's prompts, method and parameters, checked the same way."""
        data = {"source_prompt": entry.source_prompt, "target_prompt": entry.target_prompt,
                "method": entry.method, "params": entry.params}
        return self._restore(restore.from_settings(data), f"edit #{entry.edit_id}")

    def _restore(self, restorable: restore.Restorable, origin: str, made_by: object = None) -> bool:
        """Apply what `restorable` holds as one undoable step (a refused parameter keeps the value it has
        when the method stays) and name what was refused; returns whether the document changed."""
        doc = self.doc
        kept = doc.params if restorable.method == doc.method_id else {}
        changed = doc.restore_settings(restorable.source_prompt, restorable.target_prompt, restorable.method,
                                       {**kept, **restorable.params}, f"Settings of {origin}")
        if changed:
            self.status_stage.setText(f"Restored the settings of {origin}")
        if text := restore.message(restorable, origin, made_by):
            self.message.show_message(text, error=not changed)
        return changed

    def autosave_now(self) -> None:
        """Save in the background when there is something to save and nothing else is going on; a
        failure is shown like any other."""
        path = self.doc.project_path
        if not self.doc.dirty or path is None or self.session.running or self.session.io_busy:
            return

        def done(task: Task) -> None:
            if not task.ok:
                self._report_task(task, f"autosaving {path.name}", SAVE_FAILED_KEEPS, "Autosave failed.")

        self.session.save(done)

    def _confirm_close(self) -> bool:
        """Before closing: a run in flight is named and cancelled only if the artist says so (saving the
        changes first if there are any); otherwise the usual question about unsaved changes."""
        if not self.session.running:
            return self._confirm_discard()
        run, dirty = self.session.run, self.doc.dirty and self.doc.project_path is not None
        box = QMessageBox(self)
        box.setWindowTitle("A run is in progress")
        doing = f" ({run.stage}, step {run.step} of {run.total})" if run.stage else ""
        box.setText(f"An edit is running{doing}. Closing cancels it; an inversion it has finished is kept"
                    + (f", and {self.doc.project_path.name} has unsaved changes." if dirty else "."))
        save = box.addButton("Cancel the run, save and close", QMessageBox.ButtonRole.AcceptRole) if dirty else None
        close = box.addButton("Cancel the run and close" + (" without saving" if dirty else ""),
                              QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep running", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        box.exec()
        clicked = box.clickedButton()
        if clicked not in (save, close) or clicked is None:
            return False
        self.cancel_run()
        return self.save() if clicked == save else True

    def _confirm_discard(self) -> bool:
        """Ask before unsaved changes are lost: save them (and stay if that fails), drop them, or stay."""
        if not self.doc.dirty or self.doc.project_path is None:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {self.doc.project_path.name}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for entry in self.settings.recent():
            self.recent_menu.addAction(entry, self._guard(f"opening {entry}")(lambda p=entry: self.open_path(Path(p))))

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "New project from image", "",
                                              "Images (*.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp)")
        if path:
            self.open_path(Path(path))

    def _choose_project(self) -> None:
        if path := QFileDialog.getExistingDirectory(self, "Open a Retake project (a .retake folder)"):
            self.open_path(Path(path))

    def _choose_save_as(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save project as", "", "Retake project (*.retake)")
        if path:
            self.save_as(Path(path if path.endswith(".retake") else path + ".retake"))

    def _choose_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export result", str(self.export_suggestion() or ""),
                                              "PNG (*.png);;JPEG (*.jpg);;WebP (*.webp)")
        if path:
            self.export(Path(path))

    def export_suggestion(self) -> Path | None:
        """Where Export starts: beside the project (so beside the photo, unless projects live elsewhere),
        named for the photo and the edit shown ("house-edit-3.png")."""
        project, entry = self.doc.project_path, self.session.result()
        if project is None or entry is None:
            return None
        return project.parent / f"{project.stem}-edit-{entry.edit_id}.png"

    def _choose_png_settings(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Result PNG", "", "PNG (*.png)")
        if not path or self._refused_while_busy():
            return
        task = self._run_io(f"Reading {Path(path).name}", lambda: project_io.png_settings(Path(path)), exclusive=False)
        if not task.ok:
            self._report_task(task, f"reading {Path(path).name}", "Nothing was changed.")
        elif task.result is None:
            self.message.show_message(f"{Path(path).name} holds no Retake parameters.")
        else:
            self.restore_png_settings(task.result, Path(path))

    # -- tools ----------------------------------------------------------------------------------
    def set_tool(self, tool: Tool) -> None:
        self.canvas.set_tool(tool)
        for t in Tool:
            self.actions[f"tool_{t.name.lower()}"].setChecked(t == tool)

    def _toggle_compare(self) -> None:
        self.canvas.toggle_compare()
        self.tools.compare.blockSignals(True)
        self.tools.compare.setValue(round(self.canvas.split * 100))
        self.tools.compare.blockSignals(False)

    def _toggle_mask(self) -> None:
        """M or View > Show mask: flip the Tools panel's box, which the canvas and this action follow."""
        self.tools.show_mask.setChecked(not self.canvas.mask_visible)

    def _mask_op(self, op: str) -> None:
        if self.canvas.picture() is None:
            return
        name = self.canvas.mask_name
        mask = self.doc.mask(name)
        new = {"fill": lambda: np.full_like(mask, 255), "clear": lambda: np.zeros_like(mask),
               "invert": lambda: 255 - mask}[op]()
        self.doc.replace_mask(name, new, op.capitalize() + " mask")

    def _segment(self, points: list, labels: list, box: Any) -> None:
        if (picture := self.canvas.picture()) is not None:
            self.status_stage.setText("Segmenting…")
            self.segmenter.predict(picture, points, labels, box)

    def _on_segment_mask(self, mask: Any) -> None:
        self.status_stage.setText("")
        picture = self.canvas.picture()
        if picture is not None and mask.shape == (picture.height, picture.width):
            self.canvas.apply_segment(mask)

    # -- the method's inputs --------------------------------------------------------------------
    def _paint_reference_mask(self, mask_name: str) -> None:
        """Paint the reference's object mask: the canvas switches to the reference picture."""
        self.tools.choose_purpose(mask_name)
        self.docks["tools"].raise_()

    # -- runs -----------------------------------------------------------------------------------
    def run_edit(self) -> bool:
        """Send the document to the engine: it inverts once per photo and settings, then edits."""
        if self.doc.project_path is None:
            self.message.show_message("Open a photo first (File › New project from image, or drop one here).")
            return False
        if self.session.running or not self.session.ready or self._refused_while_busy():
            return False
        if trying := self.model_choice.pending_name():  # the engine is busy with it; the run would wait
            self.message.show_message(f"{trying} is still loading: run once the status bar says it has loaded.",
                                      error=False)
            return False
        self.message.hide()
        self.timeline.back_to_result()
        long_run = None if self.session.draft_is_current() else self.run_estimate()  # a draft is saved at once
        started = self.session.start_run(self.doc.project_path, self.doc.snapshot(), self.settings.request_options())
        self._estimated_run = (self.doc.method_id, dict(self.doc.params))
        self._update_actions()  # a run waiting for a draft to stop is already a run: Cancel stops it
        if started and long_run is not None and long_run.seconds > LONG_RUN_S:
            self.message.show_message(long_run.sentence(), error=False)
        return started

    def run_estimate(self) -> Estimate | None:
        """How long a run of the document would take (gui.estimate), once the engine has timed the model."""
        if self.session.unet_seconds is None:
            return None
        doc = self.doc
        stored = stored_stages(doc.method_id, doc.source_prompt, doc.target_prompt, doc.params, self.session.results)
        return estimate(doc.method_id, doc.params, stored, self.session.unet_seconds)

    def _learn_unet_seconds(self, reused_inversion: bool) -> None:
        """After a run, its own time per UNet evaluation is the estimate's unit: the one probe call made
        at load missed what a whole run pays (a CPU's kernel set-up per shape, the machine's load)."""
        if self._estimated_run is None:
            return
        method_id, params = self._estimated_run
        rows = estimate(method_id, params, ["inversion"] if reused_inversion else [], 1.0).seconds
        if rows > 0:
            self.session.unet_seconds = self.session.run_seconds() / rows

    def cancel_run(self) -> None:
        if self.session.running:
            self.session.cancel()
            self.status_stage.setText("Cancelling…")
        else:
            self.canvas.clear_clicks()

    def _on_progress(self, event: Any) -> None:
        if event.stage == Stage.LOADING_MODEL:
            self._update_model_status()
        self.progress.setRange(0, max(event.total, 1))
        self.progress.setValue(event.step)
        eta = f", about {event.eta_s:.0f} s left" if event.eta_s else ""
        stage = str(event.stage)  # its label: "DDIM inversion" (str.capitalize would write "Ddim")
        self.status_stage.setText(f"{stage[:1].upper()}{stage[1:]}: {event.step}/{event.total}{eta}")

    def _on_preview(self, event: Any) -> None:
        if self.timeline.chosen is None:  # follow the run unless the artist chose a step
            self.canvas.show_step(event.image)

    def _on_finished(self, final: Any) -> None:
        from pipeline.events import CancelledEvent, Done, Failed

        self.timeline.back_to_result()
        self._update_actions()
        if isinstance(final, Done) and final.from_draft:  # nothing computed: no lesson for the estimate
            self._update_model_status()
            self.status_stage.setText(f"Edit #{final.edit_id} saved from the draft on screen in "
                                      f"{self.session.run_seconds():.1f} s (its result, not computed again).")
        elif isinstance(final, Done):
            self._update_model_status()
            reused = "reused the stored inversion" if final.reused_inversion else "made and stored the inversion"
            self.status_stage.setText(f"Edit #{final.edit_id} done in {self.session.run_seconds():.1f} s ({reused}).")
            self._learn_unet_seconds(final.reused_inversion)
        elif isinstance(final, CancelledEvent):
            self.status_stage.setText(f"Cancelled while {final.stage}; the project is as it was "
                                      "(a finished inversion is kept).")
        elif isinstance(final, Failed):
            self.status_stage.setText("The run failed.")
            self.message.show_message(final.message)

    def _draft_options(self) -> dict[str, Any] | None:
        """What a draft runs with: a run's options, or None while a model choice loads (as Run waits)."""
        return None if self.model_choice.pending_name() else self.settings.request_options()

    def _on_draft(self) -> None:
        """Show the live draft (gui.drafts) on the canvas, and in the status bar how it stands."""
        draft = self.session.draft
        self.canvas.show_draft(draft.image)
        if draft.running:
            steps = f" {draft.step}/{draft.total}" if draft.total > 1 else ""
            text = f"Draft: {draft.stage or 'starting'}{steps}…"
        elif draft.image is not None:
            text = f"Draft ({draft.seconds:.1f} s), not saved: Run saves it as the result."
        else:
            text = f"No draft: {draft.note}" if draft.note else ""
        self.status_draft.setText(text)
        self.status_draft.setToolTip(draft.note)

    # -- timeline steps -------------------------------------------------------------------------
    def show_step(self, stage: str, step: int) -> None:
        """Show a step of the run: its cheap preview at once, then its full VAE decode, made on the
        engine's thread (during a run, between two of its steps) unless it was made before."""
        picture = self.session.step_picture(stage, step)
        if picture is not None:
            self.canvas.show_step(picture)

    def show_result(self) -> None:
        self.canvas.show_step(None)

    def _on_decoded(self, stage: str, step: int, image: Any) -> None:
        if self.timeline.chosen == (stage, step):
            self.canvas.show_step(image)

    # -- help -----------------------------------------------------------------------------------
    def shortcut_table(self) -> list[tuple[str, str]]:
        return [(action.text().replace("&", ""), action.shortcut().toString(QKeySequence.SequenceFormat.NativeText))
                for action in self.actions.values() if not action.shortcut().isEmpty()]

    def show_shortcuts(self) -> ShortcutsDialog:
        """Help > Keyboard shortcuts: a table that scrolls, sized to the screen (window-modal, not blocking)."""
        rows = [*self.shortcut_table(), ("Pan", "Space-drag, middle button"), ("Zoom to cursor", "Mouse wheel"),
                ("Segment: include / exclude / box", "Left click / right click / drag")]
        dialog = ShortcutsDialog(rows, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def show_guide(self) -> GuideWindow | None:
        """Help > User guide: the guide shipped with this Retake, in a window of its own."""
        path = guide_path()
        if path is None:
            self.message.show_message("The user guide was not found with this Retake (docs/user-guide.md, installed "
                                      "as retake_docs): reinstall Retake to get it back.")
            return None
        guide = GuideWindow(path, self)
        guide.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        guide.show()
        return guide

    def _about(self) -> None:
        QMessageBox.about(self, "About Retake", "Retake edits a photo by changing its description: diffusion "
                          "inversion and attention control on Stable Diffusion 1.x, on your own machine.")

    # -- drops and closing ----------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self._guard(f"opening {urls[0].name}")(self.open_path)(urls[0])

    def closeEvent(self, event: QCloseEvent) -> None:
        """Close once unsaved changes are saved (or dropped, as the artist says) and the project I/O in
        flight has landed; a Save that fails keeps the window open, showing why."""
        if self._closing:  # asked again while this close waits for a save
            event.ignore()
            return
        self._closing = True
        try:
            closing = bool(self._guard("closing")(self._confirm_close)())
        finally:
            self._closing = False
        if not closing:
            event.ignore()
            return
        self._save_layout()
        self.autosave_timer.stop()
        self.prompts.stop_checks()
        self.drafts.shutdown()
        if self.models_dialog is not None:
            self.models_dialog.shutdown()
        self.session.shutdown()
        self.segmenter.shutdown()
        event.accept()
