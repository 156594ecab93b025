"""`retake batch`: a recipe over a folder of photos or a manifest, on an embedded Ray or a cluster.

Everything that can be checked without workers is checked first (the recipe, the manifest, every
file it names, the output folder, the model's files), so a mistake is one line and exit status 1
before Ray starts. Then the plan runs (pipeline.batch.runner) and the report is written, also after
Ctrl-C, which stops every worker within a model step and exits 130; a second Ctrl-C leaves at once.
Either way every finished photo is in the ledger, and the same command goes on from there.
Exit status: 0 when every edit of the batch is done, 1 when one failed (the report says why), 130
cancelled.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from contextlib import ExitStack
from pathlib import Path

from cli.batch_progress import BatchProgress, JsonProgress
from cli.interrupt import cancel_on_signals, exit_cancelled
from pipeline.batch.ledger import Ledger
from pipeline.batch.manifest import read_inputs
from pipeline.batch.plan import Layout, Plan, make_plan
from pipeline.batch.recipe import read_recipe, write_recipe
from pipeline.batch.report import RunSummary, report_rows, write_report
from pipeline.errors import RetakeError, shorten
from pipeline.events import CancelToken
from pipeline.models import FileHashes, model_identity

EXIT_FAILED = 1


def add_batch_parser(commands: argparse._SubParsersAction, count: type) -> None:
    """The `batch` subcommand's options; `count` parses a whole number >= 0."""
    batch = commands.add_parser(
        "batch", help="apply a recipe to a folder of photos or a manifest (on Ray: this machine or a cluster)",
        description="Apply one recipe to many photos. Rerunning the same command skips what is done.")
    batch.add_argument("--recipe", required=True, help="the recipe JSON (see the user guide, 'Batch')")
    batch.add_argument("--inputs", required=True, help="a folder of photos, or a manifest (.csv or .jsonl)")
    batch.add_argument("--out", required=True, help="the output folder: results/, projects/, the report")
    batch.add_argument("--address", help="join this Ray cluster (default: an embedded Ray on this machine)")
    batch.add_argument("--gpus", type=count, help="GPU workers, one per GPU (default: every GPU there is)")
    batch.add_argument("--workers", type=count,
                       help="CPU workers instead of GPUs (default: 1 where there is no GPU)")
    batch.add_argument("--retry-failed", action="store_true",
                       help="also retry photos that failed for a reason of their own (a broken image...)")
    batch.add_argument("--allow-pickle", action="store_true",
                       help="allow a pickled .ckpt/.pt model (loaded with weights_only)")
    batch.add_argument("--progress", choices=("auto", "json"), default="auto",
                       help="json: one JSON object per line on stdout (what the desktop app reads)")


def plan_batch(recipe_path: Path, inputs_path: Path, out: Path, *, allow_pickle: bool = False) -> Plan:
    """Read and check everything (RetakeError at the first problem), then create the output folder."""
    plan, hashes = check_batch(recipe_path, inputs_path, out, allow_pickle=allow_pickle)
    start_output(plan, hashes)
    return plan


def check_batch(recipe_path: Path, inputs_path: Path, out: Path, *,
                allow_pickle: bool = False) -> tuple[Plan, FileHashes]:
    """The plan, every part of it checked; nothing is written (RetakeError at the first problem)."""
    recipe = read_recipe(recipe_path)
    inputs = read_inputs(inputs_path)
    layout = Layout(out)
    layout.check()
    identity = model_identity(recipe.model, allow_pickle=allow_pickle)
    hashes = FileHashes(layout.hashes)
    return make_plan(recipe, inputs, layout, identity, hashes, allow_pickle=allow_pickle), hashes


def start_output(plan: Plan, hashes: FileHashes) -> None:
    """The output folder, the photos' remembered hashes and the recipe as it was read."""
    plan.layout.make()
    hashes.save()
    write_recipe(plan.recipe, plan.layout.out / "recipe.json")


def require_ray() -> None:
    """Ray is Retake's optional `batch` extra; without it, one line that says how to get it."""
    if importlib.util.find_spec("ray") is None:
        raise RetakeError("retake batch needs Ray, which is not installed here; install Retake's batch extra "
                          "(pip install 'ray[default]==2.60.0').")


def run_batch(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    if args.gpus is not None and args.workers is not None:
        raise usage_error("--gpus and --workers both choose the workers; give one of them.")
    if args.workers == 0:
        raise usage_error("--workers 0 leaves no one to do the work; give 1 or more.")
    plan, hashes = check_batch(Path(args.recipe), Path(args.inputs), Path(args.out), allow_pickle=args.allow_pickle)
    require_ray()
    start_output(plan, hashes)
    progress = JsonProgress() if args.progress == "json" else BatchProgress()
    with Ledger(plan.layout) as ledger:
        skip = ledger.finished(args.retry_failed)
        if not plan.tasks(skip):
            summary = RunSummary(0, 0, 0, len(plan.items), 0.0, None)
        else:
            summary = _run(plan, ledger, skip, args, progress)
        progress.close()
        paths = write_report(plan, report_rows(plan, ledger.records, set(summary.this_run)), summary)
        failed = sum(1 for item in plan.items if (r := ledger.records.get(item.key)) and r.status == "failed")
    out = shorten(plan.layout.out, 200)
    if summary.cancelled:
        exit_cancelled(f"retake: batch cancelled; {summary.line()}; what finished is kept in {out}; run the same "
                       "command again to go on.")
    said = sys.stderr if args.progress == "json" else sys.stdout  # stdout carries only JSON then
    if not summary.this_run:
        print(f"Nothing to do: all {len(plan.items)} edits of this batch were finished earlier.", file=said)
    else:
        print(f"batch: {summary.line()}.", file=said)
    print(f"results: {shorten(plan.layout.results, 200)}\nreport: {shorten(paths['csv'], 200)}\n"
          f"contact sheet: {shorten(paths['sheet'], 200)}", file=said)
    if failed:
        print(f"retake: {failed} of {len(plan.items)} edits failed; report.csv says why.", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _run(plan: Plan, ledger: Ledger, skip: set[str], args: argparse.Namespace,
         progress: BatchProgress | JsonProgress) -> RunSummary:
    """Start Ray (imported only now) and run the plan; Ctrl-C cancels it (see the module docstring)."""
    from pipeline.batch.runner import Cluster, RunOptions, run_plan

    cancel = CancelToken()
    out = shorten(plan.layout.out, 200)

    def at_once() -> str:
        progress.close()
        return f"retake: batch stopped at once; every photo finished so far is kept in {out}; run the same " \
               "command again to go on."

    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(Cluster(RunOptions(args.address, args.gpus, args.workers)))
        except SystemExit:  # Ray's own SIGTERM handler, while it starts
            exit_cancelled("retake: batch cancelled while Ray was starting; nothing was run.")
        stack.enter_context(cancel_on_signals(cancel, at_once))
        return run_plan(plan, ledger, cluster, progress, cancel, skip)
