"""Where the judge and the model's own samples disagree, and whose fault it is: sheets for a person to look at.

On the model's samples from held-out captions the judge reads kind, colour, texture and size right
in 87-96% of subjects (JUDGE.md), but there the truth is only the caption: when the model draws a
plain cat for "a dotted cat", or puts the sun elsewhere than the caption says, the judge is right
to disagree and is still counted wrong. No code can tell those apart (that is what a judge is
for), so this script draws the samples as train_judge.py's `--evaluate` does (20 DDIM steps,
guidance 7.5, seed 3), lists every subject attribute the judge reads differently from the caption,
and writes contact sheets of them (`misses-NN.png`: the sample at 2x, the slot and attribute, the
caption's value and the judge's) with `misses.json`. A person then marks each miss in a verdicts
file, `{"model": [miss numbers], "judge": [...]}` (the rest: unclear), and `--verdicts` gives, per
attribute, the judge's accuracy over the readings where the model drew what the caption says:
between counting every unclear miss against the judge and none.

    .venv/bin/python resources/demo_world/judge_misses.py --out /tmp/misses [--scenes 240]
    .venv/bin/python resources/demo_world/judge_misses.py --out /tmp/misses --verdicts resources/demo_world/judge/sample_misses.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import judge as J  # noqa: E402  (sibling modules)
import train_judge as T  # noqa: E402

ATTRIBUTES = ("kind", "color", "texture", "size")
SEED = 20261125  # train_judge.py's: its held-out chunk, the pictures JUDGE.md's table was measured on
PER_SHEET, CELL = 12, 256


def find_misses(samples: np.ndarray, truths: list[J.Facts], judge: J.Judge) -> list[dict]:
    """Every (picture, slot, attribute) the judge reads otherwise than the truth; an empty slot reads 'EMPTY'."""
    misses = []
    for picture, (read, truth) in enumerate(zip(judge.read(samples), truths, strict=True)):
        for slot in J.SLOTS:
            if truth[slot] != "yes":
                continue
            for key in ATTRIBUTES:
                got = read.get(f"{slot}.{key}") if read[slot] == "yes" else "EMPTY"
                if got != truth[f"{slot}.{key}"]:
                    misses.append({"n": len(misses), "picture": picture, "slot": slot, "attribute": key,
                                   "caption": truth[f"{slot}.{key}"], "judge": got})
    return misses


def write_sheets(samples: np.ndarray, captions: list[str], misses: list[dict], out: Path) -> None:
    for page in range(math.ceil(len(misses) / PER_SHEET)):
        chunk = misses[page * PER_SHEET : (page + 1) * PER_SHEET]
        sheet = Image.new("RGB", (4 * CELL, 3 * (CELL + 40)), "white")
        draw = ImageDraw.Draw(sheet)
        for j, miss in enumerate(chunk):
            x, y = (j % 4) * CELL, (j // 4) * (CELL + 40)
            sheet.paste(Image.fromarray(samples[miss["picture"]]).resize((CELL, CELL), Image.NEAREST), (x, y))
            draw.text((x + 2, y + CELL + 2), f"#{miss['n']} {miss['slot']} {miss['attribute']}: caption "
                      f"{miss['caption']}, judge {miss['judge']}", fill="black")
            draw.text((x + 2, y + CELL + 18), captions[miss["picture"]][:44], fill="black")
        sheet.save(out / f"misses-{page:02d}.png")


def tally(misses: list[dict], truths: list[J.Facts], verdicts: dict[str, list[int]]) -> dict[str, dict]:
    """Per attribute: readings, misses by verdict, and the judge's accuracy where the model drew the caption."""
    readings = Counter(key for truth in truths for slot in J.SLOTS if truth[slot] == "yes" for key in ATTRIBUTES)
    blame = {n: who for who in ("model", "judge") for n in verdicts.get(who, [])}
    out = {}
    for key in ATTRIBUTES:
        counts = Counter(blame.get(m["n"], "unclear") for m in misses if m["attribute"] == key)
        drawn = readings[key] - counts["model"]
        out[key] = {"readings": readings[key], "misses": sum(counts.values()), **{w: counts[w] for w in
                    ("model", "judge", "unclear")},
                    "accuracy_as_captioned": round(1 - sum(counts.values()) / readings[key], 4),
                    "judge_accuracy_where_drawn": [round(1 - (counts["judge"] + counts["unclear"]) / drawn, 4),
                                                   round(1 - counts["judge"] / drawn, 4)]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=240)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--judge", type=Path, default=J.DEFAULT_FOLDER)
    parser.add_argument("--verdicts", type=Path, help="a person's verdicts on the misses of this --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    images, truths, captions = T.render(SEED, T.HELD_OUT_CHUNK, args.scenes, 1, math.inf, print)
    if args.verdicts is None:
        from pipeline.models import load_model

        bundle = load_model(args.model, device="cpu")
        samples = T.redraw_all(bundle, images, captions, [1.0] * len(images), 20, 3, 16, math.inf)
        misses = find_misses(samples, truths, J.Judge.load(args.judge, torch.device("cpu")))
        (args.out / "misses.json").write_text(json.dumps({"scenes": args.scenes, "misses": misses}, indent=0) + "\n")
        write_sheets(samples, captions, misses, args.out)
        print(f"{len(misses)} misses on {args.scenes} samples: {args.out}/misses-*.png")
        return 0
    misses = json.loads((args.out / "misses.json").read_text())["misses"]
    print(json.dumps(tally(misses, truths, json.loads(args.verdicts.read_text())), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
