"""Downloading a model file only when the artist asks: progress, resume, checksum, plain words offline.

A checkpoint is gigabytes and connections drop, so the file grows in `<target>.part`, a later
attempt continues from where the part ends (an HTTP Range request; a server that ignores it gets a
fresh start), the SHA-256 the catalogue records is checked over the whole file, and only a file that
matches is renamed into place. Nothing here runs unless a button was pressed; offline (no network,
or HF_HUB_OFFLINE: gui.models_dialog.offline_reason) the message says where to get the file and which
folder to put it in.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

CHUNK = 1 << 20
TIMEOUT_S = 30


@dataclass(frozen=True)
class Downloadable:
    """A model file the welcome view offers to download."""

    name: str
    url: str
    filename: str
    sha256: str
    size: int

    def by_hand(self, folder: Path) -> str:
        """How to add this file without Retake downloading it."""
        return (f"To add it by hand: download {self.filename} ({self.size / 1e9:.1f} GB) from {self.url} on any "
                f"machine, then copy it into {folder} (or use Import checkpoint in Model > Models).")


CATALOGUE = (
    Downloadable("Stable Diffusion 1.5 (pruned, EMA weights)",
                 "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
                 "v1-5-pruned-emaonly.safetensors",
                 "v1-5-pruned-emaonly.safetensors",
                 "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa", 4_265_146_304),
)


class DownloadError(Exception):
    """A download that did not complete, in a sentence; the part kept (if any) resumes next time."""


def fetch(item: Downloadable, target: Path, progress: Callable[[int, int], None],
          stop: threading.Event | None = None, opener: Callable[..., object] = urllib.request.urlopen) -> Path:
    """Download `item` to `target` (resuming `target`.part), check its SHA-256, rename it into place."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    have = part.stat().st_size if part.exists() else 0
    if have:
        with open(part, "rb") as file:
            while chunk := file.read(CHUNK):
                digest.update(chunk)
    request = urllib.request.Request(item.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with opener(request, timeout=TIMEOUT_S) as response:  # type: ignore[attr-defined]
            if have and response.status != 206:  # the server ignored the range: start again
                have, digest = 0, hashlib.sha256()
            length = int(response.headers.get("Content-Length") or 0)
            total = have + length if length else item.size
            with open(part, "ab" if have else "wb") as file:
                done = have
                while chunk := response.read(CHUNK):
                    if stop is not None and stop.is_set():
                        raise DownloadError(f"Stopped; {done / 1e9:.2f} GB of {item.filename} are kept and the "
                                            "next download continues from there.")
                    file.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    progress(done, total)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"Could not download {item.filename} ({reason}). {item.by_hand(target.parent)}") from error
    if digest.hexdigest() != item.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{item.filename} arrived damaged (its SHA-256 is not the published one) and was "
                            "deleted; download it again.")
    os.replace(part, target)
    return target


class Downloader(QObject):
    """Runs `fetch` on a daemon thread (closing the window mid-download keeps the part for next time),
    reporting in signals that arrive on the thread that owns this object."""

    progress = Signal(object, object)  # bytes so far, bytes in all (Python ints: files pass 2 GiB)
    done = Signal(str)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, item: Downloadable, target: Path) -> None:
        self.stop.clear()
        self.thread = threading.Thread(target=self._run, args=(item, target), daemon=True, name="retake-download")
        self.thread.start()

    def _run(self, item: Downloadable, target: Path) -> None:
        try:
            path = fetch(item, target, self.progress.emit, self.stop)
        except DownloadError as error:
            self.failed.emit(str(error))
            return
        self.done.emit(str(path))
