"""The app's persistent settings (QSettings) and the dialog that edits them.

Settings are read through one small class so tests can point it at a temporary INI file and
nothing else in the GUI spells a QSettings key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QSpinBox,
    QWidget,
)

from gui.wheel import guard_wheel
from pipeline.errors import shorten

RECENT_LIMIT = 10
DEMO_PARAMS: dict[str, Any] = {"inversion": "direct"}
"""What a new project's method gets on the demo model, where the method has it (p2p's default is null-text).
On this small model null-text inversion pulls an edit's other attributes away from the photo: p2p keeps
them in 23% of 30 benchmark cases with it and in 83% with plain DDIM inversion
(bench/results/p2p-ablation/README.md). Direct inversion, which keeps the source branch on the
photo's own trajectory, was not in that ablation; on 9 cases (3 each of color, replace, pose; CPU) p2p
kept the rest of the scene in 6 with it against 2 with null-text (the H100 run), edits right in 8 with
both, though PSNR outside the edit region was lower (26.2 against 29.6 dB); p2p's "a red house" -> "a
blue house" keeps the house and the meadow with it and turns them into a dark blot on blotchy grass
with null-text. It is 2-3 times faster on a CPU, what scripts/demo.sh runs and masactrl's default.
Steps and guidance keep the methods' defaults (50, 7.5), which the benchmark and demo.sh use."""
DEFAULTS: dict[str, Any] = {
    "model": "demo", "device": "auto", "precision": "auto", "sam_checkpoint": "", "default_steps": 50,
    "max_side": 0, "projects_dir": "", "autosave_minutes": 2, "models_dir": "",
    "image_encoder": "", "area": "", "area_padding": 32, "feather": 4, "live_drafts": "auto", "fast_path": "on",
}
"""`area` "" is automatic (a crop around the mask when the photo is larger than the working size), else
"whole" or "region"; `area_padding` and `feather` are photo pixels (pipeline.area, pipeline.images);
`live_drafts` "auto" drafts a change when the engine's device is a GPU (gui.drafts); `fast_path` "on" takes
the fast path on a GPU (pipeline.fast), "off" runs every stage eagerly, bit for bit as on earlier versions."""
LABELS = {"sam_checkpoint": "The Segment Anything checkpoint", "default_steps": "Default steps",
          "max_side": "The working size", "projects_dir": "The projects folder",
          "autosave_minutes": "Autosave every (minutes)", "models_dir": "The model folder",
          "area_padding": "Crop padding", "feather": "Edge feather", "live_drafts": "Live drafts",
          "fast_path": "The fast path"}
"""How the settings are named to people (as the Settings dialog names them): never by their file keys."""
CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),  # or cuda:N, one GPU of several
    "precision": ("auto", "fp16", "bf16", "fp32"),  # the engine's sampling precisions (pipeline.models)
    "area": ("", "whole", "region"),  # "": a crop around the mask when the photo is larger than the working size
    "live_drafts": ("auto", "on", "off"),  # auto: on with a GPU, off on a CPU
    "fast_path": ("on", "off"),  # GPU only: the CPU always runs eagerly
}
CUDA_DEVICE = re.compile(r"cuda:\d{1,3}")
RANGES: dict[str, tuple[int, int]] = {"default_steps": (1, 10_000), "max_side": (0, 4096), "autosave_minutes": (0, 600),
                                      "area_padding": (0, 512), "feather": (0, 512)}
"""Bounds of what the settings file may hold; what a value means is checked where it is used, as the
command line checks it: the steps as the method's parameter, a working size by check_max_side."""


class AppSettings:
    """Typed access to the persisted settings, recent projects, presets and window layout.

    A settings file is outside input like any other (written by another Retake, or by hand): a value
    of the wrong type or out of bounds is not used, its default is, and `take_problems` says which.
    """

    def __init__(self, store: QSettings | None = None) -> None:
        self.store = store if store is not None else QSettings("Retake", "Retake")
        self._problems: dict[str, str] = {}

    def get(self, name: str) -> Any:
        default = DEFAULTS[name]
        value = self.store.value(name, default)
        try:
            return _checked(name, value, default)
        except ValueError as error:
            label = LABELS.get(name, name.replace("_", " ").capitalize())
            self._problems[name] = f"{label} {shorten(repr(value), 40)} {error}."
            return default

    def take_problems(self) -> list[str]:
        """One sentence per saved setting that could not be used (its default was), each said once."""
        problems, self._problems = list(self._problems.values()), {}
        return problems

    def set(self, name: str, value: Any) -> None:
        self.store.setValue(name, value)

    def recent(self) -> list[str]:
        """Recent projects as absolute paths, newest first. An entry an older Retake stored relative (to the
        folder it was started in, which is not known) is kept if it names a folder from here, else dropped."""
        value = self.store.value("recent", [])
        entries = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        found = []
        for entry in entries:
            if not isinstance(entry, str) or not entry:
                continue
            path = Path(entry).expanduser()
            if path.is_absolute() or path.exists():
                found.append(str(path.absolute()))
        return list(dict.fromkeys(found))

    def add_recent(self, path: Path) -> None:
        """Remember a project by its absolute path (a relative one means nothing once the app restarts)."""
        entry = str(Path(path).expanduser().resolve())
        entries = [entry] + [p for p in self.recent() if p != entry]
        self.store.setValue("recent", entries[:RECENT_LIMIT])

    def presets(self, method_id: str) -> dict[str, dict[str, Any]]:
        """Named parameter sets of a method, as stored: each value is checked when the preset is applied."""
        found = self._json(f"presets/{method_id}", {})
        if not isinstance(found, dict):
            return {}
        return {name: values for name, values in found.items() if isinstance(name, str) and isinstance(values, dict)}

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
        found = self._json("model_folders", [])
        return [folder for folder in found if isinstance(folder, str) and folder] if isinstance(found, list) else []

    def set_model_folders(self, folders: list[str]) -> None:
        self.store.setValue("model_folders", json.dumps(list(dict.fromkeys(folders))))

    def working_side(self) -> int:
        """The working size a new edit of a project without its own gets (the setting, else the model's own);
        the Tools panel outlines the crop with it."""
        from pipeline.models import native_side

        return self.get("max_side") or native_side(self.get("model") or "demo")

    def new_project_params(self, gpu: bool = True) -> dict[str, Any]:
        """Method parameters a new project starts with, over the method's defaults (where it has them;
        each is checked against the method when the project opens, gui.project_io): the demo model's,
        and without a GPU the fastest faithful options (gui.starting_params)."""
        from gui.starting_params import FAST_WITHOUT_GPU

        demo = DEMO_PARAMS if (self.get("model") or "demo") == "demo" else {}
        return {"steps": self.get("default_steps"), **demo, **({} if gpu else FAST_WITHOUT_GPU)}

    def request_options(self, trying: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The EditRequest fields the settings decide ("auto" leaves the engine to choose); `trying`
        holds model, device or precision values tried before they are recorded (gui.model_choice)."""
        trying = trying or {}
        device, precision = trying.get("device", self.get("device")), trying.get("precision", self.get("precision"))
        model = trying.get("model", self.get("model")) or "demo"
        options = {"model": model, "device": None if device == "auto" else device,
                   "dtype": None if precision == "auto" else precision,
                   "max_side": self.get("max_side") or None,  # 0: the project's, else the model's own size
                   "area": self.get("area") or None, "area_padding": self.get("area_padding"),
                   "feather": self.get("feather"), "fast": self.get("fast_path") == "on"}
        if encoder := self.get("image_encoder"):  # unset: the project's, else the one beside the model
            options["image_encoder"] = encoder
        return options

    def _json(self, name: str, default: Any) -> Any:
        try:
            return json.loads(str(self.store.value(name, json.dumps(default))))
        except (ValueError, RecursionError):
            return default


def _checked(name: str, value: Any, default: Any) -> Any:
    """A stored setting as its default's type, within its bounds and choices; ValueError says why not."""
    if isinstance(default, int):
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError("is not a whole number") from None
        low, high = RANGES[name]
        if not low <= number <= high:
            raise ValueError(f"is not between {low} and {high}")
        return number
    if not isinstance(value, str):
        raise ValueError("is not text")
    if name in CHOICES and value not in CHOICES[name] and not (name == "device" and CUDA_DEVICE.fullmatch(value)):
        raise ValueError(f"is not one of {', '.join(CHOICES[name])}")
    return value


class SettingsDialog(QDialog):
    """Model and image encoder, device and precision, SAM checkpoint, default steps and working size, where
    projects live."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        form = QFormLayout(self)
        self.model = QLineEdit(settings.get("model"))
        self.model.setToolTip("A diffusers folder, a single-file SD 1.x .safetensors checkpoint, a Hugging Face id "
                              "already in the local cache, or demo (the bundled demo-world model: 128-px toy scenes "
                              "of people, animals, houses, cars..., not photos).")
        form.addRow("Model", self._with_buttons(self.model, [("Folder…", self._choose_model_folder),
                                                             ("File…", self._choose_model_file),
                                                             ("Demo", lambda: self.model.setText("demo"))]))
        self.image_encoder = QLineEdit(settings.get("image_encoder"))
        self.image_encoder.setPlaceholderText("automatic: the project's, the model's image_encoder/, or the cache")
        self.image_encoder.setToolTip("The CLIP image encoder StyleDiffusion needs (ViT-B/16 in the paper): a folder "
                                      "with config.json and model.safetensors, or a Hugging Face id already in the "
                                      "local cache. Needed for a single-file checkpoint or a folder without "
                                      "image_encoder/.")
        form.addRow("Image encoder", self._with_buttons(self.image_encoder,
                                                        [("Folder…", self._choose_image_encoder)]))
        self.device = QComboBox()
        self.device.addItems(list(CHOICES["device"]))
        self.device.setCurrentText(settings.get("device"))
        form.addRow("Device", self.device)
        self.precision = QComboBox()
        self.precision.addItems(list(CHOICES["precision"]))
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
        self.max_side.setRange(0, 2048)
        self.max_side.setSingleStep(64)
        self.max_side.setSpecialValueText("the model's own (512 for SD 1.x, 128 for demo)")
        self.max_side.setToolTip("Longest side of the picture the model works on. At the lowest setting a new "
                                 "project works at the size its model was trained at, a reopened one at its own.")
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
        self.live_drafts = QComboBox()
        for text, value in (("automatic: on with a GPU, off on a CPU", "auto"), ("on", "on"), ("off", "off")):
            self.live_drafts.addItem(text, value)
        self.live_drafts.setCurrentIndex(self.live_drafts.findData(settings.get("live_drafts")))
        self.live_drafts.setToolTip("Once a photo's inversion is stored, draft each change of the target prompt, a "
                                    "word or a parameter after a short pause, without saving it (Run > Live drafts).")
        form.addRow("Live drafts", self.live_drafts)
        self.fast_path = QComboBox()
        for text, value in (("on (GPU)", "on"), ("off: every stage eagerly", "off")):
            self.fast_path.addItem(text, value)
        self.fast_path.setCurrentIndex(self.fast_path.findData(settings.get("fast_path")))
        self.fast_path.setToolTip("On a GPU, replay the model's calls as CUDA graphs on a copy of the model held in "
                                  "fp16, with faster optimisation; results within 40 dB of the eager path's. Off: "
                                  "every stage runs as on earlier versions, bit for bit, more slowly.")
        form.addRow("Fast path", self.fast_path)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        guard_wheel(self)
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

    def _choose_image_encoder(self) -> None:
        if path := QFileDialog.getExistingDirectory(self, "CLIP image encoder folder"):
            self.image_encoder.setText(path)

    def _choose_sam(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Segment Anything checkpoint", "", "Checkpoints (*.pth *.safetensors)")
        if path:
            self.sam.setText(path)

    def _choose_projects(self) -> None:
        if path := QFileDialog.getExistingDirectory(self, "Where projects live"):
            self.projects_dir.setText(path)

    def load_values(self) -> dict[str, str]:
        """The model, device and precision chosen: the window tries them, and they are recorded only once
        the model has loaded (gui.model_choice)."""
        return {"model": self.model.text().strip() or "demo", "device": self.device.currentText(),
                "precision": self.precision.currentText()}

    def accept(self) -> None:
        """Record what takes effect at once; the model, device and precision wait for the model to load."""
        values = {"image_encoder": self.image_encoder.text().strip(), "sam_checkpoint": self.sam.text().strip(),
                  "default_steps": self.steps.value(), "max_side": self.max_side.value(),
                  "projects_dir": self.projects_dir.text().strip(), "autosave_minutes": self.autosave.value(),
                  "live_drafts": self.live_drafts.currentData(), "fast_path": self.fast_path.currentData()}
        for name, value in values.items():
            self.settings.set(name, value)
        super().accept()
