"""The reference panel driven like a user: a method that declares a reference picture (with an
object mask its InputSpec says is drawn on it) gets the panel; the picture comes by drop, paste or file, its prompt is
typed, its mask is painted on the canvas switched to the reference; runs receive all of it as
EditRequest inputs and input prompts; the project keeps it; undo puts it back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QGuiApplication

from gui.canvas import Tool
from gui.qimage import to_qimage
from pipeline.events import Done
from pipeline.methods.base import EDIT_MASK, InputSpec
from pipeline.params import param
from tests.gui.conftest import make_window
from tests.gui.test_window import open_photo, run_and_wait, type_prompts, view_point


@dataclass(frozen=True)
class RefParams:
    INPUTS: ClassVar[tuple[InputSpec, ...]] = (
        InputSpec("reference", "image", "Reference picture", "The object to bring in."),
        InputSpec("reference_mask", "mask", "Object in the reference", "White on the object.", picture="reference"),
        EDIT_MASK,
    )
    steps: int = param(10, kind="int", stage="inversion", minimum=5, maximum=200, help="DDIM steps.")
    reference_steps: tuple[float, float] = param((0.1, 1.0), kind="step_range", minimum=0.0, maximum=1.0,
                                                 help="Steps that attend to the reference.")


class RefMethod:
    id, title, summary = "ref-test", "Reference test", "A method that takes a reference picture."
    Params = RefParams
    parts = ()

    def check(self, tokenizer, prompts, params) -> None:
        """Any prompts will do (the window checks them while the artist types)."""


@pytest.fixture
def ref_method(monkeypatch, window):
    from pipeline.methods import registry

    monkeypatch.setattr(registry, "_METHODS", (*registry._METHODS, RefMethod))
    window.method.set_ready()  # the method list as the registry now has it
    return RefMethod


def drop_on(widget, path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    widget.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                                Qt.KeyboardModifier.NoModifier))


def reference_file(tmp_path, size=(200, 100), colour="orange"):
    path = tmp_path / f"reference-{size[0]}.png"
    Image.new("RGB", size, colour).save(path)
    return path


def test_reference_loaded_prompted_masked_run_saved_reopened(qtbot, window, photo, tmp_path, fake_engine,
                                                              settings, ref_method, stub_segmenter):
    open_photo(qtbot, window, photo)
    panel = window.reference
    assert not panel.isEnabled()  # p2p takes no reference
    window.method.method.setCurrentIndex(window.method.method.findData("ref-test"))
    window.method.method.activated.emit(window.method.method.currentIndex())
    assert panel.isEnabled() and "Reference picture" in panel.title.text()
    assert panel.paint_mask.isVisibleTo(panel) and "not painted" in panel.mask_note.text()

    drop_on(panel, reference_file(tmp_path))
    reference = window.doc.references["reference"]
    assert reference.image.size == (200, 100) and not panel.picture.pixmap().isNull()
    panel.prompt.clear()
    qtbot.keyClicks(panel.prompt, "a red car")
    qtbot.keyClick(panel.prompt, Qt.Key.Key_Return)
    assert window.doc.references["reference"].prompt == "a red car"

    qtbot.mouseClick(panel.paint_mask, Qt.MouseButton.LeftButton)  # the canvas switches to the reference
    assert window.tools.purpose.currentData() == "reference_mask"
    assert window.canvas.picture() is reference.image
    assert window.canvas.source_item.pixmap().size().toTuple() == (200, 100)
    window.set_tool(Tool.BRUSH)
    window.canvas.set_brush_size(20)
    qtbot.mousePress(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 40, 50))
    qtbot.mouseMove(window.canvas.viewport(), view_point(window, 120, 50))
    qtbot.mouseRelease(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 120, 50))
    mask = window.doc.masks["reference_mask"]
    assert mask.shape == (100, 200) and mask[50, 80] == 255 and mask[5, 190] == 0
    assert not window.doc.has_mask("edit_mask") and "painted." in panel.mask_note.text()

    window.actions["next_mask"].trigger()  # the photo's mask: the canvas shows the photo again
    assert window.tools.purpose.currentData() == "edit_mask" and window.canvas.picture() is window.doc.image
    assert window.canvas.source_item.pixmap().size().toTuple() == (640, 480)

    type_prompts(qtbot, window)
    assert isinstance(run_and_wait(qtbot, window), Done)
    request = fake_engine.requests[-1]
    assert request.input_prompts == {"reference": "a red car"}
    assert request.inputs["edit_mask"] == ""  # unpainted: the run goes without it, whatever was stored
    with Image.open(request.inputs["reference"]) as sent:
        assert sent.size == (200, 100)
    with Image.open(request.inputs["reference_mask"]) as sent:
        assert sent.size == (200, 100) and np.array_equal(np.asarray(sent), mask)

    assert window.save()
    project = window.doc.project_path
    window.close()
    again = make_window(qtbot, settings, lambda: fake_engine, lambda: stub_segmenter)
    try:
        again.method.set_ready()
        assert again.open_path(project)
        assert again.doc.method_id == "ref-test" and again.reference.isEnabled()
        kept = again.doc.references["reference"]
        assert kept.image.size == (200, 100) and kept.prompt == "a red car"
        assert again.reference.prompt.text() == "a red car"
        assert np.array_equal(again.doc.masks["reference_mask"], mask)
    finally:
        again.doc.undo.setClean()
        again.close()


@dataclass(frozen=True)
class StyleParams(RefParams):
    """A picture input with another name, its mask named freely, and a `<image>_mask` drawn on the photo."""

    INPUTS: ClassVar[tuple[InputSpec, ...]] = (
        InputSpec("style", "image", "Style picture", "The look to bring in."),
        InputSpec("cutout", "mask", "Part of the style picture", "White on the part to use.", picture="style"),
        InputSpec("style_mask", "mask", "Where the style goes", "White where the photo takes it."),
    )


class StyleMethod(RefMethod):
    id, title, summary = "style-test", "Style test", "A method whose mask is drawn on a picture named style."
    Params = StyleParams


def test_a_mask_is_drawn_on_the_picture_its_spec_names(qtbot, window, photo, tmp_path, fake_engine, monkeypatch):
    from pipeline.methods import registry

    monkeypatch.setattr(registry, "_METHODS", (*registry._METHODS, StyleMethod))
    open_photo(qtbot, window, photo)
    window.doc.set_method("style-test")
    panel = window.reference
    assert panel.isEnabled() and (panel.input_name, panel.mask_name) == ("style", "cutout")
    assert window.doc.mask_pictures == {"cutout": "style"} and panel.paint_mask.isVisibleTo(panel)
    panel.load_file(reference_file(tmp_path, (120, 90)))
    qtbot.mouseClick(panel.paint_mask, Qt.MouseButton.LeftButton)
    assert window.tools.purpose.currentData() == "cutout"
    assert window.canvas.picture() is window.doc.references["style"].image
    window.actions["mask_fill"].trigger()
    assert window.doc.masks["cutout"].shape == (90, 120) and "painted." in panel.mask_note.text()
    window.tools.choose_purpose("style_mask")  # named like a reference's mask, yet drawn on the photo
    assert window.canvas.picture() is window.doc.image
    window.actions["mask_fill"].trigger()
    assert window.doc.masks["style_mask"].shape == (480, 640)
    type_prompts(qtbot, window)
    assert isinstance(run_and_wait(qtbot, window), Done)
    request = fake_engine.requests[-1]
    with Image.open(request.inputs["cutout"]) as cutout, Image.open(request.inputs["style_mask"]) as region:
        assert cutout.size == (120, 90) and region.size == (640, 480)


def test_a_new_reference_drops_its_mask_and_undo_brings_both_back(qtbot, window, photo, tmp_path, ref_method):
    open_photo(qtbot, window, photo)
    window.doc.set_method("ref-test")
    window.reference.load_file(reference_file(tmp_path))
    first = window.doc.references["reference"].image
    window.tools.choose_purpose("reference_mask")
    window.actions["mask_fill"].trigger()
    assert window.doc.masks["reference_mask"].shape == (100, 200)

    QGuiApplication.clipboard().setImage(to_qimage(Image.new("RGB", (90, 60), "blue")))
    window.actions["reference_paste"].trigger()
    assert window.doc.references["reference"].image.size == (90, 60)
    assert window.canvas.picture().size == (90, 60)  # the canvas shows the new reference
    assert "reference_mask" not in window.doc.masks  # a mask of another picture is meaningless
    window.actions["mask_fill"].trigger()
    assert window.doc.masks["reference_mask"].shape == (60, 90)

    window.actions["undo"].trigger()  # the fill
    window.actions["undo"].trigger()  # the paste
    assert window.doc.references["reference"].image is first
    assert window.doc.masks["reference_mask"].shape == (100, 200) and window.doc.masks["reference_mask"].all()
    assert window.canvas.picture() is first
    window.actions["redo"].trigger()
    assert window.doc.references["reference"].image.size == (90, 60) and "reference_mask" not in window.doc.masks


def test_an_unreadable_reference_is_reported_and_nothing_changes(qtbot, window, photo, tmp_path, ref_method):
    open_photo(qtbot, window, photo)
    window.doc.set_method("ref-test")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    drop_on(window.reference, broken)
    assert window.message.isVisible() and "broken.png" in window.message.text.text()
    assert "reference" not in window.doc.references or window.doc.references["reference"].image is None


def test_the_registered_reference_methods_accept_what_the_window_sends(qtbot, window, photo, tmp_path):
    """For every registered method with a reference picture (SpecRef today), the request the window
    builds passes the engine's own checks: the picture at the photo's working size with its prompt,
    the object mask painted on the reference among the masks."""
    from gui import project_io
    from pipeline.methods.base import input_specs
    from pipeline.methods.registry import get_method, method_ids
    from pipeline.request import resolve

    methods = [m for m in method_ids() if any(s.kind == "image" for s in input_specs(get_method(m).Params))]
    if not methods:
        pytest.skip("no registered method takes a reference picture")
    open_photo(qtbot, window, photo)
    for method_id in methods:
        window.doc.set_method(method_id)
        window.reference.load_file(reference_file(tmp_path, (120, 90)))
        window.doc.set_reference_prompt(window.reference.input_name, "a blue car")
        for mask_name in input_specs(get_method(method_id).Params):
            if mask_name.kind == "mask":
                window.tools.choose_purpose(mask_name.name)
                window.actions["mask_fill"].trigger()
                assert window.doc.masks[mask_name.name].shape[::-1] == window.canvas.picture().size
        window.doc.set_prompt("source", "a house in a meadow")
        window.doc.set_prompt("target", "a car in a meadow")
        request = project_io.build_request(window.doc.project_path, window.doc.snapshot(),
                                           {"model": "demo", "max_side": 64}, tmp_path)
        job = resolve(request)
        name = window.reference.input_name
        assert job.images[name].shape == (1, 3, *job.size[::-1]) and job.input_prompts[name] == "a blue car"
        for mask_name in window.doc.mask_pictures:
            assert job.masks[mask_name].shape == (1, 1, *job.size[::-1]) and job.masks[mask_name].all()
