"""Measure the desktop window's responsiveness on the demo model.

Reports, as JSON: how long until the window is shown and its event loop turns (Qt and the window
only: the engine loads on its worker thread), how long until the engine is ready, and, during one
full run (inversion + edit, a preview at every step) on the demo photo, the event loop's longest
stall and the time to the first step preview; then, choosing steps on the timeline as a scrub would,
the time from choosing a step to its full VAE decode on the canvas, and the longest stall meanwhile.
A 2 ms timer records the gaps between its ticks; a stall is a gap beyond that.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/bench_gui.py [--max-side 128] [--steps 10]
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
    """The longest gap between ticks of a short timer, i.e. how long the event loop was not turning."""

    def __init__(self, where=lambda: "") -> None:
        self.where = where
        self.stalls: list[tuple[float, str]] = []
        self.clock = QElapsedTimer()
        self.timer = QTimer(interval=TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.longest_ms = 0.0
        self.last = 0

    def start(self) -> None:
        self.longest_ms, self.last, self.stalls = 0.0, 0, []
        self.clock.start()
        self.timer.start()

    def _tick(self) -> None:
        now = self.clock.nsecsElapsed()
        if self.last:
            gap = (now - self.last) / 1e6 - TICK_MS
            self.longest_ms = max(self.longest_ms, gap)
            if gap > 50:
                self.stalls.append((round(gap, 1), self.where()))
        self.last = now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-side", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    app = make_app()
    work = Path(tempfile.mkdtemp(prefix="retake-bench-"))
    settings = AppSettings(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    settings.set("max_side", args.max_side)
    window = None
    meter = StallMeter(lambda: window.doc.run.stage if window is not None else "")
    meter.start()
    window = MainWindow(settings)
    window.show()
    app.processEvents()
    shown_s = time.perf_counter() - STARTED
    wait_until(lambda: window.engine.is_ready, 300)
    ready_s = time.perf_counter() - STARTED
    wait_until(lambda: window.model_state == "loaded", 300)
    model_s = time.perf_counter() - STARTED
    startup_stall = meter.longest_ms

    photo = work / "house.png"
    shutil.copy(ROOT / "resources" / "demo" / "house.png", photo)
    window.open_path(photo)
    window.doc.set_prompt("source", "a house in a meadow under a blue sky")
    window.doc.set_prompt("target", "a castle in a meadow under a blue sky")
    window.doc.set_param("steps", args.steps)
    app.processEvents()
    finished = []
    window.engine.finished.connect(finished.append)
    meter.start()
    run_start = time.perf_counter()
    window.run_edit()
    wait_until(lambda: finished, 600)
    run_s = time.perf_counter() - run_start
    run_stall, run_stalls = meter.longest_ms, meter.stalls[:20]

    meter.start()
    run = window.doc.run
    chosen = [(stage, step) for stage in window.timeline.stages() for step in sorted(run.previews[stage])[::3]]
    for stage, step in chosen:  # one at a time, each to its full decode
        window.timeline.choose(stage, step)
        wait_until(lambda s=stage, n=step: (s, n) in run.decoded and window.canvas.override is run.decoded[(s, n)],
                   60)
    latencies = sorted(window.decode_latencies_s)
    result = {
        "window_shown_s": round(shown_s, 3),
        "engine_ready_s": round(ready_s, 3),
        "model_loaded_s": round(model_s, 3),
        "longest_stall_during_start_ms": round(startup_stall, 1),
        "longest_stall_during_run_ms": round(run_stall, 1),
        "first_preview_s": None if window.first_preview_s is None else round(window.first_preview_s, 3),
        "run_s": round(run_s, 2),
        "stalls_over_50ms_during_run": run_stalls,
        "previews_per_stage": {stage: len(steps) for stage, steps in run.previews.items()},
        "scrub_to_full_decode_s": {"steps": len(latencies), "median": round(latencies[len(latencies) // 2], 3),
                                   "max": round(latencies[-1], 3)},
        "longest_stall_while_scrubbing_ms": round(meter.longest_ms, 1),
        "final": type(finished[0]).__name__,
        "max_side": args.max_side, "steps": args.steps, "platform": app.platformName(),
    }
    print(json.dumps(result, indent=1))
    window.doc.undo.setClean()
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
