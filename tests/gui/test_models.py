"""The model: loaded in the background through Engine.preload with its state, device and memory in the
status bar; the model manager lists what this machine has (Retake's folder, the Hugging Face cache,
A1111 / ComfyUI folders), imports a checkpoint, makes one the model, and downloads only when asked
and online."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from safetensors.numpy import save_file

from gui.models_dialog import find_models, is_checkpoint
from tests.gui.conftest import make_window


def checkpoint(path, unet=True):
    """A .safetensors file with the key names of a single-file SD checkpoint (or of a LoRA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "model.diffusion_model.input_blocks.0.0.weight" if unet else "lora_unet_down_blocks_0.alpha"
    save_file({key: np.zeros(4, np.float32), "first_stage_model.decoder.conv_in.bias": np.zeros(2, np.float32)},
              str(path))
    return path


@pytest.fixture
def machine(tmp_path, settings, monkeypatch):
    """Retake's model folder, a Hugging Face cache, an A1111 install and a ComfyUI install."""
    settings.set("models_dir", str(tmp_path / "retake-models"))
    checkpoint(tmp_path / "retake-models" / "mine.safetensors")
    hub = tmp_path / "hub"
    snapshot = hub / "models--someone--sd15-finetune" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (hub / "models--someone--a-lora" / "snapshots" / "x").mkdir(parents=True)  # not a diffusers model
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    a1111, comfy = tmp_path / "stable-diffusion-webui", tmp_path / "ComfyUI"
    checkpoint(a1111 / "models" / "Stable-diffusion" / "dreamlike.safetensors")
    checkpoint(a1111 / "models" / "Stable-diffusion" / "anime" / "counterfeit.safetensors")
    checkpoint(a1111 / "models" / "Lora" / "style.safetensors", unet=False)
    checkpoint(comfy / "models" / "checkpoints" / "realistic.safetensors")
    checkpoint(comfy / "models" / "loras" / "detail.safetensors", unet=False)
    (comfy / "models" / "checkpoints" / "notes.txt").write_text("not a model")
    return {"a1111": a1111, "comfy": comfy, "tmp": tmp_path}


def test_the_model_preloads_through_the_engine_and_the_status_bar_says_so(qtbot, window, fake_engine):
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    assert fake_engine.preloads == [("demo", None, None, False)]  # Engine.preload: no throwaway request
    assert window.status_model.text() == "Model: demo (loaded)"
    assert window.status_device.text() == "Device: CPU" and window.status_memory.text() == "GPU memory: n/a"


def test_a_model_that_does_not_load_is_said_and_the_window_keeps_working(qtbot, settings, fake_engine, photo):
    fake_engine.missing_models.add("/nowhere/model.safetensors")
    settings.set("model", "/nowhere/model.safetensors")
    window = make_window(qtbot, settings, lambda: fake_engine)
    try:
        qtbot.waitUntil(lambda: window.session.model_state == "not loaded", timeout=5000)
        assert "model.safetensors (not loaded)" in window.status_model.text()
        assert window.message.isVisible() and "/nowhere/model.safetensors" in window.message.text.text()
        window.use_model("demo")
        qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
        assert window.status_model.text() == "Model: demo (loaded)"
    finally:
        window.close()


def test_models_are_found_in_retakes_folder_the_hub_cache_and_other_programs(qtbot, settings, machine):
    settings.set_model_folders([str(machine["a1111"]), str(machine["comfy"])])
    found = {m.name: m for m in find_models(settings)}
    assert set(found) == {"demo", "mine", "someone/sd15-finetune", "dreamlike", "counterfeit", "realistic"}
    assert found["someone/sd15-finetune"].spec == "someone/sd15-finetune"  # an id the engine finds in the cache
    assert found["counterfeit"].spec.endswith("anime/counterfeit.safetensors") and found["counterfeit"].size > 0
    assert found["realistic"].where == str(machine["comfy"])
    assert not is_checkpoint(machine["a1111"] / "models" / "Lora" / "style.safetensors")


def test_model_manager_adds_a_folder_imports_a_checkpoint_and_uses_it(qtbot, window, fake_engine, settings, machine):
    window.actions["models"].trigger()
    dialog = window.models_dialog
    assert dialog.isVisible()
    names = [dialog.list.topLevelItem(i).text(0) for i in range(dialog.list.topLevelItemCount())]
    assert names[0] == "demo  (in use)" and "mine" in names and "dreamlike" not in names

    assert dialog.add_folder(machine["a1111"]) == 2
    assert "2 model(s)" in dialog.note.text()
    names = [dialog.list.topLevelItem(i).text(0) for i in range(dialog.list.topLevelItemCount())]
    assert {"dreamlike", "counterfeit"} <= set(names)

    outside = checkpoint(machine["tmp"] / "downloads" / "fresh.safetensors")
    assert dialog.import_checkpoint(outside)
    imported = settings.models_dir() / "fresh.safetensors"
    qtbot.waitUntil(lambda: imported.is_file() and dialog.import_button.isEnabled(), timeout=10_000)
    assert imported.read_bytes() == outside.read_bytes()
    assert not list(settings.models_dir().glob("*.part"))
    assert dialog.selected().spec == str(imported)  # the imported model is selected
    assert not dialog.import_checkpoint(outside) and "already" in dialog.note.text()
    assert not dialog.import_checkpoint(machine["a1111"] / "models" / "Lora" / "style.safetensors")
    assert "no Stable Diffusion UNet" in dialog.note.text()
    ckpt = machine["tmp"] / "old.ckpt"
    ckpt.write_bytes(b"pickle")
    assert not dialog.import_checkpoint(ckpt) and "run code" in dialog.note.text()

    dialog.use.click()
    qtbot.waitUntil(lambda: fake_engine.preloads[-1] == (str(imported), None, None, False), timeout=5000)
    qtbot.waitUntil(lambda: settings.get("model") == str(imported), timeout=5000)  # recorded once loaded
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    assert window.status_model.text() == "Model: fresh.safetensors (loaded)"

    dialog.list.setCurrentItem(dialog.list.findItems("dreamlike", Qt.MatchFlag.MatchContains)[0])
    dialog.remove.click()  # forget the A1111 folder
    assert settings.model_folders() == []
    dialog.close()


def test_download_only_when_asked_and_online(qtbot, window, fake_engine, monkeypatch):
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    dialog = window.open_models()
    dialog.hub_id.setText("someone/sd15-finetune")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not dialog.download_model()
    assert "offline" in dialog.note.text() and "HF_HUB_OFFLINE=1" in dialog.note.text()
    assert all(not download for *_, download in fake_engine.preloads)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert dialog.download.isEnabled()
    dialog.download.click()
    qtbot.waitUntil(lambda: window.session.model_state == "loaded" and len(fake_engine.preloads) == 3, timeout=5000)
    assert fake_engine.preloads[1:] == [("someone/sd15-finetune", None, None, True),
                                        ("someone/sd15-finetune", None, None, False)]
    qtbot.waitUntil(lambda: window.settings.get("model") == "someone/sd15-finetune", timeout=5000)  # once loaded
    dialog.close()
