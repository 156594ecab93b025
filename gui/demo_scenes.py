"""The demo scenes in the window: File > Open demo scene… and the welcome view's entries, one way in.

The scenes are pipeline.demo_scenes' registry (resources/demo_world/scenes), read and checked there;
this module only lists them for the artist and opens one. Opening a scene makes its project once, in
the app's data folder (never inside the installation), with the scene's photo, source prompt, method,
parameters and inputs (`make_scene_project`), then opens it like any project with the scene's target
prompt filled in; opening the scene again reopens that project, with whatever the artist did to it.
The registry is read on the project-I/O thread once the engine has loaded: checking a scene imports
the methods (torch), which the window never does on its own thread while it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QStandardPaths, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget,
)

from gui.guard import explain

if TYPE_CHECKING:
    from gui.window import MainWindow
    from pipeline.demo_scenes import DemoScene

ICON_SIDE = 64


def read_scenes() -> list[DemoScene]:
    """Every scene of the registry, checked (call it off the UI thread: it imports the methods)."""
    from pipeline.demo_scenes import list_scenes

    return list_scenes()


def scene_project_path(scene: DemoScene) -> Path:
    """Where the scene's project lives: the app's data folder, demo-scenes/NAME.retake."""
    folder = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))
    return folder / "demo-scenes" / f"{scene.name}.retake"


def describe(scene: DemoScene) -> str:
    """The scene as a tooltip or a dialog's text: its title, prompts and note (whose figures, where the demo
    model does the method poorly, are the semantic benchmark's: where they come from is named)."""
    lines = [scene.title, f"{scene.method}: \u201c{scene.source}\u201d \u2192 \u201c{scene.target}\u201d", "",
             scene.note]
    if (figures := scene.benchmark) is not None:
        lines += ["", f"Figures: the semantic benchmark, {figures.task} cases ({figures.source})."]
    return "\n".join(lines).strip()


def scene_icon(scene: DemoScene) -> QIcon:
    return QIcon(QPixmap(str(scene.photo)).scaled(ICON_SIDE, ICON_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.SmoothTransformation))


def open_demo_scene(window: MainWindow, scene: DemoScene) -> bool:
    """Open `scene` in `window` on the demo model: its project made on the first visit (on the I/O thread),
    then opened with the scene's prompts where the project has none. False (and said) when it could not be."""
    from gui.app import open_with_prompts  # gui.app imports the window, which imports this module

    if (window.settings.get("model") or "demo") != "demo":
        window.use_model("demo")
        window.message.show_message("The demo scenes use the demo model, which loads now "
                                    "(Model > Models switches back).", error=False)
    project = scene_project_path(scene)
    if not (project / "project.json").is_file():
        def make() -> Path:
            from pipeline.demo_scenes import make_scene_project

            project.parent.mkdir(parents=True, exist_ok=True)
            return make_scene_project(scene, project)

        task = window.session.io.wait(window.session.io.submit(f"Making the demo scene {scene.name}", make))
        if not task.ok:
            window.message.show_message(f"{explain(task.error, f'making the demo scene {scene.name}')} The window "
                                        "shows what it showed before.", task.details)
            return False
    open_with_prompts(window, project, scene.source, scene.target)
    return window.doc.project_path == project


class DemoSceneDialog(QDialog):
    """File > Open demo scene…: the scenes with their picture, title and note; Open opens the chosen one."""

    def __init__(self, scenes: list[DemoScene], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open demo scene")
        self.scenes = scenes
        self.list = QListWidget()
        self.list.setIconSize(QPixmap(ICON_SIDE, ICON_SIDE).size())
        self.list.setWordWrap(True)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        for scene in scenes:
            item = QListWidgetItem(scene_icon(scene), f"{scene.title}\n{scene.method}")
            item.setToolTip(describe(scene))
            self.list.addItem(item)
        self.list.setMinimumWidth(300)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note.setMinimumWidth(360)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addWidget(self.note, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.open_button = buttons.button(QDialogButtonBox.StandardButton.Open)
        column = QVBoxLayout(self)
        column.addWidget(QLabel("Each scene shows one method on the demo model (128-px toy pictures, not photos), "
                                "with the settings it was run and looked at with."))
        column.addLayout(row, 1)
        column.addWidget(buttons)
        self.list.currentRowChanged.connect(self._show_note)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        self.list.setCurrentRow(0)
        self.resize(760, 520)

    def _show_note(self, row: int) -> None:
        self.open_button.setEnabled(row >= 0)
        self.note.setText(describe(self.scenes[row]) if row >= 0 else "")

    def chosen(self) -> DemoScene | None:
        row = self.list.currentRow()
        return self.scenes[row] if row >= 0 else None


def choose_demo_scene(window: MainWindow) -> bool:
    """File > Open demo scene…: read the registry, let the artist choose, open the scene chosen."""
    if not window.session.ready:
        window.message.show_message("The demo scenes can be opened once the engine has loaded (see the status "
                                    "bar).", error=False)
        return False
    task = window.session.io.wait(window.session.io.submit("Reading the demo scenes", read_scenes, exclusive=False))
    if not task.ok:
        window.message.show_message(explain(task.error, "reading the demo scenes"), task.details)
        return False
    dialog = DemoSceneDialog(task.result, window)
    accepted = dialog.exec()
    scene = dialog.chosen()
    if not accepted or scene is None:
        return False
    return open_demo_scene(window, scene)
