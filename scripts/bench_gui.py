"""Measure the desktop window's responsiveness on the demo model, editing what the app's demo edits.

The window starts with a new user's settings, so it runs as the app runs by default: the `demo` model
(the demo-world one) at its own working size (the size it was trained at, 128 px) and with the
new-project parameters gui/settings.py gives it (DEMO_PARAMS: direct inversion today, and the default
50 steps), on pipeline.demo_model.DEMO_EDIT: the demo-world house scene with its source caption and
the target that turns the red house blue, with the default method. `--max-side` and `--steps`
override the working size and the steps as a user's settings would; the JSON says what the run used
(the working size as the project recorded it).

Reports, as JSON: how long until the window is shown and its event loop turns (Qt and the window
only: the engine loads on its worker thread), how long until the engine is ready and the model
loaded, and, during one full run (inversion + edit, a preview at every step), the event loop's
longest stall and the time to the first step preview; then, choosing every third step of each stage
on the timeline as a scrub would, the time from choosing a step to its full VAE decode on the canvas,
and the longest stall meanwhile. A 2 ms timer records the gaps between its ticks; a stall is a gap
beyond that.

    OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/bench_gui.py [--max-side N] [--steps N]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QElapsedTimer, QSettings, QTimer  # noqa: E402

from gui.app import make_app, wait_until  # noqa: E402
from gui.settings import AppSettings  # noqa: E402
from gui.window import MainWindow  # noqa: E402

TICK_MS = 2


class StallMeter:
    """The longest gap between ticks of a short timer, i.e. how long the event loop was not turning;
    and `busiest_ms`, the most CPU time the UI thread itself spent within one gap (on a loaded machine a
    gap also holds time the thread waited for a core: this part is the work it did without returning to
    the event loop)."""

    def __init__(self, where=lambda: "") -> None:
        self.where = where
        self.stalls: list[tuple[float, str]] = []
        self.clock = QElapsedTimer()
        self.timer = QTimer(interval=TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.longest_ms = self.busiest_ms = 0.0
        self.last = 0
        self._cpu = 0.0

    def start(self) -> None:
        self.longest_ms, self.busiest_ms, self.last, self.stalls = 0.0, 0.0, 0, []
        self.clock.start()
        self.timer.start()

    def _tick(self) -> None:
        now, cpu = self.clock.nsecsElapsed(), time.thread_time()
        if self.last:
            gap = (now - self.last) / 1e6 - TICK_MS
            self.longest_ms = max(self.longest_ms, gap)
            self.busiest_ms = max(self.busiest_ms, (cpu - self._cpu) * 1000)
            if gap > 50:
                self.stalls.append((round(gap, 1), self.where()))
        self.last, self._cpu = now, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-side", type=int, help="the working size (default: the app's for the demo model)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the app's for a new project)")
    args = parser.parse_args()
    app = make_app()
    work = Path(tempfile.mkdtemp(prefix="retake-bench-"))
    settings = AppSettings(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    if args.max_side is not None:
        settings.set("max_side", args.max_side)
    window = None
    meter = StallMeter(lambda: window.session.run.stage if window is not None else "")
    meter.start()
    window = MainWindow(settings)
    window.show()
    app.processEvents()
    shown_s = time.perf_counter() - STARTED
    wait_until(lambda: window.engine.is_ready, 300)
    ready_s = time.perf_counter() - STARTED
    wait_until(lambda: window.session.model_state == "loaded", 300)
    model_s = time.perf_counter() - STARTED
    startup_stall = meter.longest_ms
    # Imported only now, as the window imports pipeline modules: pipeline.demo_model may bring torch in,
    # which at the top of this script would count its import (seconds) in window_shown_s.
    from pipeline.demo_model import DEMO_EDIT
    from pipeline.events import Done
    from pipeline.project import Project

    photo = work / DEMO_EDIT.image.name
    shutil.copy(DEMO_EDIT.image, photo)
    window.open_path(photo)
    window.doc.set_prompt("source", DEMO_EDIT.source)
    window.doc.set_prompt("target", DEMO_EDIT.target)
    if args.steps is not None:
        window.doc.set_param("steps", args.steps)
    app.processEvents()
    finished = []
    window.session.runFinished.connect(finished.append)
    meter.start()
    run_start = time.perf_counter()
    window.run_edit()
    wait_until(lambda: finished, 600)
    run_s = time.perf_counter() - run_start
    run_stall, run_stalls = meter.longest_ms, meter.stalls[:20]
    if not isinstance(finished[0], Done):  # nothing to scrub: say why instead of timing nothing
        print(f"the run did not finish: {finished[0]}", file=sys.stderr)
        window.doc.undo.setClean()
        window.close()
        return 1

    meter.start()
    run = window.session.run
    chosen = [(stage, step) for stage in window.timeline.stages() for step in sorted(run.previews[stage])[::3]]
    for stage, step in chosen:  # one at a time, each to its full decode
        window.timeline.choose(stage, step)
        wait_until(lambda s=stage, n=step: (s, n) in run.decoded and window.canvas.override is run.decoded[(s, n)],
                   60)
    latencies = sorted(window.session.decode_latencies_s)
    result = {
        "window_shown_s": round(shown_s, 3),
        "engine_ready_s": round(ready_s, 3),
        "model_loaded_s": round(model_s, 3),
        "longest_stall_during_start_ms": round(startup_stall, 1),
        "longest_stall_during_run_ms": round(run_stall, 1),
        "first_preview_s": None if window.session.first_preview_s is None else round(window.session.first_preview_s, 3),
        "run_s": round(run_s, 2),
        "stalls_over_50ms_during_run": run_stalls,
        "previews_per_stage": {stage: len(steps) for stage, steps in run.previews.items()},
        "scrub_to_full_decode_s": {"steps": len(latencies), "median": round(latencies[len(latencies) // 2], 3),
                                   "max": round(latencies[-1], 3)},
        "longest_stall_while_scrubbing_ms": round(meter.longest_ms, 1),
        "model": settings.request_options()["model"],
        "max_side": Project.open(window.doc.project_path).settings.max_side,
        "method": window.doc.method_id, "inversion": window.doc.params.get("inversion"),
        "steps": window.doc.params["steps"], "picture": DEMO_EDIT.image.name, "target": DEMO_EDIT.target,
        "platform": app.platformName(),
    }
    print(json.dumps(result, indent=1))
    window.doc.undo.setClean()
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
