"""The app's persistent settings (QSettings) and the dialog that edits them.

Settings are read through one small class so tests can point it at a temporary INI file and
nothing else in the GUI spells a QSettings key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QSpinBox,
    QWidget,
)

RECENT_LIMIT = 10
DEMO_MAX_SIDE = 256  # the demo model was trained on small pictures; 512 px would take minutes on a CPU
DEFAULTS: dict[str, Any] = {
    "model": "demo", "device": "auto", "precision": "auto", "sam_checkpoint": "", "default_steps": 50,
    "max_side": 512, "projects_dir": "", "autosave_minutes": 2, "models_dir": "",
}


class AppSettings:
    """Typed access to the persisted settings, recent projects, presets and window layout."""

    def __init__(self, store: QSettings | None = None) -> None:
        self.store = store if store is not None else QSettings("Retake", "Retake")

    def get(self, name: str) -> Any:
        default = DEFAULTS[name]
        value = self.store.value(name, default)
        return int(value) if isinstance(default, int) else str(value)

    def set(self, name: str, value: Any) -> None:
        self.store.setValue(name, value)

    def recent(self) -> list[str]:
        value = self.store.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def add_recent(self, path: Path) -> None:
        entries = [str(path)] + [p for p in self.recent() if p != str(path)]
        self.store.setValue("recent", entries[:RECENT_LIMIT])

    def presets(self, method_id: str) -> dict[str, dict[str, Any]]:
        """Named parameter sets of a method."""
        try:
            return json.loads(str(self.store.value(f"presets/{method_id}", "{}")))
        except ValueError:
            return {}

    def save_preset(self, method_id: str, name: str, params: dict[str, Any]) -> None:
        presets = self.presets(method_id)
        presets[name] = params
        self.store.setValue(f"presets/{method_id}", json.dumps(presets))

    def delete_preset(self, method_id: str, name: str) -> None:
        presets = self.presets(method_id)
        presets.pop(name, None)
        self.store.setValue(f"presets/{method_id}", json.dumps(presets))

    def models_dir(self) -> Path:
        """The app's own model folder, where imported checkpoints are copied."""
        chosen = self.get("models_dir")
        if chosen:
            return Path(chosen)
        return Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "models"

    def model_folders(self) -> list[str]:
        """Other programs' model folders the user pointed at (A1111, ComfyUI)."""
        try:
            return list(json.loads(str(self.store.value("model_folders", "[]"))))
        except ValueError:
            return []

    def set_model_folders(self, folders: list[str]) -> None:
        self.store.setValue("model_folders", json.dumps(list(dict.fromkeys(folders))))

    def request_options(self) -> dict[str, Any]:
        """The EditRequest fields the settings decide ("auto" leaves the engine to choose)."""
        device, precision = self.get("device"), self.get("precision")
        model = self.get("model") or "demo"
        max_side = self.get("max_side")
        if model == "demo" and self.store.value("max_side") is None:
            max_side = DEMO_MAX_SIDE  # not chosen by the user: the demo model's own scale
        return {"model": model, "device": None if device == "auto" else device,
                "dtype": None if precision == "auto" else precision, "max_side": max_side}


class SettingsDialog(QDialog):
    """Model, device and precision, SAM checkpoint, default steps and working size, where projects live."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        form = QFormLayout(self)
        self.model = QLineEdit(settings.get("model"))
        self.model.setToolTip("A diffusers folder, a single-file SD 1.x .safetensors checkpoint, a Hugging Face id "
                              "already in the local cache, or demo (the bundled tiny model).")
        form.addRow("Model", self._with_buttons(self.model, [("Folder…", self._choose_model_folder),
                                                             ("File…", self._choose_model_file),
                                                             ("Demo", lambda: self.model.setText("demo"))]))
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.device.setCurrentText(settings.get("device"))
        form.addRow("Device", self.device)
        self.precision = QComboBox()
        self.precision.addItems(["auto", "float16", "float32"])
        self.precision.setCurrentText(settings.get("precision"))
        form.addRow("Precision", self.precision)
        self.sam = QLineEdit(settings.get("sam_checkpoint"))
        self.sam.setPlaceholderText("sam_vit_b_01ec64.pth (vit_b, vit_l or vit_h)")
        form.addRow("Segment Anything", self._with_buttons(self.sam, [("File…", self._choose_sam)]))
        self.steps = QSpinBox()
        self.steps.setRange(5, 200)
        self.steps.setValue(settings.get("default_steps"))
        form.addRow("Default steps", self.steps)
        self.max_side = QSpinBox()
        self.max_side.setRange(64, 2048)
        self.max_side.setSingleStep(64)
        self.max_side.setValue(settings.get("max_side"))
        form.addRow("Working size (longest side)", self.max_side)
        self.projects_dir = QLineEdit(settings.get("projects_dir"))
        self.projects_dir.setPlaceholderText("beside each photo")
        form.addRow("Projects folder", self._with_buttons(self.projects_dir, [("Folder…", self._choose_projects)]))
        self.autosave = QSpinBox()
        self.autosave.setRange(0, 60)
        self.autosave.setSuffix(" min (0: off)")
        self.autosave.setValue(settings.get("autosave_minutes"))
        form.addRow("Autosave every", self.autosave)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _with_buttons(self, edit: QLineEdit, buttons: list[tuple[str, Any]]) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(edit, 1)
        for text, slot in buttons:
            button = QPushButton(text)
            button.clicked.connect(slot)
            layout.addWidget(button)
        return row

    def _choose_model_folder(self) -> None:
        if path := QFileDialog.getExistingDirectory(self, "Diffusers model folder"):
            self.model.setText(path)

    def _choose_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SD 1.x checkpoint", "", "Checkpoints (*.safetensors *.ckpt)")
        if path:
            self.model.setText(path)

    def _choose_sam(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Segment Anything checkpoint", "", "Checkpoints (*.pth)")
        if path:
            self.sam.setText(path)

    def _choose_projects(self) -> None:
        if path := QFileDialog.getExistingDirectory(self, "Where projects live"):
            self.projects_dir.setText(path)

    def accept(self) -> None:
        values = {"model": self.model.text().strip() or "demo", "device": self.device.currentText(),
                  "precision": self.precision.currentText(), "sam_checkpoint": self.sam.text().strip(),
                  "default_steps": self.steps.value(), "max_side": self.max_side.value(),
                  "projects_dir": self.projects_dir.text().strip(), "autosave_minutes": self.autosave.value()}
        for name, value in values.items():
            self.settings.set(name, value)
        super().accept()
