"""A failed Save is never silent and nothing escapes to the event loop: with an excepthook that records
every exception a slot lets out, a user opens, restores, saves and quits (through the menu actions, from
the event loop, as a person does), also when a file is hostile, the disk is full or the code has a bug.
Every failure is a message in the window saying what was kept; Quit with "Save" that fails keeps the
window open."""

from __future__ import annotations

import struct
import sys
import zlib

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from gui import project_io, restore
from pipeline.project import Project, folder
from tests.gui.test_outside_values import result_png
from tests.gui.test_window import open_photo

DISK_FULL = OSError(28, "No space left on device")


@pytest.fixture
def escaped(monkeypatch):
    """Exceptions that reach sys.excepthook, where PySide sends those a slot raises."""
    caught: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: caught.append(f"{kind.__name__}: {value}"))
    return caught


def as_a_user(qtbot, escaped, action, until=lambda: True) -> None:
    """Run `action` from the event loop (a menu item, a drop, a timer), turn it until `until()`, and
    check that nothing escaped meanwhile."""
    QTimer.singleShot(0, action)
    qtbot.wait(20)
    qtbot.waitUntil(lambda: bool(until() or escaped), timeout=10_000)
    assert escaped == []


def bomb(path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    return path


def full_disk(monkeypatch) -> None:
    real = folder.write_atomically

    def write(path, data):
        if str(path).endswith("project.json"):
            raise DISK_FULL
        real(path, data)

    monkeypatch.setattr(folder, "write_atomically", write)


def test_open_restore_save_and_quit_let_nothing_escape(qtbot, window, photo, tmp_path, escaped, monkeypatch):
    message = window.message
    as_a_user(qtbot, escaped, lambda: window.open_path(photo), lambda: window.doc.project_path is not None)
    root = window.doc.project_path
    hostile = [bomb(tmp_path / "bomb.png"),
               result_png(tmp_path / "digits.png", '{"method": "p2p", "params": {"steps": ' + "9" * 5000 + "}}"),
               result_png(tmp_path / "deep.png", '{"params": ' + "[" * 100000 + "]" * 100000 + "}"),
               result_png(tmp_path / "nan.png", '{"method": "p2p", "target_prompt": "t", "params": {"guidance": NaN}}'),
               result_png(tmp_path / "evil.png", '{"method": "evil", "target_prompt": "t", "params": {}}'),
               tmp_path / "missing.png", tmp_path]
    for path in hostile:
        message.hide()
        window.doc.undo.setClean()
        as_a_user(qtbot, escaped, lambda p=path: window.open_path(p), message.isVisible)
        assert escaped == [], path
    window.doc.undo.setClean()
    as_a_user(qtbot, escaped, lambda: window.open_path(root), lambda: window.doc.project_path == root)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(hostile[3]), ""))
    message.hide()
    as_a_user(qtbot, escaped, window.actions["load_png"].trigger, message.isVisible)  # File › Load settings from a PNG
    assert window.doc.target_prompt == "t" and "guidance" in message.text.text()
    monkeypatch.setattr(restore, "from_settings", lambda data: [][0])  # a bug in a slot's own code
    message.hide()
    as_a_user(qtbot, escaped, window.actions["load_png"].trigger, message.isVisible)
    assert message.text.text().startswith("Unexpected internal error while load settings from a result png (")
    assert window.doc.target_prompt == "t" and not window.doc.undo.canRedo()

    window.doc.set_prompt("source", "a house")
    full_disk(monkeypatch)
    message.hide()
    as_a_user(qtbot, escaped, window.actions["save"].trigger, message.isVisible)  # Ctrl+S on a full disk
    assert "No space left on device" in message.text.text() and "kept in this window, unsaved" in message.text.text()
    assert window.isWindowModified() and Project.open(root).settings.source_prompt == ""

    message.hide()
    window.autosave_now()
    qtbot.waitUntil(message.isVisible, timeout=10_000)  # autosave fails loudly too
    assert message.text.text().startswith("Autosave failed. Cannot save the project at ")
    assert "No space left on device" in message.text.text() and window.isWindowModified()

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Save)
    message.hide()
    as_a_user(qtbot, escaped, window.actions["quit"].trigger, message.isVisible)  # Quit › Save, which fails
    assert window.isVisible() and window.isWindowModified() and "No space left" in message.text.text()

    monkeypatch.undo()
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: escaped.append(f"{kind.__name__}: {value}"))
    monkeypatch.setattr(project_io, "save_document", lambda *a: 1 / 0)  # a bug in the saving code
    message.hide()
    as_a_user(qtbot, escaped, window.actions["save"].trigger, message.isVisible)
    assert message.text.text().startswith("Unexpected internal error while saving house.retake (ZeroDivisionError")
    assert "Traceback" in message.details and window.isWindowModified()

    monkeypatch.undo()
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: escaped.append(f"{kind.__name__}: {value}"))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Save)
    as_a_user(qtbot, escaped, window.actions["quit"].trigger, lambda: not window.isVisible())  # now it saves and closes
    assert Project.open(root).settings.source_prompt == "a house"
    assert escaped == []


def test_a_failed_open_keeps_the_document_it_showed(qtbot, window, photo, tmp_path, escaped):
    open_photo(qtbot, window, photo)
    window.doc.set_prompt("source", "unsaved work")
    window.doc.undo.setClean()
    damaged = tmp_path / "damaged.retake"
    damaged.mkdir()
    (damaged / "project.json").write_text("{not json")
    as_a_user(qtbot, escaped, lambda: window.open_path(damaged), window.message.isVisible)
    assert "damaged.retake" in window.message.text.text() and "shows what it showed before" in window.message.text.text()
    assert window.doc.source_prompt == "unsaved work" and window.doc.project_path == photo.with_name("house.retake")
    assert escaped == []
