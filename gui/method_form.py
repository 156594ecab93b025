"""The method chooser and its parameter form, built from the method's declared specs.

Nothing here knows any particular method: the registry lists them, `param_specs` says each
parameter's kind, range, choices and help, and one editor per kind is made from that (sliders and
spin boxes over the declared range, combo boxes for choices, tooltips from the help). Parameters of
the inversion stage are marked, because changing them costs a new inversion. Presets are named
parameter sets per method, kept in the settings. The wheel changes a field only once it has focus;
over an unfocused field it scrolls the panel (gui.wheel).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QInputDialog, QLabel, QLineEdit, QMessageBox,
    QPushButton,
    QSlider, QSpinBox, QVBoxLayout, QWidget,
)

from gui.document import Document
from gui.restore import checked_method
from gui.settings import AppSettings
from gui.starting_params import starting_params
from gui.wheel import guard_wheel

SLIDER_STEPS = 1000


class Editor(QWidget):
    """One parameter's editor; `edited` carries the new JSON-ready value."""

    edited = Signal(object)

    def set_value(self, value: Any) -> None:
        raise NotImplementedError


class NumberEditor(Editor):
    """A spin box, with a slider when the spec declares both bounds."""

    def __init__(self, spec: Any) -> None:
        super().__init__()
        integer = spec.kind == "int"
        self.spin = QSpinBox() if integer else QDoubleSpinBox()
        lo = spec.minimum if spec.minimum is not None else -1e6
        hi = spec.maximum if spec.maximum is not None else 1e6
        if not integer:
            self.spin.setDecimals(3)
            self.spin.setSingleStep(0.05 if hi - lo <= 2 else 0.5)
        self.spin.setRange(int(lo) if integer else lo, int(hi) if integer else hi)
        self.lo, self.hi, self.integer = lo, hi, integer
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.slider: QSlider | None = None
        if spec.minimum is not None and spec.maximum is not None:
            self.slider = QSlider(Qt.Orientation.Horizontal)
            self.slider.setRange(0, SLIDER_STEPS)
            self.slider.valueChanged.connect(self._from_slider)
            layout.addWidget(self.slider, 1)
        layout.addWidget(self.spin)
        self.spin.valueChanged.connect(self._from_spin)

    def set_value(self, value: Any) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(value)
        self.spin.blockSignals(False)
        self._sync_slider()

    def _sync_slider(self) -> None:
        if self.slider is not None:
            self.slider.blockSignals(True)
            self.slider.setValue(round((self.spin.value() - self.lo) / (self.hi - self.lo) * SLIDER_STEPS))
            self.slider.blockSignals(False)

    def _from_slider(self, position: int) -> None:
        value = self.lo + (self.hi - self.lo) * position / SLIDER_STEPS
        self.spin.setValue(round(value) if self.integer else round(value, 3))

    def _from_spin(self, value: float) -> None:
        self._sync_slider()
        self.edited.emit(int(value) if self.integer else float(value))


class BoolEditor(Editor):
    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.box = QCheckBox()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.box)
        self.box.toggled.connect(self.edited.emit)

    def set_value(self, value: Any) -> None:
        self.box.blockSignals(True)
        self.box.setChecked(bool(value))
        self.box.blockSignals(False)


class ChoiceEditor(Editor):
    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.combo = QComboBox()
        self.combo.addItems(list(spec.choices))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        self.combo.currentTextChanged.connect(self.edited.emit)

    def set_value(self, value: Any) -> None:
        self.combo.blockSignals(True)
        self.combo.setCurrentText(str(value))
        self.combo.blockSignals(False)


class RangeEditor(Editor):
    """A step range as start and end fractions (also draggable as a band on the timeline)."""

    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.start, self.end = QDoubleSpinBox(), QDoubleSpinBox()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (self.start, self.end):
            box.setRange(spec.minimum or 0.0, spec.maximum if spec.maximum is not None else 1.0)
            box.setDecimals(2)
            box.setSingleStep(0.05)
            box.valueChanged.connect(self._changed)
            layout.addWidget(box)

    def set_value(self, value: Any) -> None:
        for box, v in zip((self.start, self.end), value):
            box.blockSignals(True)
            box.setValue(float(v))
            box.blockSignals(False)

    def _changed(self) -> None:
        start, end = self.start.value(), self.end.value()
        if start <= end:
            self.edited.emit([start, end])


class WordsEditor(Editor):
    """Words (cat, dog) or word:value pairs (cat:2); usually set by clicking chips in the prompt panel."""

    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.kind = spec.kind
        self.line = QLineEdit()
        self.line.setPlaceholderText("click words in the prompt panel" if spec.kind == "words" else "word:value, …")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.line)
        self.line.editingFinished.connect(self._parse)

    def set_value(self, value: Any) -> None:
        if self.kind == "word_values":
            text = ", ".join(f"{w}:{v:g}" for w, v in dict(value or {}).items())
        else:
            text = ", ".join(value or ())
        self.line.setText(text)

    def _parse(self) -> None:
        items = [item.strip() for item in self.line.text().split(",") if item.strip()]
        if self.kind == "words":
            self.edited.emit(items)
            return
        values = {}
        for item in items:
            word, _, number = item.rpartition(":")
            try:
                values[word.strip()] = float(number)
            except ValueError:
                self.line.setToolTip(f"{item!r} is not word:value")
                return
        self.edited.emit(values)


EDITORS = {"float": NumberEditor, "int": NumberEditor, "step_fraction": NumberEditor, "bool": BoolEditor,
           "choice": ChoiceEditor, "step_range": RangeEditor, "words": WordsEditor, "word_values": WordsEditor}


class MethodPanel(QWidget):
    """Method chooser, its parameter form, presets and reset; enabled once the engine is loaded."""

    problem = Signal(str)  # a preset value that could not be applied, for the window's message bar

    def __init__(self, doc: Document, settings: AppSettings, gpu: Callable[[], bool] = lambda: True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc, self.settings, self.gpu = doc, settings, gpu
        self.editors: dict[str, Editor] = {}
        self.method = QComboBox()
        self.summary = QLabel("Loading the engine…")
        self.summary.setWordWrap(True)
        self.presets = QComboBox()
        self.presets.setToolTip("Apply a saved parameter set of this method.")
        save, delete, reset = QPushButton("Save…"), QPushButton("Delete"), QPushButton("Reset to defaults")
        save.setToolTip("Save the current parameters as a preset.")
        reset.setToolTip("The method's defaults; on a machine without a GPU, with its fastest faithful options "
                         "(direct inversion where the method offers it).")
        self.form_host = QWidget()
        self.form = QFormLayout(self.form_host)
        presets_row = QHBoxLayout()
        presets_row.addWidget(QLabel("Preset"))
        presets_row.addWidget(self.presets, 1)
        presets_row.addWidget(save)
        presets_row.addWidget(delete)
        layout = QVBoxLayout(self)
        layout.addWidget(self.method)
        layout.addWidget(self.summary)
        layout.addLayout(presets_row)
        layout.addWidget(reset)
        layout.addWidget(self.form_host)
        layout.addStretch(1)
        self.setEnabled(False)
        guard_wheel(self)

        self.method.activated.connect(lambda _i: self.choose(self.method.currentData()))
        self.presets.activated.connect(self._apply_preset)
        save.clicked.connect(self._save_preset)
        delete.clicked.connect(self.delete_preset)
        reset.clicked.connect(self.reset)
        doc.methodChanged.connect(self.rebuild)
        doc.paramsChanged.connect(self._on_param)

    def set_ready(self) -> None:
        """The engine (and with it the method registry) is loaded."""
        from pipeline.methods.registry import get_method, method_ids

        self.method.clear()
        for method_id in method_ids():
            method = get_method(method_id)
            self.method.addItem(method.title, method_id)
            self.method.setItemData(self.method.count() - 1, method.summary, Qt.ItemDataRole.ToolTipRole)
        self.setEnabled(True)
        self.rebuild()

    def rebuild(self) -> None:
        """The form of the document's method."""
        from pipeline.methods.registry import get_method
        from pipeline.params import param_specs

        if not self.isEnabled():
            return
        method = get_method(self.doc.method_id)
        self.method.setCurrentIndex(max(self.method.findData(self.doc.method_id), 0))
        self.summary.setText(method.summary)
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors = {}
        for spec in param_specs(method.Params):
            editor = EDITORS[spec.kind](spec)
            tip = spec.help + ("\n\nAn inversion parameter: changing it makes a new inversion." if
                               spec.stage == "inversion" else "")
            editor.setToolTip(tip)
            label = QLabel(spec.label + (" ⟲" if spec.stage == "inversion" else ""))
            label.setToolTip(tip)
            editor.edited.connect(lambda value, name=spec.name: self.doc.set_param(name, value))
            self.form.addRow(label, editor)
            self.editors[spec.name] = editor
        guard_wheel(self)
        self._on_param("")
        self._fill_presets()

    def _on_param(self, name: str) -> None:
        # With no project open the document has no parameters yet: the form shows what a new project
        # would start with on this machine, not each editor's minimum.
        missing = self.editors.keys() - self.doc.params.keys()
        shown = {**(starting_params(self.doc.method_id, self.gpu()) if missing else {}), **self.doc.params}
        for param_name, editor in self.editors.items():
            if (not name or name == param_name) and param_name in shown:
                editor.set_value(shown[param_name])

    def choose(self, method_id: str) -> None:
        """Switch to `method_id` with what it starts with on this machine (gui.starting_params)."""
        self.doc.set_method(method_id, starting_params(method_id, self.gpu()))

    def reset(self) -> None:
        self.doc.set_method(self.doc.method_id, starting_params(self.doc.method_id, self.gpu()), "Reset parameters")

    def _fill_presets(self) -> None:
        self.presets.clear()
        self.presets.addItem("—", None)
        for name in sorted(self.settings.presets(self.doc.method_id)):
            self.presets.addItem(name, name)

    def _apply_preset(self) -> None:
        """Apply the chosen preset's values, each checked as --param is; those this method does not take
        (a preset saved by another Retake, a hand-edited settings file) are named and left out."""
        name = self.presets.currentData()
        if not name:
            return
        method, values, refused = checked_method(self.doc.method_id, self.settings.presets(self.doc.method_id)[name])
        assert method is not None  # the document's own method
        self.doc.set_method(method, {**self.doc.params, **values}, f"Preset {name}")
        if refused:
            self.problem.emit(f"Preset {name}: {'; '.join(refused)}; the rest was applied.")

    def save_preset(self, name: str) -> None:
        self.settings.save_preset(self.doc.method_id, name, dict(self.doc.params))
        self._fill_presets()
        self.presets.setCurrentIndex(self.presets.findData(name))

    def _save_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Preset name:")
        if ok and name.strip():
            self.save_preset(name.strip())

    def delete_preset(self) -> None:
        """Delete the chosen preset once the artist confirms (it cannot be undone)."""
        name = self.presets.currentData()
        if not name:
            return
        answer = QMessageBox.question(self, "Delete preset", f"Delete the preset {name} of {self.method.currentText()}? "
                                      "This cannot be undone.", QMessageBox.StandardButton.Yes
                                      | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            self.settings.delete_preset(self.doc.method_id, name)
            self._fill_presets()
