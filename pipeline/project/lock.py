"""The writer lock of a project, which is also the journal of the files a save creates or retires.

Writers take `.lock` exclusively; readers need no lock. The first line of the lock file says who
holds it; each later line names a file the holder is about to create or to stop referencing, written
and fsynced before that happens. Cleanup deletes only files named in a journal (its own, or that of
a dead holder whose lock it took over) that the committed manifest does not reference, so it never
deletes a file Retake did not put there.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import ProjectError, shorten
from pipeline.files import temp_path
from pipeline.project.folder import LOCK_FILE, Folder, shown

# A save holds the lock for seconds at most; a lock this old belongs to a dead or hung process
# (or to a reused pid after a crash), whatever its pid says.
LOCK_STALE_AFTER_S = 600.0
DEFAULT_LOCK_TIMEOUT_S = 30.0
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

    A lock left by a dead process on this machine, or older than LOCK_STALE_AFTER_S, is taken over
    (and its journal inherited). Waits up to `timeout` seconds for a live holder (saves are short),
    then raises ProjectError.
    """

    def __init__(self, folder: Folder, timeout: float) -> None:
        self._folder = folder
        self._path = folder.root / LOCK_FILE
        self._timeout = timeout
        self._token = secrets.token_hex(8)
        self._fd: int | None = None
        self.journal: list[str] = []  # what this save (or a dead holder it took over from) created or retired
        self._inherited: list[str] = []

    def __enter__(self) -> ProjectLock:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self._token,
                              "app": "Retake", "since": since}).encode() + b"\n"
        deadline = time.monotonic() + self._timeout
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
                if time.monotonic() >= deadline:
                    raise ProjectError(self._busy_message(holder)) from None
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
            return self

    def record(self, rel: str) -> None:
        """Journal `rel` (durably) before it is created or stops being referenced."""
        self._append(json.dumps(rel).encode() + b"\n")
        self.journal.append(rel)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "the lock is not held"
        os.write(self._fd, data)
        os.fsync(self._fd)

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        try:
            current = json.loads(self._folder.read(LOCK_FILE, _MAX_LOCK_BYTES).split(b"\n")[0])
            if isinstance(current, dict) and current.get("token") == self._token:
                os.unlink(self._path)
        except (OSError, ValueError, ProjectError):
            pass

    def _holder(self) -> Holder | None:
        """The current lock's content, parsed header and age, or None if the lock just vanished."""
        try:
            raw = self._folder.read(LOCK_FILE, _MAX_LOCK_BYTES)
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

    def _busy_message(self, holder: Holder | None) -> str:
        info = holder[1] if holder else None
        who = "another Retake process"
        if info and isinstance(info.get("pid"), int):
            host = info.get("host")
            who += f" (pid {shorten(info['pid'])}" + (f" on {shown(host)})" if host != socket.gethostname() else ")")
        return (f"The project at {shown(self._path.parent)} is being saved by {who}; try again when it has "
                f"finished, or delete {shown(self._path)} if no Retake is running.")
