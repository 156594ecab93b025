"""Screenshots of the window at 1400x900 and 1280x800 for the user guide (docs/screenshots/): what issue 21's
first-hour fixes look like (run through `bash scripts/screenshot.sh first-hour`, which starts a virtual display).

Per size, two pictures of a real window (the real engine and the demo model; nothing is run):
- `scene-WxH.png`: the demo scene "house-to-car" opened as File > Open demo scene will open it: the word
  chips filled with their parameter's colour (blend words), their legend and what a click does, whole
  rows of chips, the Method panel, the timeline's hint above its bands;
- `crop-WxH.png`: a 1536x1024 photo with an edit region painted over the house: the dashed box of the
  crop the next run edits, the Tools panel's Area, Crop padding and Edge feather, the zoom in the
  canvas's corner after zooming towards the house with the wheel.
"""

from __future__ import annotations

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


def main(folder: Path) -> int:
    app = make_app()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retake-shots-") as scratch:
        work = Path(scratch)
        for size in SIZES:
            for name, shot in (("scene", scene_shot), ("crop", crop_shot)):
                out = folder / f"{name}-{size[0]}x{size[1]}.png"
                shot(app, work, size, out)
                print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"))
