"""Source and target prompts, their words as chips, and the warnings an artist needs while typing.

The chips are the text encoder's own words (pipeline.text.prompt_words), so a chip is exactly what
a word parameter can name. Clicking a chip adds it to, or removes it from, the word parameter chosen
in "Chips set" (local blend, reweight with a factor, per-word replace fraction...): whatever
parameters of kind words / word_values the method declares, so nobody types word lists.

Every word parameter has a colour: a chip in it is filled with that colour (the one chosen in "Chips
set" first, bold), a legend names each colour, and the sentence under "Chips set" says what a click
on a chip does now; these come above the prompts, so they show in a short panel (at 1280x800 the
panel's last rows are scrolled away). The chip boxes show whole rows of chips.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QPersistentModelIndex, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListView,
    QListWidget, QListWidgetItem, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget,
)

from gui.document import Document
from gui.panels import scrolling_rows
from gui.wheel import guard_wheel

CHECK_DELAY_MS = 250
MAX_CHIP_ROWS = 3  # more rows than this scroll, a whole row at a time
ROLE_COLOURS = (QColor(46, 139, 87), QColor(190, 70, 70), QColor(204, 133, 36), QColor(64, 120, 200),
                QColor(150, 90, 190), QColor(40, 150, 160))
"""The colours of a method's word parameters, in the order "Chips set" lists them (local blend first)."""

Role = tuple[str, str, QColor, dict[str, object]]  # parameter name, label, colour, word -> value (True for words)
CHIP_PADDING = (7, 3)  # horizontal, vertical: around a chip's word


class ChipDelegate(QStyledItemDelegate):
    """Draws a word as a chip: a rounded box filled with its parameter's colour (or outlined when in none)."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        metrics = QFontMetrics(index.data(Qt.ItemDataRole.FontRole) or option.font)
        return QSize(metrics.horizontalAdvance(str(index.data())) + 2 * CHIP_PADDING[0] + 2,
                     metrics.height() + 2 * CHIP_PADDING[1] + 2)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        box = QRectF(option.rect).adjusted(0.5, 0.5, -0.5, -0.5)
        fill = index.data(Qt.ItemDataRole.BackgroundRole)
        filled = isinstance(fill, QBrush) and fill.style() != Qt.BrushStyle.NoBrush
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        painter.setPen(QPen(fill.color().lighter(140) if filled else QColor(110, 110, 110) if not hovered
                            else QColor(170, 170, 170), 1))
        painter.setBrush(fill if filled else Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(box, 6, 6)
        painter.setFont(index.data(Qt.ItemDataRole.FontRole) or option.font)
        colour = index.data(Qt.ItemDataRole.ForegroundRole)
        painter.setPen(colour.color() if isinstance(colour, QBrush) else option.palette.text().color())
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, str(index.data()))
        painter.restore()


class ChipList(QListWidget):
    """A prompt's words as a wrapping row of chips, each filled with the colour of the word parameter it is
    in; as tall as its rows of chips (whole rows, up to MAX_CHIP_ROWS)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setSpacing(2)
        self.setUniformItemSizes(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setMouseTracking(True)
        self.setItemDelegate(ChipDelegate(self))
        self._fit_rows()

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
        self._fit_rows()

    def mark(self, roles: list[Role], current: str | None) -> None:
        """Fill each chip with the colour of the word parameter it is in (`current`'s first); the chips of
        `current` count as chosen."""
        ordered = sorted(roles, key=lambda role: role[0] != current)
        for i in range(self.count()):
            item = self.item(i)
            word = item.text()
            inside = [role for role in ordered if word in role[3]]
            item.setData(Qt.ItemDataRole.UserRole, bool(inside) and inside[0][0] == current)
            item.setBackground(QBrush(inside[0][2]) if inside else QBrush())
            item.setForeground(QBrush(QColor(255, 255, 255)) if inside else QBrush())
            font = QFont(self.font())
            font.setBold(bool(inside) and inside[0][0] == current)
            item.setFont(font)
            where = []
            for _, label, _, values in inside:
                value = values[word]
                where.append(label if value is True else f"{label} ({value:g})")
            item.setToolTip(f"\u201c{word}\u201d is in " + "; ".join(where) if where else
                            f"Click to add \u201c{word}\u201d to the word parameter chosen in Chips set.")
        self._fit_rows()

    def chosen(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count()) if self.item(i).data(Qt.ItemDataRole.UserRole)]

    def rows(self) -> int:
        """How many rows of chips the words take at the current width."""
        tops = {self.visualItemRect(self.item(i)).top() + self.verticalScrollBar().value() for i in range(self.count())}
        return max(len(tops), 1)

    def row_height(self) -> int:
        """The distance from one row of chips to the next."""
        if self.count():
            return self.visualItemRect(self.item(0)).height() + 2 * self.spacing()
        return self.fontMetrics().height() + 2 * CHIP_PADDING[1] + 2 + 2 * self.spacing()

    def _fit_rows(self) -> None:
        """As tall as the rows of chips, whole rows only (up to MAX_CHIP_ROWS; more scroll a row at a time)."""
        self.doItemsLayout()
        shown = min(self.rows(), MAX_CHIP_ROWS)
        height = shown * self.row_height() + 2 * self.frameWidth() + self.spacing()
        if self.height() != height or self.minimumHeight() != height:
            self.setFixedHeight(height)
        self.verticalScrollBar().setSingleStep(self.row_height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit_rows()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._fit_rows()

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self.height())


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
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.purpose = QLabel()
        self.purpose.setWordWrap(True)
        self.purpose.setStyleSheet("color: #b8b8b8;")
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #f0b050;")
        self.warning.hide()

        role_row = QHBoxLayout()
        role_row.addWidget(self.role, 1)
        role_row.addWidget(self.factor)
        form = QFormLayout()
        form.addRow("Chips set", role_row)
        form.addRow("", self.purpose)
        form.addRow("", self.legend)
        form.addRow("Source", self.source)
        form.addRow("", self.chips["source"])
        form.addRow("Target", self.target)
        form.addRow("", self.chips["target"])
        layout = scrolling_rows(self)
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
        guard_wheel(self)

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
        self.purpose.setText("" if not data else f"A click on a chip puts its word in {self.role.currentText()} "
                             "(or takes it out).")
        self.purpose.setToolTip("" if not data else
                                str(self.role.itemData(self.role.currentIndex(), Qt.ItemDataRole.ToolTipRole)))
        self.purpose.setVisible(bool(data))
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

    def roles(self) -> list[Role]:
        """The method's word parameters as "Chips set" lists them, each with its colour and its words."""
        roles = []
        for i in range(self.role.count()):
            name, kind = self.role.itemData(i)[:2]
            value = self.doc.params.get(name)
            words = dict(value or {}) if kind == "word_values" else {word: True for word in value or ()}
            roles.append((name, self.role.itemText(i), ROLE_COLOURS[i % len(ROLE_COLOURS)], words))
        return roles

    def _mark_chips(self) -> None:
        roles = self.roles()
        data = self.role.currentData()
        for chips in self.chips.values():
            chips.mark(roles, data[0] if data else None)
        self.legend.setText("&nbsp;&nbsp; ".join(
            f"<span style='background:{colour.name()}; color:white'>&nbsp;{label}&nbsp;</span>"
            for _, label, colour, _ in roles))
        self.legend.setToolTip("The colour of a chip says which word parameter its word is in.")
        self.legend.setVisible(bool(roles))

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
