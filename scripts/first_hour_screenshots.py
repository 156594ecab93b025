"""Screenshots of the window at 1400x900 and 1280x800 for the user guide (docs/screenshots/): what issue 21's
first-hour fixes look like (run through `bash scripts/screenshot.sh first-hour`, which starts a virtual display).

Per size, three pictures of a real window (the real engine and the demo model; nothing is run):
- `welcome-WxH.png`: the empty window's welcome view, every demo scene's button with its whole title;
- `scene-WxH.png`: the demo scene "house-to-car" opened as File > Open demo scene will open it: the word
  chips filled with their parameter's colour (blend words), their legend and what a click does, whole
  rows of chips, the Method panel, the timeline's hint above its bands;
- `crop-WxH.png`: a 1536x1024 photo with an edit region painted over the house: the dashed box of the
  crop the next run edits, the Tools panel's Area, Crop padding and Edge feather, the zoom in the
  canvas's corner after zooming towards the house with the wheel.

At 1400x900 only (`--drafts`, minutes on a CPU: a run and a draft of the demo model):
- `open-demo-scene.png`: the File > Open demo scene dialog, the scene "cat-from-reference" selected;
- `draft-1400x900.png`: the scene "house-colour" after one Run, its target changed to a green house and
  drafted live: the canvas shows the draft with its badge, the status bar says so;
- `draft-saved-1400x900.png`: Run pressed on that draft: the draft's picture saved as the result (in the
  history), not computed again, as the status bar says.
The window's data folder (where a scene's project is made) is in the scratch folder (XDG_DATA_HOME), so
every run starts from a fresh scene project.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from gui.app import make_app, wait_until  # noqa: E402
from gui.demo_scenes import DemoSceneDialog, open_demo_scene, read_scenes  # noqa: E402
from gui.settings import AppSettings  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from pipeline.demo_scenes import load_scene, make_scene_project  # noqa: E402
from pipeline.paths import RESOURCES  # noqa: E402

SIZES = ((1400, 900), (1280, 800))
HOUSE = (450, 300, 1010, 820)  # the house of resources/demo/house.png enlarged to 1536x1024: left, top, right, bottom


def pause(app: QApplication, seconds: float = 1.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def new_window(work: Path, size: tuple[int, int]) -> MainWindow:
    settings = AppSettings(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(settings)
    window.resize(*size)
    window.show()
    wait_until(lambda: window.engine.is_ready, 300)
    return window


def welcome_shot(app: QApplication, work: Path, size: tuple[int, int], out: Path) -> None:
    window = new_window(work, size)
    wait_until(lambda: len(window.welcome.scene_buttons) > 0, 60)
    pause(app)
    window.screen().grabWindow(window.winId()).save(str(out))
    window.close()


def scene_shot(app: QApplication, work: Path, size: tuple[int, int], out: Path) -> None:
    scene = load_scene("house-to-car")
    window = new_window(work, size)
    window.open_path(make_scene_project(scene, work / f"scene-{size[0]}.retake"))
    wait_until(lambda: window.doc.project_path is not None, 60)
    window.doc.write_prompt("target", scene.target)
    pause(app)
    window.screen().grabWindow(window.winId()).save(str(out))
    window.doc.undo.setClean()
    window.close()


def crop_shot(app: QApplication, work: Path, size: tuple[int, int], out: Path) -> None:
    photo = work / f"wide-{size[0]}.png"
    Image.open(RESOURCES / "demo" / "house.png").convert("RGB").resize((1536, 1024), Image.Resampling.BICUBIC).save(photo)
    window = new_window(work, size)
    window.open_path(photo)
    wait_until(lambda: window.doc.project_path is not None, 60)
    mask = np.zeros((1024, 1536), np.uint8)
    left, top, right, bottom = HOUSE
    mask[top:bottom, left:right] = 255
    window.doc.replace_mask("edit_mask", mask, "Paint")
    window.doc.write_prompt("source", "a house in a meadow under a blue sky")
    window.doc.write_prompt("target", "a castle in a meadow under a blue sky")
    pause(app, 0.3)
    canvas = window.canvas
    at = canvas.mapFromScene(QPointF((left + right) / 2, top))
    event = QWheelEvent(QPointF(at), QPointF(canvas.viewport().mapToGlobal(at)), QPoint(0, 0), QPoint(0, 120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas.viewport(), event)  # one notch towards the roof: it stays under the cursor
    pause(app)
    window.screen().grabWindow(window.winId()).save(str(out))
    window.doc.undo.setClean()
    window.close()


def demo_scene_shots(app: QApplication, work: Path, folder: Path) -> None:
    """The welcome view's scenes and the Open demo scene dialog; then a scene run once and drafted."""
    window = new_window(work, SIZES[0])
    window.settings.set("live_drafts", "on")
    scenes = read_scenes()
    dialog = DemoSceneDialog(scenes, window)
    dialog.list.setCurrentRow([scene.name for scene in scenes].index("cat-from-reference"))
    dialog.show()
    pause(app)
    dialog.grab().save(str(folder / "open-demo-scene.png"))
    dialog.close()
    open_demo_scene(window, next(scene for scene in scenes if scene.name == "house-colour"))
    window.run_edit()
    wait_until(lambda: not window.session.running and window.session.inversions > 0, 900)
    window.doc.set_prompt("target", "a big green house on the beach at night")
    wait_until(lambda: window.session.draft.image is not None, 900)
    pause(app)
    window.screen().grabWindow(window.winId()).save(str(folder / "draft-1400x900.png"))
    print(f"draft: {window.status_draft.text()}")
    window.run_edit()
    wait_until(lambda: not window.session.running and len(window.session.results) == 2, 900)
    pause(app)
    window.screen().grabWindow(window.winId()).save(str(folder / "draft-saved-1400x900.png"))
    print(f"run: {window.status_stage.text()}")
    window.doc.undo.setClean()
    window.close()


def main(folder: Path, drafts: bool) -> int:
    app = make_app()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retake-shots-") as scratch:
        work = Path(scratch)
        os.environ["XDG_DATA_HOME"] = str(work / "data")  # the app's data folder: demo scenes' projects
        if drafts:
            demo_scene_shots(app, work, folder)
            return 0
        for size in SIZES:
            for name, shot in (("welcome", welcome_shot), ("scene", scene_shot), ("crop", crop_shot)):
                out = folder / f"{name}-{size[0]}x{size[1]}.png"
                shot(app, work, size, out)
                print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--drafts"]
    sys.exit(main(Path(arguments[0]) if arguments else ROOT / "docs" / "screenshots", "--drafts" in sys.argv))
