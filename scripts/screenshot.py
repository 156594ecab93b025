"""Take docs/screenshot.png: the main window after an edit of the demo photo, with a painted mask
and the timeline's step previews, grabbed from a real window on an X display (run it through
scripts/screenshot.sh, which starts a virtual one)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings  # noqa: E402

from gui.app import make_app, wait_until  # noqa: E402
from gui.masks import dab  # noqa: E402
from gui.settings import AppSettings  # noqa: E402
from gui.window import MainWindow  # noqa: E402


def main(out: Path) -> int:
    app = make_app()
    work = Path(tempfile.mkdtemp(prefix="retake-shot-"))
    settings = AppSettings(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    settings.set("max_side", 256)  # the demo model's own size
    window = MainWindow(settings)
    window.resize(1600, 1000)
    window.show()
    wait_until(lambda: window.engine.is_ready, 300)
    photo = work / "house.png"
    shutil.copy(ROOT / "resources" / "demo" / "house.png", photo)
    window.open_path(photo)
    doc = window.doc
    doc.set_prompt("source", "a house in a meadow under a blue sky")
    doc.set_prompt("target", "a castle in a meadow under a blue sky")
    doc.set_param("inversion", "direct")
    doc.set_param("steps", 20)
    mask = doc.mask("edit_mask")
    before = mask.copy()
    for y in range(175, 370, 12):  # brush strokes over the house, as an artist would paint them
        for x in range(170, 450, 12):
            dab(mask, x, y, 22, 0.6)
    doc.push_mask_change("edit_mask", (0, 0, mask.shape[1], mask.shape[0]), before, "Paint")
    doc.maskChanged.emit("edit_mask")
    wait_until(lambda: window.model_state == "loaded", 300)
    finished = []
    window.engine.finished.connect(finished.append)
    window.run_edit()
    wait_until(lambda: finished, 1200)
    window.tools.compare.setValue(62)  # before / after split over the house
    window.canvas.fit()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    picture = window.screen().grabWindow(window.winId())
    picture.save(str(out))
    print(f"{type(finished[0]).__name__}: wrote {out} ({picture.width()}x{picture.height()})")
    doc.undo.setClean()
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png"))
