"""The system libraries Qt needs on Linux, and the one command that installs the missing ones.

PySide6's wheel carries Qt but not the X11/OpenGL/font libraries Qt links against; on a fresh Debian
desktop Qt's xcb platform plugin fails for want of libxcb-icccm4 and libxcb-keysyms1 while Qt's own
message names libxcb-cursor0. The lists below are not guessed: `derive` reads the ELF dependencies
(DT_NEEDED) of the Qt files Retake loads, follows those inside the wheel and keeps those outside it;
a test derives them again from the installed PySide6 and fails when a Qt upgrade changes them
(`python -m retake_install derive-libs` prints the new lists). Which package provides each library
on Debian/Ubuntu, Fedora and Arch is the one hand-written table here (PACKAGES).

Presence is asked of the dynamic loader itself (dlopen), so a library that is installed but cannot
load (its own dependency missing, wrong architecture) counts as missing, as it would for Qt. The
installer runs `missing()` before anything else; the app (main.py) runs it before importing Qt.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

GUI_LIBRARIES: tuple[str, ...] = (
    "libEGL.so.1", "libGL.so.1", "libX11.so.6", "libdbus-1.so.3", "libfontconfig.so.1", "libfreetype.so.6",
    "libglib-2.0.so.0", "libgthread-2.0.so.0", "libxkbcommon.so.0", "libz.so.1", "libzstd.so.1",
)
"""What importing QtCore, QtGui and QtWidgets needs (every platform, offscreen included)."""

XCB_LIBRARIES: tuple[str, ...] = (
    "libX11-xcb.so.1", "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-image.so.0", "libxcb-keysyms.so.1",
    "libxcb-randr.so.0", "libxcb-render-util.so.0", "libxcb-render.so.0", "libxcb-shape.so.0", "libxcb-shm.so.0",
    "libxcb-sync.so.1", "libxcb-util.so.1", "libxcb-xfixes.so.0", "libxcb-xkb.so.1", "libxcb.so.1",
    "libxkbcommon-x11.so.0",
)
"""What the xcb platform plugin (a window on X11 or XWayland) needs beyond GUI_LIBRARIES."""

ALWAYS_PRESENT = frozenset({
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2",
    "libstdc++.so.6", "libgcc_s.so.1",
})
"""The C/C++ runtime every Linux that runs Python has; never reported."""

QT_MODULES = ("QtCore", "QtGui", "QtWidgets")
XCB_PLUGIN = Path("Qt") / "plugins" / "platforms" / "libqxcb.so"


@dataclass(frozen=True)
class Packages:
    """The package that provides one library on each family of distributions."""

    apt: str
    dnf: str
    pacman: str


PACKAGES: dict[str, Packages] = {
    "libEGL.so.1": Packages("libegl1", "libglvnd-egl", "libglvnd"),
    "libGL.so.1": Packages("libgl1", "libglvnd-glx", "libglvnd"),
    "libX11.so.6": Packages("libx11-6", "libX11", "libx11"),
    "libX11-xcb.so.1": Packages("libx11-xcb1", "libX11-xcb", "libx11"),
    "libdbus-1.so.3": Packages("libdbus-1-3", "dbus-libs", "dbus"),
    "libfontconfig.so.1": Packages("libfontconfig1", "fontconfig", "fontconfig"),
    "libfreetype.so.6": Packages("libfreetype6", "freetype", "freetype2"),
    "libglib-2.0.so.0": Packages("libglib2.0-0", "glib2", "glib2"),
    "libgthread-2.0.so.0": Packages("libglib2.0-0", "glib2", "glib2"),
    "libxkbcommon.so.0": Packages("libxkbcommon0", "libxkbcommon", "libxkbcommon"),
    "libxkbcommon-x11.so.0": Packages("libxkbcommon-x11-0", "libxkbcommon-x11", "libxkbcommon-x11"),
    "libz.so.1": Packages("zlib1g", "zlib", "zlib"),
    "libzstd.so.1": Packages("libzstd1", "libzstd", "zstd"),
    "libxcb.so.1": Packages("libxcb1", "libxcb", "libxcb"),
    "libxcb-cursor.so.0": Packages("libxcb-cursor0", "xcb-util-cursor", "xcb-util-cursor"),
    "libxcb-icccm.so.4": Packages("libxcb-icccm4", "xcb-util-wm", "xcb-util-wm"),
    "libxcb-image.so.0": Packages("libxcb-image0", "xcb-util-image", "xcb-util-image"),
    "libxcb-keysyms.so.1": Packages("libxcb-keysyms1", "xcb-util-keysyms", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": Packages("libxcb-render-util0", "xcb-util-renderutil", "xcb-util-renderutil"),
    "libxcb-util.so.1": Packages("libxcb-util1", "xcb-util", "xcb-util"),
    **{f"libxcb-{name}.so.{major}": Packages(f"libxcb-{name}{major}", "libxcb", "libxcb")
       for name, major in (("randr", 0), ("render", 0), ("shape", 0), ("shm", 0), ("sync", 1), ("xfixes", 0),
                           ("xkb", 1))},
}

MANAGERS = (  # (field of Packages, distribution families in /etc/os-release, the install command)
    ("apt", ("debian", "ubuntu"), "sudo apt-get install"),
    ("dnf", ("fedora", "rhel", "centos"), "sudo dnf install"),
    ("pacman", ("arch",), "sudo pacman -S --needed"),
)


def required(platform: str) -> tuple[str, ...]:
    """The libraries Qt needs for `platform` (Qt's QT_QPA_PLATFORM: xcb, offscreen, wayland...)."""
    return GUI_LIBRARIES + (XCB_LIBRARIES if platform.split(":")[0] in ("", "xcb") else ())


def can_load(soname: str) -> bool:
    """Whether the dynamic loader finds and loads `soname` (and everything it needs)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing(platform: str = "xcb", loads: Callable[[str], bool] = can_load) -> list[str]:
    """The libraries of `required(platform)` that do not load here, in a stable order."""
    return [name for name in required(platform) if not loads(name)]


def distro_family(os_release: str | None = None) -> str | None:
    """apt, dnf or pacman, from /etc/os-release's ID and ID_LIKE; None when unknown."""
    if os_release is None:
        try:
            os_release = Path("/etc/os-release").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    ids: list[str] = []
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids += value.strip().strip('"').lower().split()
    for manager, families, _command in MANAGERS:
        if any(i in families for i in ids):
            return manager
    return None


def install_commands(names: Iterable[str], family: str | None) -> list[str]:
    """The command that installs `names` on this distribution family, or one per family when unknown."""
    names = list(names)
    lines = []
    for manager, families, command in MANAGERS:
        if family not in (None, manager):
            continue
        packages = list(dict.fromkeys(getattr(PACKAGES[name], manager) for name in names))
        label = "" if family else f"  # {', '.join(families)}"
        lines.append(f"{command} {' '.join(packages)}{label}")
    return lines


def explain(names: list[str], family: str | None, what: str = "Retake's window cannot open") -> str:
    """One message: what cannot work, which libraries are missing, the command that installs them."""
    commands = "\n".join(f"  {line}" for line in install_commands(names, family))
    return (f"{what}: this system lacks {', '.join(names)}, which Qt needs.\n"
            f"Install {'it' if len(names) == 1 else 'them'} with:\n{commands}")


# -- derivation from the shipped Qt (build time and the test that keeps the lists true) ---------------
def elf_needed(path: Path) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF file (the libraries it links against)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path} is not a 64-bit little-endian ELF file")
    (section_offset,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    needed = []
    for _name, kind, _flags, _addr, offset, size, link, *_ in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strings = sections[link][4]
        for entry in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, entry)
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                start = strings + value
                needed.append(data[start:data.index(b"\0", start)].decode())
    return needed


def derive(pyside_dir: Path) -> tuple[list[str], list[str]]:
    """(GUI libraries, xcb-only libraries) that the Qt in `pyside_dir` (site-packages/PySide6) needs
    from the system: the dependencies of QT_MODULES and of the xcb plugin, followed through the files
    the wheels ship (PySide6, its Qt/lib, shiboken6) and kept where they leave them."""
    shipped: dict[str, Path] = {}
    for folder in (pyside_dir, pyside_dir / "Qt" / "lib", pyside_dir.parent / "shiboken6"):
        for file in sorted(folder.glob("*.so*")) if folder.is_dir() else ():
            shipped.setdefault(file.name, file)

    def outside(roots: list[Path]) -> set[str]:
        seen: set[Path] = set()
        found: set[str] = set()
        todo = list(roots)
        while todo:
            file = todo.pop()
            if file in seen:
                continue
            seen.add(file)
            for name in elf_needed(file):
                if name in shipped:
                    todo.append(shipped[name])
                elif name not in ALWAYS_PRESENT:
                    found.add(name)
        return found

    gui = outside([pyside_dir / f"{module}.abi3.so" for module in QT_MODULES])
    window = outside([pyside_dir / XCB_PLUGIN]) - gui
    return sorted(gui), sorted(window)
