"""Fixtures for the window: a temporary settings file, a copy of the demo photo, and a window
driven against a FakeEngine and a stub segmenter (offscreen: QT_QPA_PLATFORM=offscreen)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings  # noqa: E402

from gui.settings import AppSettings  # noqa: E402
from tests.gui.fakes import FakeEngine, StubSegmenter  # noqa: E402

DEMO_PHOTO = Path(__file__).resolve().parents[2] / "resources" / "demo" / "house.png"
SOURCE = "a house in a meadow under a blue sky"
TARGET = "a castle in a meadow under a blue sky"


@pytest.fixture
def settings(tmp_path: Path) -> AppSettings:
    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    return AppSettings(store)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    target = tmp_path / "photos" / "house.png"
    target.parent.mkdir()
    shutil.copy(DEMO_PHOTO, target)
    return target


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def stub_segmenter() -> StubSegmenter:
    return StubSegmenter()


def make_window(qtbot, settings: AppSettings, engine_factory, segmenter_factory=None):
    from gui.window import MainWindow

    # Not qtbot.addWidget: pytest-qt would close it before the test's own teardown marks it saved.
    window = MainWindow(settings, engine_factory=engine_factory, segmenter_factory=segmenter_factory)
    window.show()
    qtbot.waitUntil(lambda: window.engine.is_ready, timeout=120_000)
    return window


@pytest.fixture
def window(qtbot, settings, fake_engine, stub_segmenter):
    window = make_window(qtbot, settings, lambda: fake_engine, lambda: stub_segmenter)
    yield window
    window.doc.undo.setClean()
    window.close()
