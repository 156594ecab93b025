"""Opening, saving and re-editing a project that holds about 2 GiB of tunings, timed on one or more checkouts.

A project with large tuning records (SpecRef keeps two references' keys and values of about 1.1 GiB
each) once cost a hash of every file on every open: the window froze on open, every Save and every
refresh after a run, and a CLI re-edit read the project several times over. This measures, on the
same machine, for each checkout given:

* open: `Project.open(path)`, and `Project.open(path, recover=True)` (what a re-edit and the app do);
* save: what the app's Save does (open, then a settings commit), and the settings commit alone;
* a CLI re-edit as a user runs it, the whole process (`main.py edit --project P --model demo-tiny
  --target ...`, reusing the stored inversion): its wall time and the bytes it read (`rchar` of
  /proc/PID/io: every read() of the process, page cache or disk, imports and model weights included);
* the same re-edit in-process with every read of a project file counted (by file: the bytes read
  divided by the file's size, "1.0" = read once).

Each checkout builds its own project with `build_project` (random tensors through its own Project
API, in a temporary folder, deleted afterwards), so a checkout of an older project format measures a
project it can open. The page cache is warm (nothing here can drop it), so these are the times of a
project used a moment ago: the cost of hashing is CPU time, which a cold cache only adds to.

    git worktree add /tmp/retake-base main     # the commit to compare against (its .venv: a link to ours)
    python bench/bench_project_io.py --checkout before=/tmp/retake-base --checkout after=. \\
        --out bench/results/project-io-2gib-cpu.json

`build_project(folder)` is importable (`from bench.bench_project_io import build_project`): it makes
the same project in the current checkout, for measuring the window on it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PHOTO = ROOT / "resources" / "demo" / "house.png"
SOURCE, TARGET = "a house in a meadow under a blue sky", "a castle in a meadow under a blue sky"
GiB = 1 << 30


def build_project(folder: Path, tuning_bytes: int = 2 * GiB, records: int = 2, *, max_side: int = 64) -> Path:
    """A project in `folder` (new) for the demo photo: one real first edit with demo-tiny (a direct
    inversion at `max_side`, kept in the project), then `records` tuning records of that inversion
    holding `tuning_bytes` of random fp16 tensors in all, stored through `Project.save_inversion` as a
    method that tunes stores them. A p2p re-edit reuses the inversion and never needs the tunings."""
    import torch

    from pipeline.engine import Engine
    from pipeline.events import Done
    from pipeline.project import Project
    from pipeline.request import EditRequest

    request = EditRequest(target_prompt=TARGET, image=str(PHOTO), source_prompt=SOURCE, project=str(folder),
                          model="demo-tiny", method="p2p", params={"inversion": "direct", "steps": 10},
                          max_side=max_side, device="cpu")
    final = Engine().run(request, lambda event: None)
    if not isinstance(final, Done):
        raise RuntimeError(f"the first edit failed: {final}")
    project = Project.open(folder)
    (inversion,) = project.inversions
    generator = torch.Generator().manual_seed(0)
    per_record = tuning_bytes // records // 2  # fp16 elements
    for n in range(records):
        tensors = {"reference_kv.0": torch.rand(per_record, generator=generator, dtype=torch.float16)}
        project.save_inversion(f"tuning{n}", tensors, method="specref", model_identity=inversion.model_identity,
                               source_prompt=SOURCE, params={"reference_layers": [10, 15]}, size=inversion.size,
                               steps=inversion.steps, tuning_of=inversion.key, keep_tunings=records)
        del tensors
    return folder


# ---- phases, each run by `python bench_project_io.py --phase NAME` inside the checkout measured


def _median_times(work, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "runs": repeats}


def _phase_build(project: Path, tuning_bytes: int) -> dict:
    start = time.perf_counter()
    build_project(project, tuning_bytes)
    files = [p for p in project.rglob("*") if p.is_file()]
    return {"build_s": round(time.perf_counter() - start, 1), "files": len(files),
            "bytes": sum(p.stat().st_size for p in files)}


def _phase_project(project: Path, repeats: int) -> dict:
    from pipeline.project import Project

    counter = iter(range(10 ** 6))

    def settings_commit(opened: Project) -> None:
        s = opened.settings
        opened.update_settings(model_spec=s.model.spec, model_identity=s.model.identity,
                               source_prompt=f"{SOURCE} {next(counter)}", method=s.method, params=s.params,
                               max_side=s.max_side)

    kept = Project.open(project)
    original = kept.settings
    result = {
        "open": _median_times(lambda: Project.open(project), repeats),
        "open_recover": _median_times(lambda: Project.open(project, recover=True), repeats),
        "save_as_the_app_does": _median_times(lambda: settings_commit(Project.open(project)), repeats),
        "settings_commit_only": _median_times(lambda: settings_commit(kept), repeats),
    }
    kept.update_settings(model_spec=original.model.spec, model_identity=original.model.identity,
                         source_prompt=original.source_prompt, method=original.method, params=original.params,
                         max_side=original.max_side)  # so that the re-edits find the inversion again
    return result


class _Counted:
    """A file open for reading that adds what is read from it to `counts[rel]`."""

    def __init__(self, file: Any, counts: collections.Counter, rel: str) -> None:
        self._file, self._counts, self._rel = file, counts, rel

    def read(self, *args: Any) -> bytes:
        data = self._file.read(*args)
        self._counts[self._rel] += len(data)
        return data

    def readinto(self, buffer: Any) -> int | None:
        n = self._file.readinto(buffer)
        self._counts[self._rel] += n or 0
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@contextlib.contextmanager
def counting_project_reads() -> Iterator[collections.Counter]:
    """Within the block, the bytes read from each project file, by its name in the project: every read of
    a project's files goes through `Folder.open` (pipeline/project/folder.py), which this wraps (in
    whichever checkout is imported). The tests use it too."""
    from pipeline.project.folder import Folder

    counts: collections.Counter = collections.Counter()
    original = Folder.open

    @contextlib.contextmanager
    def counted(self: Folder, rel: str) -> Iterator[_Counted]:
        with original(self, rel) as file:
            yield _Counted(file, counts, rel)

    Folder.open = counted
    try:
        yield counts
    finally:
        Folder.open = original


def _phase_reads(project: Path) -> dict:
    """The CLI re-edit in this process, with every read of a project file counted."""
    from cli.commands import main as cli_main

    with (counting_project_reads() as counts, open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet),
          contextlib.redirect_stderr(quiet)):
        code = cli_main(_edit_args(project))
    sizes = {p.relative_to(project).as_posix(): p.stat().st_size for p in project.rglob("*") if p.is_file()}
    big = {rel: size for rel, size in sizes.items() if rel.startswith("inversions/")}
    return {"exit": code, "bytes_read_from_project": sum(counts.values()),
            "times_read_by_inversion_file": {rel: round(counts[rel] / size, 4) for rel, size in sorted(big.items())},
            "project_json_bytes_read": counts["project.json"]}


def _edit_args(project: Path) -> list[str]:
    return ["edit", "--project", str(project), "--model", "demo-tiny", "--device", "cpu", "--target", TARGET]


def _run_phase(checkout: Path, phase: str, project: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--project", str(project),
                           *extra], cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} in {checkout} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def _cli_reedit(checkout: Path, project: Path, repeats: int) -> dict:
    """The re-edit as a user runs it: wall time of the whole process, and the bytes it read."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(checkout)}
    wrapper = ("import runpy, sys; sys.argv = ['main.py', *sys.argv[1:]]\n"
               "try:\n    runpy.run_path('main.py', run_name='__main__')\n"
               "finally:\n    print('rchar', open('/proc/self/io').read().split()[1], file=sys.stderr)")
    times, reads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", wrapper, *_edit_args(project)], cwd=checkout, env=env,
                              capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0 or "reused its inversion" not in done.stdout:
            raise RuntimeError(f"the re-edit in {checkout} did not reuse its inversion:\n{done.stdout}\n{done.stderr}")
        reads.append(int(done.stderr.rsplit("rchar", 1)[1].split()[0]))
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": repeats,
            "process_bytes_read_median": int(statistics.median(reads))}


def _commit_of(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def measure(checkout: Path, tuning_bytes: int, repeats: int, reedits: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="retake-bench-io-"))
    project = scratch / "house.retake"
    try:
        result = {"commit": _commit_of(checkout)}
        result["project"] = _run_phase(checkout, "build", project, ["--tuning-bytes", str(tuning_bytes)])
        result.update(_run_phase(checkout, "project", project, ["--repeats", str(repeats)]))
        result["cli_reedit"] = _cli_reedit(checkout, project, reedits)
        result["cli_reedit_reads"] = _run_phase(checkout, "reads", project, [])
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", default=[], metavar="LABEL=DIR",
                        help="a Retake checkout to measure, e.g. before=/tmp/retake-base (default: after=.)")
    parser.add_argument("--tuning-bytes", type=int, default=2 * GiB)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each open and save timing")
    parser.add_argument("--reedits", type=int, default=3, help="runs of the CLI re-edit")
    parser.add_argument("--out", type=Path, default=RESULTS / "project-io-2gib-cpu.json")
    parser.add_argument("--phase", choices=("build", "project", "reads"), help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase is not None:  # one phase, inside the checkout measured: the result is the last line
        sys.path.insert(0, os.getcwd())
        result = {"build": lambda: _phase_build(args.project, args.tuning_bytes),
                  "project": lambda: _phase_project(args.project, args.repeats),
                  "reads": lambda: _phase_reads(args.project)}[args.phase]()
        print(json.dumps(result))
        return 0
    checkouts = dict(item.split("=", 1) for item in args.checkout) or {"after": "."}
    report = {
        "command": "python bench/bench_project_io.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "tuning_bytes": args.tuning_bytes,
        "checkouts": {},
    }
    for label, directory in checkouts.items():
        print(f"measuring {label} ({directory})...", file=sys.stderr)
        report["checkouts"][label] = measure(Path(directory).resolve(), args.tuning_bytes, args.repeats, args.reedits)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
