"""The semantic editing benchmark (issue 8): every method in the registry, and a baseline, edits seeded
demo-world cases; the attribute judge and pixel metrics say what each edit did.

Why: a method's paper shows its best pictures; this shows, on pictures whose right answer is known
(resources/demo_world/cases.py), how often each method does the edit it is asked for and what it
breaks on the way, task by task, on the demo-world model (resources/demo_world/weights, 128x128).

Each (row, case) runs through the real engine, as the app runs an edit: `Engine.resolve`,
`load_model`, `invert`, `edit` (which tunes first for a method with a tuning stage), in a throwaway
project, with the method's default parameters, the case's captions, and as named inputs what the
method requires (`--inputs all`: also the optional ones the case can fill): the edit region
(`edit_mask`, and `reference_region` for specref), the edited subject in the source (`subject_mask`)
and in the target (`target_mask`), the reference picture with its caption (`reference`) and its
subject's mask (`reference_mask`). A method that requires an input the case cannot give is skipped
on that case, with the reason recorded.

Rows: every registered method; `baseline`, DDIM inversion with the source prompt + sampling with the
target prompt, no attention control: it is the p2p method with `inversion=ddim` and both replacement
spans empty (`cross_replace=0,0`, `self_replace=0,0`), with which no controller is active at any step
and every attention call is plain SDPA (pipeline/control/contract.py), so the target row is exactly
that sampling. Two reference rows that need no model: `ground truth` (the target picture of the
case: the judge's ceiling) and `unchanged` (the source picture returned as it is).

Measures (bench/semantic_metrics.py): edit success and preservation by the judge, PSNR and SSIM
against the source outside the edit region dilated by 8 pixels, the reconstruction PSNR of the
inversion alone (the method's source branch, decoded, against the source picture; the VAE round trip
of the source is given per case as its ceiling) and the wall time of each stage.

    python main.py bench                                   # every row, 30 cases per task, on cuda
    python main.py bench --methods p2p,baseline --tasks color --per-task 3 --param steps=10 --device cpu
    python bench/semantic.py ...                           # the same, without main.py

Results are merged into OUT/semantic-<gpu>.json (one record per row and case: a second run of the
same command adds missing rows, e.g. a method registered later, and skips what is there; --redo runs
them again) and the tables are rewritten from all records into OUT/semantic-<gpu>.md.
`--workers N` runs N processes, spread over the visible GPUs (timings then share a GPU: the report
says how many workers did); `--time-limit S` stops taking new runs after S seconds (the next call
goes on where it stopped).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORLD = ROOT / "resources" / "demo_world"
for _path in (ROOT, WORLD):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import cases as world_cases  # noqa: E402  (resources/demo_world/cases.py)
import judge as world_judge  # noqa: E402  (resources/demo_world/judge.py)
from bench.semantic_metrics import DILATE, changed_keys, outside, psnr, ssim, verdict  # noqa: E402
from bench.semantic_report import write_markdown  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.errors import ParamError, RetakeError  # noqa: E402
from pipeline.events import CancelToken, StageClock  # noqa: E402
from pipeline.files import write_atomically  # noqa: E402
from pipeline.images import from_tensor, to_tensor  # noqa: E402
from pipeline.methods.base import input_specs  # noqa: E402
from pipeline.methods.registry import get_method, method_ids  # noqa: E402
from pipeline.models import ModelBundle, load_model  # noqa: E402
from pipeline.params import param_specs, params_from_dict, parse_assignment  # noqa: E402
from pipeline.request import EditRequest  # noqa: E402
from pipeline.run import RunContext  # noqa: E402

MODEL = WORLD / "weights"
BASELINE = "baseline"
BASELINE_PARAMS: dict[str, Any] = {"inversion": "ddim", "cross_replace": [0.0, 0.0], "self_replace": [0.0, 0.0]}
GROUND_TRUTH, UNCHANGED = "ground truth", "unchanged"
PREFIX = "semantic"


@dataclass(frozen=True)
class Row:
    """One row of the table: a method with its parameters (the defaults, less what is fixed here)."""

    name: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """What every run of one benchmark shares; results of other settings are never mixed in."""

    per_task: int
    tasks: tuple[str, ...]
    seed: int
    model: str
    max_side: int
    device: str
    dtype: str | None
    inputs: str  # "required" or "all"
    overrides: dict[str, str]
    judge: str
    dilate: int = DILATE

    def key(self, model_identity: str, judge_digest: str) -> dict[str, Any]:
        """What must match for records to be merged into one table."""
        return {"seed": self.seed, "model": _in_checkout(self.model), "model_identity": model_identity,
                "max_side": self.max_side, "inputs": self.inputs, "overrides": self.overrides, "dilate": self.dilate,
                "judge": _in_checkout(self.judge), "judge_sha256": judge_digest, "dtype": self.dtype}


def rows_for(names: list[str], overrides: dict[str, str]) -> list[Row]:
    """Rows by name ("all": every registered method and the baseline); overrides go to each row whose
    method has that parameter."""
    names = [*method_ids(), BASELINE] if names == ["all"] else names
    rows = []
    for name in names:
        if name not in (*method_ids(), BASELINE):
            raise SystemExit(f"semantic bench: unknown row {name!r}; rows: {', '.join([*method_ids(), BASELINE])}")
        method = "p2p" if name == BASELINE else name
        known = {s.name for s in param_specs(get_method(method).Params)}
        params = dict(BASELINE_PARAMS) if name == BASELINE else {}
        params.update({k: v for k, v in overrides.items() if k in known})
        try:  # a bad value is refused now, not once per run
            params_from_dict(get_method(method).Params, params)
        except ParamError as error:
            raise SystemExit(f"semantic bench: {name}: {error}") from None
        rows.append(Row(name, method, params))
    unused = sorted(set(overrides) - {k for row in rows for k in row.params})
    if unused:
        raise SystemExit(f"semantic bench: no row's method has the parameter(s) {', '.join(unused)}")
    return rows


# --------------------------------------------------------------------------------------------------
# One case's inputs, one run


def available_inputs(case: world_cases.Case) -> dict[str, np.ndarray | None]:
    """What a case can give as each named input the registered methods declare: masks (bool
    [H, W]) and the reference picture (uint8 [H, W, 3]); None where this case has none."""
    source_subject, target_subject = case.subject_masks()
    return {
        "edit_mask": case.mask,
        "reference_region": case.mask,
        "subject_mask": source_subject if source_subject.any() else None,
        "target_mask": target_subject,
        "reference": None if case.reference is None else case.reference.image,
        "reference_mask": case.reference_mask,
    }


def case_inputs(case: world_cases.Case, method_id: str, policy: str) -> tuple[dict[str, np.ndarray], str | None]:
    """The inputs a method gets on a case (its required ones; with policy "all", also its optional
    ones the case can fill), or the reason it cannot take the case."""
    available, given = available_inputs(case), {}
    for spec in input_specs(get_method(method_id).Params):
        value = available.get(spec.name)
        if value is None:
            if spec.required:
                return {}, f"needs {spec.name}, which {case.task} cases do not have"
            continue
        if spec.required or policy == "all":
            given[spec.name] = value
    return given, None


def score(picture: np.ndarray, case: world_cases.Case, read: world_judge.Facts, dilate: int) -> dict[str, Any]:
    """The measures of one result picture (uint8 [H, W, 3]) of a case."""
    v = verdict(read, world_judge.facts(case.source.description), world_judge.facts(case.target.description))
    keep = outside(case.mask, dilate)
    return {"success": v.success, "success_share": round(v.success_share, 4), "kept": v.kept,
            "kept_share": round(v.kept_share, 4), "misses": list(v.misses),
            "psnr_outside": round(psnr(picture, case.source.image, keep), 3),
            "ssim_outside": round(ssim(picture, case.source.image, keep), 5)}


def save_png(array: np.ndarray, path: Path) -> str:
    Image.fromarray(array.astype(np.uint8) * 255 if array.dtype == bool else array).save(path)
    return str(path)


def run_one(engine: Engine, judge: world_judge.Judge, row: Row, case: world_cases.Case, settings: Settings,
            folder: Path, images: Path | None, sharing: int = 1) -> dict[str, Any]:
    """Run one row on one case through the engine; its record (with `skipped` or `error` if it did not run).
    `sharing`: how many runs share the device meanwhile (recorded with the timings)."""
    record: dict[str, Any] = {"row": row.name, "case": case.id, "task": case.task}
    given, why = case_inputs(case, row.method, settings.inputs)
    if why:
        return {**record, "skipped": why}
    work = folder / f"{case.id}-{re.sub(r'[^a-z0-9]+', '-', row.name)}"
    work.mkdir(parents=True, exist_ok=True)
    inputs = {name: save_png(value, work / f"{name}.png") for name, value in given.items()}
    prompts = {name: case.reference.caption for name in given if name == "reference" and case.reference is not None}
    request = EditRequest(
        target_prompt=case.target.caption, image=save_png(case.source.image, work / "source.png"),
        source_prompt=case.source.caption, project=str(work / "p.retake"), model=settings.model,
        method=row.method, params=dict(row.params), inputs=inputs, input_prompts=prompts, seed=0,
        device=settings.device, dtype=settings.dtype, max_side=settings.max_side)
    clock, cancel = StageClock(), CancelToken()
    try:
        job = engine.resolve(request)
        bundle = engine.load_model(job, lambda event: None)
        start = time.perf_counter()
        inversion = engine.invert(job, bundle, clock, cancel)
        inverted = time.perf_counter()
        result = engine.edit(job, bundle, inversion, clock, cancel)
        done = time.perf_counter()
        clock.stop()
    except RetakeError as error:
        return {**record, "error": str(error)}
    except Exception as error:  # a method's bug or the GPU's memory: recorded, and the other runs go on
        traceback.print_exc()
        return {**record, "error": f"{type(error).__name__}: {error}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    picture = np.asarray(result.image.convert("RGB"))
    record.update(score(picture, case, judge.read(picture[None])[0], settings.dilate))
    reconstruction = result.output.reconstruction
    if reconstruction is not None:
        rebuilt = np.asarray(engine.decode(bundle, reconstruction).convert("RGB"))
        record["reconstruction_psnr"] = round(psnr(rebuilt, case.source.image), 3)
    record["seconds"] = {"invert": round(inverted - start, 3), "edit": round(done - inverted, 3),
                         "total": round(done - start, 3), "stages": clock.seconds, "sharing": sharing}
    if images is not None:
        Image.fromarray(picture).save(images / case.id / f"{row.name.replace(' ', '-')}.png")
    return record


# --------------------------------------------------------------------------------------------------
# Shards of runs, in this process or in workers


def run_shard(jobs: list[tuple[str, str]], rows: list[Row], settings: Settings, device: str, deadline: float,
              images: str | None, journal: str, sharing: int = 1) -> str:
    """Run (row name, case id) jobs on one device until `deadline`; each record is appended to the
    `journal` file as soon as it is made (a call stopped from outside loses no finished run), and all
    are returned as JSON text."""
    if device != "cpu":
        torch.cuda.set_device(torch.device(device))
    settings = replace(settings, device=device)
    by_name = {row.name: row for row in rows}
    cases = {c.id: c for c in world_cases.make_cases(settings.per_task, settings.tasks, settings.seed)}
    judge = world_judge.Judge.load(Path(settings.judge), device)
    engine, records = Engine(), []
    with tempfile.TemporaryDirectory(prefix="retake-semantic-") as folder:
        for row_name, case_id in jobs:
            if time.time() > deadline:
                break
            record = run_one(engine, judge, by_name[row_name], cases[case_id], settings, Path(folder),
                             None if images is None else Path(images), sharing)
            records.append(record)
            with open(journal, "a") as f:  # one short line per write: appends of several workers do not mix
                f.write(json.dumps(record) + "\n")
            print(_line(record), flush=True)
    return json.dumps(records)


def _line(record: dict[str, Any]) -> str:
    head = f"{record['case']:>14} {record['row']:>15}: "
    if "skipped" in record or "error" in record:
        return head + ("skipped: " + record["skipped"] if "skipped" in record else "error: " + record["error"])
    seconds = record.get("seconds", {}).get("total", 0.0)
    return (head + f"success {int(record['success'])} kept {int(record['kept'])}  psnr {record['psnr_outside']:6.2f}  "
            f"ssim {record['ssim_outside']:.3f}  {seconds:6.1f} s  {'; '.join(record['misses'][:3])}")


def run_jobs(jobs: list[tuple[str, str]], rows: list[Row], settings: Settings, workers: int, deadline: float,
             images: str | None, journal: Path) -> list[dict[str, Any]]:
    """The jobs in this process (one worker) or spread over `workers` processes and the visible GPUs."""
    if workers <= 1:
        device = settings.device if settings.device != "cuda" else "cuda:0"
        return json.loads(run_shard(jobs, rows, settings, device, deadline, images, str(journal)))
    gpus = torch.cuda.device_count() if settings.device == "cuda" else 0
    sharing = math.ceil(workers / gpus) if gpus else workers
    shards = [jobs[k::workers] for k in range(workers)]
    context = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_threads,
                             initargs=(max(1, (os.cpu_count() or 1) // workers),)) as pool:
        futures = [pool.submit(run_shard, shard, rows, settings, f"cuda:{k % gpus}" if gpus else "cpu", deadline,
                               images, str(journal), sharing) for k, shard in enumerate(shards) if shard]
        return [record for future in futures for record in json.loads(future.result())]


def _worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# The cases' own records and the reference rows (no model edits)


def case_records(cases: list[world_cases.Case], judge: world_judge.Judge, bundle: ModelBundle, settings: Settings,
                 images: Path | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per case: captions, the changed keys, the region's size and the VAE round trip's PSNR (the best a
    reconstruction can do); and the records of the `ground truth` and `unchanged` rows."""
    ctx = RunContext(bundle, CancelToken(), lambda event: None)
    infos, records = [], []
    targets = judge.read(np.stack([c.target.image for c in cases]))
    sources = judge.read(np.stack([c.source.image for c in cases]))
    for case, read_target, read_source in zip(cases, targets, sources, strict=True):
        photo = Image.fromarray(case.source.image)
        rebuilt = np.asarray(from_tensor(ctx.decode(ctx.encode_image(to_tensor(photo, photo.size)))))
        source, truth = world_judge.facts(case.source.description), world_judge.facts(case.target.description)
        infos.append({
            "case": case.id, "task": case.task, "source_caption": case.source.caption,
            "target_caption": case.target.caption,
            "reference_caption": None if case.reference is None else case.reference.caption,
            "changed": {k: truth[k] for k in changed_keys(source, truth)},
            "region_pixels": int(case.mask.sum()), "vae_psnr": round(psnr(rebuilt, case.source.image), 3),
        })
        for name, picture, read in ((GROUND_TRUTH, case.target.image, read_target),
                                    (UNCHANGED, case.source.image, read_source)):
            records.append({"row": name, "case": case.id, "task": case.task,
                            **score(picture, case, read, settings.dilate)})
        if images is not None:
            folder = images / case.id
            folder.mkdir(parents=True, exist_ok=True)
            for name, picture in (("source", case.source.image), ("target", case.target.image),
                                  ("region", case.mask), ("reference", None if case.reference is None
                                                          else case.reference.image)):
                if picture is not None:
                    save_png(picture, folder / f"{name}.png")
    return infos, records


# --------------------------------------------------------------------------------------------------
# The command


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu-{platform.machine()}"


def results_path(out: Path, device: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name(device)).strip("-").lower()
    return out / f"{PREFIX}-{slug}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="retake bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="all",
                        help=f"rows, comma-separated: method ids and '{BASELINE}' (default all: every registered "
                             "method and the baseline)")
    parser.add_argument("--tasks", default=",".join(world_cases.TASKS), help="tasks, comma-separated (default all)")
    parser.add_argument("--per-task", type=int, default=world_cases.PER_TASK, help="cases per task (default 30)")
    parser.add_argument("--seed", type=int, default=world_cases.SEED)
    parser.add_argument("--model", default=str(MODEL), help="default: the demo-world model")
    parser.add_argument("--max-side", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="sampling precision (default: the engine's)")
    parser.add_argument("--inputs", choices=("required", "all"), default="required",
                        help="named inputs given to a method: those it requires (default) or also its optional ones")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter for every row whose method has it (e.g. steps=10 for a quick run)")
    parser.add_argument("--judge", default=str(world_judge.DEFAULT_FOLDER))
    parser.add_argument("--workers", type=int, default=1, help="processes (spread over the visible GPUs)")
    parser.add_argument("--time-limit", type=float, default=math.inf, help="seconds; no new run starts after it")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--redo", action="store_true", help="run again what the results file already holds")
    parser.add_argument("--images", type=Path, help="also save every case's pictures and every result here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = parse_args(argv)
    overrides = dict(parse_assignment(text) for text in args.param)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    settings = Settings(args.per_task, tasks, args.seed, str(Path(args.model).resolve()), args.max_side, args.device,
                        args.dtype, args.inputs, overrides, str(Path(args.judge).resolve()))
    rows = rows_for([m for m in args.methods.split(",") if m], overrides)
    if args.inputs == "all":
        rows = [Row(f"{r.name}+inputs", r.method, r.params) for r in rows]
    cases = world_cases.make_cases(args.per_task, tasks, args.seed)
    bundle = load_model(settings.model, device="cuda:0" if args.device == "cuda" else args.device, dtype=args.dtype)
    judge_digest = hashlib.sha256((Path(args.judge) / world_judge.WEIGHTS_FILE).read_bytes()).hexdigest()[:16]
    key = settings.key(bundle.identity, judge_digest)
    path = results_path(args.out, args.device)
    report = _load(path, key)
    journal = journal_path(path, key)
    recovered = _read_journal(journal)
    report = _merge(report, [], recovered, [])
    done = set() if args.redo else {(r["row"], r["case"]) for r in report["runs"]}
    wanted = [(row.name, case.id) for case in breadth_first(cases) for row in rows]
    jobs = [job for job in wanted if job not in done]
    print(f"semantic bench: {len(cases)} cases, rows {', '.join(r.name for r in rows)}; {len(jobs)} runs to do, "
          f"{len(wanted) - len(jobs)} done before ({len(recovered)} records taken from {journal.name})", flush=True)
    judge = world_judge.Judge.load(Path(args.judge), "cpu")
    infos, reference_rows = case_records(cases, judge, bundle, settings, args.images)
    del bundle
    args.out.mkdir(parents=True, exist_ok=True)
    records = run_jobs(jobs, rows, settings, args.workers, started + args.time_limit,
                       None if args.images is None else str(args.images), journal)
    report = _merge(report, infos, reference_rows + records, rows)
    report.update({"gpu": device_name(args.device), "torch": torch.__version__, "python": platform.python_version(),
                   "settings": key, "model_identity": key["model_identity"], "workers": args.workers,
                   "command": "python main.py bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "judge_accuracy": _judge_accuracy(args.judge)})
    write_atomically(path, (json.dumps(report, indent=1) + "\n").encode())
    journal.unlink(missing_ok=True)
    markdown = write_markdown(report, path.with_suffix(".md"), [BASELINE, *method_ids()], world_cases.TASKS)
    left = len(jobs) - len(records)
    print(f"wrote {path} and {markdown}; {len(records)} runs in {time.time() - started:.0f} s"
          + (f"; {left} runs left for the next call (time limit)" if left else ""))
    return 0


def breadth_first(cases: list[world_cases.Case]) -> list[world_cases.Case]:
    """The cases in the order the k-th of every task, then the (k+1)-th: a call stopped by
    --time-limit leaves every task covered to the same depth."""
    depth = {case.id: k for task in world_cases.TASKS
             for k, case in enumerate(c for c in cases if c.task == task)}
    return sorted(cases, key=lambda case: depth[case.id])


def _in_checkout(path: str) -> str:
    """A path inside the checkout relative to its root (so results of two machines' checkouts merge)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def _load(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """The results so far (empty if none); refuses to mix in results of other settings."""
    if not path.is_file():
        return {"cases": [], "runs": []}
    report = json.loads(path.read_text())
    if report.get("settings") != key:
        raise SystemExit(f"semantic bench: {path} holds results of other settings ({report.get('settings')}); "
                         "give another --out, or move it away")
    return report


def _merge(report: dict[str, Any], infos: list[dict], records: list[dict], rows: list[Row]) -> dict[str, Any]:
    """Records replace those of the same row and case; case records replace those of the same case."""
    runs = {(r["row"], r["case"]): r for r in report["runs"]}
    runs.update({(r["row"], r["case"]): r for r in records})
    known = {c["case"]: c for c in report["cases"]}
    known.update({c["case"]: c for c in infos})
    params = {**report.get("row_params", {}), **{r.name: {"method": r.method, "params": r.params} for r in rows}}
    return {**report, "cases": sorted(known.values(), key=lambda c: c["case"]),
            "runs": sorted(runs.values(), key=lambda r: (r["case"], r["row"])), "row_params": params}


def journal_path(results: Path, key: dict[str, Any]) -> Path:
    """Where the runs of a call stopped before it wrote `results` are found (named after the settings)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return results.with_name(f"{results.stem}.{digest}.jsonl")


def _read_journal(journal: Path) -> list[dict[str, Any]]:
    """The records of a journal; a line cut off by a stop is left out."""
    if not journal.is_file():
        return []
    records = []
    for line in journal.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _judge_accuracy(folder: str) -> dict[str, Any] | None:
    path = Path(folder) / "accuracy.json"
    return json.loads(path.read_text()).get("accuracy") if path.is_file() else None


if __name__ == "__main__":
    sys.exit(main())
