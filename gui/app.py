"""Start the desktop app: `python main.py` (empty window) or `python main.py open PHOTO|PROJECT
[--source TEXT] [--target TEXT]`.

Only Qt is imported before the window shows; the engine (torch, diffusers) loads on the worker
thread, so the window is usable within about a second and says in its status bar when the engine is
ready. A path given on the command line opens once it is; the prompts given with it fill those the
opened project has not got yet (scripts/app.sh opens a demo-world scene with its caption and a
visible edit; a project reopened later keeps its own prompts).
"""

from __future__ import annotations

import argparse
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


def parse_open(argv: Sequence[str]) -> argparse.Namespace:
    """`[PATH] [--source TEXT] [--target TEXT]`: what `main.py open` was given."""
    parser = argparse.ArgumentParser(prog="retake open", description="Open the desktop app on a file.")
    parser.add_argument("path", type=Path, nargs="?", help="a photo, a .retake project or a result PNG")
    parser.add_argument("--source", default="", help="what the photo shows, if its project has no source prompt")
    parser.add_argument("--target", default="", help="what it should become, if its project has no target prompt")
    return parser.parse_args(list(argv))


def open_with_prompts(window: MainWindow, path: Path, source: str = "", target: str = "") -> None:
    """Open `path` (once the engine is ready) and give its document the prompts its project has not got
    (not an undoable change: they stand in for the empty ones, like defaults)."""

    def fill(_tokenizer: object = None) -> None:
        if window.doc.project_path is None:  # the path did not open
            return
        for which, text in (("source", source), ("target", target)):
            if text and not getattr(window.doc, f"{which}_prompt"):
                window.doc.write_prompt(which, text)

    window.open_path(path)
    if window.engine.is_ready:
        fill()
    else:  # the path opens when the engine is ready, in the window's own slot, connected (so run) first
        window.engine.ready.connect(fill, Qt.ConnectionType.SingleShotConnection)


def main(argv: Sequence[str] = ()) -> int:
    """Open the window, on `argv`'s path if given (see `parse_open`)."""
    args = parse_open(argv)
    app = make_app()
    window = MainWindow()
    window.show()
    if args.path is not None:
        open_with_prompts(window, args.path, args.source, args.target)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
