"""Take docs/screenshot.png: the main window after an edit of the demo-world house scene with the demo
model, grabbed from a real window on an X display (run it through scripts/screenshot.sh, which starts
a virtual one).

The window is opened as scripts/app.sh opens it (the scene, its caption and a target that turns the
red house blue, the settings a new user has: the demo model at 128 px, direct inversion, 50 steps);
then the edit region is painted over the house with the brush, the edit runs, and the picture shows
the result beside the photo (the compare split), the painted mask, the prompts' word chips, the
timeline's step previews of the inversion and the edit with the method's step bands, and the
Reference panel, moved from its tab under the Method panel to below History, as a user may drag it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from gui.app import make_app, open_with_prompts, wait_until  # noqa: E402
from gui.masks import dab  # noqa: E402
from gui.settings import AppSettings  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from pipeline.demo_model import DEMO_EDIT  # noqa: E402

HOUSE = (38, 56, 90, 110)  # the house's box in the 128 px scene: left, top, right, bottom


def main(out: Path) -> int:
    app = make_app()
    work = Path(tempfile.mkdtemp(prefix="retake-shot-"))
    settings = AppSettings(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(settings)
    window.resize(1600, 1000)
    window.splitDockWidget(window.docks["history"], window.docks["reference"], Qt.Orientation.Vertical)
    window.show()
    docks = window.docks  # a wider right column, so both prompts and their chips show whole
    window.resizeDocks([docks["prompts"]], [420], Qt.Orientation.Horizontal)
    window.resizeDocks([docks["prompts"], docks["method"], docks["timeline"]], [230, 470, 175],
                       Qt.Orientation.Vertical)
    failed: list[str] = []  # the engine could not start: say why rather than wait for nothing
    window.engine.loadFailed.connect(failed.append)
    photo = work / "house.png"
    shutil.copy(DEMO_EDIT.image, photo)
    open_with_prompts(window, photo, DEMO_EDIT.source, DEMO_EDIT.target)
    wait_until(lambda: window.doc.project_path is not None or failed, 300)
    if failed:
        print(f"the engine did not start: {failed[0]}", file=sys.stderr)
        return 1
    doc = window.doc
    mask = doc.mask("edit_mask")
    before = mask.copy()
    left, top, right, bottom = HOUSE
    for y in range(top, bottom + 1, 3):  # brush strokes over the house, as an artist would paint them
        for x in range(left, right + 1, 3):
            dab(mask, x, y, 5, 0.6)
    doc.push_mask_change("edit_mask", (0, 0, mask.shape[1], mask.shape[0]), before, "Paint")
    doc.maskChanged.emit("edit_mask")
    wait_until(lambda: window.session.model_state in ("loaded", "not loaded"), 300)
    if window.session.model_state != "loaded":
        print(f"the demo model did not load: {window.message.details}", file=sys.stderr)
        return 1
    finished = []
    window.session.runFinished.connect(finished.append)
    window.run_edit()
    wait_until(lambda: finished, 1200)
    window.tools.compare.setValue(50)  # before / after split through the house
    window.canvas.fit()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    picture = window.screen().grabWindow(window.winId())
    picture.save(str(out))
    print(f"{type(finished[0]).__name__}: wrote {out} ({picture.width()}x{picture.height()}, "
          f"{out.stat().st_size // 1024} KiB)")
    doc.undo.setClean()
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png"))
