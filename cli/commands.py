"""Argument parsing and the commands. Errors end as one line on stderr and a non-zero exit.

Exit codes: 0 done, 1 the run failed (message printed), 2 bad command line, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from cli.batch import add_batch_parser, run_batch
from cli.interrupt import cancel_on_signals, exit_cancelled
from cli.progress import TerminalProgress
from cli.selftest import self_test
from pipeline.area import DEFAULT_PADDING, MAX_PADDING, MODES
from pipeline.engine import Engine
from pipeline.errors import ParamError, RetakeError, shorten
from pipeline.events import CancelledEvent, CancelToken, Done, Event, Failed
from pipeline.images import DEFAULT_FEATHER
from pipeline.methods.base import input_specs
from pipeline.methods.registry import get_method, method_ids
from pipeline.models import default_cache_dir, describe_model_sources
from pipeline.params import param_specs, parse_assignment
from pipeline.preflight import check_max_side, check_seed
from pipeline.project import Project, abandon_claim, check_project, repair_project
from pipeline.request import EditRequest, default_project_path

EXIT_FAILED, EXIT_USAGE = 1, 2
# Paths in the success lines are for copying: long enough for any real path, short enough for a log.
PATH_LIMIT = 240


class UsageError(RetakeError):
    """A command line that contradicts itself; exits with EXIT_USAGE."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`retake: ...`), like every other failure of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"retake: {message.rstrip('.')}; see `{self.prog} --help`.\n")


def _checked_number(check: Callable[[int], int | None]) -> Callable[[str], int]:
    """An argparse type: a whole number `check` accepts, checked as it is parsed, before the seconds of
    loading a model (--max-side, --seed)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
            check(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {shorten(text)}") from None
        except ParamError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return parse


def _pixels(text: str) -> int:
    """A number of pixels, checked as it is parsed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, not {shorten(text)}") from None
    if not 0 <= value <= MAX_PADDING:
        raise argparse.ArgumentTypeError(f"must lie between 0 and {MAX_PADDING}, not {value}")
    return value


def _count(text: str) -> int:
    """A whole number of workers or GPUs, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {shorten(text)}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retake", description="Edit a photo by changing its description.")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="invert a photo (or reuse its project's inversion) and edit it")
    edit.add_argument("image", nargs="?", help="the photo; leave out to re-edit --project")
    edit.add_argument("--source", help="what the photo shows now (taken from the project when re-editing)")
    edit.add_argument("--target", required=True, help="what the photo should become")
    edit.add_argument("--method", choices=method_ids(), help="editing method (default: the project's, or p2p)")
    edit.add_argument("--model", help="'demo', a diffusers folder, a cached hub id or a .safetensors file")
    edit.add_argument("--image-encoder", metavar="SPEC",
                      help="the CLIP image encoder of a method that needs one (stylediffusion): a folder "
                           "(config.json + model.safetensors) or a cached hub id (default: the project's, else "
                           "image_encoder/ in the model folder, else openai/clip-vit-base-patch16 from the cache); "
                           "'' looks for it beside the model again")
    edit.add_argument("--project", help="project folder (default: IMAGE's name + .retake beside it)")
    edit.add_argument("--out", help="also write the result to this PNG")
    edit.add_argument("--steps", type=int, help="DDIM steps (the method's 'steps' parameter)")
    edit.add_argument("--mask", help="PNG mask: white where the edit may change the photo")
    edit.add_argument("--input", action="append", default=[], metavar="NAME=FILE",
                      help="a method's named input, e.g. subject_mask=cat-mask.png (see `retake methods`)")
    edit.add_argument("--reference", metavar="IMAGE",
                      help="a reference picture (specref): the same as --input reference=IMAGE")
    edit.add_argument("--reference-mask", metavar="PNG",
                      help="white on the reference's object: the same as --input reference_mask=PNG")
    edit.add_argument("--reference-prompt", metavar="TEXT",
                      help="what the reference picture shows (default: empty, or the project's)")
    edit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a method parameter; see `retake methods`")
    edit.add_argument("--seed", type=_checked_number(check_seed),
                      help="random seed (0 to 2**64 - 1), recorded in the result")
    edit.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present")
    edit.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="sampling precision (cuda default fp16)")
    edit.add_argument("--max-side", type=_checked_number(check_max_side),
                      help="longest side of the working image, a multiple of 64 in 64..4096 "
                           "(default: the project's, else the size the model was trained at: 512 for SD 1.x, 128 for demo)")
    edit.add_argument("--area", choices=MODES,
                      help="edit the whole photo, or a crop around the region a mask bounds, pasted back into the "
                           "untouched photo (default: the project's, else the crop when the photo is larger than "
                           "the working size and a mask bounds the edit)")
    edit.add_argument("--area-padding", type=_pixels, metavar="PX",
                      help=f"pixels of context around the region in the crop (default: the project's, else {DEFAULT_PADDING})")
    edit.add_argument("--feather", type=_pixels, metavar="PX",
                      help="pixels of the photo over which the result fades out past the region; the photo is "
                           f"untouched beyond them (default: the project's, else {DEFAULT_FEATHER})")
    edit.add_argument("--eager", action="store_true",
                      help="on a GPU, run every stage eagerly instead of on the fast path (CUDA graphs, the model "
                      "held in fp16, optimisation in bf16 or TF32): results bit for bit those of earlier versions, "
                      "slower")
    edit.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    edit.add_argument("--allow-pickle", action="store_true",
                      help="allow pickled .ckpt/.pt/.bin checkpoints (loaded with weights_only)")

    demo = commands.add_parser("demo", help="list the demo scenes (one per method), or edit one with the demo model")
    demo.add_argument("scene", nargs="?", help="the scene to edit; leave out to list them")
    demo.add_argument("--out", default="out", help="folder for the scene's project and result (default: out)")
    demo.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="change one of the scene's parameters")
    demo.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present")
    demo.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="sampling precision (cuda default fp16)")

    add_batch_parser(commands, _count)

    methods = commands.add_parser("methods", help="list methods and their parameters")
    methods.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser("info", help="versions, device and where models are looked for")
    commands.add_parser("self-test", help="a fast end-to-end check on the demo model")
    commands.add_parser("bench", add_help=False,
                        help="the semantic editing benchmark on the demo world; `bench --help` for its options")

    project = commands.add_parser("project", help="look after project folders")
    project_commands = project.add_subparsers(dest="project_command", required=True)
    check = project_commands.add_parser("check", help="check a project's files (reads only, unless --repair)")
    check.add_argument("folder", help="the project folder")
    check.add_argument("--repair", action="store_true", help="set damaged files aside in quarantine/")
    prune = project_commands.add_parser(
        "prune", help="free disk space: drop the tuning records (and with --inversions the inversions) that a "
                      "re-edit of the newest edit does not need; they are recomputed if ever needed again")
    prune.add_argument("folder", help="the project folder")
    prune.add_argument("--inversions", action="store_true", help="also drop the inversions the newest edit did not use")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be dropped and freed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its options are the benchmark's own (bench/semantic.py)
        return run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "edit":
            return run_edit(args)
        if args.command == "demo":
            return run_demo(args)
        if args.command == "batch":
            return run_batch(args, UsageError)
        if args.command == "methods":
            return list_methods(args.json)
        if args.command == "info":
            return info()
        if args.command == "project" and args.project_command == "prune":
            return project_prune(Path(args.folder), args.inversions, args.dry_run)
        if args.command == "project":
            return project_check(Path(args.folder), args.repair)
        return self_test(Engine(), sys.stdout)
    except UsageError as error:
        print(f"retake: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RetakeError as error:
        print(f"retake: {error}", file=sys.stderr)
        return EXIT_FAILED


def run_bench(argv: list[str]) -> int:
    """The semantic benchmark; it lives beside main.py in a source checkout, not in an installed package."""
    try:
        from bench.semantic import main as bench_main
    except ModuleNotFoundError as error:
        if error.name not in ("bench", "bench.semantic"):
            raise
        print(f"retake: the benchmark runs from a source checkout of Retake ({error}).", file=sys.stderr)
        return EXIT_USAGE
    return bench_main(argv)


def request_from_args(args: argparse.Namespace) -> EditRequest:
    assignments = [parse_assignment(text) for text in args.param]
    if args.steps is not None:
        assignments.append(("steps", str(args.steps)))
    return EditRequest(
        target_prompt=args.target, image=args.image, source_prompt=args.source, project=args.project,
        model=args.model, image_encoder=args.image_encoder, method=args.method,
        params=_unique_params(assignments), mask=args.mask,
        inputs=_named_inputs(args),
        input_prompts={} if args.reference_prompt is None else {"reference": args.reference_prompt},
        output=args.out, seed=args.seed, device=args.device, dtype=args.dtype, max_side=args.max_side,
        area=args.area, area_padding=args.area_padding, feather=args.feather,
        allow_download=args.allow_download, allow_pickle=args.allow_pickle, fast=not args.eager,
    )


def _named_inputs(args: argparse.Namespace) -> dict[str, str]:
    """--input NAME=FILE with the shorthands --reference and --reference-mask; one name, one file."""
    assignments = [parse_assignment(text) for text in args.input]
    for name, path in (("reference", args.reference), ("reference_mask", args.reference_mask)):
        if path is not None:
            assignments.append((name, path))
    return _unique_params(assignments, "--input")


def _unique_params(assignments: Sequence[tuple[str, str]], option: str = "--param") -> dict[str, str]:
    """NAME=VALUE pairs as a dict; one name given two different values (`--steps` is `steps`) is an error.

    Silently keeping the last would run, for an hour, something the user did not ask for.
    """
    params: dict[str, str] = {}
    for name, value in assignments:
        other = params.setdefault(name, value)
        if not _same_value(other, value):
            shown = "--steps/--param steps" if name == "steps" and option == "--param" else f"{option} {name}"
            raise UsageError(f"{shown} is given twice with different values ({shorten(other)} and "
                             f"{shorten(value)}); give it once.")
    return params


def _same_value(a: str, b: str) -> bool:
    """The same text, or the same number written differently (5 and 5.0)."""
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def run_demo(args: argparse.Namespace) -> int:
    """`demo`: list the scenes, or edit one into OUT/NAME.retake and OUT/NAME.png, then say what it shows."""
    from pipeline.demo_scenes import list_scenes, load_scene

    if args.scene is None:
        for scene in list_scenes():
            print(f"{scene.name}: {scene.title} ({scene.method}, {scene.task})")
            print(f"    {scene.source!r} -> {scene.target!r}")
        print("Edit one with `main.py demo NAME`; open it in the app with `main.py open` on the project it makes.")
        return 0
    scene = load_scene(args.scene)
    out = Path(args.out)
    fields = scene.request_fields()
    fields["params"] = {**fields["params"], **_unique_params([parse_assignment(text) for text in args.param])}
    request = EditRequest(**fields, project=str(out / f"{scene.name}.retake"), output=str(out / f"{scene.name}.png"),
                          device=args.device, dtype=args.dtype)
    status = execute(request)
    if status == 0 and scene.note:
        print(f"note: {scene.note}")
    return status


def run_edit(args: argparse.Namespace) -> int:
    return execute(request_from_args(args))


def execute(request: EditRequest) -> int:
    """Run the engine in a worker thread; the main thread only waits, so signals reach the token.

    A cancelled run does not return: it prints its line and exits with status 130 at once.
    """
    project = _project_path(request)
    kept_before = _inversion_keys(project)
    cancel = CancelToken()
    progress = TerminalProgress()
    outcome: list[Event] = []
    worker = threading.Thread(target=lambda: outcome.append(Engine().run(request, progress, cancel)),
                              name="retake-engine", daemon=True)

    def stopped_at_once() -> str:
        progress.close()
        if project is not None:  # a first edit's claim on making the project: os._exit would leave it
            abandon_claim(project)
        return cancelled_line(progress.stage, _new_inversion(project, kept_before), at_once=True)

    with cancel_on_signals(cancel, stopped_at_once):
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
        final = outcome[0]
        progress.close()
        if isinstance(final, CancelledEvent):  # leave here, where a further Ctrl-C adds no second line
            exit_cancelled(cancelled_line(final.stage, _new_inversion(project, kept_before)))
    return report(final)


def cancelled_line(stage: str, kept: Path | None, at_once: bool = False) -> str:
    """The one line a cancelled run ends with, saying truthfully what stays on disk."""
    how = "; stopped at once" if at_once else ""
    if kept is None:
        return f"retake: cancelled during {stage}{how}; nothing was written."
    return (f"retake: cancelled during {stage}{how}; the finished inversion was kept in "
            f"{shorten(kept, PATH_LIMIT)}, so the next edit starts from it; no result was written.")


def _project_path(request: EditRequest) -> Path | None:
    if request.project is not None:
        return Path(request.project)
    return default_project_path(Path(request.image)) if request.image is not None else None


def _inversion_keys(project: Path | None) -> frozenset[str]:
    """Keys of the inversions stored in `project`; none when there is no readable project there."""
    if project is None:
        return frozenset()
    try:
        return frozenset(record.key for record in Project.open(project).inversions)
    except RetakeError:
        return frozenset()


def _new_inversion(project: Path | None, before: frozenset[str]) -> Path | None:
    """`project` when this run added an inversion to it, else None."""
    return project if _inversion_keys(project) - before else None


def report(event: Event) -> int:
    """Print how a finished or failed run ended; return the exit status."""
    if isinstance(event, Done):
        print(f"result: {shorten(event.output_path or event.result_path, PATH_LIMIT)}")
        if event.output_path is not None:
            print(f"also kept in the project: {shorten(event.result_path, PATH_LIMIT)}")
        reuse = "reused its inversion" if event.reused_inversion else "inverted the photo"
        print(f"project: {shorten(event.project_path, PATH_LIMIT)} ({reuse})")
        return 0
    assert isinstance(event, Failed)
    print(f"retake: {event.message}", file=sys.stderr)
    return EXIT_FAILED


def project_check(folder: Path, repair: bool) -> int:
    """Print a project's health; exit 0 when it is sound (or was repaired to sound), 1 otherwise."""
    if not folder.exists():  # a mistyped path is the user's slip, not a damaged project
        raise UsageError(f"There is no project at {shorten(str(folder), PATH_LIMIT)}.")
    health = repair_project(folder) if repair else check_project(folder)
    print(health.summary())
    return 0 if health.ok else EXIT_FAILED


def project_prune(folder: Path, inversions: bool, dry_run: bool) -> int:
    """Drop what the project does not need (pipeline.project.retention) and say how much it freed."""
    project = Project.open(folder)
    pruned = project.prunable(inversions=inversions) if dry_run else project.prune(inversions=inversions)
    print(pruned.summary(done=not dry_run))
    return 0


def list_methods(as_json: bool) -> int:
    listing = []
    for method_id in method_ids():
        method = get_method(method_id)
        specs = [s.to_json() for s in param_specs(method.Params)]
        inputs = [spec.to_json() for spec in input_specs(method.Params)]
        listing.append({"id": method.id, "title": method.title, "summary": method.summary, "params": specs,
                        "inputs": inputs})
    if as_json:
        print(json.dumps(listing, indent=2))
        return 0
    for entry in listing:
        print(f"{entry['id']}: {entry['title']}\n  {entry['summary']}")
        for spec in entry["params"]:
            bounds = ""
            if spec["choices"]:
                bounds = " {" + ", ".join(spec["choices"]) + "}"
            elif spec["minimum"] is not None:
                bounds = f" [{spec['minimum']:g}..{spec['maximum']:g}]"
            print(f"  {spec['name']} = {json.dumps(spec['default'])}  ({spec['kind']}, {spec['stage']}{bounds})")
            print(f"      {spec['help']}")
        for spec in entry["inputs"]:
            kind = spec["kind"] if spec["picture"] is None else f"{spec['kind']} on {spec['picture']}"
            print(f"  --input {spec['name']}=FILE  ({kind}, {spec['stage']})  {spec['label']}")
            print(f"      {spec['help']}")
    return 0


def info() -> int:
    import torch

    print(f"retake {_version('retake')} on Python {platform.python_version()} ({platform.platform()})")
    for package in ("torch", "diffusers", "transformers", "safetensors", "PySide6-Essentials", "segment-anything"):
        print(f"  {package} {_version(package)}")
    if torch.cuda.is_available():
        print(f"device: cuda ({torch.cuda.get_device_name(0)}), sampling in fp16")
    else:
        print("device: cpu (no CUDA device visible), fp32")
    for line in describe_model_sources(default_cache_dir()):
        print(f"  {line}")
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"
