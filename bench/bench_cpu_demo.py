"""The demo edit on the CPU, before and after a change: issue 19 asks that the CPU path (tests, CI, the
demo) not get slower, so this runs scripts/demo.sh's edit as whole processes from two source trees,
alternately (a shared machine's load then falls on both alike), and reports each tree's median wall
and CPU seconds (user + system of the process: steadier than wall time where other work shares the
cores). One untimed run of each tree first fills the hash cache and the page cache.

    git archive main | tar -x -C /tmp/before      # a tree of the code before the change
    python bench/bench_cpu_demo.py --before /tmp/before --after . --before-name "main 3e432c7" --after-name speed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
EDIT = ["edit", "resources/demo_world/house.png", "--model", "demo", "--source", "a red house in a meadow under a blue sky",
        "--target", "a blue house in a meadow under a blue sky", "--param", "inversion=direct", "--device", "cpu"]


def run(tree: Path, work: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one demo edit from `tree`, into a fresh project."""
    project = Path(tempfile.mkdtemp(dir=work)) / "house.retake"
    command = [sys.executable, "main.py", *EDIT, "--project", str(project), "--out", str(project.parent / "out.png")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the code before the change")
    parser.add_argument("--after", type=Path, required=True, help="source tree of the code after it")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    parser.add_argument("--before-name", default="before", help="what the before tree is (a commit, say)")
    parser.add_argument("--after-name", default="after", help="what the after tree is")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "RETAKE_CACHE_DIR": str(work / "cache"),
           "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for tree in trees.values():
        run(tree, work, env)  # untimed: caches
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for i in range(args.runs):
        for name, tree in (trees.items() if i % 2 == 0 else reversed(trees.items())):
            times[name].append(run(tree, work, env))
            print(f"{name} run {i + 1}: wall {times[name][-1][0]:.2f} s, CPU {times[name][-1][1]:.2f} s", flush=True)
    summary = {name: {"wall_s_median": round(statistics.median(w for w, _ in found), 3),
                      "cpu_s_median": round(statistics.median(c for _, c in found), 3),
                      "wall_s": [round(w, 3) for w, _ in found], "cpu_s": [round(c, 3) for _, c in found]}
               for name, found in times.items()}
    report = {"machine": f"cpu-{platform.machine()}", "cores": os.cpu_count(), "threads": args.threads,
              "python": platform.python_version(), "command": "main.py " + " ".join(EDIT),
              "trees": {"before": args.before_name, "after": args.after_name}, "runs": args.runs, "results": summary,
              "cpu_ratio_after_to_before": round(summary["after"]["cpu_s_median"] / summary["before"]["cpu_s_median"], 3)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cpu-demo-edit-cpu-{re.sub(r'[^a-z0-9]+', '-', platform.machine().lower())}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
