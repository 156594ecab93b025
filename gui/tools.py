"""The tool options panel: tool, brush size and hardness, which mask is painted, mask actions, compare."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QFormLayout, QGridLayout, QLabel, QSlider, QToolButton, QVBoxLayout, QWidget,
)

from gui.canvas import Canvas, Tool
from gui.document import Document

DEFAULT_MASKS = (("edit_mask", "Edit region"),)


class ToolPanel(QWidget):
    def __init__(self, doc: Document, canvas: Canvas, actions: dict[str, QAction],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc, self.canvas = doc, canvas
        grid = QGridLayout()
        self.tool_buttons = QButtonGroup(self)
        for i, tool in enumerate(Tool):
            button = QToolButton()
            button.setDefaultAction(actions[f"tool_{tool.name.lower()}"])
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setMinimumWidth(70)
            grid.addWidget(button, i // 2, i % 2)
        self.size = QSlider(Qt.Orientation.Horizontal)
        self.size.setRange(1, 400)
        self.size.setValue(int(canvas.brush_size))
        self.size_label = QLabel()
        self.hardness = QSlider(Qt.Orientation.Horizontal)
        self.hardness.setRange(0, 100)
        self.hardness.setValue(int(canvas.hardness * 100))
        self.purpose = QComboBox()
        self.purpose.setToolTip("Masks are kept per purpose (the inputs the method declares).")
        self.show_mask = QCheckBox("Show mask")
        self.show_mask.setChecked(True)
        self.compare = QSlider(Qt.Orientation.Horizontal)
        self.compare.setRange(0, 100)
        self.compare.setValue(100)
        self.compare.setToolTip("Before / after: the result is shown left of the split, the source right of it.")
        mask_actions = QGridLayout()
        for i, name in enumerate(("mask_fill", "mask_clear", "mask_invert", "segment_clear")):
            button = QToolButton()
            button.setDefaultAction(actions[name])
            mask_actions.addWidget(button, i // 2, i % 2)

        form = QFormLayout()
        form.addRow("Size", self.size)
        form.addRow("", self.size_label)
        form.addRow("Hardness", self.hardness)
        form.addRow("Mask", self.purpose)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addLayout(form)
        layout.addLayout(mask_actions)
        layout.addWidget(self.show_mask)
        layout.addWidget(QLabel("Before ◂ compare ▸ after"))
        layout.addWidget(self.compare)
        layout.addStretch(1)

        self.size.valueChanged.connect(lambda v: canvas.set_brush_size(float(v)))
        self.hardness.valueChanged.connect(lambda v: canvas.set_hardness(v / 100))
        self.show_mask.toggled.connect(canvas.set_mask_visible)
        self.compare.valueChanged.connect(lambda v: canvas.set_split(v / 100))
        self.purpose.currentIndexChanged.connect(self._on_purpose)
        canvas.brushChanged.connect(self._on_brush)
        doc.methodChanged.connect(self.set_ready)
        self.set_purposes(DEFAULT_MASKS)
        self._on_brush()

    def set_ready(self) -> None:
        """Mask purposes are the method's declared mask inputs."""
        from pipeline.methods.base import input_specs
        from pipeline.methods.registry import get_method

        specs = [(s.name, s.label) for s in input_specs(get_method(self.doc.method_id).Params) if s.kind == "mask"]
        self.set_purposes(specs or DEFAULT_MASKS)

    def set_purposes(self, purposes: tuple | list) -> None:
        current = self.purpose.currentData()
        self.purpose.blockSignals(True)
        self.purpose.clear()
        for name, label in purposes:
            self.purpose.addItem(label, name)
        self.purpose.setCurrentIndex(max(self.purpose.findData(current), 0))
        self.purpose.blockSignals(False)
        self._on_purpose()

    def choose_purpose(self, name: str) -> None:
        """Paint mask `name` (the canvas shows the picture it belongs to)."""
        index = self.purpose.findData(name)
        if index >= 0:
            self.purpose.setCurrentIndex(index)

    def next_purpose(self) -> None:
        """The method's next mask, round the list."""
        if self.purpose.count():
            self.purpose.setCurrentIndex((self.purpose.currentIndex() + 1) % self.purpose.count())

    def _on_purpose(self) -> None:
        name = self.purpose.currentData()
        if name:
            self.canvas.set_mask_name(name)

    def _on_brush(self) -> None:
        self.size.blockSignals(True)
        self.size.setValue(int(self.canvas.brush_size))
        self.size.blockSignals(False)
        self.size_label.setText(f"{self.canvas.brush_size:.0f} px   ([ and ] change it)")
