"""File > Save recipe and Project > Apply to a folder: the open project's edit, on many photos.

The recipe is made from what the window shows (the model and working size of Settings, the method and
its parameters, the prompts) and checked by pipeline.batch.recipe, so a saved recipe always reads back
and `retake batch` takes it. Apply to a folder runs exactly that command (`main.py batch ...
--progress json`) as a separate process, in the background: the window stays free to edit, the batch
keeps the same guarantees as on the command line (the ledger, resuming, the report), and Stop is the
command line's Ctrl-C (SIGTERM: every worker stops within a model step, what finished is kept). The
dialog shows the JSON progress lines the command writes and, when it ends, the report and the
contact sheet. The batch loads its own copy of the model, beside the one the window keeps.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import QProcess, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListWidget, QMessageBox, QProgressBar,
    QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

RECIPE_SUFFIX = ".recipe.json"
CLOSE_WAIT_MS = 120_000  # closing the dialog mid-run waits this long for the workers to stop


def recipe_from_window(window: Any) -> dict[str, Any]:
    """The JSON recipe of the open project as the window shows it (RecipeError when it is not a valid one)."""
    from pipeline.batch.recipe import recipe_from_json

    doc, settings = window.doc, window.settings
    options = settings.request_options()
    data: dict[str, Any] = {"model": options["model"], "method": doc.method_id, "params": dict(doc.params),
                            "source": doc.source_prompt, "target": doc.target_prompt}
    if options.get("max_side"):
        data["max_side"] = options["max_side"]
    if options.get("dtype"):
        data["dtype"] = options["dtype"]
    if options.get("image_encoder"):
        data["image_encoder"] = options["image_encoder"]
    if options.get("area"):  # unset: automatic, as the window's runs
        data["area"] = options["area"]
    data.update({name: options[name] for name in ("area_padding", "feather") if options.get(name) is not None})
    return recipe_from_json(data, "The recipe").to_json()


def save_recipe(window: Any, path: Path | None = None) -> Path | None:
    """File > Save recipe: the open project's settings as a recipe file (asks where unless `path` is given)."""
    from pipeline.batch.recipe import recipe_from_json, write_recipe
    from pipeline.errors import RetakeError

    try:
        data = recipe_from_window(window)
    except RetakeError as error:
        window.message.show_message(str(error))
        return None
    if path is None:
        stem = window.doc.project_path.stem if window.doc.project_path else "edit"
        start = (window.doc.project_path.parent if window.doc.project_path else Path.home()) / f"{stem}{RECIPE_SUFFIX}"
        chosen, _ = QFileDialog.getSaveFileName(window, "Save recipe", str(start), "Retake recipe (*.json)")
        if not chosen:
            return None
        path = Path(chosen)
    try:
        write_recipe(recipe_from_json(data), path)
    except OSError as error:
        window.message.show_message(f"Could not save the recipe {path}: {error.strerror or error}.")
        return None
    window.status_stage.setText(f"Saved the recipe {path.name}")
    return path


def apply_to_folder(window: Any) -> BatchDialog | None:
    """Project > Apply to a folder…: the dialog, non-modal, on the open project's recipe."""
    from pipeline.errors import RetakeError

    try:
        recipe = recipe_from_window(window)
    except RetakeError as error:
        window.message.show_message(str(error))
        return None
    dialog = window.batch_dialog = BatchDialog(recipe, window)  # kept: it runs while the artist edits
    dialog.show()
    return dialog


def batch_command(arguments: list[str]) -> list[str]:
    """How to run `retake batch` from here: this app's own executable when frozen, else main.py."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "batch", *arguments]
    spec = importlib.util.find_spec("main")
    if spec is None or spec.origin is None:
        raise RuntimeError("Retake's main.py is not importable")
    return [sys.executable, spec.origin, "batch", *arguments]


class BatchDialog(QDialog):
    """Choose the photos and the output folder, run, watch, stop; the report and contact sheet at the end."""

    def __init__(self, recipe: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Apply to a folder")
        self.recipe = recipe
        self.process: QProcess | None = None
        self.exit_code: int | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="retake-batch-")
        self._buffer = b""
        self._errors: list[str] = []
        self._browse: list[QPushButton] = []

        self.inputs = QLineEdit()
        self.inputs.setPlaceholderText("a folder of photos, or a manifest (.csv, .jsonl)")
        self.out = QLineEdit()
        self.out.setPlaceholderText("a new or empty folder, or an earlier batch's to go on with it")
        self.source = QLineEdit(recipe.get("source", ""))
        self.target = QLineEdit(recipe.get("target", ""))
        for edit in (self.source, self.target):
            edit.setToolTip("The same for every photo, or a template: {stem} is the photo's name, {folder} its "
                            "folder's; a manifest's own columns are fields too.")
        self.workers = QSpinBox()
        self.workers.setRange(0, 64)
        self.workers.setSpecialValueText("every GPU (one CPU worker without a GPU)")
        self.workers.setToolTip("CPU workers; leave at the first choice to use every GPU")
        form = QFormLayout()
        form.addRow("Photos", self._with_browse(self.inputs, self._choose_inputs))
        form.addRow("Output folder", self._with_browse(self.out, self._choose_out))
        form.addRow("Source prompt", self.source)
        form.addRow("Target prompt", self.target)
        form.addRow("CPU workers", self.workers)
        summary = QLabel(f"{recipe['method']} on {recipe['model']}, parameters: "
                         f"{', '.join(f'{k}={v}' for k, v in recipe.get('params', {}).items())}")
        summary.setWordWrap(True)

        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.worker_list = QListWidget()
        self.worker_list.setMaximumHeight(90)
        self.failures = QListWidget()
        self.failures.setMaximumHeight(110)
        self.failures.setWordWrap(True)
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop within a model step; what finished is kept, Run goes on from there")
        self.stop_button.clicked.connect(self.stop)
        self.sheet_button = QPushButton("Open contact sheet")
        self.sheet_button.clicked.connect(self._open_sheet)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.sheet_button, self.stop_button, self.run_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(summary)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Workers"))
        layout.addWidget(self.worker_list)
        layout.addWidget(QLabel("Failed photos"))
        layout.addWidget(self.failures)
        layout.addLayout(buttons)
        self.resize(640, 560)
        self._set_running(False)
        self.sheet_button.setEnabled(False)

    # -- choosing ----------------------------------------------------------------------------------
    def _with_browse(self, edit: QLineEdit, choose: Any) -> QWidget:
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(edit, 1)
        button = QPushButton("Browse…")
        button.clicked.connect(choose)
        line.addWidget(button)
        self._browse.append(button)
        return row

    def _choose_inputs(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of photos")
        if folder:
            self.inputs.setText(folder)
            if not self.out.text():
                self.out.setText(str(Path(folder).with_name(Path(folder).name + "-retake")))

    def _choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder")
        if folder:
            self.out.setText(folder)

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> bool:
        """Check the recipe as edited, then run `retake batch` on it in the background."""
        from pipeline.batch.recipe import recipe_from_json, write_recipe
        from pipeline.errors import RetakeError

        if not self.inputs.text().strip() or not self.out.text().strip():
            self._say("Choose the photos and an output folder first.", error=True)
            return False
        try:
            recipe = recipe_from_json({**self.recipe, "source": self.source.text(), "target": self.target.text()})
        except RetakeError as error:
            self._say(str(error), error=True)
            return False
        recipe_path = Path(self._scratch.name) / "recipe.json"
        write_recipe(recipe, recipe_path)
        arguments = ["--recipe", str(recipe_path), "--inputs", self.inputs.text().strip(), "--out",
                     self.out.text().strip(), "--progress", "json"]
        if self.workers.value():
            arguments += ["--workers", str(self.workers.value())]
        command = batch_command(arguments)
        self.failures.clear()
        self.worker_list.clear()
        self._errors, self._buffer, self.exit_code = [], b"", None
        self.process = QProcess(self)
        self.process.readyReadStandardOutput.connect(self._read_progress)
        self.process.readyReadStandardError.connect(self._read_errors)
        self.process.finished.connect(self._finished)
        self._say("Checking the photos and starting the workers…")
        self._set_running(True)
        self.process.start(command[0], command[1:])
        return True

    def stop(self) -> None:
        """The command line's Ctrl-C: the workers stop within a step, what finished is kept."""
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self._say("Stopping: the workers finish their current model step…")
            self.process.terminate()

    def _read_progress(self) -> None:
        from pipeline.batch.progress import BatchStatus, PhotoFinished, from_json

        assert self.process is not None
        self._buffer += bytes(self.process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                event = from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(event, PhotoFinished) and event.status == "failed":
                self.failures.addItem(f"{event.name}: {event.reason}")
            elif isinstance(event, BatchStatus):
                self._show_status(event)

    def _show_status(self, status: Any) -> None:
        from cli.batch_progress import status_text, worker_text

        self.progress.setMaximum(max(status.total, 1))
        self.progress.setValue(status.done + status.failed)
        earlier = f" ({status.earlier} done earlier)" if status.earlier else ""
        self._say(f"{status.phase}: {status_text(status)}{earlier}")
        self.worker_list.clear()
        for worker in status.workers:
            self.worker_list.addItem(worker_text(worker))

    def _read_errors(self) -> None:
        assert self.process is not None
        text = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace")
        self._errors += [line for line in text.splitlines() if line.strip()]

    def _finished(self, code: int, _status: QProcess.ExitStatus) -> None:
        self.exit_code = code
        self._set_running(False)
        said = [line.removeprefix("retake: ") for line in self._errors if line.startswith(("retake:", "batch:",
                                                                                           "Nothing to do"))]
        if code == 0:
            self._say(said[-1] if said else "Done.")
        elif code == 130:
            self._say("Stopped; what finished is kept. Run again to go on with the rest.")
        else:
            self._say(said[-1] if said else f"The batch ended with status {code}.", error=True)
        self.sheet_button.setEnabled(self._sheet().is_file())

    def _sheet(self) -> Path:
        return Path(self.out.text().strip()) / "contact-sheet.html"

    def _open_sheet(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._sheet())))

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for edit in (self.inputs, self.out, self.source, self.target, self.workers, *self._browse):
            edit.setEnabled(not running)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #e57373;" if error else "")

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            answer = QMessageBox.question(self, "Stop the batch?", "The batch is still running. Stop it? What "
                                          "finished is kept, and Run goes on from there.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self.process.terminate()
            self.process.waitForFinished(CLOSE_WAIT_MS)
        event.accept()
