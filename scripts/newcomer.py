"""A scripted newcomer: the flows of issue 21's first hour, driven as a user drives them, with screenshots.

Run through `bash scripts/newcomer.sh [OUT_DIR]`, which starts a virtual X display (Xvfb) with a fresh
home folder. The real window (the real engine, the bundled demo model) runs in this process; a driver
thread walks the flows with real X input events sent by `xdotool` (pointer moves, clicks, wheel turns,
keys, typed text) at screen coordinates read from the widgets, while the main thread runs Qt's event
loop, so modal dialogs (the shortcuts, Settings, the question on closing) are driven like the rest.
The driver only reads the widgets (on the main thread, through `Driver.gui`) to find where to click
and to check what a step should have done; it never calls the window's slots.

Xvfb runs no window manager, so where one would give a window the keyboard when it is clicked, the
driver does it with `xdotool windowfocus`. Each step prints one line, PASS or FAIL with what was seen,
and grabs the whole screen into OUT_DIR/NN-name.png. The exit status is 1 when a step failed or an
exception escaped into Qt's event loop (sys.excepthook, threading.excepthook), else 0. This is
evidence for a person to look at, not a CI test: CI has no X display.
"""

from __future__ import annotations

import argparse
import math
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QObject, QPoint, QPointF, QRect, QSettings, Qt, Signal  # noqa: E402
from PySide6.QtGui import QColor, QGuiApplication  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QAbstractButton, QAbstractSpinBox, QApplication, QDialogButtonBox, QFileDialog, QFormLayout, QLabel,
    QLineEdit, QListWidget, QMenu, QMessageBox, QScrollArea, QToolButton, QWidget,
)

from gui.app import make_app  # noqa: E402
from gui.settings import AppSettings  # noqa: E402
from gui.window import MainWindow  # noqa: E402

SCENE = "house-colour"  # the demo scene opened in step 2 (p2p, direct inversion: the quickest edit)
INTERNAL_NAME = re.compile(r"\b[a-z]+_[a-z0-9_]+\b")  # a parameter's name (blend_words) where a label belongs
ENGINE_S = 240  # how long the engine and the demo model may take to load on a busy 2-core CPU
RUN_S = 300  # how long one edit of the demo scene may take
STEPS = ("start", "open-scene", "wheel-over-method", "wheel-zoom", "chip", "run-edit", "layout", "segment",
         "close-during-run", "bad-model")
"""Every step, in the order a new user meets them (each a method of Newcomer; most need the ones before)."""


class Bridge(QObject):
    """Runs a callable on the main (GUI) thread: the driver thread emits, Qt queues the call there."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(lambda job: job(), Qt.ConnectionType.QueuedConnection)


class StepFailed(Exception):
    """A step could not go on (what it waited for did not happen)."""


class Driver:
    """Real X input through xdotool on `window` and its dialogs, and reads of the widgets on the GUI thread."""

    def __init__(self, bridge: Bridge, out: Path, window: MainWindow) -> None:
        self.bridge, self.out, self.window = bridge, out, window
        self.results: list[tuple[str, bool, str]] = []
        self.shots = 0

    # -- the GUI thread -------------------------------------------------------------------------------
    def gui(self, fn: Callable[[], Any], timeout: float = 60) -> Any:
        """`fn()` run on the GUI thread (its exception re-raised here)."""
        answer: queue.Queue = queue.Queue()

        def job() -> None:
            try:
                answer.put((True, fn()))
            except BaseException as error:  # handed to the driver, which reports it as its own
                answer.put((False, error))

        self.bridge.call.emit(job)
        try:
            ok, value = answer.get(timeout=timeout)
        except queue.Empty:
            raise StepFailed(f"the GUI thread did not answer within {timeout:g} s") from None
        if not ok:
            raise value
        return value

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `condition` on the GUI thread until it is truthy (its value) or StepFailed after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.gui(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise StepFailed(f"{what} did not happen within {timeout:g} s")
            time.sleep(0.1)

    def settle(self, seconds: float = 0.5) -> None:
        """Let the window paint what the last input did."""
        time.sleep(seconds)
        self.gui(lambda: None)

    def shot(self, name: str) -> Path:
        """The whole X screen into OUT/NN-name.png."""
        self.shots += 1
        path = self.out / f"{self.shots:02d}-{name}.png"
        self.gui(lambda: QGuiApplication.primaryScreen().grabWindow(0).save(str(path)))
        return path

    # -- X input --------------------------------------------------------------------------------------
    @staticmethod
    def xdo(*args: object) -> None:
        subprocess.run(["xdotool", *map(str, args)], check=True, timeout=30)

    def move(self, at: tuple[int, int]) -> None:
        self.xdo("mousemove", "--sync", at[0], at[1])
        time.sleep(0.15)

    def click(self, at: tuple[int, int], button: int = 1, repeat: int = 1) -> None:
        self.move(at)
        self.xdo("click", "--repeat", repeat, "--delay", 80, button)
        time.sleep(0.2)

    def wheel(self, at: tuple[int, int], notches: int) -> None:
        """Turn the wheel over `at`: positive notches away from the user (up: X button 4), negative down."""
        self.move(at)
        self.xdo("click", "--repeat", abs(notches), "--delay", 120, 4 if notches > 0 else 5)
        time.sleep(0.3)

    def key(self, *keys: str) -> None:
        self.xdo("key", "--delay", 60, *keys)
        time.sleep(0.2)

    def type(self, text: str) -> None:
        self.xdo("type", "--delay", 25, text)
        time.sleep(0.2)

    def focus_window(self, widget: Callable[[], QWidget]) -> None:
        """Give a top-level window the keyboard, as a window manager does when it is clicked (Xvfb has none)."""
        self.xdo("windowfocus", "--sync", self.gui(lambda: int(widget().window().winId())))
        time.sleep(0.2)

    # -- where things are -----------------------------------------------------------------------------
    def centre(self, widget: Callable[[], QWidget]) -> tuple[int, int]:
        """The screen position of a widget's centre."""
        return self.gui(lambda: _point(widget().mapToGlobal(widget().rect().center())))

    def menu(self, *path: str) -> None:
        """Open a menu of the menu bar and choose an entry, by their texts (without the & marks), with the
        pointer: the menu's title, then the entry (entries of sub-menus by their titles)."""
        bar = self.gui(self.window.menuBar)
        action = self.gui(lambda: _find_action(bar.actions(), path[0]))
        self.click(self.gui(lambda: _point(bar.mapToGlobal(bar.actionGeometry(action).center()))))
        for title in path[1:]:
            menu = self.wait(lambda: _popup_with(title), 5, f"the menu entry {title!r}")
            entry = self.gui(lambda: _find_action(menu.actions(), title))
            self.click(self.gui(lambda: _point(menu.mapToGlobal(menu.actionGeometry(entry).center()))))

    def has_menu_entry(self, title: str, entry: str) -> bool:
        def look() -> bool:
            menu = _find_action(self.window.menuBar().actions(), title).menu()
            return any(_plain(a.text()).startswith(entry) for a in menu.actions())

        return bool(self.gui(look))

    def modal(self, timeout: float, what: str) -> QWidget:
        """The modal dialog in front, once there is one."""
        return self.wait(QApplication.activeModalWidget, timeout, what)

    def no_modal(self, timeout: float = 10) -> None:
        self.wait(lambda: QApplication.activeModalWidget() is None, timeout, "the dialog closing")

    def dismiss_dialogs(self) -> None:
        """Close whatever dialog a failed step left open (Escape, as a user would)."""
        for _ in range(3):
            dialog = self.gui(QApplication.activeModalWidget)
            if dialog is None:
                return
            self.focus_window(lambda: dialog)
            self.key("Escape")
            time.sleep(0.5)

    # -- steps ----------------------------------------------------------------------------------------
    def record(self, name: str, passed: bool, seen: str) -> None:
        self.results.append((name, passed, seen))
        print(f"{'PASS' if passed else 'FAIL'} {len(self.results):02d} {name}: {seen}", flush=True)


def _point(at: QPoint | QPointF) -> tuple[int, int]:
    return round(at.x()), round(at.y())


def _plain(text: str) -> str:
    return text.replace("&", "").replace("…", "...").strip()


def _find_action(actions: list, text: str) -> Any:
    for action in actions:
        if _plain(action.text()).startswith(text):
            return action
    raise StepFailed(f"there is no {text!r} in {[_plain(a.text()) for a in actions if a.text()]}")


def _popup_with(title: str) -> QMenu | None:
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QMenu) and widget.isVisible() and any(
                _plain(a.text()).startswith(title) for a in widget.actions()):
            return widget
    return None


def _global_rect(widget: QWidget) -> QRect:
    return QRect(widget.mapToGlobal(QPoint(0, 0)), widget.size())


def _button(dialog: QWidget, *texts: str) -> QAbstractButton | None:
    """A dialog's visible button whose text (without &) is one of `texts`."""
    for button in dialog.findChildren(QAbstractButton):
        if button.isVisible() and _plain(button.text()) in texts:
            return button
    return None


def _visible_texts(root: QWidget) -> list[str]:
    texts = []
    for widget in root.findChildren(QWidget):
        if not widget.isVisible():
            continue
        if isinstance(widget, (QLabel, QAbstractButton)) and widget.text():
            texts.append(_plain(widget.text()))
        elif isinstance(widget, QListWidget):
            texts += [widget.item(i).text() for i in range(widget.count())]
    return texts


def _form_label(root: QWidget, field: QWidget) -> str:
    """The text of the form label beside `field` (or beside the row it sits in), else its class."""
    for form in root.findChildren(QFormLayout):
        for row in range(form.rowCount()):
            label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            item = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            holder = item.widget() if item is not None else None
            inside = holder is field or (holder is not None and holder.isAncestorOf(field)) or (
                item is not None and item.layout() is not None and item.layout().indexOf(field) >= 0)
            if inside and label is not None and isinstance(label.widget(), QLabel):
                return _plain(label.widget().text()).rstrip(" ⟲")
    return type(field).__name__


def _on_screen(widget: QWidget) -> bool:
    """Whether all of `widget` can be seen: shown, and not scrolled out of the scroll areas it sits in."""
    if not widget.isVisible():
        return False
    rect, parent = _global_rect(widget), widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QScrollArea) and not _global_rect(parent.viewport()).contains(rect):
            return False
        parent = parent.parentWidget()
    return QGuiApplication.primaryScreen().geometry().contains(rect)


def _close_enough(a: QColor, b: QColor, tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in ((a.red(), b.red()), (a.green(), b.green()), (a.blue(), b.blue())))


class Newcomer(Driver):
    """The flows of issue 21, in the order a new user meets them."""

    def __init__(self, bridge: Bridge, out: Path, window: MainWindow, work: Path, only: list[str]) -> None:
        super().__init__(bridge, out, window)
        self.work, self.only = work, only
        self.run_xs: list[tuple[str, int]] = []  # where the toolbar's Run button was, and when
        self.widths: dict[str, set[int]] = {"undo": set(), "redo": set()}  # the widths their buttons had

    def steps(self) -> list[Callable[[], None]]:
        """The steps to walk: all of STEPS, or those named in --steps (in STEPS' order)."""
        return [getattr(self, name.replace("-", "_")) for name in STEPS if not self.only or name in self.only]

    def walk(self) -> None:
        for step in self.steps():
            name = step.__name__.replace("_", "-")
            try:
                step()
            except Exception as error:  # the step could not go on: say why, leave the window tidy, go on
                self.record(name, False, f"{type(error).__name__}: {error}")
                traceback.print_exc()
                self.shot(f"{name}-failed")
                self.dismiss_dialogs()
                try:
                    self.stop_run()
                except Exception:
                    traceback.print_exc()

    # -- the toolbar ----------------------------------------------------------------------------------
    def toolbar_button(self, name: str) -> Callable[[], QWidget]:
        def find() -> QWidget:
            action = self.window.actions[name]
            for bar in self.window.findChildren(QWidget):
                if bar.metaObject().className() == "QToolBar" and bar.widgetForAction(action) is not None:
                    return bar.widgetForAction(action)
            raise StepFailed(f"the toolbar has no {name} button")

        return find

    def note_run_x(self, when: str) -> None:
        """Where the Run button is now (and how wide Undo and Redo are)."""
        self.run_xs.append((when, self.gui(lambda: self.toolbar_button("run")().mapToGlobal(QPoint(0, 0)).x())))
        for name, seen in self.widths.items():
            seen.add(self.gui(lambda: self.toolbar_button(name)().width()))

    def toolbar_texts(self) -> list[str]:
        def texts() -> list[str]:
            bar = self.toolbar_button("run")().parentWidget()
            return [_plain(b.text()) for b in bar.findChildren(QToolButton) if b.isVisible() and b.text()]

        return self.gui(texts)

    def status_texts(self) -> list[str]:
        def texts() -> list[str]:
            w = self.window
            found = [label.text() for label in w.statusBar().findChildren(QLabel) if label.isVisible()]
            return found + ([w.message.text.text()] if w.message.isVisible() else [])

        return [t for t in self.gui(texts) if t]

    # -- 1. the empty window ----------------------------------------------------------------------------
    def start(self) -> None:
        w = self.window
        self.wait(lambda: w.engine.is_ready, ENGINE_S, "the engine loading")
        self.wait(lambda: [b for b in getattr(w.welcome, "scene_buttons", []) if b.isVisible()], 30,
                  "the welcome view's demo scenes")
        self.focus_window(lambda: w)
        self.settle(1.0)
        shot = self.shot("start")

        def seen() -> tuple[bool, list[str], list[str]]:
            scenes = [_plain(b.accessibleName()) for b in w.welcome.scene_buttons if b.isVisible()]
            return w.welcome.isVisible(), scenes, _visible_texts(w.welcome)

        visible, scenes, texts = self.gui(seen)
        hint = next((t for t in texts if "open a photo" in t.lower() or "drop" in t.lower()), "")
        self.record("start", visible and bool(scenes) and bool(hint),
                    f"welcome view {'shown' if visible else 'NOT shown'} over the empty canvas; hint: {hint[:70]!r}; "
                    f"{len(scenes)} demo scene(s) offered, e.g. {scenes[0][:50] if scenes else None!r} ({shot.name})")

    # -- 2. a demo scene ----------------------------------------------------------------------------------
    def open_scene(self) -> None:
        from pipeline.demo_scenes import load_scene

        scene = load_scene(SCENE)
        w = self.window
        if self.has_menu_entry("File", "Open demo scene"):
            self.menu("File", "Open demo scene")
            dialog = self.modal(60, "the demo scene dialog")
            listing = self.gui(lambda: dialog.findChild(QListWidget))
            row = self.gui(lambda: next(i for i in range(listing.count())
                                        if scene.title in listing.item(i).text()))
            self.click(self.gui(lambda: _point(listing.viewport().mapToGlobal(
                listing.visualItemRect(listing.item(row)).center()))))
            self.settle()
            self.shot("demo-scene-dialog")
            self.click(self.centre(lambda: _button(dialog, "Open")))
            how = f"File > Open demo scene..., {scene.title!r}, Open"
        else:  # before File > Open demo scene: the scene's photo through File > New project from image
            self.menu("File", "New project from image")
            dialog = self.modal(30, "the file dialog")
            self.wait(lambda: isinstance(dialog, QFileDialog) and dialog.isVisible(), 10, "the file dialog showing")
            self.focus_window(lambda: dialog)
            photo = self.work / scene.photo.name  # a photo of the user's own: its project is made beside it
            shutil.copyfile(scene.photo, photo)
            self.type(str(photo))
            self.key("Return")
            how = "NO File > Open demo scene on this build: the scene's photo typed into File > New project from image"
        self.wait(lambda: w.doc.project_path is not None, 120, "the project opening")
        self.no_modal()
        self.settle(1.0)
        prompts = self.gui(lambda: (w.prompts.source.text(), w.prompts.target.text()))
        filled = prompts == (scene.source, scene.target)
        shot = self.shot("scene-open")
        self.record("open-scene", filled, f"{how}; prompts {'filled' if filled else 'NOT filled'}: "
                    f"{prompts[0]!r} -> {prompts[1]!r} ({shot.name})")
        if not filled:  # go on as a user would: type the prompts
            for which, text in (("source", scene.source), ("target", scene.target)):
                self.click(self.centre(lambda: getattr(w.prompts, which)), repeat=3)
                self.key("ctrl+a")
                self.type(text)
            self.settle(1.0)

    # -- 3. the wheel over the Method panel -------------------------------------------------------------
    def wheel_over_method(self) -> None:
        w = self.window

        def find() -> tuple[QAbstractSpinBox, QScrollArea]:
            area = w.docks["method"].widget()
            view = _global_rect(area.viewport())
            boxes = [box for box in w.method.findChildren(QAbstractSpinBox)
                     if box.isVisible() and box.isEnabled() and view.contains(_global_rect(box))]
            if not boxes:
                raise StepFailed("no spin box shows whole in the Method panel")
            return boxes[0], area

        box, area = self.gui(find)
        before = self.gui(lambda: (box.text(), box.hasFocus(), area.verticalScrollBar().value(),
                                   area.verticalScrollBar().maximum()))
        label = self.gui(lambda: _form_label(w.method, box))
        self.wheel(self.centre(lambda: box), -2)
        self.settle()
        after = self.gui(lambda: (box.text(), box.hasFocus(), area.verticalScrollBar().value()))
        shot = self.shot("wheel-over-method")
        scrolls = before[3] > 0
        passed = after[0] == before[0] and not after[1] and (after[2] > before[2] or not scrolls)
        self.record("wheel-over-method", passed,
                    f"2 wheel notches down over {label!r} (focus: {before[1]}): value {before[0]!r} -> {after[0]!r}; "
                    f"panel scroll {before[2]} -> {after[2]} of {before[3]}"
                    f"{'' if scrolls else ' (the panel had nothing to scroll)'} ({shot.name})")

    # -- 4. wheel zoom on the canvas -------------------------------------------------------------------
    def wheel_zoom(self) -> None:
        canvas = self.window.canvas

        def aim() -> tuple[tuple[int, int], QPointF, int]:
            photo = canvas.mapFromScene(canvas.source_item.sceneBoundingRect()).boundingRect()
            at = QPoint(photo.left() + round(photo.width() * 0.3), photo.top() + round(photo.height() * 0.35))
            return _point(canvas.viewport().mapToGlobal(at)), canvas.mapToScene(at), canvas.zoom_percent()

        at, photo_point, zoom_before = self.gui(aim)
        self.wheel(at, 2)
        self.settle()

        def after() -> tuple[float, int, bool, str]:
            now = canvas.viewport().mapToGlobal(canvas.viewportTransform().map(photo_point))
            drift = math.hypot(now.x() - at[0], now.y() - at[1])
            return drift, canvas.zoom_percent(), canvas.zoom_label.isVisible(), canvas.zoom_label.text()

        drift, zoom, shown, label = self.gui(after)
        shot = self.shot("wheel-zoom")
        passed = drift <= 2.0 and zoom > zoom_before and shown and label == f"{zoom}%"
        self.record("wheel-zoom", passed,
                    f"2 notches up at {at}: zoom {zoom_before}% -> {zoom}%, the photo point under the cursor moved "
                    f"{drift:.2f} px; zoom label {'shown' if shown else 'NOT shown'}: {label!r} ({shot.name})")
        self.menu("View", "Fit to window")
        self.settle()

    # -- 5. a word chip --------------------------------------------------------------------------------
    def chip(self) -> None:
        w = self.window
        self.note_run_x("before the chip click")
        chips = self.gui(lambda: w.prompts.chips["source"])
        role = self.gui(lambda: (w.prompts.role.currentData() or (None,))[0])
        if role is None:
            raise StepFailed("the method has no word parameter for the chips")
        word = "house"
        index = self.gui(lambda: chips.words().index(word))
        centre = self.gui(lambda: _point(chips.viewport().mapToGlobal(chips.visualItemRect(chips.item(index)).center())))
        self.click(centre)
        self.wait(lambda: word in (w.doc.params.get(role) or ()), 10, f"{word!r} going into {role}")
        self.move(self.centre(lambda: w.statusBar()))  # away from the chip: its hover outline would show
        self.settle(0.8)
        self.note_run_x("after the chip click")

        def seen() -> tuple[str, str, str, bool, str, tuple[int, int]]:
            item = chips.item(index)
            label, colour = next((r[1], r[2].name()) for r in w.prompts.roles() if word in r[3])
            rect = chips.visualItemRect(item)
            edge = _point(chips.viewport().mapToGlobal(QPoint(rect.left() + 4, rect.center().y())))
            return (label, colour, item.background().color().name(), _on_screen(w.prompts.legend),
                    w.prompts.legend.text(), edge)

        label, colour, fill, legend_shown, legend, edge = self.gui(seen)
        screen = self.gui(lambda: QGuiApplication.primaryScreen().grabWindow(0).toImage().pixelColor(*edge))
        shot = self.shot("chip")
        painted = _close_enough(screen, QColor(colour))
        passed = fill == colour and painted and legend_shown and label in legend and colour in legend and \
            not INTERNAL_NAME.search(label)
        self.record("chip", passed,
                    f"clicked the chip {word!r}: now in {label!r}, filled {fill} (on screen {screen.name()}); the "
                    f"legend of {label!r} in {colour} is {'on screen' if legend_shown else 'NOT on screen'} "
                    f"({shot.name})")

    # -- 6. Run, and a toolbar that stays put ------------------------------------------------------------
    def run_edit(self) -> None:
        w = self.window
        seen_texts: set[str] = set()
        self.note_run_x("before Run")
        self.click(self.centre(self.toolbar_button("run")))
        self.wait(lambda: w.session.running, 30, "the run starting")
        shot_running, deadline = None, time.monotonic() + RUN_S
        while self.gui(lambda: w.session.running):
            seen_texts.update(self.toolbar_texts() + self.status_texts())
            self.note_run_x("during the run")
            if shot_running is None and self.gui(lambda: w.progress.value() > 5):
                shot_running = self.shot("running")
            time.sleep(0.5)
            if time.monotonic() > deadline:
                raise StepFailed(f"the run took over {RUN_S} s")
        self.settle(1.0)
        seen_texts.update(self.toolbar_texts() + self.status_texts())
        self.note_run_x("after the run")
        done = self.gui(lambda: w.status_stage.text())
        shot = self.shot("run-done")
        for name in ("undo", "redo"):  # their texts change: the toolbar must not move under the pointer
            self.click(self.centre(self.toolbar_button(name)))
            self.settle()
            seen_texts.update(self.toolbar_texts())
            self.note_run_x(f"after clicking {name.capitalize()}")
        xs = sorted({x for _, x in self.run_xs})
        internal = sorted({m for text in seen_texts for m in INTERNAL_NAME.findall(text)})
        moved = [f"{when}: {x}" for when, x in self.run_xs if x != self.run_xs[0][1]]
        passed = len(xs) == 1 and not internal and "done" in done.lower()
        widths = ", ".join(f"{name.capitalize()} {sorted(seen)}" for name, seen in self.widths.items())
        self.record("run-edit", passed,
                    f"{done!r}; Run button at x={xs} over {len(self.run_xs)} looks"
                    f"{' (moved ' + '; '.join(dict.fromkeys(moved)) + ')' if moved else ''}; widths in px: {widths}; "
                    f"internal names in the "
                    f"toolbar/status: {internal or 'none'} ({shot_running.name if shot_running else '-'}, {shot.name})")

    # -- 7. layout at this screen size ---------------------------------------------------------------------
    def layout(self) -> None:
        w = self.window
        size = self.gui(lambda: QGuiApplication.primaryScreen().size())
        squeezed = self.gui(lambda: _squeezed_tools(w))
        self.record("layout-tools", not squeezed, f"at {size.width()}x{size.height()} the Tools rows Size, Hardness, "
                    f"Mask and their labels: {squeezed or 'disjoint'}")
        cut = self.gui(lambda: _cut_chips(w))
        self.record("layout-chips", not cut, f"at {size.width()}x{size.height()} the chip boxes show whole rows: "
                    f"{'chips cut by the box edge: ' + ', '.join(cut) if cut else 'no chip cut by the box edge'}")
        self.focus_window(lambda: w)
        self.move(self.centre(lambda: w.statusBar()))
        self.key("F1")
        dialog = self.modal(10, "the shortcuts dialog")
        self.settle(1.0)
        shot = self.shot(f"shortcuts-{size.width()}x{size.height()}")

        def placed() -> tuple[QRect, QRect, str, QRect | None]:
            screen = QGuiApplication.primaryScreen().availableGeometry()
            box = dialog.findChild(QDialogButtonBox)
            ok = _button(dialog, "OK", "Close") or (box.buttons()[0] if box and box.buttons() else None)
            return (dialog.frameGeometry(), screen, _plain(ok.text()) if ok else "",
                    _global_rect(ok) if ok else None)

        frame, screen, ok_text, ok_rect = self.gui(placed)
        fits = screen.contains(frame)
        reachable = ok_rect is not None and screen.contains(ok_rect)
        if reachable:
            self.click(_point(QPointF(ok_rect.center())))
        closed = False
        try:
            self.no_modal(5)
            closed = True
        except StepFailed:
            self.dismiss_dialogs()
        self.record(f"shortcuts-{size.width()}x{size.height()}", fits and reachable and closed,
                    f"F1: the dialog is {frame.width()}x{frame.height()} at ({frame.x()}, {frame.y()}) on a "
                    f"{screen.width()}x{screen.height()} screen ({'fits' if fits else 'does NOT fit'}); its "
                    f"{ok_text or 'OK'} button {'was clicked and closed it' if closed and reachable else 'is NOT reachable'}"
                    f" ({shot.name})")

    # -- 8. Segment without a SAM checkpoint -------------------------------------------------------------
    def segment(self) -> None:
        w = self.window
        width_before = self.gui(lambda: w.docks["tools"].width())
        self.click(self.centre(self.toolbar_button("tool_segment")))
        canvas = w.canvas
        at = self.gui(lambda: _point(canvas.viewport().mapToGlobal(
            canvas.mapFromScene(canvas.source_item.sceneBoundingRect().center()))))
        self.click(at)
        said = self.wait(lambda: QApplication.activeModalWidget() or (w.message.isVisible() and w.message.text.text())
                         or _segment_note(w), 120, "a word on the missing SAM checkpoint")
        self.settle()
        statuses = [self.gui(w.status_stage.text)]  # as the word comes, and a little later
        dialog_text = ""
        if isinstance(said, QWidget):  # an offer to download the checkpoint: shown, then declined
            self.settle(0.5)
            dialog_text = self.gui(lambda: " ".join(_visible_texts(said)))
            self.shot("segment-offer")
            self.dismiss_dialogs()
        time.sleep(2.0)  # a status that stays "Segmenting..." stays
        self.settle()
        shot = self.shot("segment-no-checkpoint")

        def seen() -> tuple[str, str, int]:
            note = _segment_note(w)
            message = w.message.text.text() if w.message.isVisible() else ""
            return " ".join(t for t in (dialog_text, message, note) if t), w.status_stage.text(), \
                w.docks["tools"].width()

        text, status, width_after = self.gui(seen)
        statuses.append(status)
        squeezed = self.gui(lambda: _squeezed_tools(w))
        clear = bool(re.search(r"checkpoint|segment anything|\bsam\b", text, re.IGNORECASE))
        stuck = any("segmenting" in said.lower() for said in statuses)
        passed = clear and not stuck and width_after <= width_before + 2 and not squeezed
        self.record("segment", passed,
                    f"a click with Segment: {text[:110]!r}; status {' then '.join(map(repr, statuses))}; "
                    f"Tools dock {width_before} -> {width_after} px wide, its rows {squeezed or 'disjoint'} "
                    f"({shot.name})")
        self.click(self.centre(self.toolbar_button("tool_brush")))

    # -- 9. closing the window during a run ----------------------------------------------------------------
    def close_during_run(self) -> None:
        w = self.window
        self.focus_window(lambda: w)
        self.click(self.centre(self.toolbar_button("run")))
        self.key("ctrl+q")  # at once: an edit that reuses its inversion may take only seconds
        asked = self.wait(lambda: QApplication.activeModalWidget() or not w.isVisible(), 10,
                          "a question, or the window closing")
        if not isinstance(asked, QWidget):
            shot = self.shot("closed-during-run")
            self.record("close-during-run", False, f"Ctrl+Q during a run closed the window without a question "
                                                   f"({shot.name})")
            self.window = self.gui(lambda: _new_window(w.settings))  # start again, as the user would
            self.wait(lambda: self.window.engine.is_ready, ENGINE_S, "the engine loading again")
            self.focus_window(lambda: self.window)
            self.menu("File", "Open recent", self.gui(lambda: self.window.settings.recent()[0]))
            self.wait(lambda: self.window.doc.project_path is not None, 120, "the project opening again")
            return
        self.settle(0.8)
        question = self.gui(lambda: " ".join(_visible_texts(asked)))
        shot = self.shot("close-during-run")
        stay = self.gui(lambda: _stay_button(asked))
        if stay is None:
            raise StepFailed(f"the question has no Cancel: {question!r}")
        answer = self.gui(lambda: _plain(stay.text()))
        self.click(self.centre(lambda: stay))
        self.no_modal()
        self.settle()
        stays = self.gui(w.isVisible)
        mentions = bool(re.search(r"\brun", question, re.IGNORECASE))
        self.record("close-during-run", mentions and stays,
                    f"Ctrl+Q during a run asked: {question[:150]!r}; answered {answer!r}: the window "
                    f"{'stays' if stays else 'did NOT stay'} ({shot.name})")
        self.stop_run()

    def stop_run(self) -> None:
        """Cancel a run in progress with the toolbar's Cancel, and wait for it to stop."""
        if self.gui(lambda: self.window.session.running):
            self.click(self.centre(self.toolbar_button("cancel")))
            self.wait(lambda: not self.window.session.running, 120, "the run cancelling")

    # -- 10. a folder that is not a model --------------------------------------------------------------
    def bad_model(self) -> None:
        w = self.window
        folder = self.work / "not-a-model"
        folder.mkdir(exist_ok=True)
        (folder / "notes.txt").write_text("holiday photos, not a model\n")
        self.stop_run()
        if self.gui(w.message.isVisible):  # read what was said before, and close it (its ✕)
            self.click(self.centre(lambda: _button(w.message, "✕")))
        before = self.gui(lambda: (w.settings.get("model"), w.status_model.text()))
        self.menu("File", "Settings")
        dialog = self.modal(10, "the Settings dialog")
        field = self.gui(lambda: dialog.findChild(QLineEdit) if not hasattr(dialog, "model") else dialog.model)
        self.click(self.centre(lambda: field))
        self.key("ctrl+a")
        self.type(str(folder))
        self.settle()
        self.shot("settings-model-folder")
        self.click(self.centre(lambda: _button(dialog, "OK")))
        self.no_modal()
        self.wait(lambda: w.session.model_state not in ("loading",) and w.message.isVisible(), 180,
                  "the model choice settling with a word in the message bar")
        self.settle(1.0)
        after = self.gui(lambda: (w.settings.get("model"), w.status_model.text(),
                                  w.message.text.text() if w.message.isVisible() else ""))
        shot = self.shot("bad-model")
        kept = after[0] == before[0]
        claims = bool(re.search(re.escape(folder.name) + r"\W*\(?loaded", after[1]))
        ran = self.run_again()
        self.record("bad-model", kept and not claims and bool(after[2]) and "done" in ran.lower(),
                    f"Settings > Model = {folder}: the model in use {before[0]!r} -> {after[0]!r}; status "
                    f"{before[1]!r} -> {after[1]!r}; message {after[2][:120]!r}; then Run: {ran!r} ({shot.name})")

    def run_again(self) -> str:
        """Click Run and wait for the run to end; what the status bar says then."""
        w = self.window
        said = self.gui(w.status_stage.text)
        self.click(self.centre(self.toolbar_button("run")))
        self.wait(lambda: w.session.running or w.status_stage.text() != said, 30, "the run starting")
        self.wait(lambda: not w.session.running, RUN_S, "the run ending")
        self.settle(1.0)
        return self.gui(w.status_stage.text)


def _squeezed_tools(window: MainWindow) -> str:
    """What overlaps or is squashed among the Tools panel's first rows (Size, its note, Hardness, Mask and
    their labels), "" when nothing is."""
    tools, rows = window.tools, []
    for field in (tools.size, tools.size_label, tools.hardness, tools.purpose):
        form = next(f for f in tools.findChildren(QFormLayout) if f.indexOf(field) >= 0)
        label = form.labelForField(field)
        name = _plain(label.text()) if isinstance(label, QLabel) and label.text() else "size note"
        rows.append((name, _global_rect(field)))
        if name != "size note":
            rows.append((f"label {name}", _global_rect(label)))
    overlaps = [f"{a} / {b}" for i, (a, ra) in enumerate(rows) for b, rb in rows[i + 1:] if ra.intersects(rb)]
    squashed = [name for name, rect in rows if rect.height() < 12]
    return "; ".join(part for part in (f"overlap: {', '.join(overlaps)}" if overlaps else "",
                                       f"squashed: {', '.join(squashed)}" if squashed else "") if part)


def _cut_chips(window: MainWindow) -> list[str]:
    """The word chips that their box shows only in part (cut by its edge)."""
    cut = []
    for which, chips in window.prompts.chips.items():
        view = chips.viewport().rect()
        for i in range(chips.count()):
            rect = chips.visualItemRect(chips.item(i))
            if rect.intersects(view) and not view.contains(rect):
                cut.append(f"{which} {chips.item(i).text()!r}")
    return cut


def _segment_note(window: MainWindow) -> str:
    """What the Tools panel's note on segmenting says (the panel had one before the message bar took it)."""
    note = getattr(window.tools, "segment_note", None)
    return note.text() if note is not None and note.isVisible() else ""


def _stay_button(question: QWidget) -> QAbstractButton | None:
    """The answer to a question that keeps things as they are: Cancel, or the button in its role."""
    if isinstance(question, QMessageBox):
        for button in question.buttons():
            if question.buttonRole(button) == QMessageBox.ButtonRole.RejectRole:
                return button
    return _button(question, "Cancel")


def _new_window(settings: AppSettings) -> MainWindow:
    window = MainWindow(settings)
    window.setGeometry(QGuiApplication.primaryScreen().availableGeometry())
    window.show()
    return window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the folder the screenshots go into")
    parser.add_argument("--steps", type=lambda text: text.split(","), default=[],
                        help=f"only these steps, comma-separated (of {', '.join(STEPS)}); start and open-scene "
                             "are what the others stand on")
    args = parser.parse_args()
    if unknown := set(args.steps) - set(STEPS):
        parser.error(f"no step {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)

    escaped: list[str] = []

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        escaped.append("".join(traceback.format_exception(kind, value, tb)))
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = hook
    threading.excepthook = lambda a: hook(a.exc_type, a.exc_value, a.exc_traceback)

    app = make_app()
    app.setQuitOnLastWindowClosed(False)  # a window closed by a step is replaced, not the end of the run
    work = Path(tempfile.mkdtemp(prefix="retake-newcomer-"))
    settings = AppSettings(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    window = _new_window(settings)
    driver = Newcomer(Bridge(), args.out, window, work, args.steps)

    def drive() -> None:
        try:
            driver.walk()
        except BaseException:
            traceback.print_exc()
            driver.record("driver", False, "the driver stopped")
        finally:  # leave as a test leaves: the run stopped, nothing to save, the window closed
            try:
                if driver.gui(lambda: driver.window.session.running):
                    driver.gui(driver.window.session.cancel)
                    driver.wait(lambda: not driver.window.session.running, 120, "the last run stopping")
            except Exception:
                traceback.print_exc()

            def finish() -> None:
                if driver.window.isVisible():
                    driver.window.doc.undo.setClean()
                    driver.window.close()
                app.exit(0)

            driver.bridge.call.emit(finish)

    threading.Thread(target=drive, name="newcomer", daemon=True).start()
    app.exec()
    failed = [name for name, passed, _ in driver.results if not passed]
    print(f"{len(driver.results) - len(failed)} of {len(driver.results)} steps passed"
          f"{'; failed: ' + ', '.join(failed) if failed else ''}; {len(escaped)} exception(s) escaped; "
          f"screenshots in {args.out}", flush=True)
    for text in escaped:
        print(f"ESCAPED:\n{text}", file=sys.stderr)
    return 1 if failed or escaped else 0


if __name__ == "__main__":
    raise SystemExit(main())
