"""The project folder: where each file lives, and the only code that touches files inside it.

A project folder can come from anywhere (a download, a shared drive, a hostile tester), so nothing
in it is trusted. Every name Retake reads, writes, renames or deletes is a plain relative name
(no `..`, no absolute path, no backslash); every folder on the way must be a real folder and every
file a regular file with a single link. A symbolic link, a fifo, a device, a socket or a hard-linked
file anywhere in the project is refused before anything is written, so a project can never be used
to read, overwrite or delete a file outside its folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NoReturn

from pipeline.errors import ProjectError, printable, shorten
from pipeline.files import fsync_directory, write_atomically

MANIFEST_FILE = "project.json"
SOURCE_FILE = "source.png"
LOCK_FILE = ".lock"
CREATING_FILE = ".creating"  # present while a first edit makes the project (pipeline.project.lock)
MASKS_DIR, RESULTS_DIR, INVERSIONS_DIR, INPUTS_DIR = "masks", "results", "inversions", "inputs"
QUARANTINE_DIR = "quarantine"

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}"
# Where each kind of file may live; anything else in project.json is damage (or an attack).
FILE_PATTERNS = {
    "image": re.compile(re.escape(SOURCE_FILE)),
    "mask": re.compile(rf"{MASKS_DIR}/{_NAME}\.png"),
    "result": re.compile(rf"{RESULTS_DIR}/{_NAME}\.png"),
    "inversion": re.compile(rf"{INVERSIONS_DIR}/{_NAME}\.safetensors"),
    "input": re.compile(rf"{INPUTS_DIR}/{_NAME}\.png"),
}
INPUT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
# The names Retake itself gives files (content hashes, edit ids): the only ones cleanup may delete.
GENERATED = re.compile(rf"{MASKS_DIR}/[0-9a-f]{{16}}\.png|{RESULTS_DIR}/e[0-9]{{4,9}}\.png"
                       rf"|{INVERSIONS_DIR}/[A-Za-z0-9][A-Za-z0-9_-]{{0,127}}\.[0-9a-f]{{16}}\.safetensors"
                       rf"|{INPUTS_DIR}/{INPUT_NAME.pattern}\.[0-9a-f]{{16}}\.png")
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]{1,255}")
_PATH_LIMIT = 100  # paths are echoed longer than manifest values: their ends both matter
_HASH_CHUNK = 1 << 20
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))


def shown(path: str | os.PathLike[str]) -> str:
    """A path as echoed in a message: shortened in the middle when very long."""
    return shorten(path, _PATH_LIMIT)


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None


class Folder:
    """Confined access to the files of the project in `root` (which the caller found to be a folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def refuse(self, rel: str, what: str) -> NoReturn:
        """Raise the one sentence that refuses a project for what was found at `rel`."""
        raise ProjectError(f"Refusing the project at {shown(self.root)}: {shorten(printable(rel))} is {what}, and "
                           f"Retake uses only plain files inside a project folder; nothing was written.")

    def path(self, rel: str) -> Path:
        """The absolute path of `rel` after checking that the name stays inside the folder."""
        parts = rel.split("/") if isinstance(rel, str) else [""]
        if any(not _COMPONENT.fullmatch(p) or p in (".", "..") for p in parts):
            raise ProjectError(f"Refusing the name {shorten(rel)} in the project at {shown(self.root)}: it "
                               f"leads outside the project folder; nothing was written.")
        return self.root.joinpath(*parts)

    def audit(self) -> None:
        """Refuse the project if anything in it is a link, a special file or a hard-linked file.

        Entries that vanish meanwhile (a concurrent save's temporary files) are skipped.
        """
        pending = [""]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(self.root / folder) as entries:
                    found = [(e.name, info) for e in entries if (info := _lstat(e)) is not None]
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ProjectError(f"Cannot read the project at {shown(self.root)}: {shorten(folder or '.')} "
                                   f"cannot be listed ({exc.strerror or exc}).") from exc
            for name, info in found:
                rel = f"{folder}/{name}" if folder else name
                if stat.S_ISDIR(info.st_mode):
                    pending.append(rel)
                else:
                    self._check_plain(rel, info)

    def _check_plain(self, rel: str, info: os.stat_result) -> None:
        if stat.S_ISLNK(info.st_mode):
            self.refuse(rel, "a symbolic link")
        if not stat.S_ISREG(info.st_mode):
            self.refuse(rel, "a special file (a fifo, device or socket)")
        if info.st_nlink > 1:
            self.refuse(rel, f"a hard link ({info.st_nlink} names share its contents)")

    def _folders_on_the_way(self, rel: str, *, create: bool = False) -> bool:
        """Check that every folder leading to `rel` is a real folder; False if one is missing.

        With `create`, missing folders are made (and their parents fsynced) instead.
        """
        parts = self.path(rel).relative_to(self.root).parts[:-1]
        current = self.root
        for index, part in enumerate(parts):
            current = current / part
            try:
                info = current.lstat()
            except FileNotFoundError:
                if not create:
                    return False
                current.mkdir()
                fsync_directory(current.parent)
                continue
            if not stat.S_ISDIR(info.st_mode):
                self.refuse("/".join(parts[: index + 1]), "a symbolic link" if stat.S_ISLNK(info.st_mode)
                            else "not a folder")
        return True

    def lstat(self, rel: str) -> os.stat_result | None:
        """The file's own status (links not followed), or None if it does not exist."""
        if not self._folders_on_the_way(rel):
            return None
        try:
            return self.path(rel).lstat()
        except FileNotFoundError:
            return None

    @contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """Open a plain file for reading. Raises FileNotFoundError, IsADirectoryError or ProjectError."""
        path = self.path(rel)
        if not self._folders_on_the_way(rel):
            raise FileNotFoundError(errno.ENOENT, "No such file", str(path))
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a folder", str(path))
        self._check_plain(rel, info)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since the lstat
                self.refuse(rel, "a symbolic link")
            raise
        try:
            self._check_plain(rel, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as file:
            yield file

    def read(self, rel: str, limit: int | None = None) -> bytes:
        """The bytes of a plain file (at most `limit` + 1 of them, so callers can tell it is too long)."""
        with self.open(rel) as file:
            return file.read() if limit is None else file.read(limit + 1)

    def sha256(self, rel: str) -> str:
        """The SHA-256 of a plain file, read in chunks."""
        digest = hashlib.sha256()
        with self.open(rel) as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def write(self, rel: str, data: bytes | bytearray | memoryview) -> None:
        """Write `rel` atomically, making its folders if needed; a link or special file there is refused."""
        path = self.path(rel)
        self._folders_on_the_way(rel, create=True)
        info = self.lstat(rel)
        if info is not None:
            self._check_plain(rel, info)
        write_atomically(path, data)

    def remove(self, rel: str) -> bool:
        """Delete `rel` if it is a plain file inside the folder (True); anything else is left alone."""
        info = self.lstat(rel)
        if info is None or not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            return False
        self.path(rel).unlink()
        return True

    def move(self, rel: str, dest: str) -> bool:
        """Rename `rel` to `dest` (a new name) inside the folder; False if `rel` does not exist."""
        target = self.path(dest)
        if self.lstat(rel) is None:
            return False
        self._folders_on_the_way(dest, create=True)
        if self.lstat(dest) is not None:
            raise FileExistsError(errno.EEXIST, "File exists", str(target))
        os.rename(self.path(rel), target)
        fsync_directory(target.parent)
        return True

    def names(self, folder: str) -> list[str]:
        """Names of the entries in the sub-folder `folder` ('' for the project folder itself)."""
        directory = self.path(folder) if folder else self.root
        if folder and not self._folders_on_the_way(f"{folder}/-"):  # `folder` itself is on the way to its entries
            return []
        try:
            return [entry.name for entry in os.scandir(directory)]
        except OSError:
            return []
