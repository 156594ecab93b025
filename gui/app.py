"""Start the desktop app: `python main.py` (empty window) or `python main.py open PHOTO|PROJECT`.

Only Qt is imported before the window shows; the engine (torch, diffusers) loads on the worker
thread, so the window is usable within about a second and says in its status bar when the engine is
ready. A path given on the command line opens once it is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from gui.theme import apply_dark_theme
from gui.window import MainWindow


def make_app(argv: Sequence[str] = ()) -> QApplication:
    """The QApplication with Retake's names (for QSettings), HiDPI policy and dark theme."""
    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication([sys.argv[0] if sys.argv else "retake", *argv])
    QCoreApplication.setOrganizationName("Retake")
    QCoreApplication.setApplicationName("Retake")
    apply_dark_theme(app)  # type: ignore[arg-type]
    return app  # type: ignore[return-value]


def wait_until(condition: Callable[[], object], timeout_s: float) -> None:
    """Turn the event loop until `condition()` holds (for scripts that drive the window: the
    benchmark, the screenshot); TimeoutError after `timeout_s`."""
    app = QApplication.instance()
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the window did not get there within {timeout_s:g} s")
        app.processEvents()
        time.sleep(0.001)


def main(argv: Sequence[str] = ()) -> int:
    """Open the window (on `argv[0]` if given: a photo, a .retake project or a result PNG)."""
    app = make_app()
    window = MainWindow()
    window.show()
    if argv:
        window.open_path(Path(argv[0]))
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
