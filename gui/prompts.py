"""Source and target prompts, their words as chips, and the warnings an artist needs while typing.

The chips are the text encoder's own words (pipeline.text.prompt_words), so a chip is exactly what
a word parameter can name. Clicking a chip adds it to, or removes it from, the word parameter chosen
in "Chips set" (local blend, reweight with a factor, per-word replace fraction...): whatever
parameters of kind words / word_values the method declares, so nobody types word lists.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListView,
    QListWidget, QListWidgetItem, QVBoxLayout, QWidget,
)

from gui.document import Document
from gui.theme import ACCENT

CHECK_DELAY_MS = 250
CHIP_ROWS_HEIGHT = 64
CHOSEN = ACCENT


class ChipList(QListWidget):
    """A prompt's words as a wrapping row of chips; the chosen ones are shown selected."""

    def __init__(self) -> None:
        super().__init__()
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setSpacing(2)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setFixedHeight(CHIP_ROWS_HEIGHT)
        self.setStyleSheet("QListWidget::item { border: 1px solid #666; border-radius: 6px; padding: 1px 6px; }")

    def words(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count())]

    def set_words(self, words: list[str]) -> None:
        if self.words() == words:
            return
        self.clear()
        for word in words:
            item = QListWidgetItem(word)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.addItem(item)

    def mark(self, chosen: dict[str, object]) -> None:
        for i in range(self.count()):
            item = self.item(i)
            value = chosen.get(item.text())
            item.setData(Qt.ItemDataRole.UserRole, value is not None)
            item.setBackground(CHOSEN if value is not None else Qt.GlobalColor.transparent)
            item.setToolTip(f"{item.text()}: {value:g}" if isinstance(value, (int, float)) and value is not True
                            else f"Click to add or remove \"{item.text()}\" in the parameter chosen below.")

    def chosen(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count()) if self.item(i).data(Qt.ItemDataRole.UserRole)]


class PromptPanel(QWidget):
    """Prompts with word chips; warnings for prompts the encoder cuts and edits the method refuses."""

    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.tokenizer: Any = None
        self.source = QLineEdit()
        self.source.setPlaceholderText("Describe the photo, e.g. a house in a meadow")
        self.target = QLineEdit()
        self.target.setPlaceholderText("What it should become, e.g. a castle in a meadow")
        self.role = QComboBox()
        self.role.setToolTip("Which word parameter a click on a word chip changes.")
        self.factor = QDoubleSpinBox()
        self.factor.setDecimals(2)
        self.factor.setSingleStep(0.1)
        self.factor.setToolTip("The value a clicked word gets in a word:value parameter.")
        self.chips = {"source": ChipList(), "target": ChipList()}
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #f0b050;")
        self.warning.hide()

        role_row = QHBoxLayout()
        role_row.addWidget(self.role, 1)
        role_row.addWidget(self.factor)
        form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow("", self.chips["source"])
        form.addRow("Target", self.target)
        form.addRow("", self.chips["target"])
        form.addRow("Chips set", role_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.warning)
        layout.addStretch(1)

        self._check_timer = QTimer(self, singleShot=True, interval=CHECK_DELAY_MS)
        self._check_timer.timeout.connect(self.check)
        self.source.textEdited.connect(lambda text: doc.set_prompt("source", text))
        self.target.textEdited.connect(lambda text: doc.set_prompt("target", text))
        self.role.currentIndexChanged.connect(self._on_role)
        for chips in self.chips.values():
            chips.itemClicked.connect(lambda item: self.toggle_word(item.text()))
        doc.promptsChanged.connect(self._on_prompts)
        doc.paramsChanged.connect(lambda _name: self._mark_chips())
        doc.paramsChanged.connect(lambda _name: self._check_timer.start())
        doc.methodChanged.connect(self._on_method)
        self._on_role()

    def set_tokenizer(self, tokenizer: Any) -> None:
        """The engine is loaded: words can be shown."""
        self.tokenizer = tokenizer
        self._on_method()
        self._on_prompts()

    # -- document -> widgets --------------------------------------------------------------------
    def _on_prompts(self) -> None:
        for edit, text in ((self.source, self.doc.source_prompt), (self.target, self.doc.target_prompt)):
            if edit.text() != text:
                edit.setText(text)
        self._build_chips()
        self._check_timer.start()

    def _on_method(self) -> None:
        if self.tokenizer is None:
            return
        from pipeline.methods.registry import get_method
        from pipeline.params import param_specs

        current = self.role.currentData()
        self.role.blockSignals(True)
        self.role.clear()
        specs = param_specs(get_method(self.doc.method_id).Params)
        for spec in sorted(specs, key=lambda s: s.kind != "words"):  # plain word lists first (local blend)
            if spec.kind in ("words", "word_values"):
                self.role.addItem(spec.name.replace("_", " "), (spec.name, spec.kind, spec.minimum, spec.maximum))
                self.role.setItemData(self.role.count() - 1, spec.help, Qt.ItemDataRole.ToolTipRole)
        index = next((i for i in range(self.role.count()) if current and self.role.itemData(i)[0] == current[0]), 0)
        self.role.setCurrentIndex(index)
        self.role.blockSignals(False)
        self._on_role()

    def _on_role(self) -> None:
        data = self.role.currentData()
        is_values = bool(data) and data[1] == "word_values"
        self.factor.setVisible(is_values)
        if is_values:
            lo, hi = data[2], data[3]
            self.factor.setRange(-100.0 if lo is None else lo, 100.0 if hi is None else hi)
            self.factor.setValue(min(max(2.0 if "weight" in data[0] else 0.5, self.factor.minimum()),
                                     self.factor.maximum()))
        self._mark_chips()

    def words(self, which: str) -> list[str]:
        if self.tokenizer is None:
            return []
        from pipeline.text import prompt_words

        prompt = self.doc.source_prompt if which == "source" else self.doc.target_prompt
        return [w.text for w in prompt_words(self.tokenizer, prompt)] if prompt.strip() else []

    def _build_chips(self) -> None:
        for which, chips in self.chips.items():
            chips.set_words(self.words(which))
        self._mark_chips()

    def _mark_chips(self) -> None:
        chosen = self._chosen_words()
        for chips in self.chips.values():
            chips.mark(chosen)

    def _chosen_words(self) -> dict[str, Any]:
        data = self.role.currentData()
        if not data:
            return {}
        value = self.doc.params.get(data[0])
        if data[1] == "word_values":
            return dict(value or {})
        return {word: True for word in value or ()}

    # -- widgets -> document --------------------------------------------------------------------
    def toggle_word(self, word: str) -> None:
        """Add `word` to the chosen word parameter, or take it out (one undoable step)."""
        data = self.role.currentData()
        if not data:
            self._mark_chips()
            return
        name, kind = data[0], data[1]
        if kind == "word_values":
            values = dict(self.doc.params.get(name) or {})
            if word in values:
                del values[word]
            else:
                values[word] = round(self.factor.value(), 4)
            self.doc.set_param(name, values)
        else:
            words = list(self.doc.params.get(name) or [])
            self.doc.set_param(name, [w for w in words if w != word] if word in words else words + [word])

    def stop_checks(self) -> None:
        """Drop a pending check (the window is closing)."""
        self._check_timer.stop()

    def check(self) -> None:
        """Warn while typing: words the 77-token window cuts off, or an edit the method refuses."""
        if self.tokenizer is None:
            return
        from pipeline.errors import RetakeError
        from pipeline.methods.base import Prompts
        from pipeline.methods.registry import get_method
        from pipeline.params import params_from_dict
        from pipeline.text import prompt_overflow

        problems = []
        limit = self.tokenizer.model_max_length
        for which, prompt in (("source", self.doc.source_prompt), ("target", self.doc.target_prompt)):
            cut = prompt_overflow(self.tokenizer, prompt)
            if cut:
                problems.append(f"The {which} prompt is longer than the text encoder's {limit} tokens; "
                                f"it cuts off: {' '.join(cut)}.")
        if self.doc.source_prompt.strip() and self.doc.target_prompt.strip() and not problems:
            method = get_method(self.doc.method_id)
            try:
                params = params_from_dict(method.Params, self.doc.params)
                method.check(self.tokenizer, Prompts(self.doc.source_prompt, self.doc.target_prompt), params)
            except RetakeError as error:
                problems.append(str(error))
        self.warning.setText("\n".join(problems))
        self.warning.setVisible(bool(problems))
