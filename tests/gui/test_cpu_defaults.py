"""Without a GPU every method starts with its fastest faithful option, and a long run is announced with
roughly how long it will take (issue 21, item 5). The estimate is checked with a fake cost per UNet
evaluation: its logic, not this machine's speed."""

from __future__ import annotations

import pytest

from gui.estimate import duration, estimate, method_parts
from tests.gui.conftest import make_window
from tests.gui.test_window import open_photo, run_and_wait, type_prompts

GPU = {"device": "NVIDIA H100 80GB HBM3 (cuda:0)", "memory": "GPU memory: 3.1 / 80 GiB"}


def choose(window, method_id):
    method = window.method
    method.method.setCurrentIndex(method.method.findData(method_id))
    method.method.activated.emit(method.method.currentIndex())


def test_without_a_gpu_toli_starts_with_direct_inversion_and_with_one_its_papers(qtbot, window, photo):
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    open_photo(qtbot, window, photo)
    assert not window.session.gpu and window.session.device == "CPU"
    choose(window, "toli")
    assert window.doc.method_id == "toli" and window.doc.params["inversion"] == "direct"
    window.doc.set_param("inversion", "null-text")
    window.method.reset()
    assert window.doc.params["inversion"] == "direct"
    choose(window, "kv-inversion")  # no inversion choice: its own defaults (low-rank, early stop)
    assert window.doc.params["form"] == "low-rank" and window.doc.params["early_stop"] is True

    window.engine.status.emit(GPU)
    assert window.session.gpu
    choose(window, "toli")
    assert window.doc.params["inversion"] == "null-text"


@pytest.mark.parametrize("gpu", [False, True])
def test_a_new_project_of_a_real_model_starts_fast_only_without_a_gpu(qtbot, settings, fake_engine, photo, gpu):
    settings.set("model", "/models/sd15")
    window = make_window(qtbot, settings, lambda: fake_engine)
    try:
        qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)  # its status came
        if gpu:
            window.engine.status.emit(GPU)
        open_photo(qtbot, window, photo)
        assert window.doc.method_id == "p2p"
        assert window.doc.params["inversion"] == ("null-text" if gpu else "direct")
    finally:
        window.doc.undo.setClean()
        window.close()


def test_the_estimate_counts_each_stage_the_run_needs():
    toli = {"steps": 50, "inversion": "null-text", "inner_steps": 10, "early_stop": True, "text_steps": 200}
    parts = method_parts("toli", toli)
    assert [(p.label, p.stage, p.rows) for p in parts] == [
        ("null-text inversion", "inversion", 50 * (3 + 3 * 10)), ("text optimisation", "tuning", 600),
        ("edit", "edit", 100)]
    whole = estimate("toli", toli, [], 0.1)
    assert whole.seconds == pytest.approx(165 + 60 + 10)
    assert whole.sentence() == ("This run takes up to about 4 min on this machine (null-text inversion 3 min, "
                                "text optimisation 60 s, edit 10 s); Esc cancels it.")
    assert estimate("toli", toli, ["inversion"], 0.1).seconds == pytest.approx(70)
    assert estimate("toli", toli, ["inversion", "tuning"], 0.1).seconds == pytest.approx(10)
    direct = estimate("toli", {**toli, "inversion": "direct"}, [], 0.1)  # the reconstruction row comes back
    assert direct.seconds == pytest.approx(5 + 60 + 20) and "about" in direct.sentence()
    kv = {"steps": 50, "inner_steps": 10, "early_stop": True}
    assert estimate("kv-inversion", kv, [], 1.0).seconds == 100 + 50 * 11 * 6 + 200
    assert estimate("kv-inversion", kv, ["inversion"], 1.0).seconds == 200
    assert (duration(3), duration(42), duration(130), duration(3 * 3600 + 61)) == ("5 s", "40 s", "3 min", "3 h 2 min")


def test_a_long_run_says_how_long_before_it_goes(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    assert window.doc.params["inversion"] == "direct" and window.doc.params["steps"] == 50
    window.engine.unetTimed.emit({"model": "another"}, 0.001)  # timed for a model no longer in use: ignored
    window.engine.unetTimed.emit(dict(window.session.model), 1.0)  # a fake cost: a UNet evaluation takes 1 s
    assert window.session.unet_seconds == 1.0
    run_and_wait(qtbot, window)
    said = window.message.text.text()
    assert said == "This run takes about 5 min on this machine (inversion 50 s, edit 4 min); Esc cancels it."
    run_and_wait(qtbot, window)  # the stored inversion is reused: only the edit
    assert window.message.text.text().startswith("This run takes about 4 min on this machine (edit 4 min)")
    window.session.unet_seconds = 0.01  # 2 s: nothing to announce
    window.message.hide()
    run_and_wait(qtbot, window)
    assert not window.message.isVisible()


def test_with_no_project_open_the_form_shows_what_a_new_project_starts_with(qtbot, window):
    from gui.starting_params import starting_params

    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    assert window.doc.project_path is None and not window.doc.params
    shown = {name: editor for name, editor in window.method.editors.items()}
    expected = starting_params(window.doc.method_id, gpu=False)
    assert shown["steps"].spin.value() == expected["steps"] == 50  # not the spin box's minimum, 5
    assert shown["guidance"].spin.value() == expected["guidance"]
    assert shown["inversion"].combo.currentText() == expected["inversion"] == "direct"
