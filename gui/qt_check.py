"""Before Qt is imported: can it start here? If not, one message naming the missing system libraries
and the command that installs them.

Qt's own error when its xcb platform plugin fails to load names the wrong library (libxcb-cursor0,
even where libxcb-icccm4 and libxcb-keysyms1 are the ones missing) and then aborts the process, so
the check runs first, with the installer's list of what Qt needs (retake_install.system_libs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from retake_install import system_libs


def qt_problem(environ: Mapping[str, str] = os.environ, system: str = sys.platform,
               loads: Callable[[str], bool] = system_libs.can_load) -> str | None:
    """Why Qt cannot start the platform it will choose here, or None. Linux only: elsewhere Qt ships
    what it needs."""
    if not system.startswith("linux"):
        return None
    platform = environ.get("QT_QPA_PLATFORM", "")
    if not platform and environ.get("WAYLAND_DISPLAY"):  # Qt prefers its wayland plugin there, not xcb
        platform = "wayland"
    if missing := system_libs.missing(platform, loads):
        return system_libs.explain(missing, system_libs.distro_family())
    return None
