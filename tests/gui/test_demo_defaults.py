"""What the app does by itself for the demo model (the demo-world one): its own working size, 128 px
(every model works at the size it was trained at unless the artist chooses one), and direct
inversion for a new project (gui/settings.py, DEMO_PARAMS, says why); other models get the methods'
own defaults on a GPU and their fastest faithful options without one (gui/starting_params.py), and a
project's stored parameters always win."""

from __future__ import annotations


def test_a_new_project_on_the_demo_model_starts_with_what_that_model_needs(qtbot, window, settings, photo):
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)  # the engine's status came
    assert settings.request_options()["model"] == "demo" and settings.request_options()["max_side"] is None
    window.open_path(photo)
    assert window.doc.params["inversion"] == "direct" and window.doc.params["steps"] == 50
    assert window.doc.params["guidance"] == 7.5
    window.doc.set_param("steps", 20)
    window.save()

    settings.set("model", "/models/sd-v1-5")
    settings.set("default_steps", 30)
    assert settings.request_options()["max_side"] is None
    window.open_path(photo)  # its project has parameters of its own now: they stay
    assert window.doc.params["inversion"] == "direct" and window.doc.params["steps"] == 20
    other = photo.with_name("other.png")
    other.write_bytes(photo.read_bytes())
    window.open_path(other)  # a new project on another model, on this CPU: direct inversion
    assert window.doc.params["inversion"] == "direct" and window.doc.params["steps"] == 30
    third = photo.with_name("third.png")
    third.write_bytes(photo.read_bytes())
    window.engine.status.emit({"device": "NVIDIA H100 80GB HBM3 (cuda:0)", "memory": ""})
    window.open_path(third)  # with a GPU: the method's default inversion
    assert window.doc.params["inversion"] == "null-text" and window.doc.params["steps"] == 30
