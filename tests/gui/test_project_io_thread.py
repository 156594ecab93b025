"""The UI thread does no project I/O: opening, saving, autosaving, the refresh after a run, freeing disk
space and reading a result's picture all run on the session's project-I/O thread, the window says what
is in flight, and the actions that would conflict wait until it is done."""

from __future__ import annotations

import threading

import pytest
import torch
from PySide6.QtCore import QThread, QTimer

from gui import project_io
from pipeline.events import Done
from pipeline.project import Project, store
from tests.gui.test_window import open_photo, run_and_wait, type_prompts

IO_THREAD = "retake-project-io"
ENGINE_THREAD = "retake-engine"


@pytest.fixture
def project_threads(monkeypatch):
    """The thread (its QThread name; "UI" for the main thread) of every Project open, save, prune and
    result read, in order."""
    seen: list[tuple[str, str]] = []

    def thread() -> str:
        return "UI" if threading.current_thread() is threading.main_thread() else QThread.currentThread().objectName()

    def watch(owner, name):
        real = getattr(owner, name)

        def watched(*args, **kwargs):
            seen.append((name, thread()))
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, watched)

    monkeypatch.setattr(store.Project, "open", classmethod(
        lambda cls, *a, real=store.Project.open.__func__, **k: seen.append(("open", thread())) or real(cls, *a, **k)))
    for name in ("save_state", "prune", "prunable"):
        watch(store.Project, name)
    watch(project_io, "read_result")
    return seen


def test_opening_saving_running_and_pruning_touch_the_project_only_off_the_ui_thread(
        qtbot, window, photo, fake_engine, project_threads):
    open_photo(qtbot, window, photo)
    window.doc.set_prompt("source", "a house")
    assert window.save()
    window.doc.set_prompt("source", "a house in a meadow")
    window.autosave_now()
    qtbot.waitUntil(lambda: not window.isWindowModified(), timeout=10_000)
    type_prompts(qtbot, window)
    assert isinstance(run_and_wait(qtbot, window), Done)
    assert isinstance(run_and_wait(qtbot, window), Done)
    window.history.list.setCurrentRow(0)  # the older result's picture is read for the canvas
    qtbot.waitUntil(lambda: window.session.result_image is not None, timeout=10_000)
    Project.open(window.doc.project_path).save_inversion(
        "spare", {"t": torch.zeros(8)}, method="p2p", model_identity="sha256:x", source_prompt="a house",
        params={}, size=(64, 64), steps=5)
    project_threads.clear()  # what this test itself did above, on its own thread
    window._ask_free_space = lambda *sizes: True
    assert window.free_disk_space()
    window.history.list.setCurrentRow(0)
    qtbot.waitUntil(lambda: window.session.result_image is not None, timeout=10_000)
    assert {name for name, _ in project_threads} >= {"open", "prunable", "prune", "read_result"}
    assert {thread for _, thread in project_threads} == {IO_THREAD}


def test_every_project_call_of_a_whole_session_is_on_a_worker_thread(qtbot, window, photo, project_threads):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    window.actions["mask_fill"].trigger()
    assert window.save() and isinstance(run_and_wait(qtbot, window), Done)
    window.doc.set_prompt("target", "a tower in a meadow")
    window.autosave_now()
    qtbot.waitUntil(lambda: not window.isWindowModified(), timeout=10_000)
    threads = {thread for _, thread in project_threads}
    assert threads <= {IO_THREAD, ENGINE_THREAD} and IO_THREAD in threads, project_threads
    assert {name for name, _ in project_threads} >= {"open", "save_state", "read_result"}


def test_while_a_save_is_in_flight_the_window_says_so_and_refuses_what_conflicts(qtbot, window, photo, monkeypatch):
    open_photo(qtbot, window, photo)
    release, entered = threading.Event(), threading.Event()
    real = project_io.save_document

    def slow(path, state):
        entered.set()
        assert release.wait(20)
        real(path, state)

    monkeypatch.setattr(project_io, "save_document", slow)
    window.doc.set_prompt("source", "a house")
    window.autosave_now()  # in the background
    qtbot.waitUntil(entered.is_set, timeout=10_000)
    assert window.status_stage.text() == "Saving house.retake…" and window.progress.isVisible()
    for name in ("new", "open", "save_as", "load_png", "paste", "free_space", "run"):
        assert not window.actions[name].isEnabled(), name
    assert window.actions["save"].isEnabled() and window.actions["undo"].isEnabled()  # Save waits its turn
    assert not window.open_path(photo) and "try again when it is done" in window.status_stage.text()
    ticks = []
    timer = QTimer(interval=5)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    qtbot.wait(100)  # the event loop turns meanwhile
    assert len(ticks) >= 5 and window.isWindowModified()
    release.set()
    qtbot.waitUntil(lambda: not window.isWindowModified(), timeout=10_000)
    assert all(window.actions[name].isEnabled() for name in ("new", "open", "free_space", "run"))
    assert not window.progress.isVisible() and window.status_stage.text() == ""
    assert Project.open(window.doc.project_path).settings.source_prompt == "a house"


def test_a_change_made_while_saving_stays_unsaved(qtbot, window, photo, monkeypatch):
    open_photo(qtbot, window, photo)
    release = threading.Event()
    real = project_io.save_document
    monkeypatch.setattr(project_io, "save_document", lambda path, state: release.wait(20) and real(path, state))
    window.doc.set_prompt("source", "saved")
    window.autosave_now()
    window.doc.set_prompt("source", "saved, and typed on meanwhile")  # merged into the same undo step
    release.set()
    window.session.io.wait_idle()
    assert window.isWindowModified()  # the save wrote the state it was given, not the newer one
    assert Project.open(window.doc.project_path).settings.source_prompt == "saved"
    window.actions["save"].trigger()
    assert not window.isWindowModified()
    assert Project.open(window.doc.project_path).settings.source_prompt == "saved, and typed on meanwhile"
