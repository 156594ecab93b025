"""Time a live draft (Engine.draft: a run without its commit, from the stored inversion) on a demo scene.

A scene of the registry (pipeline.demo_scenes; default house-colour: p2p, direct inversion, a painted
region, 50 steps at the demo model's 128 px) is made into a fresh project and run once (the inversion is
made and stored); then each target of `--targets` is drafted, as the window drafts a changed target
prompt, timed from the request to the picture (resolving, the stored inversion read, sampling, decoding,
the paste-back), with the model's objects kept out of the garbage collector's walks as the window's
engine thread keeps them (pipeline.collector.keep_out_of_collections); then the last target is run for real
(inversion reused, the result committed) and its result is checked to be the last draft's, pixel for
pixel. Wall times and the process's CPU seconds (on a shared machine the wall time is inflated by the
other processes; the CPU seconds less so), the project's files before and after the drafts (they must be
equal), the torch threads and the machine's load average before and after go to
bench/results/draft-<device>.json.

    python bench/bench_draft.py                          # the demo model, on the GPU if there is one
    python bench/bench_draft.py --scene dog-stands-up --targets "a big red striped dog sitting ..."
    python bench/bench_draft.py --model /tmp/retake-bench-sd15/model --side 512 --fast   # SD-1.5-sized, GPU

`--side` enlarges the scene's photo and inputs to that many pixels a side (the working size of an SD 1.5
model; the demo scenes are 128 px), and `--model` edits with another model, such as the diffusers folder
of SD-1.5-sized random weights that bench/bench_speed.py writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import RESULTS, bench_device, measure, write_report  # noqa: E402

from pipeline.collector import keep_out_of_collections  # noqa: E402
from pipeline.demo_scenes import DemoScene, load_scene, make_scene_project  # noqa: E402
from pipeline.images import load_image  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.events import Done, Drafted  # noqa: E402
from pipeline.request import EditRequest  # noqa: E402

TARGETS = ("a big green house on the beach at night", "a big yellow house on the beach at night",
           "a big red house on the beach at night")
"""Drafts of the default scene's target prompt, as an artist tries colours."""


def timed(label: str, work: Callable[[], Any], results: dict) -> Any:
    """`measure` (wall time, GPU memory) with the process's CPU seconds added."""
    cpu = time.process_time()
    out = measure(label, work, results)
    results[label]["cpu_seconds"] = round(time.process_time() - cpu, 2)
    return out


def enlarged(scene: DemoScene, side: int, folder: Path) -> DemoScene:
    """The scene with its photo and inputs resized to `side` pixels a side, written into `folder`."""
    def resized(path: Path) -> Path:
        out = folder / path.name
        load_image(path).resize((side, side)).save(out)
        return out

    return dataclasses.replace(scene, photo=resized(scene.photo),
                               inputs={name: resized(path) for name, path in scene.inputs.items()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="house-colour", help="a demo scene (main.py demo lists them)")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="target prompts to draft, in order")
    parser.add_argument("--model", default="demo", help="the model to edit with (default: the scenes' demo model)")
    parser.add_argument("--side", type=int, help="enlarge the scene's photo to this many pixels a side")
    parser.add_argument("--fast", action="store_true", help="take the fast path (GPU only: pipeline.fast)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON report")
    args = parser.parse_args()
    device = bench_device()
    scene = load_scene(args.scene)
    engine, results = Engine(), {}
    quiet = lambda event: None  # noqa: E731
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="retake-draft-") as folder:
        if args.side:
            scene = enlarged(scene, args.side, Path(folder))
        project = make_scene_project(scene, Path(folder) / "scene.retake")
        fields = {**scene.request_fields(), "project": str(project), "device": device.type, "model": args.model,
                  "max_side": args.side, "fast": args.fast}
        engine.preload(args.model, device.type)
        keep_out_of_collections()  # as the window's engine thread does once the model is loaded
        first = timed("run: invert, edit, commit", lambda: engine.run(EditRequest(**fields), quiet), results)
        assert isinstance(first, Done) and not first.reused_inversion, first
        files = sorted(p.relative_to(project) for p in project.rglob("*"))
        drafts = []
        for n, target in enumerate(args.targets, start=1):
            request = EditRequest(**{**fields, "target_prompt": target})
            draft = timed(f"draft {n}: {target}", lambda r=request: engine.draft(r, quiet), results)
            assert isinstance(draft, Drafted), draft
            drafts.append(draft)
        unchanged = sorted(p.relative_to(project) for p in project.rglob("*")) == files
        last = EditRequest(**{**fields, "target_prompt": args.targets[-1]})
        done = timed("run of the last draft's settings: edit, commit", lambda: engine.run(last, quiet), results)
        assert isinstance(done, Done) and done.reused_inversion, done
        same = done.image.tobytes() == drafts[-1].image.tobytes()
    draft_seconds = [results[f"draft {n}: {t}"]["seconds"] for n, t in enumerate(args.targets, start=1)]
    draft_cpu = [results[f"draft {n}: {t}"]["cpu_seconds"] for n, t in enumerate(args.targets, start=1)]
    print(f"drafts: {draft_seconds} s ({draft_cpu} CPU s); the project unchanged by them: {unchanged}; "
          f"the run's result is the last draft's: {same}")
    write_report("draft", {"scene": scene.name, "method": scene.method, "params": scene.params, "model": args.model,
                           "side": args.side, "fast": args.fast, "device": device.type, "torch_threads": torch.get_num_threads(),
                           "draft_seconds": draft_seconds, "draft_cpu_seconds": draft_cpu,
                           "project_files_unchanged_by_drafts": unchanged,
                           "run_result_equals_last_draft": same, "results": results,
                           "load_average": [round(v, 2) for v in (*load_before, *os.getloadavg())]},
                 args.out)
    return 0 if unchanged and same else 1


if __name__ == "__main__":
    sys.exit(main())
