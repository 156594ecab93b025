"""The tool options panel: tool, brush size and hardness, which mask is painted, mask actions, the area an
edit works on (a crop around the mask or the whole photo) with the crop's padding and the edge's
feather, and compare.

The panel's rows sit in a scroll area (gui.panels): in a short window they scroll instead of being
squeezed on top of each other.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QButtonGroup, QCheckBox, QComboBox, QFormLayout, QGridLayout, QLabel, QSlider, QSpinBox, QToolButton, QWidget,
)

from gui.canvas import Canvas, Tool
from gui.document import Document
from gui.panels import scrolling_rows
from gui.settings import AppSettings
from gui.wheel import guard_wheel

DEFAULT_MASKS = (("edit_mask", "Edit region"),)
AREAS = (("", "Crop around the mask (large photos)"), ("region", "Crop around the mask (always)"),
         ("whole", "Whole photo"))
AREA_TIP = ("What the model works on when a mask bounds the edit (the edit region; KV Inversion's subject mask). "
            "A crop around the mask is edited at the model's working size and pasted back into the untouched "
            "photo: sharp on a large photo. Blend words without a mask find their region only during the run, "
            "so such an edit is made whole. The dashed box on the canvas is the crop the next run edits.")
FEATHER_TIP = ("Photo pixels over which the result fades into the photo past the mask: at d pixels out it counts "
               "1 - d / (feather + 1); beyond the feather the photo is untouched. 0 cuts hard along the mask.")


class ToolPanel(QWidget):
    def __init__(self, doc: Document, canvas: Canvas, actions: dict[str, QAction], settings: AppSettings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc, self.canvas, self.settings = doc, canvas, settings
        self._ready = False  # the engine (and with it the pipeline) is loaded
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
        self.area = QComboBox()
        for value, label in AREAS:
            self.area.addItem(label, value)
        self.area.setCurrentIndex(max(self.area.findData(settings.get("area")), 0))
        self.area.setToolTip(AREA_TIP)
        self.padding = self._pixels(settings.get("area_padding"), "Pixels of the photo around the mask that the "
                                    "crop takes in as context (at least the feather plus one).")
        self.feather = self._pixels(settings.get("feather"), FEATHER_TIP)
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
        edge = QFormLayout()
        edge.addRow("Area", self.area)
        edge.addRow("Crop padding", self.padding)
        edge.addRow("Edge feather", self.feather)
        for layout in (form, edge):
            layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        column = scrolling_rows(self)
        column.addLayout(grid)
        column.addLayout(form)
        column.addLayout(mask_actions)
        column.addWidget(self.show_mask)
        column.addLayout(edge)
        column.addWidget(QLabel("Before ◂ compare ▸ after"))
        column.addWidget(self.compare)
        column.addStretch(1)
        guard_wheel(self)

        self.size.valueChanged.connect(lambda v: canvas.set_brush_size(float(v)))
        self.hardness.valueChanged.connect(lambda v: canvas.set_hardness(v / 100))
        self.show_mask.toggled.connect(canvas.set_mask_visible)
        self.compare.valueChanged.connect(lambda v: canvas.set_split(v / 100))
        self.purpose.currentIndexChanged.connect(self._on_purpose)
        self.area.currentIndexChanged.connect(self._on_area)
        self.padding.valueChanged.connect(self._on_area)
        self.feather.valueChanged.connect(self._on_area)
        canvas.brushChanged.connect(self._on_brush)
        doc.methodChanged.connect(self.set_ready)
        self.set_purposes(DEFAULT_MASKS)
        self._on_brush()

    @staticmethod
    def _pixels(value: int, tip: str) -> QSpinBox:
        box = QSpinBox()
        box.setRange(0, 512)
        box.setSuffix(" px")
        box.setValue(value)
        box.setToolTip(tip)
        return box

    def set_ready(self) -> None:
        """Mask purposes are the method's declared mask inputs (those that bound the edit are cropped
        around); the crop's outline needs the working size, which the model decides."""
        from pipeline.methods.base import input_specs
        from pipeline.methods.registry import get_method

        specs = input_specs(get_method(self.doc.method_id).Params)
        self.set_purposes([(s.name, s.label) for s in specs if s.kind == "mask"] or DEFAULT_MASKS)
        self.canvas.set_bounding_masks(tuple(s.name for s in specs if s.bounds))
        self._ready = True
        self._on_area()

    def _on_area(self) -> None:
        """The area choice goes to the settings (the next run's request) and to the canvas's crop outline."""
        values = {"area": self.area.currentData() or "", "area_padding": self.padding.value(),
                  "feather": self.feather.value()}
        for name, value in values.items():
            if self.settings.get(name) != value:
                self.settings.set(name, value)
        if self._ready:
            self.canvas.set_area(values["area"] or None, values["area_padding"], values["feather"],
                                 self.settings.working_side())

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
