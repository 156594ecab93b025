"""The welcome view: what an empty window offers, so a new user's first minute goes somewhere.

It lies over the canvas while no photo or project is open (a fresh install's first start, or after
closing a project) and offers three ways in: try a bundled demo scene (each scene of the registry,
pipeline.demo_scenes, listed and opened by gui.demo_scenes as File > Open demo scene does); use a Stable
Diffusion 1.x model the machine already has (the Models dialog: diffusers folders, single-file
.safetensors, the Hugging Face cache, AUTOMATIC1111 and ComfyUI model folders); or download SD 1.5 when
the user presses Download, with progress, resume and checksum (gui.download), saying plainly offline how
to add the file by hand. Opening any photo or project hides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QFileDialog, QFrame, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from gui.demo_scenes import ICON_SIDE, describe, open_demo_scene, read_scenes, scene_icon
from gui.download import CATALOGUE, Downloadable, Downloader
from gui.io_worker import Task
from gui.models_dialog import offline_reason

if TYPE_CHECKING:
    from gui.window import MainWindow
    from pipeline.demo_scenes import DemoScene

STYLE = """
#welcome { background: palette(window); }
#welcomeCard { background: palette(base); border: 1px solid palette(mid); border-radius: 10px; }
#welcomeTitle { font-size: 20pt; font-weight: 600; }
#welcomeSection { font-size: 12pt; font-weight: 600; margin-top: 10px; }
"""


class SceneButton(QPushButton):
    """A demo scene's button: its icon and its whole title, wrapped onto more lines where the card is
    narrow (a push button's own text is one line, cut by the button at 1280x800), never elided."""

    def __init__(self, icon: QIcon, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName(title)
        side = ICON_SIDE // 2
        picture = QLabel()
        picture.setPixmap(icon.pixmap(side, side))
        self.title = QLabel(title)
        self.title.setWordWrap(True)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 4, 6, 4)
        row.addWidget(picture)
        row.addWidget(self.title, 1)
        for label in (picture, self.title):  # a click on the picture or the title is the button's
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        size_policy = self.sizePolicy()
        size_policy.setHeightForWidth(True)
        self.setSizePolicy(size_policy)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.layout().sizeHint()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.layout().minimumSize()

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt's name
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt's name
        return self.layout().totalHeightForWidth(width)


class WelcomeView(QFrame):
    """Covers the canvas of `window` while its document has no project."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window.canvas)
        self.main = window
        self.setObjectName("welcome")
        self.setStyleSheet(STYLE)
        self.scenes: list[DemoScene] = []
        self.downloader = Downloader(self)

        card = QFrame()
        card.setObjectName("welcomeCard")
        card.setMaximumWidth(720)
        column = QVBoxLayout(card)
        column.setContentsMargins(28, 24, 28, 24)
        title = QLabel("Welcome to Retake")
        title.setObjectName("welcomeTitle")
        column.addWidget(title)
        column.addWidget(self._text("Open a photo (File > Open, or drop it on the window), describe it, and type "
                                    "what it should become. Or start here:"))

        column.addWidget(self._section("Try a demo scene"))
        self.scenes_note = self._text("The demo scenes are listed once the engine has loaded…")
        column.addWidget(self.scenes_note)
        self.scene_grid = QGridLayout()
        column.addLayout(self.scene_grid)
        self.scene_buttons: list[SceneButton] = []

        column.addWidget(self._section("Use a Stable Diffusion 1.x model you have"))
        column.addWidget(self._text("A diffusers folder, a single-file .safetensors checkpoint, a model in the "
                                    "Hugging Face cache, or the models folder of AUTOMATIC1111 or ComfyUI."))
        row = QHBoxLayout()
        self.choose_model = QPushButton("Choose a model…")
        self.choose_model.clicked.connect(self.main.open_models)
        self.add_folder = QPushButton("Add a models folder…")
        self.add_folder.clicked.connect(self._choose_folder)
        self.import_file = QPushButton("Import a .safetensors file…")
        self.import_file.clicked.connect(self._choose_checkpoint)
        for button in (self.choose_model, self.add_folder, self.import_file):
            row.addWidget(button)
        row.addStretch(1)
        column.addLayout(row)

        self.item: Downloadable = CATALOGUE[0]
        column.addWidget(self._section(f"Download {self.item.name}"))
        row = QHBoxLayout()
        self.download_button = QPushButton(f"Download ({self.item.size / 1e9:.1f} GB)")
        self.download_button.clicked.connect(self.download)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.downloader.stop.set)
        self.stop_button.hide()
        self.progress = QProgressBar()
        self.progress.hide()
        row.addWidget(self.download_button)
        row.addWidget(self.stop_button)
        row.addWidget(self.progress, 1)
        column.addLayout(row)
        self.note = self._text("Nothing is downloaded unless you press Download; an interrupted download "
                               "continues where it stopped, and the file is checked before it is used.")
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.note)

        outer = QVBoxLayout(self)
        outer.addStretch(1)
        centred = QHBoxLayout()
        centred.addStretch(1)
        centred.addWidget(card, 4)
        centred.addStretch(1)
        outer.addLayout(centred)
        outer.addStretch(2)

        self.downloader.progress.connect(self._on_progress)
        self.downloader.done.connect(self._on_downloaded)
        self.downloader.failed.connect(self._on_download_failed)
        window.doc.projectChanged.connect(self.update_visibility)
        window.engine.ready.connect(lambda _tokenizer: self._set_model_buttons(True))
        window.engine.ready.connect(lambda _tokenizer: self.read_scenes())
        self._set_model_buttons(window.engine.is_ready)
        if window.engine.is_ready:
            self.read_scenes()
        window.canvas.installEventFilter(self)
        self.setGeometry(window.canvas.rect())
        self.update_visibility()

    def _text(self, text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        return label

    def _section(self, text: str) -> QLabel:
        label = QLabel(text)
        label.setObjectName("welcomeSection")
        return label

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if watched is self.main.canvas and event.type() == QEvent.Type.Resize:
            self.setGeometry(self.main.canvas.rect())
        return False

    def update_visibility(self) -> None:
        self.setVisible(self.main.doc.project_path is None)

    def _set_model_buttons(self, ready: bool) -> None:
        for button in (self.choose_model, self.add_folder, self.import_file):
            button.setEnabled(ready)
            button.setToolTip("" if ready else "Available once the engine has loaded (see the status bar).")

    # -- demo scenes ----------------------------------------------------------------------------------
    def read_scenes(self) -> Task:
        """Read the registry on the project-I/O thread, then offer a button per scene."""
        return self.main.session.io.submit("Reading the demo scenes", read_scenes, self._show_scenes, exclusive=False)

    def _show_scenes(self, task: Task) -> None:
        if not task.ok:
            self.scenes_note.setText(f"The demo scenes could not be read: {task.error}")
            return
        self.scenes = task.result
        self.scenes_note.setText("Each opens with its prompts and settings filled in, on the demo model (a small "
                                 "model trained on such toy scenes, not on photos): press Run edit.")
        for index, scene in enumerate(self.scenes):
            button = SceneButton(scene_icon(scene), scene.title)
            button.setToolTip(describe(scene))
            button.clicked.connect(lambda _checked=False, i=index: self.try_scene(i))
            self.scene_grid.addWidget(button, index // 2, index % 2)
            self.scene_buttons.append(button)

    def try_scene(self, index: int) -> bool:
        """Open demo scene `index` (gui.demo_scenes.open_demo_scene)."""
        return open_demo_scene(self.main, self.scenes[index])

    # -- models the user has --------------------------------------------------------------------------
    def _choose_folder(self) -> None:
        if folder := QFileDialog.getExistingDirectory(self, "A folder of models (AUTOMATIC1111, ComfyUI…)"):
            self.main.open_models().add_folder(Path(folder))

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a checkpoint", "", "Checkpoints (*.safetensors)")
        if path:
            self.main.open_models().import_checkpoint(Path(path))

    # -- download -------------------------------------------------------------------------------------
    def download(self) -> bool:
        """Start downloading the catalogue's model into Retake's model folder, unless offline."""
        folder = self.main.settings.models_dir()
        target = folder / self.item.filename
        if target.is_file():
            self._on_downloaded(str(target))
            return True
        if (reason := offline_reason()) is not None:
            self.note.setText(f"{reason}\n{self.item.by_hand(folder)}")
            return False
        self.download_button.setEnabled(False)
        self.stop_button.show()
        self.progress.setValue(0)
        self.progress.show()
        self.note.setText(f"Downloading {self.item.filename} into {folder}…")
        self.downloader.start(self.item, target)
        return True

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setValue(int(1000 * done / max(total, 1)))
        self.progress.setMaximum(1000)
        self.progress.setFormat(f"{done / 1e9:.2f} of {total / 1e9:.2f} GB")

    def _on_downloaded(self, path: str) -> None:
        self._download_ended()
        self.note.setText(f"{Path(path).name} is downloaded and checked; it becomes the model once it has loaded "
                          "in the background (see the status bar). Open a photo to edit it.")
        self.main.use_model(path)

    def _on_download_failed(self, message: str) -> None:
        self._download_ended()
        self.note.setText(message)

    def _download_ended(self) -> None:
        self.download_button.setEnabled(True)
        self.stop_button.hide()
        self.progress.hide()

