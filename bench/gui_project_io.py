"""How long the window's event loop stalls while a large project is opened, saved, autosaved, refreshed
after a run and pruned (Free disk space): the UI thread does no project I/O, so each should stay under
50 ms whatever the project's size.

The project is made by a builder function, `--builder MODULE:FUNCTION` (called as FUNCTION(folder) and
returning the project's path); the default is bench/bench_project_io.py's `build_project` (the demo
photo, one real first edit with demo-tiny, 2 GiB of tuning records), the project the CLI's open, save
and re-edit figures are measured on. `--builder bench.gui_project_io:build_large_photo_project` adds
what costs the canvas: a 2048 x 1536 photo with an edit mask and a result at that size, two
inversions with two tunings each (six records of 341 MiB), an edit that used the newest of them. The window is the real MainWindow over the tests'
FakeEngine (its runs write real results into the project, so the refresh after a run reads the real
project). A 2 ms timer records the gaps between its ticks; a stall is a gap beyond that, and the UI
thread's own CPU time within the worst gap says how much of it was work on that thread rather than
waiting for a core of a loaded machine (scripts/bench_gui.StallMeter). Each operation is started from
the event loop as an artist starts it and timed to its end (the document saved, the history
refreshed, the space freed).

    OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_project_io.py [--builder M:F]

Writes bench/results/gui-project-io-<machine>.json (or --json PATH). Committed: that file (the default
builder) and gui-project-io-3mp-photo-<machine>.json (the large photo's), and the same two measured
before the session's project-I/O thread (`...-before-282db00-...`: this script run in a checkout of
commit 282db00, where the window opened, saved and pruned on the UI thread).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings, QTimer  # noqa: E402

from gui.app import make_app, wait_until  # noqa: E402
from gui.settings import AppSettings  # noqa: E402
from gui.window import MainWindow  # noqa: E402
from scripts.bench_gui import StallMeter  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PHOTO = ROOT / "resources" / "demo" / "house.png"
RECORD_BYTES = 341 << 20  # six of them: 2 GiB
TARGET_MS = 50


def build_large_photo_project(folder: Path) -> Path:
    """A project of about 2 GiB with a 3-megapixel photo, mask and result (see the module's docstring)."""
    import numpy as np
    import torch
    from PIL import Image

    from pipeline.images import load_image
    from pipeline.project import ModelRecord, Project

    photo = load_image(PHOTO).resize((2048, 1536), Image.Resampling.LANCZOS)
    project = Project.create(folder / "big.retake", photo)
    model = ModelRecord("demo", "sha256:" + "0" * 64)
    record = {"reference_kv": torch.zeros(RECORD_BYTES // 2, dtype=torch.float16)}
    for inversion in ("inv-a", "inv-b"):
        for key, of in ((inversion, None), (f"{inversion}-t1", inversion), (f"{inversion}-t2", inversion)):
            project.save_inversion(key, record, method="specref", model_identity=model.identity,
                                   source_prompt="a red house", params={"steps": 50}, size=(512, 384), steps=50,
                                   tuning_of=of)
    project.add_edit(target_prompt="a blue house", source_prompt="a red house", model=model, method="specref",
                     params={}, seed=None, inversion_key="inv-b", tuning_key="inv-b-t2",
                     result=photo.convert("RGB"))
    mask = np.zeros((1536, 2048), np.uint8)
    mask[400:1100, 500:1500] = 255
    project.set_input("edit_mask", Image.fromarray(mask, "L"), kind="mask")
    return project.path


def project_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(meter: StallMeter, start: Callable[[], object], done: Callable[[], bool]) -> dict[str, float]:
    """Start an operation from the event loop and turn it until `done()`: its wall time and stalls."""
    meter.start()
    wait_until(lambda: meter.last, 5)  # a first tick: a stall from the very start is measured too
    began = time.perf_counter()
    QTimer.singleShot(0, start)
    wait_until(done, 600)
    seconds = time.perf_counter() - began
    ended = meter.clock.nsecsElapsed()
    wait_until(lambda: meter.last > ended, 5)  # and a tick after it: a stall up to the very end is measured
    return {"seconds": round(seconds, 3), "longest_stall_ms": round(meter.longest_ms, 1),
            "stalls_over_50ms": len(meter.stalls), "most_ui_cpu_in_one_stall_ms": round(meter.busiest_ms, 1)}


def measure(window: MainWindow, project: Path) -> dict[str, dict[str, float]]:
    meter = StallMeter()
    doc, figures = window.doc, {}
    figures["open"] = timed(meter, lambda: window.open_path(project), lambda: doc.project_path == project)
    saved = []
    doc.set_prompt("source", "a red house in a meadow")
    figures["save"] = timed(meter, lambda: saved.append(window.save()), lambda: bool(saved))
    doc.set_prompt("source", "a red house in a green meadow")
    figures["autosave"] = timed(meter, window.autosave_now, lambda: not window.isWindowModified())
    doc.set_prompt("target", "a blue house in a green meadow")
    figures["run_and_refresh"] = timed(meter, window.run_edit,
                                       lambda: window.status_stage.text().startswith("Edit #"))
    freed = []
    window._ask_free_space = lambda *sizes: False  # the artist chooses: tunings only
    figures["free_disk_space"] = timed(meter, lambda: freed.append(window.free_disk_space()), lambda: bool(freed))
    window._ask_free_space = lambda *sizes: True  # again, with the inversions the newest edit did not use
    figures["prune_inversions_too"] = timed(meter, lambda: freed.append(window.free_disk_space()),
                                            lambda: len(freed) == 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builder", default="bench.bench_project_io:build_project",
                        help="MODULE:FUNCTION that makes the project in a folder and returns its path")
    parser.add_argument("--json", type=Path, help="where to write the figures")
    args = parser.parse_args()
    module, _, function = args.builder.partition(":")
    builder = getattr(importlib.import_module(module), function)
    make_app()
    from tests.gui.fakes import FakeEngine

    with tempfile.TemporaryDirectory(prefix="retake-bench-io-") as tmp:
        built = time.perf_counter()
        project = Path(builder(Path(tmp)))
        size = project_bytes(project)
        built = time.perf_counter() - built
        settings = AppSettings(QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat))
        settings.set("autosave_minutes", 0)
        window = MainWindow(settings, engine_factory=lambda: FakeEngine(steps=3))
        window.show()
        wait_until(lambda: window.engine.is_ready, 120)
        figures = measure(window, project)
        window.doc.undo.setClean()
        window.close()
        shutil.rmtree(project, ignore_errors=True)
    worst = max(figure["longest_stall_ms"] for figure in figures.values())
    busiest = max(figure["most_ui_cpu_in_one_stall_ms"] for figure in figures.values())
    result = {"project_bytes": size, "project_gib": round(size / 2**30, 2), "builder": args.builder,
              "build_seconds": round(built, 1), "operations": figures, "longest_stall_ms": worst,
              "most_ui_cpu_in_one_stall_ms": busiest, "target_ms": TARGET_MS, "under_target": worst < TARGET_MS,
              "machine": machine(),
              "platform": "offscreen", "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    text = json.dumps(result, indent=1)
    print(text)
    out = args.json or RESULTS / f"gui-project-io-{machine()}.json"
    out.write_text(text + "\n")
    return 0


def machine() -> str:
    return f"cpu-{platform.machine().lower().replace('_', '-')}"


if __name__ == "__main__":
    raise SystemExit(main())
