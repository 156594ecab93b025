"""The model manager: the models this machine has, importing a checkpoint, choosing one, downloading one.

Models are found in four places: the bundled demo model; Retake's own model folder (Settings, by
default in the app's data folder), where an imported single-file checkpoint is copied; the Hugging
Face cache (pipeline.models.cached_hub_models); and folders of other programs the user adds
(AUTOMATIC1111's models/Stable-diffusion, ComfyUI's models/checkpoints, or any folder), whose
single-file `.safetensors` checkpoints and diffusers folders are listed. A `.safetensors` file is
listed only when its header names Stable Diffusion UNet weights, so LoRAs and VAEs stay out; whether
it is SD 1.x is checked when it loads. Nothing touches the network unless Download is pressed, and
offline the dialog says plainly that it cannot download.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QDialog, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QTreeWidget,
    QTreeWidgetItem, QVBoxLayout, QWidget,
)

from gui.settings import AppSettings

UNET_PREFIX = "model.diffusion_model."
HEADER_LIMIT = 64 * 2**20  # a safetensors header larger than this is not one
KNOWN_LAYOUTS = (Path("models") / "Stable-diffusion", Path("models") / "checkpoints")  # A1111, ComfyUI
SCAN_DEPTH = 2
COPY_CHUNK = 16 * 2**20


@dataclass(frozen=True)
class FoundModel:
    """A model the engine can be given: `spec` is what Settings' model field takes."""

    name: str
    spec: str
    where: str
    size: int | None = None


def is_checkpoint(path: Path) -> bool:
    """Whether a .safetensors file holds a Stable Diffusion UNet in the original single-file layout
    (read from its header only: 8 bytes of length, then JSON naming every tensor)."""
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > HEADER_LIMIT:
                return False
            names = json.loads(file.read(length))
    except (OSError, ValueError, struct.error):
        return False
    return isinstance(names, dict) and any(str(name).startswith(UNET_PREFIX) for name in names)


def scan_folder(folder: Path, where: str) -> list[FoundModel]:
    """Checkpoints and diffusers folders in `folder` (or in its A1111 / ComfyUI model folder)."""
    roots = [folder / layout for layout in KNOWN_LAYOUTS if (folder / layout).is_dir()] or [folder]
    found: list[FoundModel] = []
    for root in roots:
        for path in _walk(root, SCAN_DEPTH):
            if path.is_dir() and (path / "model_index.json").is_file():
                found.append(FoundModel(path.name, str(path), where))
            elif path.suffix.lower() == ".safetensors" and path.is_file() and is_checkpoint(path):
                found.append(FoundModel(path.stem, str(path), where, path.stat().st_size))
    return found


def _walk(root: Path, depth: int) -> list[Path]:
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    found = list(entries)
    if depth > 1:
        for entry in entries:
            if entry.is_dir() and not (entry / "model_index.json").is_file():
                found += _walk(entry, depth - 1)
    return found


def find_models(settings: AppSettings) -> list[FoundModel]:
    """Every model found, the demo model first. Needs the pipeline (call it once the engine is loaded)."""
    from pipeline.models import cached_hub_models, hf_hub_cache_dir

    found = [FoundModel("demo", "demo", "bundled with Retake")]
    found += scan_folder(settings.models_dir(), "Retake's model folder")
    found += [FoundModel(repo, repo, f"Hugging Face cache ({hf_hub_cache_dir()})") for repo in cached_hub_models()]
    for folder in settings.model_folders():
        found += scan_folder(Path(folder), folder)
    return found


def offline_reason() -> str | None:
    """Why downloading is off on this machine, or None when it may be tried."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return (f"This machine is set to work offline ({variable}={os.environ[variable]}), so nothing can be "
                    "downloaded. Copy a model here and import it, or add the folder that holds it.")
    return None


def import_target(settings: AppSettings, source: Path) -> Path:
    """Where an imported checkpoint goes; ValueError with a sentence when it cannot be imported."""
    if source.suffix.lower() != ".safetensors":
        raise ValueError(f"{source.name} is not a .safetensors file; Retake imports single-file .safetensors "
                         "checkpoints (pickled .ckpt files can run code when loaded).")
    if not is_checkpoint(source):
        raise ValueError(f"{source.name} holds no Stable Diffusion UNet weights (a LoRA, a VAE or another "
                         "kind of file?).")
    target = settings.models_dir() / source.name
    if target.exists():
        raise ValueError(f"{source.name} is already in Retake's model folder ({target.parent}).")
    return target


class Copier(QObject):
    """Copies one file in chunks on its own thread (a checkpoint is gigabytes), reporting progress;
    the copy is written beside the target and renamed into place only when complete."""

    progress = Signal(int)  # percent
    done = Signal(str)
    failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.stop = threading.Event()  # set from the dialog's thread: the copy ends and is removed

    @Slot(str, str)
    def copy(self, source: str, target: str) -> None:
        part = Path(target + ".part")
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            total = max(os.path.getsize(source), 1)
            copied = 0
            with open(source, "rb") as reader, open(part, "wb") as writer:
                while chunk := reader.read(COPY_CHUNK):
                    if self.stop.is_set():
                        raise InterruptedError("the dialog was closed")
                    writer.write(chunk)
                    copied += len(chunk)
                    self.progress.emit(int(100 * copied / total))
            os.replace(part, target)
        except OSError as error:  # InterruptedError included
            part.unlink(missing_ok=True)
            self.failed.emit(f"Could not import {Path(source).name}: {error.strerror or error}.")
            return
        self.done.emit(target)


class ModelsDialog(QDialog):
    """Lists the models found; Use, Import, Add folder, Download."""

    chosen = Signal(str, bool)  # the model spec, and whether to download it first
    _copy = Signal(str, str)

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(760, 460)
        self.settings = settings
        self.list = QTreeWidget()
        self.list.setHeaderLabels(["Model", "Where", "Size"])
        self.list.setRootIsDecorated(False)
        self.list.setColumnWidth(0, 260)
        self.list.setColumnWidth(1, 330)
        self.use = QPushButton("Use this model")
        self.use.setDefault(True)
        self.import_button = QPushButton("Import checkpoint…")
        self.import_button.setToolTip("Copy a single-file .safetensors checkpoint into Retake's model folder.")
        add, self.remove = QPushButton("Add folder…"), QPushButton("Remove folder")
        add.setToolTip("A folder of another program's models (AUTOMATIC1111, ComfyUI) or any folder of checkpoints.")
        self.hub_id = QLineEdit()
        self.hub_id.setPlaceholderText("Hugging Face id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
        self.download = QPushButton("Download")
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_progress = QProgressBar()
        self.copy_progress.hide()
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for button in (self.use, self.import_button, add, self.remove):
            buttons.addWidget(button)
        buttons.addStretch(1)
        hub = QHBoxLayout()
        hub.addWidget(self.hub_id, 1)
        hub.addWidget(self.download)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        layout.addLayout(hub)
        layout.addWidget(self.copy_progress)
        layout.addWidget(self.note)
        closing = QHBoxLayout()
        closing.addStretch(1)
        closing.addWidget(self.close_button)
        layout.addLayout(closing)

        self._thread = QThread(self)
        self._copier = Copier()
        self._copier.moveToThread(self._thread)
        self._copy.connect(self._copier.copy)
        self._copier.progress.connect(self.copy_progress.setValue)
        self._copier.done.connect(self._on_imported)
        self._copier.failed.connect(self._on_import_failed)
        self._thread.start()

        self.use.clicked.connect(self.use_selected)
        self.list.itemDoubleClicked.connect(lambda _item, _column: self.use_selected())
        self.list.currentItemChanged.connect(lambda *_: self._update_buttons())
        self.import_button.clicked.connect(self._choose_import)
        add.clicked.connect(self._choose_folder)
        self.remove.clicked.connect(self.remove_selected_folder)
        self.download.clicked.connect(self.download_model)
        self.refresh()

    # -- the list -------------------------------------------------------------------------------
    def refresh(self, select: str | None = None) -> None:
        current = select or self.settings.get("model")
        self.list.clear()
        self.models = find_models(self.settings)
        for model in self.models:
            size = f"{model.size / 2**30:.1f} GB" if model.size else ""
            item = QTreeWidgetItem([model.name + ("  (in use)" if model.spec == self.settings.get("model") else ""),
                                    model.where, size])
            item.setData(0, Qt.ItemDataRole.UserRole, model.spec)
            item.setToolTip(0, model.spec)
            self.list.addTopLevelItem(item)
            if model.spec == current:
                self.list.setCurrentItem(item)
        self._update_buttons()

    def selected(self) -> FoundModel | None:
        item = self.list.currentItem()
        return self.models[self.list.indexOfTopLevelItem(item)] if item is not None else None

    def _update_buttons(self) -> None:
        model = self.selected()
        self.use.setEnabled(model is not None)
        self.remove.setEnabled(model is not None and model.where in self.settings.model_folders())

    def use_selected(self) -> None:
        if (model := self.selected()) is not None:
            self.chosen.emit(model.spec, False)
            self.note.setText(f"Loading {model.name} (see the status bar): it becomes the model once it has "
                              "loaded; if it does not load, the model in use stays.")
            self.refresh(model.spec)

    def settled(self, said: str) -> None:
        """The model chosen here loaded (`said` empty) or did not (`said` says why): show it in the list."""
        if said:
            self.note.setText(said)
        self.refresh()

    # -- folders and imports --------------------------------------------------------------------
    def add_folder(self, folder: Path) -> int:
        """Add another program's model folder; returns how many models it holds."""
        self.settings.set_model_folders([*self.settings.model_folders(), str(folder)])
        found = scan_folder(folder, str(folder))
        self.note.setText(f"{folder} holds {len(found)} model(s)." if found else
                          f"No checkpoint (.safetensors with SD UNet weights) or diffusers folder found in {folder}.")
        self.refresh()
        return len(found)

    def remove_selected_folder(self) -> None:
        if (model := self.selected()) is not None:
            self.settings.set_model_folders([f for f in self.settings.model_folders() if f != model.where])
            self.refresh()

    def import_checkpoint(self, source: Path) -> bool:
        """Start copying a checkpoint into Retake's model folder (in the background)."""
        try:
            target = import_target(self.settings, source)
        except ValueError as error:
            self.note.setText(str(error))
            return False
        self.import_button.setEnabled(False)
        self.copy_progress.setValue(0)
        self.copy_progress.show()
        self.note.setText(f"Importing {source.name} into {target.parent}…")
        self._copy.emit(str(source), str(target))
        return True

    def _on_imported(self, target: str) -> None:
        self.import_button.setEnabled(True)
        self.copy_progress.hide()
        self.note.setText(f"Imported {Path(target).name}. Select it and press Use this model.")
        self.refresh(target)

    def _on_import_failed(self, message: str) -> None:
        self.import_button.setEnabled(True)
        self.copy_progress.hide()
        self.note.setText(message)

    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a checkpoint", "", "Checkpoints (*.safetensors)")
        if path:
            self.import_checkpoint(Path(path))

    def _choose_folder(self) -> None:
        if folder := QFileDialog.getExistingDirectory(self, "A folder of models (AUTOMATIC1111, ComfyUI…)"):
            self.add_folder(Path(folder))

    # -- download -------------------------------------------------------------------------------
    def download_model(self) -> bool:
        """Download the Hugging Face id typed (and make it the model), unless this machine is offline."""
        repo = self.hub_id.text().strip()
        if not repo:
            self.note.setText("Type the Hugging Face id of an SD 1.x model to download.")
            return False
        if (reason := offline_reason()) is not None:
            self.note.setText(reason)
            return False
        self.chosen.emit(repo, True)
        self.note.setText(f"Downloading {repo} (about 2 to 4 GB for SD 1.5), then loading it: it becomes the model "
                          "once it has loaded; the status bar says when, and any error appears here.")
        return True

    def shutdown(self) -> None:
        """Stop an import in flight (its partial copy is removed) and the copying thread (the window
        is closing; closing only the dialog lets an import finish)."""
        self._copier.stop.set()
        self._thread.quit()
        self._thread.wait(60_000)
