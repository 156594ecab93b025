"""Batch throughput (issues 22 and 23): photos per minute with 1..N workers through `retake batch`'s own
code (plan, ledger, the Ray runner), the scaling efficiency, and the per-photo overhead the batch adds.

    # one H100 (about 7 minutes): SD-1.5-sized random weights at 512 px, 8 photos per GPU for
    # direct+p2p and 3 for null-text+p2p, both baselines
    python bench/bench_batch.py --model sd15-random --gpus 1 --recipes direct:8,null-text:3
    # N GPUs (issue 23): 1, 2, 4 ... N GPUs, 8 photos per GPU each (weak scaling)
    python bench/bench_batch.py --model sd15-random --gpus 8 --recipes direct:8,null-text:2 --no-cli-loop
    # this CPU: 1 and 2 CPU workers on the demo models
    python bench/bench_batch.py --model demo --workers 2 --recipes direct:4 --steps 20

Photos are demo-world scenes (resources/demo_world) rendered at the model's size with their captions, and
a colour change as the target ("a red house" -> "a blue house"), listed in a CSV manifest. `sd15-random`
is SD 1.5's architecture with random weights (bench/sd15.py), saved once as a diffusers folder
(`--model-dir`, float16 safetensors, 2 GB) so that the batch loads it as it loads any model; timing does
not depend on the weights' values.

Figures (all wall clock):
* `photos_per_min[k]`: with k workers, photos finished per minute from the first worker ready to the
  last photo (the steady rate; `wall_s` adds Ray's actor start and model loading), for 8*k photos
  (weak scaling: the same work per worker), the median of `--repeat` runs;
  `efficiency` = rate(N) / (N * rate(1)); every run is kept under `runs`.
* `batch_overhead_s_per_photo` (one per repeat): with one worker, the wall seconds per photo (1 / rate)
  less the mean seconds its `Engine.run` calls took, both measured in the same run: what the batch adds
  per photo (the driver's round trip, the ledger, thumbnails, waiting for the next task).
* `engine_loop_s_per_photo`: the same edits through one `Engine.run` after another in this (driver)
  process, model loaded once, no Ray, after the batch runs (so under whatever load there is then).
* `cli_loop_s_per_photo`: `main.py edit` once per photo (a new process, model load each time).

The report is rewritten after each measurement (bench/results/batch-<device>-x<N>[-<model>].json), so a
run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "resources" / "demo_world"))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

RECIPES = {"direct": {"inversion": "direct"}, "null-text": {"inversion": "null-text"}}
"""The recipes' inversion; the edit is p2p at its defaults (50 steps unless --steps)."""


def parse_recipes(text: str) -> dict[str, int]:
    """`direct:8,null-text:3` -> photos per worker for each recipe."""
    chosen = {}
    for part in text.split(","):
        name, _, count = part.partition(":")
        if name not in RECIPES:
            raise SystemExit(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
        chosen[name] = int(count or 8)
    return chosen


def save_random_sd15(folder: Path) -> None:
    """SD 1.5's architecture with random weights as a diffusers folder (once; reused while it is there)."""
    if (folder / "model_index.json").is_file():
        return
    import torch
    from sd15 import random_sd15

    from pipeline.demo_model import save_demo_model

    started = time.perf_counter()
    bundle = random_sd15(torch.device("cpu"), torch.float32)
    partial = folder.with_name(folder.name + ".partial")
    save_demo_model(partial, vae=bundle.vae, text_encoder=bundle.text_encoder, unet=bundle.unet,
                    scheduler=bundle.scheduler)
    partial.rename(folder)
    print(f"saved SD-1.5-sized random weights to {folder} in {time.perf_counter() - started:.0f} s", flush=True)


def make_photos(folder: Path, count: int, side: int, seed: int = 0) -> Path:
    """`count` demo-world scenes at `side` px with a colour edit each, and their manifest."""
    import world

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["photo", "source", "target"])
        for i in range(count):
            pair = world.edit_pair(rng, "color", size=side)
            Image.fromarray(pair.source.image).save(folder / f"scene{i:03d}.png")
            writer.writerow([f"scene{i:03d}.png", pair.source.caption, pair.target.caption])
    return manifest


def recipe_file(folder: Path, model: str, recipe: str, side: int, steps: int | None) -> Path:
    params = dict(RECIPES[recipe])
    if steps is not None:
        params["steps"] = steps
    path = folder / f"{recipe}.json"
    path.write_text(json.dumps({"model": model, "method": "p2p", "params": params, "max_side": side}))
    return path


def run_batch(recipe: Path, manifest: Path, out: Path, options: Any) -> dict[str, Any]:
    """One batch through the CLI's own planning and the Ray runner; its rate, wall time and per-photo times."""
    from cli.batch import plan_batch
    from pipeline.batch.ledger import Ledger
    from pipeline.batch.runner import Cluster, run_plan
    from pipeline.events import CancelToken

    started = time.perf_counter()
    plan = plan_batch(recipe, manifest, out)
    with Ledger(plan.layout) as ledger, Cluster(options) as cluster:
        summary = run_plan(plan, ledger, cluster, lambda event: None, CancelToken(), set())
        records = [ledger.records[item.key] for item in plan.items if item.key in ledger.records]
    failed = [r.reason for r in records if r.status != "done"]
    if failed:
        raise SystemExit(f"{len(failed)} photos failed, e.g.: {failed[0]}")
    seconds = sorted(r.seconds for r in records)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"photos": len(records), "photos_per_min": round(summary.photos_per_min or 0.0, 3),
            "wall_s": round(time.perf_counter() - started, 2),
            "engine_s_per_photo_median": round(seconds[len(seconds) // 2], 3),
            "engine_s_per_photo_mean": round(sum(seconds) / len(seconds), 3), "load_average_after": load,
            "model_load_s": [w.get("load_s") for w in summary.workers],
            "devices": sorted({w.get("device", "") for w in summary.workers})}


def engine_loop(recipe: Path, manifest: Path, out: Path, count: int, device: str) -> float:
    """Seconds per photo of Engine.run after Engine.run, model loaded once (the first photo not counted)."""
    from cli.batch import plan_batch
    from pipeline.engine import Engine
    from pipeline.events import Done

    plan = plan_batch(recipe, manifest, out)
    engine = Engine()
    times = []
    for item in plan.items[: count + 1]:
        request = plan.request(item)
        request.device = device
        started = time.perf_counter()
        final = engine.run(request, lambda event: None)
        if not isinstance(final, Done):
            raise SystemExit(f"the engine loop failed: {final}")
        times.append(time.perf_counter() - started)
    return round(sum(times[1:]) / len(times[1:]), 3)


def cli_loop(model: str, manifest: Path, out: Path, count: int, side: int, steps: int | None, device: str) -> float:
    """Seconds per photo of one `main.py edit` process per photo (each loads the model)."""
    rows = list(csv.DictReader(open(manifest)))[:count]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i, row in enumerate(rows):
        command = [sys.executable, str(ROOT / "main.py"), "edit", str(manifest.parent / row["photo"]), "--model", model,
                   "--source", row["source"], "--target", row["target"], "--param", "inversion=direct",
                   "--max-side", str(side), "--device", device, "--project", str(out / f"{i}.retake"),
                   "--out", str(out / f"{i}.png")]
        if steps is not None:
            command += ["--steps", str(steps)]
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return round((time.perf_counter() - started) / len(rows), 3)


def counts_up_to(n: int) -> list[int]:
    """1, 2, 4, ... and n itself."""
    counts, k = [], 1
    while k < n:
        counts.append(k)
        k *= 2
    return counts + [n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd15-random", help="sd15-random, demo, demo-tiny or a model folder")
    parser.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "retake-bench-sd15"),
                        help="where sd15-random is saved (once)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--gpus", type=int, help="measure 1, 2, 4 ... up to this many GPU workers")
    where.add_argument("--workers", type=int, help="measure 1, 2, 4 ... up to this many CPU workers")
    parser.add_argument("--recipes", default="direct:8,null-text:3", help="recipe:photos per worker, ...")
    parser.add_argument("--size", type=int, help="working size (default: the model's own: 512, 128, 64)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: p2p's 50)")
    parser.add_argument("--threads", type=int,
                        help="torch threads per CPU worker and for the baselines (default: the CPUs shared out)")
    parser.add_argument("--engine-photos", type=int, default=3, help="photos for the engine-loop baseline (0: none)")
    parser.add_argument("--cli-photos", type=int, default=2, help="photos for the CLI-loop baseline (0: none)")
    parser.add_argument("--no-cli-loop", dest="cli_photos", action="store_const", const=0)
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure every worker count this many times, interleaved (medians are reported)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "retake-bench-batch"))
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:  # the baselines' processes (this one, the CLI's) as many threads as a worker
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import shutil

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from pipeline.batch.runner import RunOptions
    from pipeline.models import native_side

    gpu = args.gpus is not None or (args.workers is None and torch.cuda.is_available())
    top = (args.gpus or torch.cuda.device_count()) if gpu else (args.workers or 2)
    device = "cuda" if gpu else "cpu"
    model = args.model
    if model == "sd15-random":
        model = args.model_dir
        save_random_sd15(Path(model))
    side = args.size or native_side(model)
    recipes = parse_recipes(args.recipes)
    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    counts = counts_up_to(top)
    photos_dir = work / "photos"
    manifest = make_photos(photos_dir, max(max(recipes.values()) * top, args.engine_photos + 1, args.cli_photos), side)
    name = torch.cuda.get_device_name(0) if gpu else f"cpu-{platform.machine()}"
    slug = "-".join("".join(c if c.isalnum() else " " for c in name).lower().split())
    suffix = "" if args.model == "sd15-random" else f"-{args.model}"
    result_path = Path(args.results) / f"batch-{slug}-x{top}{suffix}.json"
    report: dict[str, Any] = {
        "gpu": name, "gpus": top, "workers": "gpu" if gpu else "cpu", "model": args.model, "size": side,
        "steps": args.steps or 50, "counts": counts, "repeat": args.repeat, "threads_per_cpu_worker": args.threads,
        "command": " ".join(["python bench/bench_batch.py", *sys.argv[1:]]),
        "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "recipes": {}}

    def save() -> None:
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(report, indent=2) + "\n")

    from pipeline.batch.runner import Cluster

    with Cluster(RunOptions(gpus=top) if gpu else RunOptions(workers=top)):  # one Ray for every measurement
        for recipe, per_worker in recipes.items():
            recipe_path = recipe_file(work, model, recipe, side, args.steps)
            entry = report["recipes"][f"{recipe}+p2p"] = {"photos_per_worker": per_worker, "runs": []}
            by_count: dict[int, list[float]] = {k: [] for k in counts}
            for repeat in range(args.repeat):  # 1, 2, ... workers, then again: a change of load hits them all
                for k in counts:
                    sub_manifest = photos_dir / f"{recipe}-{k}.csv"
                    rows = list(csv.reader(open(manifest)))
                    with open(sub_manifest, "w", newline="") as file:
                        csv.writer(file).writerows([rows[0], *rows[1 : 1 + per_worker * k]])
                    options = RunOptions(gpus=k) if gpu else RunOptions(workers=k, threads=args.threads)
                    run = {"workers": k, **run_batch(recipe_path, sub_manifest, work / f"out-{recipe}-{k}-{repeat}",
                                                     options)}
                    entry["runs"].append(run)
                    by_count[k].append(run["photos_per_min"])
                    print(f"{recipe} with {k} {device} worker(s): {run['photos_per_min']} photos/min "
                          f"({run['photos']} photos, {run['wall_s']} s wall)", flush=True)
                    rates = [statistics.median(by_count[c]) for c in counts if by_count[c]]
                    entry["photos_per_min"] = [round(r, 3) for r in rates]
                    if len(rates) > 1:
                        entry["efficiency"] = round(rates[-1] / (counts[len(rates) - 1] * rates[0]), 3)
                    save()
            if recipe == "direct":
                # What the batch adds to each photo, measured in the same worker process under the same load:
                # one worker's wall seconds per photo (the rate) less the seconds its Engine.run calls took.
                single = [r for r in entry["runs"] if r["workers"] == 1]
                entry["batch_overhead_s_per_photo"] = [
                    round(60.0 / r["photos_per_min"] - r["engine_s_per_photo_mean"], 3) for r in single]
                save()
                if args.engine_photos:
                    entry["engine_loop_s_per_photo"] = engine_loop(
                        recipe_path, manifest, work / "engine-loop", args.engine_photos, device)
                    save()
                if args.cli_photos:
                    entry["cli_loop_s_per_photo"] = cli_loop(model, manifest, work / "cli-loop", args.cli_photos,
                                                             side, args.steps, device)
                    save()
            print(json.dumps({k: v for k, v in entry.items() if k != "runs"}), flush=True)
    print(f"wrote {result_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
