"""Retake's installer logic, written once for the Linux, Windows and macOS installers.

Each installer is a thin native shell (a makeself `.run` script, an Inno Setup script, a macOS `.app`
launcher) that finds or provides a Python 3.11+ and runs `python -m retake_install install ...` from
its payload (the Retake wheel, a uv binary, `pyproject.toml` + `uv.lock`, the desktop entry and
icon). Everything else happens here, in the standard library only, so it runs before any runtime
exists and its tests need no torch:

* `backend`: which torch build this machine gets (NVIDIA driver and GPU generation against the
  locked CUDA build's minimums, AMD, Apple, none), plainly saying why;
* `system_libs`: the system libraries Qt's xcb platform plugin needs (derived from the shipped Qt
  by reading its ELF dependencies) and the apt / dnf / pacman command that installs the missing ones;
  the app's start-up check uses the same module;
* `layout`: where an install puts things (prefix, versions, launchers, menu entry) and where the
  user's data lives (which installs never touch);
* `runtime`: the virtual environment, made by uv from the lock alone and checked against the
  backend asked for;
* `install`: a new version is built beside the installed one, self-tested, then switched in with
  one rename; an interrupted or failed install leaves the previous state exactly as it was;
* `uninstall`: removes what the manifest says an install added, and user data only with `--purge`.

See packaging/README.md for the installers built on this and what each one leaves untested.
"""
