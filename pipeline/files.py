"""The one way Retake writes a file durably, so that a crash or a full disk never leaves half a file.

A new file goes to a temporary name in the target's own folder (same file system, so the rename is
atomic), is flushed and fsynced, then renamed over the target, and the folder is fsynced so the
rename itself survives a power cut. Temporary names have one recognisable form (`.NAME.<12 hex>.tmp`)
so that code cleaning up after a killed process can tell them from anything a person put there.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\.(.+)\.[0-9a-f]{12}" + re.escape(TEMP_SUFFIX))


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside `path`, of the form `temp_target` recognises."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def temp_target(name: str) -> str | None:
    """The file name a temporary file called `name` was going to become, or None if `name` is not one."""
    match = _TEMP_NAME.fullmatch(name)
    return None if match is None else match.group(1)


def write_atomically(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Replace `path` with `data` so that any crash leaves the old content or the new, never a mix.

    Raises OSError; the temporary file is removed on failure (or left for cleanup if killed).
    """
    path = Path(path)
    temp = temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make renames and new entries in folder `path` durable (a no-op where folders cannot be synced)."""
    if os.name == "nt":  # Windows commits directory entries with the rename; it cannot open folders
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
