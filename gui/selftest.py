"""The desktop half of `retake self-test`: open the main window offscreen and edit the demo-world scene
through it, as an artist would (worker thread, engine, timeline previews, a full decode of a step), with
the settings a new user has: the demo model at its own 128 px, a new project's parameters for it
(direct inversion), and only the steps cut to a few.

main.py hands these checks to cli.selftest (the CLI itself never imports Qt or gui/); Qt is imported
only when they run, so a machine whose Qt cannot load gets a failed check, not a crash.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

QUICK = {"steps": 6}
STAGES = {"DDIM inversion", "editing"}  # direct inversion: DDIM inversion, then the source branch follows it
WAIT_S = 300


def window_checks(demo_image: Path) -> list[tuple[str, bool]]:
    """Named checks of one edit through a real window (offscreen unless QT_QPA_PLATFORM says otherwise)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtCore import QtMsgType, qInstallMessageHandler

        from gui.app import make_app
    except ImportError as error:  # PySide6 missing or broken: the window cannot be checked
        return [(f"window: Qt could not be loaded ({error})", False)]

    def quiet(kind: QtMsgType, _context: object, text: str) -> None:
        """Qt's warnings (the offscreen platform's "does not support propagateSizeHints") are not the
        user's concern; critical messages are."""
        if kind in (QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg):
            print(f"Qt: {text}")

    make_app()
    previous = qInstallMessageHandler(quiet)
    try:
        return _checks(demo_image)
    finally:
        qInstallMessageHandler(previous)


def _checks(demo_image: Path) -> list[tuple[str, bool]]:
    from PySide6.QtCore import QSettings

    from gui.app import wait_until
    from gui.settings import AppSettings
    from gui.window import MainWindow
    from pipeline.demo_model import DEMO_EDIT
    from pipeline.events import Done

    with tempfile.TemporaryDirectory(prefix="retake-self-test-window-") as tmp:
        settings = AppSettings(QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat))
        window = MainWindow(settings)
        window.show()
        opened = started = done = every_step = decoded = False
        stages: dict[str, list[int]] = {}
        try:
            wait_until(lambda: window.session.model_state in ("loaded", "not loaded"), WAIT_S)
            photo = Path(tmp) / "house.png"
            shutil.copy(demo_image, photo)
            opened = window.open_path(photo)
            doc = window.doc
            doc.set_prompt("source", DEMO_EDIT.source)
            doc.set_prompt("target", DEMO_EDIT.target)
            for name, value in QUICK.items():
                doc.set_param(name, value)
            finished: list = []
            window.session.runFinished.connect(finished.append)
            started = window.run_edit()
            wait_until(lambda: finished, WAIT_S)
            done = isinstance(finished[0], Done) and len(window.session.results) == 1
            run = window.session.run
            stages = {stage: sorted(steps) for stage, steps in run.previews.items()}
            every_step = bool(stages) and all(steps == list(range(1, QUICK["steps"] + 1)) for steps in stages.values())
            window.timeline.choose("editing", 3)
            wait_until(lambda: ("editing", 3) in run.decoded, WAIT_S)
            decoded = window.canvas.override is run.decoded[("editing", 3)]
        except TimeoutError:
            pass  # the checks that did not get there fail
        finally:
            window.doc.undo.setClean()
            window.close()
    return [("window: the model loads in the background", window.session.model_state == "loaded"),
            ("window: open the demo-world scene and edit it", opened and started and done),
            ("window: a preview at every step of the inversion and the edit", every_step and set(stages) == STAGES),
            ("window: a scrubbed step is decoded in full on the worker thread", decoded)]
