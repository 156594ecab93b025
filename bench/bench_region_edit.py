"""Time a region edit of a 1536x1024 photo against the same edit of the whole photo (issue 21).

The photo (the demo house enlarged to 1536x1024, with fine grain) is edited with a painted mask of
200x180 pixels through the engine's stages, once with `area=region` (a crop around the mask at the
working size, pasted back into the photo: pipeline/area.py) and once with `area=whole`, each in a fresh
project: resolving the request (reading the photo and mask, choosing the crop), the inversion, the
edit (sampling, decoding, pasting back at full resolution) and the commit (the 1536x1024 result PNG
and the project), then a re-edit with another target, which reuses the inversion. Each stage's wall
time and peak GPU memory go to bench/results/region-edit-<device>.json, with the machine's load average
(1, 5 and 15 minutes) before and after.

    python bench/bench_region_edit.py                      # GPU: SD-1.5-sized, random weights, 512 px
    python bench/bench_region_edit.py --model demo         # the demo-world model at its 128 px (CPU: ~2 min)

With `--model random-sd15` (the default on a GPU) the networks are SD 1.5's with random weights
(bench/sd15.py): the timing of a real SD 1.x model, with no download; any other model spec is loaded
as the app loads it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sd15 import RESULTS, bench_device, measure, random_sd15, write_report  # noqa: E402

from pipeline.engine import Engine  # noqa: E402
from pipeline.events import CancelToken, Done  # noqa: E402
from pipeline.held_weights import with_sampling_unet  # noqa: E402
from pipeline.images import load_image  # noqa: E402
from pipeline.models import native_side  # noqa: E402
from pipeline.paths import RESOURCES  # noqa: E402
from pipeline.request import EditRequest  # noqa: E402

SIZE, BOX = (1536, 1024), (900, 380, 1100, 560)
SOURCE, TARGETS = "a house in a meadow under a blue sky", ("a castle in a meadow under a blue sky",
                                                          "a red house in a meadow under a blue sky")


def make_photo(folder: Path) -> tuple[Path, Path]:
    """The 1536x1024 photo and its painted mask, written into `folder`."""
    house = load_image(RESOURCES / "demo" / "house.png").resize(SIZE, Image.Resampling.BICUBIC)
    grain = np.random.default_rng(0).integers(-24, 25, (SIZE[1], SIZE[0], 1))
    Image.fromarray(np.clip(np.asarray(house, int) + grain, 0, 255).astype(np.uint8)).save(folder / "photo.png")
    mask = Image.new("L", SIZE, 0)
    mask.paste(255, BOX)
    mask.save(folder / "mask.png")
    return folder / "photo.png", folder / "mask.png"


def run_area(engine: Engine, bundle_for, area: str, args: argparse.Namespace, folder: Path,
             results: dict) -> dict:
    """One edit and one re-edit of the photo with `area`; their stage times go into `results`."""
    photo, mask = make_photo(folder)
    cancel, quiet = CancelToken(), (lambda event: None)
    info: dict = {}
    for n, target in enumerate(TARGETS):
        label = f"{area}: {'edit' if n == 0 else 're-edit'}"
        request = EditRequest(target_prompt=target, image=str(photo), source_prompt=SOURCE, mask=str(mask),
                              project=str(folder / "p.retake"), model=args.model, max_side=args.max_side,
                              area=area, params={"inversion": args.inversion, "steps": args.steps}, fast=args.fast)
        job = measure(f"{label}: resolve (photo, mask, crop)", lambda: engine.resolve(request), results)
        bundle = bundle_for(engine, job)
        inversion = measure(f"{label}: invert", lambda: engine.invert(job, bundle, quiet, cancel), results)
        result = measure(f"{label}: edit (sample, decode, paste back)",
                         lambda: engine.edit(job, bundle, inversion, quiet, cancel), results)
        done = measure(f"{label}: commit (result PNG, project)",
                       lambda: engine.commit(job, bundle, inversion, result), results)
        assert isinstance(done, Done) and done.reused_inversion == (n == 1), "the re-edit should reuse the inversion"
        info = {"crop": job.crop, "working_size": job.size, "photo_size": job.image.size}
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    device = bench_device()
    parser.add_argument("--model", default="random-sd15" if device.type == "cuda" else "demo",
                        help="random-sd15 (SD 1.5's networks, random weights) or any model spec (demo, a folder)")
    parser.add_argument("--max-side", type=int, help="working size (default: 512 for random-sd15, else the model's own)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--inversion", default="direct", help="p2p's inversion (default: direct)")
    parser.add_argument("--fast", action="store_true", help="take the fast path (GPU only: pipeline.fast)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON report")
    args = parser.parse_args()
    random_model = args.model == "random-sd15"
    args.max_side = args.max_side or (512 if random_model else native_side(args.model))
    if random_model:
        bundle = random_sd15(device, torch.float16 if device.type == "cuda" else torch.float32)
        if args.fast:  # the UNet copy the engine makes for the fast path
            bundle = with_sampling_unet(bundle)
        args.model = "demo"  # what resolve() reads the model's native size from; the bundle is the random one

        def bundle_for(engine: Engine, job) -> object:
            return bundle
    else:
        def bundle_for(engine: Engine, job) -> object:
            return engine.load_model(job, lambda event: None)

    engine, results, areas = Engine(), {}, {}
    load_before = os.getloadavg()
    for area in ("region", "whole"):
        with tempfile.TemporaryDirectory(prefix="retake-region-") as folder:
            areas[area] = run_area(engine, bundle_for, area, args, Path(folder), results)
    print(f"region: crop {areas['region']['crop']} at {areas['region']['working_size']}; "
          f"whole: {areas['whole']['working_size']}")
    write_report("region-edit", {"model": "random-sd15" if random_model else args.model, "max_side": args.max_side,
                                 "steps": args.steps, "inversion": args.inversion, "device": device.type,
                                 "fast": args.fast,
                                 "photo": list(SIZE), "mask_box": list(BOX), "areas": areas, "results": results,
                                 "load_average": [round(v, 2) for v in (*load_before, *os.getloadavg())]},
                 args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
