"""Where the seconds of a CLI re-edit go: Python's start, the imports, the model load's parts, the edit,
the save (issue 19, "model load and process start").

A re-edit is `main.py edit --project P --target T` on a project whose inversion is stored
(`--param inversion=direct`), so it loads the model, reads the stored inversion, edits and saves. This
script makes such a project with one first edit, then measures, each in fresh processes (the median of
--repeats):

* "python start": `python -c pass`; "imports and exit": `main.py edit --help` (the CLI's imports, its parser,
  and the interpreter's exit), with `-X importtime`'s self time of `import cli.commands` summed by top-level
  package; "imports, no bytecode yet": the same with an empty bytecode cache, as the first run after an
  install that did not compile the packages' bytecode pays it;
* "cli re-edit wall": the whole `main.py edit` process, with the hash cache warm and with it cold (the
  Retake cache folder removed first, so every model file is hashed for the model's identity);
* "phases": one process that imports cli.commands and runs the re-edit through `cli.commands.main` twice,
  with timers on the engine's stages and the model load's parts; its second run shows what the first one
  in a process pays beyond the rest (first calls of kernels and allocators; the model is loaded again, as
  a new CLI process would);
* "model identity": `model_identity` on the model's files with a cold and a warm hash cache.

Every process writes and reads its bytecode in a cache folder of its own (PYTHONPYCACHEPREFIX), warmed by
the first edit, as an installed Retake does (PYTHONDONTWRITEBYTECODE would otherwise make every process
compile Retake's own modules again).

    python bench/bench_startup.py --model demo --label before
    python bench/bench_startup.py --model sd15 --label before   # SD-1.5-sized random weights (4.2 GB,
                                                                # written once to --model-dir)
    git archive BEFORE | tar -x -C /tmp/before && ln -s $PWD/.venv /tmp/before/.venv
    python bench/bench_startup.py --model demo --label after --baseline /tmp/before   # interleaved with BEFORE

It writes bench/results/startup-<model>-<label>-<machine>.json. On a shared machine the load average
is recorded with each figure: compare figures taken at similar loads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE, TARGET, RE_TARGET = "a cat sitting on a bench", "a tiger sitting on a bench", "a cat jumping on a bench"
# The engine's stages and the model load's parts, timed in the phases process: (label, module, owner, name);
# an owner names a class of the module. Indented labels lie inside the one above them.
TIMED = (
    ("resolve the request", "pipeline.engine", "Engine", "resolve"),
    ("load the model", "pipeline.engine", "Engine", "load_model"),
    ("  read the parts", "pipeline.models", None, "_read_parts"),
    ("    check the folder (configs, layout)", "pipeline.models", None, "_folder_layout"),
    ("    safetensors.torch.load_file", "safetensors.torch", None, "load_file"),
    ("  identity (hash cache)", "pipeline.models", None, "files_identity"),
    ("  place on the device", "pipeline.models", None, "_place"),
    ("  attention processors", "pipeline.models", None, "install_controlled_attention"),
    ("read the stored inversion", "pipeline.engine", "Engine", "invert"),
    ("edit (and decode)", "pipeline.engine", "Engine", "edit"),
    ("save (commit)", "pipeline.engine", "Engine", "commit"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, demo-tiny, sd15 (random SD-1.5 weights) or a folder")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "retake-bench-sd15" / "model",
                        help="where --model sd15 is written once")
    parser.add_argument("--size", type=int, default=128, help="working size (--max-side)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="now", help="names the report: before, after, ...")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of the code before a change (`git worktree add DIR COMMIT`): every process "
                             "row runs there too, alternating with this tree, so that both see the same load")
    parser.add_argument("--phases-child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases_child is not None:
        return phases_child(args.phases_child)

    work = Path(tempfile.mkdtemp(prefix="retake-startup-"))
    model = str(sd15_folder(args.model_dir)) if args.model == "sd15" else args.model
    env = {**os.environ, "RETAKE_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1",
           "PYTHONPYCACHEPREFIX": str(work / "bytecode")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    edit = edit_command(model, work, args)
    first = timed_process(edit(first=True), env)
    print(f"first edit (inverts): {first:.2f} s", flush=True)
    imports = [sys.executable, str(ROOT / "main.py"), "edit", "--help"]

    def warm_baseline() -> None:  # its own modules' bytecode, as this tree's first edit wrote this tree's
        if args.baseline is not None:
            timed_process(imports, env, args.baseline)

    warm_baseline()

    report: dict[str, Any] = {"model": args.model, "size": args.size, "steps": args.steps, "device": args.device,
                              "repeats": args.repeats, "first_edit_s": round(first, 3), "baseline": baseline_commit(args),
                              "results": {}}
    results = report["results"]
    results["python start"] = repeated("python start", [sys.executable, "-c", "pass"], env, args)
    results["imports and exit"] = repeated("imports and exit", imports, env, args)
    results["imports and exit"]["importtime_self_s_by_package"] = import_summary(env)
    results["imports and exit, no bytecode yet"] = repeated(
        "imports and exit, no bytecode yet", imports, env, args,
        before=lambda: shutil.rmtree(work / "bytecode", True))
    warm_baseline()
    results["cli re-edit wall"] = repeated("cli re-edit wall", edit(), env, args)
    results["cli re-edit wall, cold hash cache"] = repeated(
        "cli re-edit wall, cold hash cache", edit(), env, args, before=lambda: shutil.rmtree(work / "cache", True))
    results["phases"] = phases(edit(), env)
    results["model identity"] = identity_times(model, work, env)
    from sd15 import write_report  # torch and diffusers only now, after the child processes

    write_report(f"startup-{re.sub(r'[^a-z0-9]+', '-', Path(args.model).name.lower())}-{args.label}", report, args.out)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def baseline_commit(args: argparse.Namespace) -> str | None:
    """What the baseline tree is: its commit, when it is a git checkout; its path otherwise."""
    if args.baseline is None:
        return None
    done = subprocess.run(["git", "-C", str(args.baseline), "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True)
    return done.stdout.strip()[:120] if done.returncode == 0 else str(args.baseline)


def edit_command(model: str, work: Path, args: argparse.Namespace) -> Callable[..., list[str]]:
    """The `main.py edit` command line: the first edit of a noise photo, or a re-edit of its project."""
    from PIL import Image

    photo = work / "photo.png"
    Image.effect_noise((args.size, args.size), 64).convert("RGB").save(photo)
    base = [str(ROOT / "main.py"), "edit", "--model", model, "--project", str(work / "p.retake"),
            "--param", "inversion=direct", "--steps", str(args.steps), "--max-side", str(args.size),
            "--out", str(work / "out.png")] + (["--device", args.device] if args.device else [])

    def command(first: bool = False) -> list[str]:
        return [sys.executable, *base, *([str(photo), "--source", SOURCE, "--target", TARGET] if first else
                                         ["--target", RE_TARGET])]

    return command


def timed_process(command: list[str], env: dict[str, str], root: Path = ROOT) -> float:
    """Seconds of `command` run to its end in the tree `root` (its main.py, and its packages first)."""
    command = [str(root / "main.py") if arg == str(ROOT / "main.py") else arg for arg in command]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[1:3]}: exit {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def repeated(label: str, command: list[str], env: dict[str, str], args: argparse.Namespace,
             before: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """The median of --repeats runs of `command`; with --baseline, each run is preceded by one in the baseline."""
    runs, baseline = [], []
    for _ in range(args.repeats):
        if args.baseline is not None:
            before()
            baseline.append(round(timed_process(command, env, args.baseline), 3))
        before()
        runs.append(round(timed_process(command, env), 3))
    found = {"median_s": statistics.median(runs), "runs_s": runs, "load_average": round(os.getloadavg()[0], 2)}
    shown = f"median {found['median_s']:.2f} s of {runs}"
    if baseline:
        found.update(baseline_median_s=statistics.median(baseline), baseline_runs_s=baseline)
        shown += f", baseline {found['baseline_median_s']:.2f} s of {baseline}"
    print(f"{label:>36}: {shown} (load {found['load_average']})", flush=True)
    return found


def import_summary(env: dict[str, str], top: int = 14) -> dict[str, float]:
    """`python -X importtime -c "import cli.commands"`: self time summed by top-level package, largest first."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cli.commands"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    by_package: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if found := re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line):
            package = found[2].split(".")[0]
            by_package[package] = by_package.get(package, 0) + int(found[1])
    ranked = sorted(by_package.items(), key=lambda item: -item[1])
    summary = {name: round(us / 1e6, 3) for name, us in ranked[:top]}
    summary["(all others)"] = round(sum(us for _, us in ranked[top:]) / 1e6, 3)
    summary["(total)"] = round(sum(by_package.values()) / 1e6, 3)
    return summary


def phases(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One process running the re-edit twice through cli.commands.main, its stages timed."""
    argv = command[2:]  # after the interpreter and main.py
    child = [sys.executable, str(Path(__file__).resolve()), "--phases-child", *argv]
    started = time.perf_counter()
    done = subprocess.run(child, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"phases: exit {done.returncode}: {done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    found["process_wall_s"] = round(wall, 3)
    print(json.dumps(found, indent=1), flush=True)
    return found


def phases_child(argv: list[str]) -> int:
    """In the phases process: import what main.py imports, then run the re-edit twice with timers."""
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import cli.commands  # noqa: F401  (what a re-edit imports first)

    imported = time.perf_counter() - started
    import contextlib
    import importlib
    import io
    from unittest import mock

    runs = []
    for _ in range(2):
        spent: dict[str, float] = {}
        with contextlib.ExitStack() as stack:
            for label, module, owner, name in TIMED:
                where = importlib.import_module(module)
                where = getattr(where, owner) if owner else where
                stack.enter_context(mock.patch.object(where, name, _timer(getattr(where, name), label, spent)))
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            run_started = time.perf_counter()
            status = cli.commands.main(argv)
            total = time.perf_counter() - run_started
        if status != 0:
            raise RuntimeError(f"the re-edit exited {status}")
        outer = sum(v for k, v in spent.items() if not k.startswith(" "))
        runs.append({"run_s": round(total, 3), **{k: round(v, 3) for k, v in spent.items()},
                     "rest of the run (argument parsing, progress, threads)": round(total - outer, 3)})
    script = time.perf_counter() - started
    print(json.dumps({"imports_s": round(imported, 3), "first run in the process": runs[0],
                      "second run in the process": runs[1], "script_s": round(script, 3)}))
    return 0


def _timer(function: Callable, label: str, spent: dict[str, float]) -> Callable:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _sync()
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - started
    return timed


def _sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def identity_times(model: str, work: Path, env: dict[str, str]) -> dict[str, float]:
    """model_identity with a fresh hash cache, then again with the cache it wrote (one process)."""
    code = ("import json, sys, time; from pathlib import Path; from pipeline.models import model_identity\n"
            "cache = Path(sys.argv[2]); out = {}\n"
            "for case in ('cold hash cache', 'warm hash cache'):\n"
            "    started = time.perf_counter(); model_identity(sys.argv[1], cache_dir=cache)\n"
            "    out[case] = round(time.perf_counter() - started, 3)\n"
            "print(json.dumps(out))")
    cache = work / "identity-cache"
    done = subprocess.run([sys.executable, "-c", code, model, str(cache)], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"model identity: {found}", flush=True)
    return found


def sd15_folder(folder: Path) -> Path:
    """A diffusers folder of SD-1.5-sized random weights (fp32 safetensors, as SD 1.5's own), written once."""
    if not (folder / "model_index.json").is_file():
        import torch
        from sd15 import random_sd15, save_folder

        save_folder(random_sd15(torch.device("cpu"), torch.float32), folder)
    return folder


if __name__ == "__main__":
    sys.exit(main())
