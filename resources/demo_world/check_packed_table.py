"""Check the packed token table of the demo-world weights against the full table it was packed from.

The committed weights were trained with the text encoder's full 49,408-row token table and packed
afterwards to the rows the training captions used (pipeline.token_table). This regenerates the
training captions (train.py's chunks of the seed and scene count its run recorded in
training/loss.json; a scene's caption is a function of its description alone), encodes each distinct
caption and "" with the text encoder as shipped and as it was, and says whether every encoding is
bit-identical. It also prints the token rows' norms, the used ones against the rest, in the full
table: rows no caption used still have the scale of their initialisation (std 0.02 over 128 values).

    git show 8c2f195^:resources/demo_world/weights/text_encoder/model.safetensors > /tmp/full_text_encoder.safetensors
    .venv/bin/python resources/demo_world/check_packed_table.py --full /tmp/full_text_encoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from transformers import CLIPTextConfig, CLIPTextModel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import world  # noqa: E402  (sibling modules)
from train import chunk_jobs  # noqa: E402

from pipeline.demo_model import demo_model_dir  # noqa: E402
from pipeline.token_table import ROWS_FILE, load_packed_text_encoder  # noqa: E402
from pipeline.tokenizer import load_clip_tokenizer  # noqa: E402


def training_captions(seed: int, scenes: int) -> list[str]:
    """The captions of train.py's scenes, in order, without drawing the pictures."""
    captions = []
    for job_seed, chunk, n, _ in chunk_jobs(seed, scenes, world.SIZE):
        rng = np.random.default_rng([job_seed, chunk])
        captions += [world.sample_description(rng).caption for _ in range(n)]
    return captions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, required=True, help="the text encoder's model.safetensors before packing")
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    start = time.perf_counter()
    run = json.loads((HERE / "training" / "loss.json").read_text())
    captions = sorted(set(training_captions(run["seed"], run["scenes"])))
    print(f"{run['scenes']} training scenes, {len(captions)} distinct captions ({time.perf_counter() - start:.0f} s)")

    folder = demo_model_dir("demo") / "text_encoder"
    packed = load_packed_text_encoder(folder)
    full = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, local_files_only=True)).float().eval()
    full.load_state_dict(safetensors.torch.load_file(args.full), strict=True)
    full.requires_grad_(False)

    ids = load_clip_tokenizer()(captions + [""], padding="max_length", max_length=77, truncation=True,
                                return_tensors="pt").input_ids
    used = torch.unique(ids)
    kept = safetensors.torch.load_file(folder / ROWS_FILE)["ids"]
    print(f"token ids the captions use: {len(used)}; kept in {ROWS_FILE}: {len(kept)}; "
          f"the same: {torch.equal(used, kept.sort().values)}")
    norms = full.get_input_embeddings().weight.norm(dim=1)
    unused = torch.ones(len(norms), dtype=torch.bool)
    unused[used] = False
    for name, rows in (("used", norms[~unused]), ("unused", norms[unused])):
        print(f"full table, {name} rows: norm min {rows.min():.3f} median {rows.median():.3f} max {rows.max():.3f}")

    differ = 0
    with torch.no_grad():
        for first in range(0, len(ids), args.batch):
            batch = ids[first : first + args.batch]
            differ += int((packed(batch)[0] != full(batch)[0]).flatten(1).any(1).sum())
    print(f"{len(ids)} captions (the distinct training captions and \"\"): {differ} encode differently "
          f"({time.perf_counter() - start:.0f} s)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
