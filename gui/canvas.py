"""The canvas: the photo, the translucent mask being painted, and the result, with a compare split.

A QGraphicsView in image coordinates (one scene unit = one photo pixel, so HiDPI screens only change
the view's scale). Zoom goes to the cursor, space-drag or the middle button pans. Brush and eraser
paint into the document's mask live and record one undo step per stroke; the segment tool collects
positive (left) and negative (right) clicks or a dragged box and asks for a mask. A mask painted on
a reference picture (a method's reference object mask) switches the canvas to that picture while
it is the mask being painted; the photo and its result come back with the photo's masks.

The mask is shown as image editors show a selection: a translucent fill where the artist paints (a
mask tool chosen and the photo showing, or a stroke under way), and elsewhere, over a result above
all, only its outline (a light line one screen pixel wide on a dark halo, at every zoom, readable on
any picture), so the colours of a result are seen as they are and not through the fill.

The crop the next run edits (pipeline.area: a box around the masks that bound the edit, when the
Tools panel's area choice and the photo's size call for one) is outlined with a dashed box, and
while a run goes on its step previews (pictures of the crop) are laid over that box; a result or a
preview of another shape than the photo is stretched onto the photo (or the crop) in both
directions. The wheel zooms about the point under the cursor, which stays where it is; the view
re-fits the photo when the window or a dock changes its size, until the artist zooms or pans; the
zoom (100% is one photo pixel per screen pixel) is shown in the canvas's corner.
"""

from __future__ import annotations

import enum

import numpy as np
from PIL import Image
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush, QColor, QKeyEvent, QMouseEvent, QPainter, QPainterPath, QPen, QPixmap, QResizeEvent, QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem, QGraphicsPathItem, QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsView,
    QLabel, QWidget,
)

from gui.document import Document
from gui.session import EditSession
from gui.masks import dab, stroke, union
from gui.qimage import mask_overlay
from gui.theme import ACCENT, MASK_COLOUR

ZOOM_STEP = 1.25
BOX_MIN_PX = 6


class Tool(enum.Enum):
    BRUSH = "Brush"
    ERASER = "Eraser"
    SEGMENT = "Segment"
    PAN = "Pan"


MASK_TOOLS = frozenset({Tool.BRUSH, Tool.ERASER, Tool.SEGMENT})
Box = tuple[int, int, int, int]
OUTLINE_PENS = ((QColor(0, 0, 0, 230), 3), (QColor(255, 255, 255), 1))  # a dark halo under a light line


def outline_pen(colour: QColor, width: int) -> QPen:
    """A pen of `width` screen pixels at any zoom."""
    pen = QPen(colour, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.SquareCap)
    pen.setCosmetic(True)
    return pen


class Canvas(QGraphicsView):
    """Shows the document's image, mask and result; paints masks; asks for segmentations."""

    brushChanged = Signal()
    segmentRequested = Signal(list, list, object)
    zoomChanged = Signal(float)

    def __init__(self, doc: Document, session: EditSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc, self.session = doc, session
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor(28, 28, 30))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)  # zoom_by keeps the point itself
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the scene has a margin of a
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # view around the photo: bars mislead
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setMouseTracking(True)
        self.setAcceptDrops(False)  # the window takes drops of images and projects
        self.source_item = QGraphicsPixmapItem()
        self.result_item = QGraphicsPixmapItem()
        self.mask_item = QGraphicsPixmapItem()
        self.result_item.setZValue(1)
        self.mask_item.setZValue(2)
        self.outline_items = [QGraphicsPathItem() for _ in OUTLINE_PENS]
        for item, (colour, width) in zip(self.outline_items, OUTLINE_PENS):
            item.setPen(outline_pen(colour, width))
            item.setZValue(2)
        self.split_line = self.scene().addLine(0, 0, 0, 0, QPen(QColor(255, 255, 255, 200), 0))
        self.split_line.setZValue(3)
        self.cursor_item = QGraphicsEllipseItem()
        self.cursor_item.setPen(QPen(QColor(255, 255, 255, 220), 0))
        self.cursor_item.setZValue(5)
        self.box_item = QGraphicsRectItem()
        self.box_item.setPen(QPen(ACCENT, 0, Qt.PenStyle.DashLine))
        self.box_item.setZValue(4)
        self.box_item.hide()
        self.crop_item = QGraphicsRectItem()
        dashed = QPen(QColor(255, 214, 90), 1.5, Qt.PenStyle.DashLine)
        dashed.setCosmetic(True)
        self.crop_item.setPen(dashed)
        self.crop_item.setZValue(4)
        self.crop_item.hide()
        for item in (self.source_item, self.result_item, self.mask_item, *self.outline_items, self.cursor_item,
                     self.box_item, self.crop_item):
            self.scene().addItem(item)
        self.zoom_label = QLabel(self)
        self.zoom_label.setStyleSheet("background: rgba(20, 20, 22, 170); color: #ddd; padding: 1px 5px;")
        self.zoom_label.setToolTip("Zoom: 100% is one photo pixel per screen pixel (Ctrl+1); F fits the photo.")
        self.zoom_label.hide()  # until there is a picture to zoom (empty, it is a dark box over the welcome view)
        self.draft_badge = QLabel("Draft — not saved; Run saves it", self)
        self.draft_badge.setObjectName("draftBadge")
        self.draft_badge.setStyleSheet("background: rgba(190, 120, 20, 220); color: white; font-weight: 600; "
                                       "padding: 3px 8px; border-radius: 3px;")
        self.draft_badge.setToolTip("A live draft of your change, from the stored inversion: nothing is written "
                                    "into the project until you press Run (Run > Live drafts turns drafts off).")
        self.draft_badge.hide()
        self.click_items: list[QGraphicsEllipseItem] = []

        self.tool = Tool.BRUSH
        self.mask_name = "edit_mask"
        self.brush_size = 24.0
        self.hardness = 0.7
        self.mask_visible = True
        self.split = 1.0  # the share of the width (from the left) that shows the result
        self.override: Image.Image | None = None  # a timeline step shown instead of the result
        self.draft: Image.Image | None = None  # a live draft shown instead of the result (below a step)
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        self._result_pixmap: QPixmap | None = None
        self._fill: QPixmap | None = None  # the current mask as a translucent fill, at the picture's size
        self._shown: Image.Image | None = None
        self._stroke: dict | None = None
        self._pan_from: QPointF | None = None
        self._space = False
        self._box_from: QPointF | None = None
        self.fitted = True  # the view follows the window's size until the artist zooms or pans
        self.bounding_masks: tuple[str, ...] = ("edit_mask",)
        self.area: tuple[str | None, int, int] = (None, 32, 4)  # mode, padding, feather (pipeline.area)
        self.working_side: int | None = None  # None until the engine is loaded: no crop is outlined
        self.run_crop: Box | None = None  # the crop of the run whose previews are shown
        self._serial = -1

        doc.imageChanged.connect(self._on_image)
        doc.maskChanged.connect(self._on_mask)
        session.currentResultChanged.connect(self.refresh_result)
        doc.referenceChanged.connect(self._on_reference)
        session.runChanged.connect(self._on_run)
        self.zoomChanged.connect(self._show_zoom)

    # -- document -> view -----------------------------------------------------------------------
    def picture(self) -> Image.Image | None:
        """The picture shown and painted on: the photo, or the reference the current mask belongs to."""
        return self.doc.picture_for(self.mask_name)

    def on_reference(self) -> bool:
        return self.mask_name in self.doc.mask_pictures

    def _on_image(self) -> None:
        self.override = None
        self._show_picture()

    def _on_reference(self, name: str) -> None:
        if self.doc.mask_pictures.get(self.mask_name) == name:
            self._show_picture()

    def _show_picture(self) -> None:
        self.clear_clicks()
        picture = self.picture()
        self._shown = picture
        self.source_item.setPixmap(self.session.pixmap(picture) if picture is not None else QPixmap())
        self._fill = None
        self.refresh_result()
        self._on_mask(self.mask_name)
        self._show_crop()
        if picture is not None:
            self.fit()
        else:
            self.zoom_label.hide()

    def _on_mask(self, name: str) -> None:
        if name in self.bounding_masks and self._stroke is None:  # after a stroke, not at every dab
            self._show_crop()
        if name != self.mask_name:
            return
        mask = self.doc.masks.get(name) if self.picture() is not None else None
        if self._stroke is not None:  # during a stroke only the fill follows the brush; the outline at its end
            self._fill = QPixmap.fromImage(mask_overlay(mask, MASK_COLOUR)) if mask is not None else None
        else:
            fill, path = self.session.mask_layers(mask) if mask is not None else (None, QPainterPath())
            self._fill = QPixmap.fromImage(fill) if fill is not None else None
            for item in self.outline_items:
                item.setPath(path)
        self._apply_overlay()

    def _apply_overlay(self) -> None:
        """Fill the mask where the artist paints on the picture itself; outline it everywhere else.

        The fill covers the whole picture during a stroke, and, with a mask tool chosen, the part of
        it the result (or a timeline step) leaves uncovered: right of the compare split. The outline
        is hidden during a stroke (it is traced when the stroke ends); "Show mask" off hides both.
        """
        painting = self._stroke is not None
        start = 0 if painting else self._result_width() if self.tool in MASK_TOOLS else None
        fill = self._fill
        shown = self.mask_visible and fill is not None and start is not None and start < fill.width()
        if shown:
            self.mask_item.setPixmap(fill if start == 0 else fill.copy(start, 0, fill.width() - start, fill.height()))
            self.mask_item.setOffset(start, 0)
        self.mask_item.setVisible(shown)
        for item in self.outline_items:
            item.setVisible(self.mask_visible and not painting)

    def _result_width(self) -> int:
        """How many of the picture's columns, from the left, show the result or a step (not the picture)."""
        if self._result_pixmap is None or self.doc.image is None:
            return 0
        return int(round(self.doc.image.width * self.split))

    def set_mask_name(self, name: str) -> None:
        """Show and paint the mask of another purpose (on the picture it belongs to)."""
        self.mask_name = name
        if self.picture() is not self._shown:
            self._show_picture()
        else:
            self.clear_clicks()
            self._on_mask(name)

    def set_mask_visible(self, visible: bool) -> None:
        self.mask_visible = visible
        self._apply_overlay()

    def refresh_result(self) -> None:
        """Show the override (a timeline step) or the current result (read by the session's I/O thread),
        clipped by the compare split."""
        picture = next((p for p in (self.override, self.draft, self.session.result_image) if p is not None), None)
        if self.on_reference():
            picture = None  # results belong to the photo
        self.draft_badge.setVisible(picture is not None and picture is self.draft)
        self._place_badge()
        self._result_pixmap = self.session.pixmap(picture) if picture is not None else None
        if self._result_pixmap is not None and self.doc.image is not None:
            left, top, right, bottom = self._shown_box()
            pixmap = self._result_pixmap  # stretched onto its box in both directions: any aspect fits
            self.result_item.setTransform(QTransform.fromScale((right - left) / pixmap.width(),
                                                               (bottom - top) / pixmap.height()))
            self.result_item.setPos(left, top)
        self._apply_split()

    def _shown_box(self) -> Box:
        """Where the shown picture lies on the photo: a run's step previews on its crop, results on the photo."""
        image = self.doc.image
        if self.override is not None and self.run_crop is not None:
            return self.run_crop
        return 0, 0, image.width, image.height

    def show_step(self, image: Image.Image | None) -> None:
        """Show a timeline step's picture in place of the result (None: back to the result)."""
        self.override = image
        if image is not None and self.split == 0.0:
            self.split = 1.0
        self.refresh_result()

    def show_draft(self, image: Image.Image | None) -> None:
        """Show a live draft (at the photo's size) in place of the result, badged as a draft (None: no draft)."""
        self.draft = image
        if image is not None and self.split == 0.0:
            self.split = 1.0
        self.refresh_result()

    def _place_badge(self) -> None:
        view = self.viewport().geometry()
        self.draft_badge.adjustSize()
        self.draft_badge.move(view.left() + 6, view.top() + 6)
        self.draft_badge.raise_()

    def set_split(self, fraction: float) -> None:
        self.split = min(max(fraction, 0.0), 1.0)
        self._apply_split()

    def toggle_compare(self) -> None:
        """Flip between the whole source and the whole result."""
        self.set_split(0.0 if self.split > 0.5 else 1.0)

    def _apply_split(self) -> None:
        pixmap = self._result_pixmap
        if pixmap is None or self.doc.image is None:
            self.result_item.setPixmap(QPixmap())
            self.split_line.hide()  # hidden, not shortened: a line of no length still draws a dot
        else:
            left, _, right, _ = self._shown_box()
            x = self.doc.image.width * self.split  # the split, in photo pixels; the picture is clipped there
            share = min(max((x - left) / (right - left), 0.0), 1.0)
            width = max(int(round(pixmap.width() * share)), 0)
            shown = pixmap if width == pixmap.width() else pixmap.copy(0, 0, width, pixmap.height()) if width else QPixmap()
            self.result_item.setPixmap(shown)
            self.split_line.setLine(x, 0, x, self.doc.image.height)
            self.split_line.setVisible(0.0 < self.split < 1.0)
        self._apply_overlay()

    # -- zoom and pan ---------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_percent(self) -> int:
        """The zoom as the artist reads it: 100 is one photo pixel per device pixel."""
        return round(self.zoom() * self.devicePixelRatioF() * 100)

    def fit(self) -> None:
        if self.picture() is not None:
            self.fitInView(self.source_item, Qt.AspectRatioMode.KeepAspectRatio)
            self._update_scene_rect()
            self.centerOn(self.source_item)
            self.fitted = True
            self.zoomChanged.emit(self.zoom())

    def actual_size(self) -> None:
        """100%: one photo pixel per device pixel on HiDPI screens too."""
        ratio = self.devicePixelRatioF()
        centre = self.mapToScene(self.viewport().rect().center())
        self.resetTransform()
        self.scale(1 / ratio, 1 / ratio)
        self._update_scene_rect()
        self.centerOn(centre)
        self.fitted = False
        self.zoomChanged.emit(self.zoom())

    def zoom_by(self, factor: float, at: QPointF | None = None) -> None:
        """Zoom by `factor`, keeping the photo point under `at` (viewport pixels; default: the centre) there."""
        at = QPointF(self.viewport().rect().center()) if at is None else at
        anchor = self.mapToScene(at.toPoint())
        self.scale(factor, factor)
        self._update_scene_rect()
        moved = self.mapFromScene(anchor) - at.toPoint()  # where the anchor went, in viewport pixels
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + moved.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + moved.y())
        self.fitted = False
        self.zoomChanged.emit(self.zoom())

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_by(ZOOM_STEP ** steps, event.position())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place_zoom_label()
        self._place_badge()
        if self.fitted:
            self.fit()

    def _show_zoom(self) -> None:
        self.zoom_label.setText(f"{self.zoom_percent()}%")
        self.zoom_label.adjustSize()
        self.zoom_label.setVisible(self.picture() is not None)
        self._place_zoom_label()

    def _place_zoom_label(self) -> None:
        label, view = self.zoom_label, self.viewport().geometry()
        label.move(view.right() - label.width() - 6, view.bottom() - label.height() - 6)
        label.raise_()

    def _update_scene_rect(self) -> None:
        """The photo with a margin of one viewport around it, so any point of it can be brought under
        the cursor (a scene no larger than the view could only sit centred)."""
        picture = self.picture()
        if picture is None:
            return
        zoom = max(self.zoom(), 1e-6)
        margin_x, margin_y = self.viewport().width() / zoom, self.viewport().height() / zoom
        self.scene().setSceneRect(QRectF(-margin_x, -margin_y, picture.width + 2 * margin_x,
                                         picture.height + 2 * margin_y))

    # -- the crop of the next run ---------------------------------------------------------------
    def set_bounding_masks(self, names: tuple[str, ...]) -> None:
        """The method's masks that bound an edit (the crop is made around them)."""
        self.bounding_masks = names
        self._show_crop()

    def set_area(self, mode: str | None, padding: int, feather: int, working_side: int) -> None:
        """The Tools panel's area choice and the working size it is made at (pipeline.area.choose_crop)."""
        self.area, self.working_side = (mode, padding, feather), working_side
        self._show_crop()

    def planned_crop(self) -> Box | None:
        """The box of the photo the next run will edit, as the engine chooses it; None: the whole photo."""
        image = self.doc.image
        if image is None or self.working_side is None:
            return None
        from pipeline.area import choose_crop

        regions = [self.doc.masks[name] >= 128 for name in self.bounding_masks
                   if name in self.doc.masks and name not in self.doc.mask_pictures]
        mode, padding, feather = self.area
        return choose_crop(mode, regions, image.size, self.working_side, padding, feather)

    def _show_crop(self) -> None:
        crop = self.planned_crop() if not self.on_reference() else None
        if crop is not None:
            left, top, right, bottom = crop
            self.crop_item.setRect(QRectF(left, top, right - left, bottom - top))
            self.crop_item.setToolTip(f"The next run edits this crop of {right - left}x{bottom - top} photo pixels "
                                      "and pastes it back; everything outside it stays as it is.")
        self.crop_item.setVisible(crop is not None)

    def _on_run(self) -> None:
        """A new run: its previews are pictures of the crop planned now."""
        run = self.session.run
        if run.running and run.serial != self._serial:
            self._serial = run.serial
            self.run_crop = self.planned_crop()

    # -- brush ----------------------------------------------------------------------------------
    def set_brush_size(self, size: float) -> None:
        self.brush_size = min(max(size, 1.0), 1000.0)
        self._update_cursor(self.cursor_item.rect().center())
        self.brushChanged.emit()

    def set_hardness(self, hardness: float) -> None:
        self.hardness = min(max(hardness, 0.0), 1.0)
        self.brushChanged.emit()

    def set_tool(self, tool: Tool) -> None:
        self.tool = tool
        self._apply_overlay()
        self.cursor_item.setVisible(tool in (Tool.BRUSH, Tool.ERASER))
        if tool != Tool.SEGMENT:
            self.clear_clicks()
        self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if tool == Tool.PAN else Qt.CursorShape.CrossCursor)

    def _update_cursor(self, centre: QPointF) -> None:
        r = self.brush_size / 2
        self.cursor_item.setRect(QRectF(centre.x() - r, centre.y() - r, 2 * r, 2 * r))

    def _begin_stroke(self, at: QPointF) -> None:
        mask = self.doc.mask(self.mask_name)
        self._stroke = {"before": mask.copy(), "last": (at.x(), at.y()), "box": None,
                        "erase": self.tool == Tool.ERASER}
        self._continue_stroke(at, first=True)

    def _continue_stroke(self, at: QPointF, first: bool = False) -> None:
        s = self._stroke
        assert s is not None
        mask = self.doc.mask(self.mask_name)
        r = self.brush_size / 2
        if first:
            box = dab(mask, at.x(), at.y(), r, self.hardness, s["erase"])
        else:
            box = stroke(mask, s["last"], (at.x(), at.y()), r, self.hardness, s["erase"])
        s["last"], s["box"] = (at.x(), at.y()), union(s["box"], box)
        self.doc.maskChanged.emit(self.mask_name)

    def _end_stroke(self) -> None:
        s, self._stroke = self._stroke, None
        self._on_mask(self.mask_name)  # the outline of what was painted, the fill where it belongs
        if s is None or s["box"] is None:
            return
        x0, y0, x1, y1 = s["box"]
        self.doc.push_mask_change(self.mask_name, s["box"], s["before"][y0:y1, x0:x1].copy(),
                                  "Erase" if s["erase"] else "Paint")

    # -- segment clicks -------------------------------------------------------------------------
    def clear_clicks(self) -> None:
        self.points, self.labels = [], []
        for item in self.click_items:
            self.scene().removeItem(item)
        self.click_items = []
        self.box_item.hide()

    def add_click(self, x: float, y: float, positive: bool) -> None:
        """A segment click in image pixels; asks for the mask of all clicks so far."""
        self.points.append((x, y))
        self.labels.append(1 if positive else 0)
        r = max(4.0 / max(self.zoom(), 1e-3), 2.0)
        dot = self.scene().addEllipse(x - r, y - r, 2 * r, 2 * r, QPen(Qt.GlobalColor.white, 0),
                                      QBrush(QColor(80, 220, 120) if positive else QColor(240, 70, 70)))
        dot.setZValue(6)
        self.click_items.append(dot)
        self.segmentRequested.emit(list(self.points), list(self.labels), self._box())

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.box_item.setRect(QRectF(QPointF(x0, y0), QPointF(x1, y1)).normalized())
        self.box_item.show()
        self.segmentRequested.emit(list(self.points), list(self.labels), self._box())

    def _box(self) -> tuple[float, float, float, float] | None:
        if not self.box_item.isVisible():
            return None
        r = self.box_item.rect()
        return r.left(), r.top(), r.right(), r.bottom()

    # -- input ----------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        at = self.mapToScene(event.position().toPoint())
        panning = event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton and (self._space or self.tool == Tool.PAN))
        if panning:
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self.picture() is None:
            pass
        elif self.tool in (Tool.BRUSH, Tool.ERASER) and event.button() == Qt.MouseButton.LeftButton:
            self._begin_stroke(at)
        elif self.tool == Tool.SEGMENT and event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            self._box_from = at if event.button() == Qt.MouseButton.LeftButton else None
            if event.button() == Qt.MouseButton.RightButton:
                self.add_click(at.x(), at.y(), positive=False)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        at = self.mapToScene(event.position().toPoint())
        self._update_cursor(at)
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.fitted = False
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(delta.y()))
        elif self._stroke is not None:
            self._continue_stroke(at)
        elif self._box_from is not None:
            self.box_item.setRect(QRectF(self._box_from, at).normalized())
            self.box_item.setVisible((at - self._box_from).manhattanLength() * self.zoom() >= BOX_MIN_PX)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        at = self.mapToScene(event.position().toPoint())
        if self._pan_from is not None:
            self._pan_from = None
            self.set_tool(self.tool)
        elif self._stroke is not None:
            self._end_stroke()
        elif self._box_from is not None:
            start, self._box_from = self._box_from, None
            if self.box_item.isVisible():
                self.set_box(start.x(), start.y(), at.x(), at.y())
            else:
                self.add_click(at.x(), at.y(), positive=True)
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.set_tool(self.tool)
            return
        super().keyReleaseEvent(event)

    def apply_segment(self, mask: np.ndarray) -> None:
        """Put a segmentation into the current mask as one undoable step."""
        self.doc.replace_mask(self.mask_name, np.where(mask, 255, 0).astype(np.uint8), "Segment")
