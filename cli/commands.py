"""Argument parsing and the four commands. Errors end as one line on stderr and a non-zero exit.

Exit codes: 0 done, 1 the run failed (message printed), 2 bad command line, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from cli.progress import TerminalProgress
from cli.selftest import self_test
from pipeline.engine import EditRequest, Engine
from pipeline.errors import RetakeError
from pipeline.events import CancelledEvent, CancelToken, Done, Event, Failed
from pipeline.methods.registry import get_method, method_ids
from pipeline.models import default_cache_dir, describe_model_sources
from pipeline.params import param_specs, parse_assignment

EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retake", description="Edit a photo by changing its description.")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="invert a photo (or reuse its project's inversion) and edit it")
    edit.add_argument("image", nargs="?", help="the photo; leave out to re-edit --project")
    edit.add_argument("--source", help="what the photo shows now (taken from the project when re-editing)")
    edit.add_argument("--target", required=True, help="what the photo should become")
    edit.add_argument("--method", choices=method_ids(), help="editing method (default: the project's, or p2p)")
    edit.add_argument("--model", help="'demo', a diffusers folder, a cached hub id or a .safetensors file")
    edit.add_argument("--project", help="project folder (default: IMAGE's name + .retake beside it)")
    edit.add_argument("--out", help="also write the result to this PNG")
    edit.add_argument("--steps", type=int, help="DDIM steps (the method's 'steps' parameter)")
    edit.add_argument("--mask", help="PNG mask: white where the edit may change the photo")
    edit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a method parameter; see `retake methods`")
    edit.add_argument("--seed", type=int, help="random seed, recorded in the result")
    edit.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present")
    edit.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="sampling precision (cuda default fp16)")
    edit.add_argument("--max-side", type=int, default=512, help="longest side of the working image (multiple of 64)")
    edit.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    edit.add_argument("--allow-pickle", action="store_true",
                      help="allow pickled .ckpt/.pt/.bin checkpoints (loaded with weights_only)")

    methods = commands.add_parser("methods", help="list methods and their parameters")
    methods.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser("info", help="versions, device and where models are looked for")
    commands.add_parser("self-test", help="a fast end-to-end check on the demo model")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "edit":
            return run_edit(args)
        if args.command == "methods":
            return list_methods(args.json)
        if args.command == "info":
            return info()
        return self_test(Engine(), sys.stdout)
    except RetakeError as error:
        print(f"retake: {error}", file=sys.stderr)
        return EXIT_FAILED


def request_from_args(args: argparse.Namespace) -> EditRequest:
    params = dict(parse_assignment(text) for text in args.param)
    if args.steps is not None:
        params["steps"] = args.steps
    return EditRequest(
        target_prompt=args.target, image=args.image, source_prompt=args.source, project=args.project,
        model=args.model, method=args.method, params=params, mask=args.mask, output=args.out,
        seed=args.seed, device=args.device, dtype=args.dtype, max_side=args.max_side,
        allow_download=args.allow_download, allow_pickle=args.allow_pickle,
    )


def run_edit(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    cancel = CancelToken()
    progress = TerminalProgress()
    outcome: list[Event] = []

    def work() -> None:
        outcome.append(Engine().run(request, progress, cancel))

    worker = threading.Thread(target=work, name="retake-engine")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.cancel()
        worker.join()
    return report(outcome[0])


def report(event: Event) -> int:
    if isinstance(event, Done):
        print(f"result: {event.output_path or event.result_path}")
        if event.output_path is not None:
            print(f"also kept in the project: {event.result_path}")
        reuse = "reused its inversion" if event.reused_inversion else "inverted the photo"
        print(f"project: {event.project_path} ({reuse})")
        return 0
    if isinstance(event, CancelledEvent):
        print(f"retake: cancelled during {event.stage}; nothing was written.", file=sys.stderr)
        return EXIT_CANCELLED
    assert isinstance(event, Failed)
    print(f"retake: {event.message}", file=sys.stderr)
    return EXIT_FAILED


def list_methods(as_json: bool) -> int:
    listing = []
    for method_id in method_ids():
        method = get_method(method_id)
        specs = [s.to_json() for s in param_specs(method.Params)]
        listing.append({"id": method.id, "title": method.title, "summary": method.summary, "params": specs})
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
