"""The start-up check before Qt (gui.qt_check, main.py): one message naming the missing libraries and the
command that installs them, instead of Qt's abort."""

from __future__ import annotations

import sys

import pytest

import main
from gui.qt_check import qt_problem

ABSENT = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}


def loads(name: str) -> bool:
    return name not in ABSENT


def test_missing_xcb_libraries_are_named_with_the_command() -> None:
    problem = qt_problem({"DISPLAY": ":0"}, "linux", loads)
    assert problem is not None and "libxcb-icccm.so.4, libxcb-keysyms.so.1" in problem
    assert "install" in problem.splitlines()[-1] and "xcb" in problem.splitlines()[-1]


@pytest.mark.parametrize("environ, system", [
    ({"QT_QPA_PLATFORM": "offscreen"}, "linux"),  # offscreen needs no xcb
    ({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, "linux"),  # Qt takes its wayland plugin there
    ({"DISPLAY": ":0"}, "win32"),
])
def test_no_problem_where_the_platform_needs_none_of_them(environ, system) -> None:
    assert qt_problem(environ, system, loads) is None


def test_main_says_so_and_exits_before_importing_qt(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["retake"])
    monkeypatch.setattr("gui.qt_check.system_libs.can_load", loads)
    monkeypatch.setattr("gui.qt_check.qt_problem.__defaults__",
                        ({"DISPLAY": ":0"}, "linux", loads))
    monkeypatch.setitem(sys.modules, "gui.app", None)  # importing the window now would fail the test
    assert main.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("retake: Retake's window cannot open: this system lacks libxcb-icccm.so.4")
