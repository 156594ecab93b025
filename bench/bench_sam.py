"""How long click-to-segment takes: loading SAM, embedding a photo once, and each click's mask.

Timing does not depend on weight values, so the model is Meta's architecture (vit_b by default)
with seeded random weights, saved once as a checkpoint and loaded through `load_segmenter`, the
GUI's own path. It measures, median of --repeats after a warm-up:

- load: `load_segmenter` from the file (read, build, copy to the device), once;
- embed: `SamPredictor.set_image` on a new photo (resize to 1024, the ViT image encoder), once per image;
- same image: `SamSegmenter.set_image` on the photo already embedded (the pixel hash that finds it);
- click to mask: what the GUI's segment thread does per click, `SamSegmenter.set_image` (hit) then
  `predict`, with 1, 2 and 5 points and with a box (and a box with a point), up to the bool mask at
  photo size.

    OMP_NUM_THREADS=2 python bench/bench_sam.py --device cpu   # a CPU's figures
    python bench/bench_sam.py                                  # on a machine with an NVIDIA GPU
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import write_report  # noqa: E402

from pipeline.segment import load_segmenter  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(work: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    """Median and spread of `repeats` timed runs of `work` (after one untimed run)."""
    work()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        work()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"median_ms": round(1000 * statistics.median(times), 1), "min_ms": round(1000 * min(times), 1),
            "max_ms": round(1000 * max(times), 1), "runs": repeats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("vit_b", "vit_l", "vit_h"), default="vit_b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--photo", default="1600x1200", help="photo size WxH (the mask comes back at this size)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torchvision  # segment_anything needs it; its version goes in the report
    from segment_anything import sam_model_registry

    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    width, height = (int(v) for v in args.photo.split("x"))
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(2)]
    torch.manual_seed(0)
    state = sam_model_registry[args.model]().state_dict()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / f"sam_{args.model}_random.pth"
        torch.save(state, checkpoint)
        del state
        sync(device)
        start = time.perf_counter()
        segmenter = load_segmenter(checkpoint, str(device))
        sync(device)
        load_ms = round(1000 * (time.perf_counter() - start), 1)
    predictor = segmenter.predictor
    arrays = [np.asarray(photo) for photo in photos]
    which = itertools.count()

    def embed() -> None:  # alternate photos so that each call embeds
        predictor.set_image(arrays[next(which) % 2])

    results: dict[str, Any] = {"load_ms": load_ms, "embed": median_seconds(embed, device, args.repeats)}
    segmenter.set_image(photos[0])
    results["same_image"] = median_seconds(lambda: segmenter.set_image(photos[0]), device, args.repeats)
    clicks = [(0.3 * width, 0.4 * height), (0.6 * width, 0.5 * height), (0.45 * width, 0.7 * height),
              (0.2 * width, 0.2 * height), (0.8 * width, 0.8 * height)]
    labels = [1, 0, 1, 0, 1]
    box = (0.25 * width, 0.25 * height, 0.75 * width, 0.75 * height)
    prompts = {"1 point": (clicks[:1], labels[:1], None), "2 points": (clicks[:2], labels[:2], None),
               "5 points": (clicks, labels, None), "box": ([], [], box), "box + 1 point": (clicks[:1], labels[:1], box)}
    results["click_to_mask"] = {}
    for name, (points, marks, frame) in prompts.items():
        def click(points: list = points, marks: list = marks, frame: Any = frame) -> np.ndarray:
            segmenter.set_image(photos[0])
            return segmenter.predict(points, marks, frame)

        results["click_to_mask"][name] = median_seconds(click, device, args.repeats)
        assert click().shape == (height, width)
    for label, value in results.items():
        print(f"{label:>14}: {value}", flush=True)
    threads = torch.get_num_threads()
    report = {"torchvision": torchvision.__version__, "model": args.model,
              "weights": "random (timing does not depend on them)", "device": str(device), "cpu": cpu_name(),
              "torch_threads": threads, "os_cpus": os.cpu_count(),
              "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "photo": [width, height], **results}
    if device.type == "cuda":
        report["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    where = f"{device.type}-{threads}-threads" if device.type == "cpu" else device.type
    write_report(f"sam-{args.model}-{width}x{height}-{where}", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
