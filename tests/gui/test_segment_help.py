"""Segment without a SAM checkpoint (issue 21, item 7): the message is the window's message bar (the
Tools dock keeps its width), the status bar does not stay "Segmenting…", its link opens in the
browser, opening another project clears it; online it offers to download ViT-B with progress (a fake
server here), offline it says where to put the file, and a file put there is found."""

from __future__ import annotations

import hashlib
import io

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

import gui.download
import gui.segment_help
from gui.canvas import Tool
from gui.download import Downloadable
from gui.segment_help import chosen_checkpoint, default_checkpoint
from tests.gui.conftest import make_window
from tests.gui.test_window import open_photo, view_point

PAYLOAD = b"not really SAM, but checked like it" * 1000


class FakeResponse(io.BytesIO):
    status = 200

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def segment_click(qtbot, window) -> None:
    window.set_tool(Tool.SEGMENT)
    qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 100, 60))
    qtbot.waitUntil(window.message.isVisible, timeout=10_000)


def real_sam_window(qtbot, settings, fake_engine, tmp_path):
    settings.set("models_dir", str(tmp_path / "models"))
    return make_window(qtbot, settings, lambda: fake_engine)  # the real SAM loader, no checkpoint


def test_no_checkpoint_is_said_in_the_message_bar_with_a_link_and_a_download(qtbot, settings, fake_engine, photo,
                                                                           tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    window = real_sam_window(qtbot, settings, fake_engine, tmp_path)
    try:
        open_photo(qtbot, window, photo)
        QApplication.processEvents()
        tools_width = window.docks["tools"].width()
        segment_click(qtbot, window)
        QApplication.processEvents()
        assert window.status_stage.text() == ""  # not "Segmenting…" for ever
        assert window.docks["tools"].width() == tools_width
        label = window.message.text
        assert label.textFormat() == Qt.TextFormat.RichText and label.openExternalLinks()
        assert '<a href="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth">' in label.text()
        assert label.text().startswith("No Segment Anything checkpoint is set.")
        assert window.message.action.isVisible() and window.message.action.text() == "Download (375 MB)"

        other = photo.with_name("other.png")
        Image.new("RGB", (96, 64), "olive").save(other)
        assert window.open_path(other)
        assert not window.message.isVisible()  # it does not follow the artist into another project

        item = Downloadable("SAM", "https://example.invalid/sam.pth", "sam_vit_b_01ec64.pth",
                            hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))
        monkeypatch.setattr(gui.segment_help, "SAM_VIT_B", item)
        real_fetch = gui.download.fetch
        monkeypatch.setattr(gui.download, "fetch", lambda *args, **kwargs: real_fetch(
            *args, **kwargs, opener=lambda request, timeout: FakeResponse(PAYLOAD)))
        progress = []
        window.segment_help.downloader.progress.connect(lambda done, total: progress.append(done))
        segment_click(qtbot, window)
        window.message.action.click()
        qtbot.waitUntil(lambda: settings.get("sam_checkpoint") != "", timeout=10_000)
        target = default_checkpoint(settings)
        assert settings.get("sam_checkpoint") == str(target) and target.read_bytes() == PAYLOAD
        assert progress and progress[-1] == len(PAYLOAD)
        assert window.message.text.text().startswith("Segment Anything is ready (sam_vit_b_01ec64.pth, checked)")
    finally:
        window.doc.undo.setClean()
        window.close()


def test_offline_it_says_where_to_put_the_file_and_finds_it_there(qtbot, settings, fake_engine, photo, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    window = real_sam_window(qtbot, settings, fake_engine, tmp_path)
    try:
        open_photo(qtbot, window, photo)
        segment_click(qtbot, window)
        folder = default_checkpoint(settings).parent
        text = window.message.text.text()
        assert "set to work offline" in text and f"put it in {folder}" in text
        assert not window.message.action.isVisible()
        assert chosen_checkpoint(settings) == ""
        folder.mkdir(parents=True)
        default_checkpoint(settings).write_bytes(b"copied by hand")
        assert chosen_checkpoint(settings) == str(default_checkpoint(settings))
    finally:
        window.doc.undo.setClean()
        window.close()


def test_a_long_message_scrolls_in_the_bar_instead_of_making_the_window_taller(qtbot, window):
    before = window.minimumSizeHint().height()
    window.message.show_message("A sentence that goes on and on. " * 300)
    QApplication.processEvents()
    line = window.message.fontMetrics().lineSpacing()
    assert window.message.sizeHint().height() <= 5 * line + 40
    assert window.minimumSizeHint().height() <= before + 5 * line + 40
