"""What the segment tool says when it cannot run, and the Segment Anything checkpoint it offers to fetch.

A new user who clicked with the segment tool and no checkpoint got a message that widened the Tools
dock for good, a status bar that said "Segmenting…" for ever, links they could not click, and the same
message in every project they opened next. Now the message is the window's message bar (it wraps,
its links open in the browser, opening a project clears it) and the status bar is cleared. Without a
checkpoint the bar offers to download SAM ViT-B (375 MB, the smallest; checked against its published
SHA-256, resumable: gui.download) into Retake's model folder, with progress in the status bar; offline
it says where to put the file, and a checkpoint put there is found without a visit to Settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from gui.download import Downloadable, Downloader
from gui.models_dialog import offline_reason
from gui.settings import AppSettings
from pipeline.segment import CHECKPOINT_URLS  # torch-free

if TYPE_CHECKING:
    from gui.window import MainWindow

SAM_VIT_B = Downloadable("Segment Anything ViT-B", CHECKPOINT_URLS["vit_b"], "sam_vit_b_01ec64.pth",
                         "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383)


def default_checkpoint(settings: AppSettings) -> Path:
    """Where Retake downloads SAM ViT-B, and where a checkpoint copied by hand is found."""
    return settings.models_dir() / "segment-anything" / SAM_VIT_B.filename


def chosen_checkpoint(settings: AppSettings) -> str:
    """The checkpoint Settings names, else the one in Retake's model folder if it is there ("" if neither)."""
    found = default_checkpoint(settings)
    return settings.get("sam_checkpoint") or (str(found) if found.is_file() else "")


class SegmentHelp(QObject):
    """Turns the segmenter's refusals into the window's message bar, and downloads a checkpoint if asked."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.main = window
        self.downloader = Downloader(self)
        window.segmenter.unavailable.connect(self.cannot_segment)
        window.segmenter.needsCheckpoint.connect(self.offer_checkpoint)
        self.downloader.progress.connect(self._on_progress)
        self.downloader.done.connect(self._on_downloaded)
        self.downloader.failed.connect(self._on_failed)

    def cannot_segment(self, text: str) -> None:
        """Segment Anything failed or cannot load: say why; painting goes on."""
        self.main.status_stage.setText("")
        self.main.message.show_message(text)

    def offer_checkpoint(self, reason: str) -> None:
        """No checkpoint: offer to download one, or (offline) say where to put it."""
        self.main.status_stage.setText("")
        if self.downloader.running:
            return
        item, folder = SAM_VIT_B, default_checkpoint(self.main.settings).parent
        link = f'<a href="{item.url}">{item.filename}</a> ({item.size / 1e6:.0f} MB)'
        if offline_reason() is None:
            self.main.message.show_message(
                f"{reason} Segment Anything needs a checkpoint: download {link} into {folder} now? Painting "
                "works meanwhile; any other checkpoint can be chosen in Settings.",
                error=False, action=(f"Download ({item.size / 1e6:.0f} MB)", self.download), rich=True)
        else:
            self.main.message.show_message(
                f"{reason} This machine is set to work offline: download {link} on another machine and put it "
                f"in {folder}, where it is found, or choose a checkpoint in Settings.", error=False, rich=True)

    def download(self) -> None:
        """Fetch SAM ViT-B into Retake's model folder (progress in the status bar)."""
        target = default_checkpoint(self.main.settings)
        self.main.message.show_message(f"Downloading {SAM_VIT_B.filename} into {target.parent}; the status bar shows "
                                       "how far it is, and painting works meanwhile.", error=False,
                                       action=("Stop", self.downloader.stop.set))
        self.downloader.start(SAM_VIT_B, target)

    def _on_progress(self, done: int, total: int) -> None:
        self.main.status_stage.setText(f"Downloading {SAM_VIT_B.filename}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")

    def _on_downloaded(self, path: str) -> None:
        self.main.status_stage.setText("")
        self.main.settings.set("sam_checkpoint", path)
        self.main.apply_settings()
        self.main.message.show_message(f"Segment Anything is ready ({Path(path).name}, checked): click on the photo "
                                       "again.", error=False)

    def _on_failed(self, text: str) -> None:
        self.main.status_stage.setText("")
        self.main.message.show_message(text)
