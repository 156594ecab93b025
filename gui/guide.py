"""Help > User guide: the user guide shipped with Retake, shown in the app.

The guide is docs/user-guide.md. In a checkout it lies beside gui/; an installed Retake carries it as
the `retake_docs` package (pyproject.toml maps docs/ to it, with the pictures it shows), so it is found
wherever the wheel was installed and read offline. Qt renders the Markdown and its pictures itself;
its web links open in the browser.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from gui.shortcuts import SCREEN_SHARE, available_geometry

GUIDE = "user-guide.md"
INSTALLED = "retake_docs"  # docs/ as an installed package (pyproject.toml's package-dir)


def guide_path() -> Path | None:
    """The user guide of this Retake: the checkout's docs/, else the installed `retake_docs`."""
    checkout = Path(__file__).resolve().parents[1] / "docs" / GUIDE
    if checkout.is_file():
        return checkout
    spec = importlib.util.find_spec(INSTALLED)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (installed := Path(folder) / GUIDE).is_file():
            return installed
    return None


class GuideWindow(QDialog):
    """The guide, rendered, with its pictures; Close closes it."""

    def __init__(self, path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Retake user guide")
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setSource(QUrl.fromLocalFile(str(path)), QTextDocument.ResourceType.MarkdownResource)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 1)
        layout.addWidget(buttons)
        screen = available_geometry(parent)
        self.resize(min(900, int(screen.width() * SCREEN_SHARE)), int(screen.height() * SCREEN_SHARE))
