"""Qt's system libraries (retake_install.system_libs): the lists are read off the shipped Qt, the missing
ones are named with the command that installs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from retake_install import system_libs
from retake_install.system_libs import GUI_LIBRARIES, XCB_LIBRARIES, distro_family, explain, missing, required

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\n'
ROCKY = 'ID="rocky"\nID_LIKE="rhel centos fedora"\n'
ARCH = 'NAME="Arch Linux"\nID=arch\n'
MANJARO = 'ID=manjaro\nID_LIKE=arch\n'


def test_the_lists_are_what_the_installed_qt_needs() -> None:
    """Read again from PySide6's ELF files: a Qt upgrade that needs another library fails here."""
    pyside = pytest.importorskip("PySide6")
    gui, window = system_libs.derive(Path(pyside.__file__).parent)
    assert (tuple(gui), tuple(window)) == (GUI_LIBRARIES, XCB_LIBRARIES)
    assert "libxcb-icccm.so.4" in window and "libxcb-keysyms.so.1" in window  # what a fresh Debian lacked


def test_every_library_has_a_package_on_each_family() -> None:
    for name in GUI_LIBRARIES + XCB_LIBRARIES:
        packages = system_libs.PACKAGES[name]
        assert packages.apt and packages.dnf and packages.pacman, name


def test_missing_asks_the_loader_for_each_library_the_platform_needs() -> None:
    absent = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    assert missing("xcb", lambda name: name not in absent) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    assert missing("offscreen", lambda name: name not in absent) == []  # offscreen needs no xcb
    assert set(required("")) == set(required("xcb")) > set(required("offscreen"))
    assert missing("xcb", lambda name: True) == []


def test_the_real_loader_finds_the_c_library_and_not_a_made_up_one() -> None:
    assert system_libs.can_load("libc.so.6") and not system_libs.can_load("libretake-no-such-library.so.9")


@pytest.mark.parametrize("text, family", [(DEBIAN, "apt"), (UBUNTU, "apt"), (FEDORA, "dnf"), (ROCKY, "dnf"),
                                          (ARCH, "pacman"), (MANJARO, "pacman"), ('ID=gentoo\n', None), ("", None)])
def test_the_distribution_family_comes_from_os_release(text: str, family: str | None) -> None:
    assert distro_family(text) == family


def test_the_message_names_the_libraries_and_the_one_command() -> None:
    names = ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    message = explain(names, "apt")
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in message
    assert message.splitlines()[-1].strip() == "sudo apt-get install libxcb-icccm4 libxcb-keysyms1"
    assert explain(names, "dnf").splitlines()[-1].strip() == "sudo dnf install xcb-util-wm xcb-util-keysyms"
    assert "pacman -S --needed xcb-util-wm xcb-util-keysyms" in explain(names, "pacman")
    unknown = explain(names, None)  # every family's command, each labelled
    assert all(command in unknown for command in ("apt-get install", "dnf install", "pacman -S"))


def test_packages_are_named_once_even_when_they_provide_several_libraries() -> None:
    line = explain(["libglib-2.0.so.0", "libgthread-2.0.so.0", "libxcb-shm.so.0", "libxcb-sync.so.1"], "dnf")
    assert line.splitlines()[-1].strip() == "sudo dnf install glib2 libxcb"
