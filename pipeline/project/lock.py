"""The writer lock of a project, which is also the journal of the files a save creates or retires;
and the claim on making a project, held through a first edit's inversion.

Writers take `.lock` exclusively; readers need no lock. The first line of the lock file says who
holds it; each later line names a file the holder is about to create or to stop referencing, written
and fsynced before that happens. Cleanup deletes only files named in a journal (its own, or that of
a dead holder whose lock it took over) that the committed manifest does not reference, so it never
deletes a file Retake did not put there.

A save holds `.lock` for a moment. A first edit needs something longer: from before its inversion
(minutes) until the project it makes holds that inversion, no other process may start the same
photo's first edit, or both invert and the second fails at the end. `making_project` holds `.creating`
in the project folder for that time, by the same rules (exclusive creation, a dead or silent holder's
claim taken over), with a heartbeat so that a long inversion never looks stale; a second first edit
waits for it, then finds the project and its inversion.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import ProjectError, shorten
from pipeline.files import fsync_directory, temp_path
from pipeline.project.folder import CREATING_FILE, LOCK_FILE, Folder, shown

# A save holds the lock for seconds at most; a lock this old belongs to a dead or hung process
# (or to a reused pid after a crash), whatever its pid says.
LOCK_STALE_AFTER_S = 600.0
DEFAULT_LOCK_TIMEOUT_S = 30.0
HEARTBEAT_S = LOCK_STALE_AFTER_S / 10
"""How often a long holder (a first edit's claim) touches its lock, so that it never looks stale."""
_MAX_LOCK_BYTES = 1 << 20

Holder = tuple[bytes, dict[str, Any] | None, float]  # raw content, parsed first line, age in seconds


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: exists, not ours
        try:
            code = ctypes.c_ulong()
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return bool(ok) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            status = Path(f"/proc/{pid}/stat").read_text()
            return status[status.rindex(")") + 2] != "Z"
        except (OSError, ValueError, IndexError):
            return True
    return True


def _journal(raw: bytes) -> list[str]:
    """The file names journaled in a lock file's content (a torn last line is ignored)."""
    names = []
    for line in raw.split(b"\n")[1:]:
        try:
            name = json.loads(line)
        except ValueError:
            continue
        if isinstance(name, str):
            names.append(name)
    return names


class ProjectLock:
    """An exclusive writer lock: `.lock` created with O_CREAT | O_EXCL, holding the owner's pid.

    A lock left by a dead process on this machine, or untouched for LOCK_STALE_AFTER_S, is taken over
    (and its journal inherited). Waits up to `timeout` seconds for a live holder (saves are short),
    then raises ProjectError; with `timeout` None it waits as long as the holder lives, calling
    `waiting` with a phrase naming the holder at each look (it may raise, e.g. Cancelled, to stop
    waiting). `name` is the lock file's name in the project folder; `heartbeat_s` makes a holder
    touch it that often, for a lock held longer than a save.
    """

    def __init__(self, folder: Folder, timeout: float | None, *, name: str = LOCK_FILE,
                 waiting: Callable[[str], None] | None = None, heartbeat_s: float | None = None) -> None:
        self._folder = folder
        self._name = name
        self._path = folder.root / name
        self._timeout = timeout
        self._waiting = waiting
        self._heartbeat_s = heartbeat_s
        self._heartbeat: tuple[threading.Thread, threading.Event] | None = None
        self._token = secrets.token_hex(8)
        self._fd: int | None = None
        self.journal: list[str] = []  # what this save (or a dead holder it took over from) created or retired
        self._inherited: list[str] = []

    def __enter__(self) -> ProjectLock:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self._token,
                              "app": "Retake", "since": since}).encode() + b"\n"
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # released between our attempt and our look
                    continue
                if self._is_stale(*holder):
                    self._break(holder[0])
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    raise ProjectError(self._busy_message(holder)) from None
                if self._waiting is not None:
                    self._waiting(self._who(holder))
                time.sleep(0.05)
                continue
            except OSError as exc:
                raise ProjectError(f"Cannot save the project at {shown(self._path.parent)}: "
                                   f"{exc.strerror or exc}.") from exc
            self._fd = fd
            try:
                self._append(content)
                for rel in self._inherited:  # carried on, so a crash now does not lose them
                    self.record(rel)
            except BaseException:
                self.__exit__()
                raise
            if self._heartbeat_s is not None:
                stop = threading.Event()
                beat = threading.Thread(target=self._beat, args=(stop,), name="retake-lock-heartbeat", daemon=True)
                self._heartbeat = (beat, stop)
                beat.start()
            return self

    def _beat(self, stop: threading.Event) -> None:
        """Append an empty line (which no journal reader takes for a name) every `heartbeat_s`: the lock's
        age is the time since its file last changed."""
        while not stop.wait(self._heartbeat_s):
            with contextlib.suppress(OSError):
                os.write(self._fd, b"\n")

    def record(self, rel: str) -> None:
        """Journal `rel` (durably) before it is created or stops being referenced."""
        self._append(json.dumps(rel).encode() + b"\n")
        self.journal.append(rel)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "the lock is not held"
        os.write(self._fd, data)
        os.fsync(self._fd)

    def __exit__(self, *exc_info: object) -> None:
        if self._heartbeat is not None:
            beat, stop = self._heartbeat
            stop.set()
            beat.join()
            self._heartbeat = None
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        try:
            current = json.loads(self._folder.read(self._name, _MAX_LOCK_BYTES).split(b"\n")[0])
            if isinstance(current, dict) and current.get("token") == self._token:
                os.unlink(self._path)
        except (OSError, ValueError, ProjectError):
            pass

    def _holder(self) -> Holder | None:
        """The current lock's content, parsed header and age, or None if the lock just vanished."""
        try:
            raw = self._folder.read(self._name, _MAX_LOCK_BYTES)
            age = time.time() - self._path.lstat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ProjectError(f"Cannot save the project at {shown(self._path.parent)}: "
                               f"{exc.strerror or exc}.") from exc
        try:
            parsed = json.loads(raw.split(b"\n")[0])
        except ValueError:
            parsed = None
        return raw, parsed if isinstance(parsed, dict) else None, age

    @staticmethod
    def _is_stale(_raw: bytes, info: dict[str, Any] | None, age: float) -> bool:
        if age > LOCK_STALE_AFTER_S:
            return True
        if info is None:  # a lock is written right after it is created; garbage that stays is dead
            return age > 5.0
        pid = info.get("pid")
        if info.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False  # another machine's process: only age can tell
        return not pid_alive(pid)

    def _break(self, stale: bytes) -> None:
        """Remove a stale lock without ever removing a live one that replaced it meanwhile."""
        aside = temp_path(self._path)
        try:
            os.rename(self._path, aside)
        except FileNotFoundError:
            return  # someone else broke it first
        try:
            moved = self._folder.read(aside.name, _MAX_LOCK_BYTES)
            if moved == stale:
                self._inherited.extend(_journal(stale))
            else:  # we moved a fresh lock: put it back if still free
                try:
                    fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    pass
                else:
                    with os.fdopen(fd, "wb") as file:
                        file.write(moved)
        except (OSError, ProjectError):
            pass
        finally:
            try:
                os.unlink(aside)
            except OSError:
                pass

    @staticmethod
    def _who(holder: Holder | None) -> str:
        """The holder as a phrase: 'another Retake process (pid 123)'."""
        info = holder[1] if holder else None
        who = "another Retake process"
        if info and isinstance(info.get("pid"), int):
            host = info.get("host")
            who += f" (pid {shorten(info['pid'])}" + (f" on {shown(host)})" if host != socket.gethostname() else ")")
        return who

    def _busy_message(self, holder: Holder | None) -> str:
        return (f"The project at {shown(self._path.parent)} is being saved by {self._who(holder)}; try again when "
                f"it has finished, or delete {shown(self._path)} if no Retake is running.")


@contextlib.contextmanager
def making_project(root: Path, waiting: Callable[[str], None]) -> Iterator[None]:
    """Hold the claim on making the project at `root` (a first edit's inversion and the project's
    creation): `.creating`, in the folder, made if needed. Waits while another process holds it,
    calling `waiting(holder)` at each look. A folder this made is removed again if it is left empty
    (a cancelled or failed first edit writes nothing)."""
    made = False
    while True:
        if not root.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            fsync_directory(root.parent)
            made = True
        try:
            claim = ProjectLock(Folder(root), None, name=CREATING_FILE, waiting=waiting, heartbeat_s=HEARTBEAT_S)
            claim.__enter__()
            break
        except ProjectError:
            if root.is_dir():
                raise
            # the holder we waited for removed the folder it had made: make it again and take the claim
    try:
        yield
    finally:
        claim.__exit__()
        if made:
            with contextlib.suppress(OSError):
                root.rmdir()  # only if empty: a project made meanwhile, or another claim, keeps it


def abandon_claim(root: Path) -> None:
    """For a process leaving at once (`os._exit`, a second Ctrl-C) in the middle of a first edit: remove
    its own claim on making the project at `root`, and the folder if that leaves it empty, so that it
    leaves nothing behind. Another process's claim is left alone."""
    try:
        first = json.loads(Folder(root).read(CREATING_FILE, _MAX_LOCK_BYTES).split(b"\n")[0])
        if isinstance(first, dict) and first.get("pid") == os.getpid() and first.get("host") == socket.gethostname():
            os.unlink(root / CREATING_FILE)
            root.rmdir()
    except (OSError, ValueError, ProjectError):
        pass
