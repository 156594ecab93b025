"""How each method's edit uses the fast path's CUDA graphs: the kinds of UNet call captured, and the calls
replayed, over a whole edit, with the capture emulated on the CPU (pipeline.fast.EmulatedCapture; the
kinds, captures and replays are what a GPU run does, the times are not).

A kind of call is run eagerly once, captured at its second call, then replayed; a controller whose
graph key changed from step to step, or more kinds than the graphs kept (pipeline.fast.GRAPH_LIMIT),
would show here as captures growing with the steps. tests/test_fast_path.py checks the same at 8 steps.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fast_path_graphs.py [--steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pipeline.images import load_image, to_tensor  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.parts import IMAGE_ENCODER, with_parts  # noqa: E402
from pipeline.paths import RESOURCES  # noqa: E402
from tests.test_fast_path import EMULATED, MAPS_SIZE, _cases, _context  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()
    bundle = with_parts(load_model("demo-tiny", device="cpu"), (IMAGE_ENCODER,))
    eager = _context(bundle)
    photo, picture = (load_image(RESOURCES / name / "house.png") for name in ("demo", "demo_world"))
    reference = eager.encode_image(to_tensor(picture, (MAPS_SIZE, MAPS_SIZE)))
    results = {}
    for case, (method, prompts, params, inputs, tune_inputs, size) in _cases(reference).items():
        params = dataclasses.replace(params, steps=args.steps)
        tensors = method.invert(eager, eager.encode_image(to_tensor(photo, (size, size))), prompts, params, inputs)
        if hasattr(method, "tune"):
            tensors = {**tensors, **method.tune(eager, tensors, prompts, params, tune_inputs)}
        with torch.no_grad():
            fast = _context(bundle, EMULATED)
            method.edit(fast, tensors, prompts, params, inputs)
        graphs = fast.graphs
        assert graphs is not None
        results[case] = {"captures": graphs.captures, "kept": graphs.kept, "replays": graphs.replays,
                         "failed kinds": graphs.failures}
        print(f"{case}: {results[case]}", flush=True)
    summary = {"steps": args.steps, "model": "demo-tiny", "device": "cpu (capture emulated)", "results": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
