"""The timeline scrubber: the diffusion steps from T (noise, left) to 0 (clean, right).

One row per stage of the run that walks the schedule; a row whose steps climb in timestep (a DDIM
inversion goes 0 -> T) is drawn right to left, as the previews' timesteps show, so every step sits
at its noise level whichever way its loop runs. Every step sends a cheap preview; as many of them as fit are
drawn as thumbnails, and pressing or dragging over a row chooses the nearest step (`stepChosen`),
which the window shows at once and then decodes in full. Under the rows, the step ranges and step
fractions the method's parameters control are drawn as bands and ticks over the edit's steps;
dragging a band's edge or a tick changes that parameter (one undoable step per drag). The run's
steps are the edit session's (gui.session.RunState); the bands are the document's parameters.

The strip never draws one thing over another: before a run its hint takes the first row, the label
column is as wide as its longest label, and the widget asks for the height of all its rows and lanes
(its minimum), so a short window shrinks the canvas rather than cutting the bands off; its dock
scrolls it, so a run of many stages on a small screen never makes the window taller than the screen.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QWidget

from gui.document import Document
from gui.qimage import to_pixmap
from gui.session import EditSession
from gui.theme import ACCENT

LABEL_W, ROW_H, LANE_H, PAD = 110, 44, 16, 4
EDGE_GRAB_PX = 6
BAND_COLOURS = [QColor(64, 132, 214, 150), QColor(214, 140, 64, 150), QColor(120, 190, 90, 150),
                QColor(190, 90, 190, 150)]


class Timeline(QWidget):
    """Steps of the run with their previews; bands for the method's step parameters."""

    stepChosen = Signal(str, int)  # a stage and one of its steps that sent a preview
    resultChosen = Signal()  # back to the result

    def __init__(self, doc: Document, session: EditSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc, self.session = doc, session
        self.specs: list[Any] = []
        self._thumbs: dict[tuple[str, int], QPixmap] = {}
        self._drag: tuple[str, int] | None = None  # (param, which: 0 start, 1 end, 2 tick, 3 either end)
        self._scrubbing: str | None = None
        self.chosen: tuple[str, int] | None = None
        self._rows = 0
        self.setMouseTracking(True)
        self._label_w = LABEL_W
        self._fit_rows()
        session.runChanged.connect(self._on_run)
        doc.methodChanged.connect(self.set_ready)
        doc.paramsChanged.connect(lambda _name: self.update())

    def set_ready(self) -> None:
        """Read the step parameters of the document's method (once the engine is loaded)."""
        from pipeline.methods.registry import get_method
        from pipeline.params import param_specs

        self.specs = [s for s in param_specs(get_method(self.doc.method_id).Params)
                      if s.kind in ("step_range", "step_fraction")]
        self._fit_rows()
        self.update()

    def sizeHint(self) -> QSize:
        rows = max(len(self.stages()), 1)  # before a run, the hint takes the first row
        return QSize(600, rows * ROW_H + len(self.specs) * LANE_H + 3 * PAD)

    def _fit_rows(self) -> None:
        """Ask for the height of every row and lane, and a label column as wide as the longest label."""
        metrics = QFontMetrics(self.font())
        labels = [*self.stages(), *(spec.name.replace("_", " ") for spec in self.specs), "step 50/50"]
        self._label_w = max(LABEL_W, max(metrics.horizontalAdvance(text) for text in labels) + 3 * PAD)
        self.setMinimumHeight(self.sizeHint().height())
        self.updateGeometry()

    def stages(self) -> list[str]:
        return [s for s, total in self.session.run.totals.items() if total > 1]

    def _on_run(self) -> None:
        if not self.session.run.previews:
            self._thumbs.clear()
            self.chosen = None
        if len(self.stages()) != self._rows:  # a relayout of the window only when a row comes or goes
            self._rows = len(self.stages())
            self._fit_rows()
        self.update()

    def _thumb(self, stage: str, step: int) -> QPixmap:
        """A step's preview at thumbnail size, made the first time it is drawn."""
        if (stage, step) not in self._thumbs:
            thumb = self.session.run.previews[stage][step].copy()
            thumb.thumbnail((ROW_H * 2, ROW_H - 4))
            self._thumbs[(stage, step)] = to_pixmap(thumb)
        return self._thumbs[(stage, step)]

    def shown_steps(self, stage: str) -> list[int]:
        """The steps of a row whose thumbnails are drawn: as many as fit side by side without one covering
        another, both ends of the row among them (every step still has its preview and can be chosen),
        and the chosen one, drawn on top."""
        steps = sorted(self.session.run.previews.get(stage, {}))
        if not steps:
            return []
        total = self.session.run.totals.get(stage, steps[-1])
        thumb_w = self._thumb(stage, steps[-1]).width()
        x = {step: self._thumb_x(stage, step, total, thumb_w) for step in steps}
        ends_first = -1 if self.climbs(stage) else 1  # of steps pushed to one place at an end, the end step
        by_x = sorted(steps, key=lambda step: (x[step], ends_first * step))
        shown = [by_x[0]]
        for step in by_x[1:]:
            if x[step] - x[shown[-1]] >= thumb_w + 2:
                shown.append(step)
        if len(shown) > 1:
            shown[-1] = by_x[-1]  # the far end instead of the last that fitted: further from the one before
        if self.chosen and self.chosen[0] == stage and self.chosen[1] in steps:
            shown.append(self.chosen[1])
        return sorted(set(shown))

    # -- geometry -------------------------------------------------------------------------------
    def _strip(self) -> tuple[float, float]:
        return self._label_w, max(self.width() - self._label_w - PAD, 10)

    def x_of(self, fraction: float) -> float:
        left, width = self._strip()
        return left + fraction * width

    def fraction_at(self, x: float) -> float:
        left, width = self._strip()
        return min(max((x - left) / width, 0.0), 1.0)

    def climbs(self, stage: str) -> bool:
        """Whether a stage walks from clean to noisy (its previews' timesteps rise step by step)."""
        timesteps = self.session.run.timesteps.get(stage, {})
        known = [timesteps[step] for step in sorted(timesteps)[:2] if timesteps[step] is not None]
        return len(known) == 2 and known[1] > known[0]

    def step_fraction(self, stage: str, step: int, total: int) -> float:
        """Where a step sits on the strip: steps at the same timestep line up across rows (the k-th
        step of a climbing row is at the timestep of the (total - k + 1)-th of a descending one)."""
        return 1.0 - (step - 1) / total if self.climbs(stage) else step / total

    def _thumb_x(self, stage: str, step: int, total: int, thumb_w: float) -> float:
        """The left edge of a step's thumbnail: centred on its step, the end ones pushed inside the strip."""
        left, width = self._strip()
        x = self.x_of(self.step_fraction(stage, step, total)) - thumb_w / 2
        return min(max(x, left), left + width - thumb_w)

    def _lanes_top(self) -> float:
        return PAD + max(len(self.stages()), 1) * ROW_H  # below the rows, or below the hint of an empty one

    # -- painting -------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(34, 34, 37))
        left, width = self._strip()
        run = self.session.run
        stages = self.stages()
        if not stages:
            painter.setPen(QColor(140, 140, 140))
            painter.drawText(QRectF(PAD, PAD, self.width(), ROW_H), Qt.AlignmentFlag.AlignVCenter,
                             "Timeline: T (noise) → 0 (clean). Steps and previews appear here during a run.")
        for row, stage in enumerate(stages):
            top = PAD + row * ROW_H
            total = run.totals[stage]
            painter.setPen(QColor(200, 200, 200))
            painter.drawText(QRectF(PAD, top, self._label_w - 2 * PAD, ROW_H), Qt.AlignmentFlag.AlignVCenter, stage)
            painter.fillRect(QRectF(left, top + 2, width, ROW_H - 4), QColor(45, 45, 50))
            done = run.step if run.running and run.stage == stage else total
            for step in range(1, total + 1):
                x = self.x_of(self.step_fraction(stage, step, total))
                colour = ACCENT if step <= done else QColor(90, 90, 95)
                painter.setPen(QPen(colour, 1))
                painter.drawLine(QPointF(x, top + ROW_H - 8), QPointF(x, top + ROW_H - 3))
            chosen = self.chosen[1] if self.chosen and self.chosen[0] == stage else None
            shown = self.shown_steps(stage)
            for step in [s for s in shown if s != chosen] + ([chosen] if chosen in shown else []):
                thumb = self._thumb(stage, step)
                x = self._thumb_x(stage, step, total, thumb.width())
                painter.drawPixmap(QPointF(x, top + 2), thumb)
                if step == chosen:  # the chosen step's thumbnail on top, framed
                    painter.setPen(QPen(ACCENT, 2))
                    painter.drawRect(QRectF(x, top + 2, thumb.width(), thumb.height()))
            if chosen is not None:
                x = self.x_of(self.step_fraction(stage, chosen, total))
                painter.setPen(QPen(QColor(255, 255, 255), 2))
                painter.drawLine(QPointF(x, top), QPointF(x, top + ROW_H))
                painter.drawText(QRectF(PAD, top + ROW_H - 16, self._label_w - 2 * PAD, 14),
                                 Qt.AlignmentFlag.AlignLeft, f"step {chosen}/{total}")
        top = self._lanes_top()
        for i, spec in enumerate(self.specs):
            y = top + i * LANE_H
            painter.setPen(QColor(170, 170, 170))
            painter.drawText(QRectF(PAD, y, self._label_w - 2 * PAD, LANE_H), Qt.AlignmentFlag.AlignVCenter,
                             spec.name.replace("_", " "))
            value = self.doc.params.get(spec.name, spec.default)
            colour = BAND_COLOURS[i % len(BAND_COLOURS)]
            if spec.kind == "step_range":
                x0, x1 = self.x_of(float(value[0])), self.x_of(float(value[1]))
                painter.fillRect(QRectF(x0, y + 2, max(x1 - x0, 1), LANE_H - 4), colour)
                painter.setPen(QPen(colour.lighter(160), 2))
                painter.drawLine(QPointF(x0, y + 1), QPointF(x0, y + LANE_H - 1))
                painter.drawLine(QPointF(x1, y + 1), QPointF(x1, y + LANE_H - 1))
            else:
                x = self.x_of(float(value))
                painter.setPen(QPen(colour.lighter(160), 3))
                painter.drawLine(QPointF(x, y + 1), QPointF(x, y + LANE_H - 1))
        painter.end()

    # -- input ----------------------------------------------------------------------------------
    def _hit_band(self, pos: QPointF) -> tuple[str, int] | None:
        lane = int((pos.y() - self._lanes_top()) // LANE_H)
        if pos.y() < self._lanes_top() or lane >= len(self.specs):
            return None
        spec = self.specs[lane]
        value = self.doc.params.get(spec.name, spec.default)
        if spec.kind == "step_fraction":
            return spec.name, 2
        x0, x1 = self.x_of(float(value[0])), self.x_of(float(value[1]))
        near0, near1 = abs(pos.x() - x0) <= EDGE_GRAB_PX, abs(pos.x() - x1) <= EDGE_GRAB_PX
        if near0 and near1 and abs(x1 - x0) < 1:
            return spec.name, 3  # the ends coincide: the drag's direction picks one
        if near0 or near1:
            return spec.name, 0 if abs(pos.x() - x0) < abs(pos.x() - x1) else 1
        return None

    def _stage_at(self, pos: QPointF) -> str | None:
        row = int((pos.y() - PAD) // ROW_H)
        stages = self.stages()
        return stages[row] if pos.y() >= PAD and 0 <= row < len(stages) else None

    def drag_band(self, name: str, end: int, fraction: float) -> None:
        """Move one end of a step range (or a step fraction's tick) to `fraction` of the steps."""
        fraction = round(min(max(fraction, 0.0), 1.0), 3)
        if end == 2:
            self.doc.set_param(name, fraction)
            return
        start, stop = (float(v) for v in self.doc.params[name])
        start, stop = (min(fraction, stop), stop) if end == 0 else (start, max(fraction, start))
        self.doc.set_param(name, [start, stop])

    def scrub(self, stage: str, fraction: float) -> None:
        """Choose the step of `stage` nearest to `fraction` of the strip that has a preview."""
        steps = self.session.run.previews.get(stage, {})
        total = self.session.run.totals.get(stage, 0)
        if not steps or not total:
            return
        self.choose(stage, min(steps, key=lambda s: abs(self.step_fraction(stage, s, total) - fraction)))

    def choose(self, stage: str, step: int) -> None:
        if self.chosen != (stage, step):
            self.chosen = (stage, step)
            self.update()
            self.stepChosen.emit(stage, step)

    def step_by(self, delta: int) -> None:
        """The next (+1) or previous (-1) step in the order the run made them, across rows; from the
        result, the run's last step."""
        order = [(stage, step) for stage in self.stages() for step in sorted(self.session.run.previews.get(stage, {}))]
        if not order:
            return
        at = order.index(self.chosen) if self.chosen in order else len(order)
        self.choose(*order[min(max(at + delta, 0), len(order) - 1)])

    def back_to_result(self) -> None:
        self.chosen = None
        self.update()
        self.resultChosen.emit()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        band = self._hit_band(pos)
        if band is not None:
            self._drag = band
            if band[1] != 3:
                self.drag_band(band[0], band[1], self.fraction_at(pos.x()))
        elif (stage := self._stage_at(pos)) is not None:
            self._scrubbing = stage
            self.scrub(stage, self.fraction_at(pos.x()))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if self._drag is not None:
            name, end = self._drag
            fraction = self.fraction_at(pos.x())
            if end == 3:
                end = 0 if fraction < float(self.doc.params[name][0]) else 1
                self._drag = (name, end)
            self.drag_band(name, end, fraction)
        elif self._scrubbing is not None:
            self.scrub(self._scrubbing, self.fraction_at(pos.x()))
        else:
            grab = self._hit_band(pos) is not None
            self.setCursor(Qt.CursorShape.SizeHorCursor if grab else Qt.CursorShape.ArrowCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag, self._scrubbing = None, None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        """Back to the result."""
        self.back_to_result()
