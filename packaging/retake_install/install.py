"""Install or upgrade Retake in a prefix, all or nothing.

A new version is built in its own folder under versions/ while the installed one stays in use; it
must import the torch build its backend promises and pass `retake self-test` before anything the
user sees changes. Then the launchers, menu entry, icon and links are written and `current` is
replaced in one rename: the moment the new version is in use. Until that rename every change is
recorded in a Transaction and undone on any failure, Ctrl-C or SIGTERM, so an interrupted or
failed install leaves the prefix as it found it (a killed one leaves at most a version folder that
`current` does not name, which the next install or uninstall removes). The previous version is
deleted only after the switch. User data (layout.py) lives outside the prefix and is never touched.

Krita AI Diffusion's upgrade moves the old install aside and moves it back when the new one fails;
here the old one is never moved, so there is nothing to move back.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from retake_install import runtime
from retake_install.layout import Layout
from retake_install.runtime import InstallError, Payload, Runner

Say = Callable[[str], None]


class Interrupted(Exception):
    """SIGTERM or SIGHUP during an install (Ctrl-C is KeyboardInterrupt)."""


@dataclass
class Transaction:
    """Files and folders this run created or replaced, undone in reverse unless committed."""

    created: list[Path] = field(default_factory=list)
    replaced: list[tuple[Path, bytes | str]] = field(default_factory=list)  # (path, old bytes or link target)

    def make_dir(self, path: Path) -> Path:
        """Create `path` (and missing parents), recording each folder created."""
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            self.created.append(folder)
        return path

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        """Write `path` atomically (a temporary file renamed over it), remembering what was there."""
        self.make_dir(path.parent)
        self._remember(path)
        temporary = path.with_name(f".{path.name}.new")
        temporary.write_bytes(data)
        temporary.chmod(mode)
        os.replace(temporary, path)

    def link(self, path: Path, target: Path) -> None:
        """A symbolic link `path` -> `target`, replacing an old link of ours (never a user's file)."""
        if path.exists() and not path.is_symlink():
            raise InstallError(f"{path} exists and is not a link Retake made; move it away and install again")
        self.make_dir(path.parent)
        self._remember(path)
        temporary = path.with_name(f".{path.name}.new")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target)
        os.replace(temporary, path)

    def _remember(self, path: Path) -> None:
        if path.is_symlink():
            self.replaced.append((path, os.readlink(path)))
        elif path.exists():
            self.replaced.append((path, path.read_bytes()))
        else:
            self.created.append(path)

    def rollback(self) -> None:
        for path, old in reversed(self.replaced):
            path.unlink(missing_ok=True)
            if isinstance(old, bytes):
                path.write_bytes(old)
            else:
                path.symlink_to(old)
        for path in reversed(self.created):
            remove(path)
        self.created.clear()
        self.replaced.clear()


def remove(path: Path) -> None:
    """Remove a file, a link or a whole folder; nothing if it is gone."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Interrupted in the main thread (so the transaction is undone), as
    Ctrl-C raises KeyboardInterrupt; the previous handlers come back afterwards."""
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]

    def handler(number: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(number).name)

    previous = {name: signal.signal(getattr(signal, name), handler) for name in names}
    try:
        yield
    finally:
        for name, old in previous.items():
            signal.signal(getattr(signal, name), old)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One installer at a time per prefix (an advisory lock; released when the process ends)."""
    layout.prefix.mkdir(parents=True, exist_ok=True)
    handle = open(layout.lock, "a+")  # noqa: SIM115 - held for the whole install
    try:
        try:
            import fcntl
        except ImportError:  # Windows: Inno Setup's own mutex keeps a second installer out
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InstallError(f"another Retake installer is working on {layout.prefix}; wait for it to end") from None
        yield
    finally:
        handle.close()


@dataclass(frozen=True)
class Options:
    """What the user asked for."""

    backend: str  # already chosen: cuda, rocm or cpu
    python: str  # the interpreter the runtime is built on
    wheels: Path | None = None
    integrate: bool = True  # Linux menu entry, icon and links (Windows and macOS installers do their own)
    self_test: bool = True


def new_version_name(version: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{version}-{stamp}-{os.getpid()}"


def install(payload: Payload, layout: Layout, options: Options, say: Say,
            run: Runner = runtime.run_command) -> str:
    """Install `payload` into `layout.prefix`; returns the version folder now in use. InstallError,
    KeyboardInterrupt or Interrupted leave the prefix as it was (the caller says so)."""
    made = _topmost_missing(layout.prefix)
    try:
        return _install(payload, layout, options, say, run, made)
    except BaseException:
        if made is not None:  # nothing of ours was there: leave nothing (the lock file and folders included)
            remove(made)
        raise


def _topmost_missing(path: Path) -> Path | None:
    return next((p for p in reversed([path, *path.parents]) if not p.exists()), None)


def _install(payload: Payload, layout: Layout, options: Options, say: Say, run: Runner, made: Path | None) -> str:
    with locked(layout), signals_raise():
        previous = layout.current()
        _remove_stale_versions(layout, keep=previous, say=say)
        name = new_version_name(payload.version)
        target = layout.versions / name
        transaction = Transaction()
        try:
            transaction.make_dir(target)
            say(f"Building the runtime for Retake {payload.version} ({options.backend}) in {target}")
            runtime.create(payload, options.backend, target, options.python, wheels=options.wheels,
                           cache=layout.uv_cache, run=run, base_env=layout.env)
            app_env = runtime.environment_for_app(layout.env)
            build = runtime.torch_build(layout.venv_python(name), app_env)
            runtime.check_backend(options.backend, build)
            runtime.write_record(target, {"version": payload.version, "backend": options.backend, "torch": build,
                                          "python": options.python, "installed": name})
            if options.self_test:
                say("Running retake self-test on the new version (the previous one stays in use until it passes)")
                if run([str(layout.venv_app(name)), "self-test"], app_env) != 0:
                    kept = f"Retake {previous} is still installed, unchanged" if previous else "nothing was installed"
                    raise InstallError(f"the new version failed its self-test (above); {kept}")
            files = _integrate(payload, layout, transaction) if options.integrate else []
            _write_manifest(layout, transaction, files, made)
            transaction.write(layout.current_file, (name + "\n").encode())  # the switch
        except BaseException:
            transaction.rollback()
            raise
    if previous and previous != name:
        remove(layout.versions / previous)
    return name


def _remove_stale_versions(layout: Layout, keep: str | None, say: Say) -> None:
    """Version folders `current` does not name: left by an install that was killed."""
    for folder in sorted(layout.versions.glob("*")) if layout.versions.is_dir() else ():
        if folder.name != keep:
            say(f"Removing {folder} (left by an install that did not finish)")
            remove(folder)


LAUNCHERS = ("retake", "retake-uninstall")


def _integrate(payload: Payload, layout: Layout, transaction: Transaction) -> list[Path]:
    """Launchers in <prefix>/bin, their links, the menu entry and icons; returns what lies outside the prefix."""
    for launcher in LAUNCHERS:
        transaction.write(layout.bin / launcher, (payload.share / f"{launcher}.sh").read_bytes(), 0o755)
    outside = []
    for launcher in LAUNCHERS:
        transaction.link(layout.links / launcher, layout.bin / launcher)
        outside.append(layout.links / launcher)
    entry = (payload.share / "retake.desktop").read_text(encoding="utf-8")
    transaction.write(layout.desktop_entry, entry.replace("@RETAKE@", str(layout.bin / "retake")).encode())
    outside.append(layout.desktop_entry)
    for kind in ("png", "svg"):
        transaction.write(layout.icon(kind), (payload.share / f"retake.{kind}").read_bytes())
        outside.append(layout.icon(kind))
    return outside


def read_manifest(layout: Layout) -> dict[str, list[str]]:
    """What earlier installs added outside the prefix: files (and links), and folders they created."""
    try:
        manifest = json.loads(layout.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": [], "folders": []}
    return {key: [str(item) for item in manifest.get(key, [])] for key in ("files", "folders")}


def _write_manifest(layout: Layout, transaction: Transaction, files: list[Path], made: Path | None) -> None:
    """The manifest of every install so far: uninstall removes exactly these (folders when empty)."""
    old = read_manifest(layout)
    outside = [path for path in transaction.created if path.is_dir() and not _within(path, layout.prefix)]
    if made is not None and made != layout.prefix:
        outside += [made, *[p for p in layout.prefix.parents if _within(p, made) and p != made]]
    manifest = {"prefix": str(layout.prefix),
                "files": list(dict.fromkeys(old["files"] + [str(path) for path in files])),
                "folders": list(dict.fromkeys(old["folders"] + [str(path) for path in outside]))}
    transaction.write(layout.manifest, (json.dumps(manifest, indent=2) + "\n").encode())


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refresh_desktop_caches(layout: Layout) -> None:
    """Refresh the system's menu and icon caches after a system install (best effort). Desktops watch a
    user's own folders themselves, and a cache written there would outlive retake-uninstall."""
    if not layout.system:
        return
    for argv in (["update-desktop-database", str(layout.desktop_entry.parent)],
                 ["gtk-update-icon-cache", "-q", "-t", str(layout.share / "icons" / "hicolor")]):
        if shutil.which(argv[0]):
            subprocess.run(argv, capture_output=True, check=False)


def on_path(folder: Path, env: Mapping[str, str]) -> bool:
    return str(folder) in env.get("PATH", "").split(os.pathsep)


def python_ok(python: str) -> bool:
    """Whether `python` is a CPython 3.11+ (what the lock is made for)."""
    try:
        done = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                              capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.stdout.strip() == "True"

